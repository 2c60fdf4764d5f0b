"""swarm-cli release against a real controller process with a staging
binhost: what an admin types to cut, list, show, diff, promote, roll back
and delete releases, what they read, and the exit codes scripts rely on.

One controller for the module; its staging is a Portage prefix's PKGDIR
with small real gpkgs (tools/gpkgs.py, Portage's own gpkg code) put there
while the controller is stopped, as a crash-recovered staging finds them.
The tests run in order: each says which releases it expects to find.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import prefix as prefixes
import pytest

from support.cli import run_here
from support.gpkgs import inject
from support.procs import Controller

pytestmark = pytest.mark.timeout(120)


def cli(controller: Controller, *args: str) -> subprocess.CompletedProcess[str]:
    return run_here(controller.admin_url, controller.info["admin_key_file"], *args)


def cli_json(controller: Controller, *args: str) -> Any:
    result = cli(controller, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def refused(result: subprocess.CompletedProcess[str], status: int, says: str) -> None:
    """Exit 1 with one line on stderr: the API's status and its reason."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert len(result.stderr.splitlines()) == 1 and f": {status} " in result.stderr, result.stderr
    assert says in result.stderr, result.stderr


@dataclass
class Swarm:
    controller: Controller
    prefix: prefixes.Prefix
    versions: list[str]  # cut by the tests so far, oldest first


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    root = tmp_path_factory.mktemp("cli-release")
    prefix = prefixes.create_prefix(prefixes.PrefixConfig(root / "prefix", prefixes.Role.CONTROLLER))
    inject(prefix, "swarm-test/leaf-data-1", "swarm-test/leaf-hello-1")
    controller = Controller(root, "--portage-eprefix", str(prefix.root))
    controller.start()
    try:
        yield Swarm(controller, prefix, [])
    finally:
        controller.kill()


def test_cut_list_and_show(swarm: Swarm) -> None:
    ctl = swarm.controller
    empty = cli(ctl, "release", "list")
    assert empty.returncode == 0 and "no releases yet" in empty.stdout
    refused_key = cli(ctl, "release", "key")
    assert refused_key.returncode == 1 and "made at the first cut" in refused_key.stderr

    cut = cli(ctl, "release", "cut", "--notes", "first of all")
    assert cut.returncode == 0, cut.stderr
    version = cut.stdout.split()[1].rstrip(":")
    assert cut.stdout.startswith(f"cut {version}: 2 packages, ")
    assert f"swarm-cli release promote {version}" in cut.stdout
    swarm.versions.append(version)

    listed = cli(ctl, "release", "list")
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()
    assert header.split() == ["VERSION", "STANDING", "PACKAGES", "SIZE", "CREATED", "NOTES"]
    assert row.split()[:3] == [version, "-", "2"] and row.endswith("first of all")
    assert [r["version"] for r in cli_json(ctl, "release", "list")["releases"]] == [version]

    shown = cli(ctl, "release", "show", version, "--packages")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"release   {version}" and "notes     first of all" in lines
    manifest = cli_json(ctl, "release", "show", version)
    assert f"signed by {manifest['signing_key']}" in lines and len(manifest["signing_key"]) == 40
    packages = [line.split()[0] for line in lines[lines.index("") + 2 :]]
    assert packages == ["swarm-test/leaf-data-1", "swarm-test/leaf-hello-1"]

    key = cli(ctl, "release", "key")
    fingerprint = manifest["signing_key"]
    spaced = " ".join(fingerprint[i : i + 4] for i in range(0, 40, 4))
    assert key.returncode == 0 and key.stdout.splitlines()[0] == f"release key {spaced}"


def test_a_cut_the_controller_refuses_says_why(swarm: Swarm) -> None:
    refused(cli(swarm.controller, "release", "cut"), 409, "nothing changed")
    assert len(cli_json(swarm.controller, "release", "list")["releases"]) == len(swarm.versions)


def test_diff_between_two_releases(swarm: Swarm) -> None:
    ctl = swarm.controller
    ctl.kill()  # staging changes under a stopped controller, which finds the packages at start
    inject(swarm.prefix, "swarm-test/chain-a-1", "swarm-test/leaf-data-2")
    ctl.restart()
    cut = cli_json(ctl, "release", "cut", "--notes", "second")
    older, newer = swarm.versions[-1], cut["version"]
    swarm.versions.append(newer)

    diff = cli(ctl, "release", "diff", older, newer)
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines() == [
        f"{older} -> {newer}: 1 added, 0 removed, 1 changed",
        "+ swarm-test/chain-a-1",
        "~ swarm-test/leaf-data-1 -> swarm-test/leaf-data-2",
    ]
    back = cli_json(ctl, "release", "diff", newer, older)
    assert [p["cpv"] for p in back["removed"]] == ["swarm-test/chain-a-1"]


def test_promote_rollback_and_delete(swarm: Swarm) -> None:
    ctl = swarm.controller
    first, second = swarm.versions[:2]
    assert cli(ctl, "release", "promote", first).returncode == 0
    promoted = cli(ctl, "release", "promote", second)
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.startswith(f"promoted {second}: 3 packages")
    listing = cli_json(ctl, "release", "list")
    assert (listing["current"], listing["previous"]) == (second, first)

    rolled = cli(ctl, "release", "rollback", second)
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.startswith(f"rolled back {second}; current is {first}: 2 packages")
    # Named, so that a second rollback by a repeated command is refused.
    refused(cli(ctl, "release", "rollback", second), 409, second)
    assert cli_json(ctl, "release", "list")["current"] == first

    history = cli(ctl, "release", "list", "--history")
    made_current = [line.split()[2:5] for line in history.stdout.split("\n\n")[1].splitlines()[1:]]
    admin = "admin:admin"
    assert made_current == [[first, "rollback", admin], [second, "promote", admin], [first, "promote", admin]]

    refused(cli(ctl, "release", "delete", first), 409, "current")
    forced = cli_json(ctl, "release", "cut", "--force")["version"]
    deleted = cli(ctl, "release", "delete", forced)
    assert deleted.returncode == 0 and deleted.stdout == f"deleted {forced}\n"
    assert forced not in [r["version"] for r in cli_json(ctl, "release", "list")["releases"]]


def test_bad_versions(swarm: Swarm) -> None:
    malformed = cli(swarm.controller, "release", "show", "latest")
    assert malformed.returncode == 2 and "not a release version: 'latest'" in malformed.stderr
    refused(cli(swarm.controller, "release", "show", "v2001.01.01"), 404, "v2001.01.01")
    refused(cli(swarm.controller, "release", "promote", "v2001.01.01-3"), 404, "v2001.01.01-3")
