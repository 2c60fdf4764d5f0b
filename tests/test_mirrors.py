"""Releases pushed to binhost mirrors (controller/mirrors.py, rsyncpush.py)
with real parts: one real controller process with builds on (its staging
holds small real gpkgs, tools/gpkgs.py) and two mirrors, each a real sshd
on 127.0.0.1 with a directory of its own and a static HTTP server for it
(tests/support/mirror.py); real rsync over real ssh, real health checks
over HTTP. The targets come from a --binhosts-file.

The tests run in file order, each from the state the one before left:
release 1 reaches both mirrors; release 2 (one package rebuilt) moves
little and never leaves ``current`` missing; release 3 finds mirror-b's
sshd down, goes out without it, and reaches it once sshd is back.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.fleet import Fleet, admin, start_fleet
from support.gpkgs import inject
from support.mirror import Mirror, Mirrors, mirrors
from support.procs import http, wait_for

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]

PACKAGES = tuple(f"swarm-test/bench{i:04d}-1" for i in range(24))
REBUILT = "swarm-test/bench0000-2"  # release 2: the newest of its slot, in place of bench0000-1
ADDED = "swarm-test/leaf-hello-1"  # release 3
SYNC_TIMEOUT = 90.0


@dataclass
class Bench:
    fleet: Fleet
    mirrors: Mirrors
    versions: list[str] = field(default_factory=list)
    first_size: int = 0  # bytes of the first release's packages

    @property
    def a(self) -> Mirror:
        return self.mirrors[0]

    @property
    def b(self) -> Mirror:
        return self.mirrors[1]

    def binhosts(self) -> dict[str, dict[str, Any]]:
        answer = admin(self.fleet, "GET", "/admin/api/binhosts")
        return {b["name"]: b for b in answer["binhosts"]}

    def cut_and_promote(self) -> str:
        version: str = admin(self.fleet, "POST", "/admin/api/releases", {"notes": "mirrors"})["version"]
        admin(self.fleet, "POST", f"/admin/api/releases/{version}/promote")
        self.versions.append(version)
        return version

    def wait_serving(self, mirror: Mirror, version: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            state = self.binhosts()[mirror.name]
            return state if state["status"] == "healthy" and state["release"] == version else None

        found: dict[str, Any] = wait_for(done, SYNC_TIMEOUT, f"{mirror.name} healthy with {version}", 0.2)
        return found

    def synced(self, mirror: Mirror, version: str) -> dict[str, Any]:
        events = self.fleet.events("binhost_synced")
        found = [e for e in events if e["data"]["name"] == mirror.name and e["data"]["release"] == version]
        assert len(found) == 1, found
        return found[0]

    def failures(self, mirror: Mirror) -> list[dict[str, Any]]:
        """Failed pushes to ``mirror`` (a loaded machine can make an ssh time out)."""
        return [e for e in self.fleet.events("binhost_sync_failed") if e["data"]["name"] == mirror.name]

    def binrepos(self, network: str) -> str:
        status, text = http(
            "GET", f"{self.fleet.controller.public_url}/api/v1/binrepos.conf?network={network}"
        )
        assert status == 200, text
        return str(text)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    root = tmp_path_factory.mktemp("mirrors")
    with mirrors(root / "mirrors", 2) as started:
        a, b = started
        networks = {a.name: "lan", b.name: "tailscale"}
        args = started.controller_args(root / "binhosts.toml", networks)
        fleet = start_fleet(root, (), *args, portage=True)
        try:
            assert fleet.controller_prefix is not None
            inject(fleet.controller_prefix, *PACKAGES)
            yield Bench(fleet, started)
        finally:
            fleet.stop()


def files_of(root: Path) -> dict[str, str]:
    """Every regular file under ``root``: relative path -> sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_promote_reaches_both_mirrors_verified_and_served(bench: Bench) -> None:
    def checked() -> dict[str, dict[str, Any]] | None:
        states = bench.binhosts()
        return states if all(states[m.name]["checked_at"] for m in bench.mirrors) else None

    # New mirrors answer and hold nothing, with nothing to push yet: fine, not unreachable.
    states = wait_for(checked, SYNC_TIMEOUT, "both mirrors checked", 0.2)
    for m in bench.mirrors:
        assert (states[m.name]["status"], states[m.name]["release"], states[m.name]["error"]) == (
            "healthy",
            None,
            "",
        ), states
    version = bench.cut_and_promote()
    release_dir = bench.fleet.root / "controller" / "releases" / "releases" / version
    expected = files_of(release_dir)
    manifest = json.loads((release_dir / "manifest.json").read_bytes())
    assert len(manifest["packages"]) == len(PACKAGES)
    bench.first_size = manifest["total_size"]
    for mirror in bench.mirrors:
        state = bench.wait_serving(mirror, version)
        assert state["releases"] == [version] and state["synced_at"] and state["checked_at"]
        assert state["error"] == "" and state["progress"] is None
        # The same files, byte for byte, and current names the release.
        assert files_of(mirror.root / "releases" / version) == expected
        assert os.readlink(mirror.root / "current") == f"releases/{version}"
        assert mirror.releases() == [version]
        # Served over its HTTP as clients fetch it.
        assert json.loads(mirror.get("current/manifest.json"))["version"] == version
        package = manifest["packages"][3]
        assert hashlib.sha256(mirror.get(f"current/{package['path']}")).hexdigest() == package["sha256"]
        synced = bench.synced(mirror, version)["data"]
        assert state["bytes_sent"] == synced["bytes"] and state["files_sent"] == synced["files"]
        if not bench.failures(mirror):
            # Everything travelled (a push retried after a failure sends only what the
            # failed attempt left undone in the partial directory).
            assert synced["bytes"] >= manifest["total_size"] and synced["files"] >= len(PACKAGES)
    # Both are usable: each network's mirror first, the other and the controller after.
    lan, tailscale = bench.binrepos("lan"), bench.binrepos("tailscale")
    a, b = bench.a.sync_uri, bench.b.sync_uri
    assert a in lan and b in lan and lan.index(a) < lan.index(b), (lan, bench.binhosts())
    assert a in tailscale and b in tailscale and tailscale.index(b) < tailscale.index(a), tailscale


def test_the_next_release_moves_only_what_changed_and_current_is_never_missing(bench: Bench) -> None:
    first = bench.versions[0]
    assert bench.fleet.controller_prefix is not None
    inject(bench.fleet.controller_prefix, REBUILT)
    seen: list[str] = []
    missing: list[str] = []
    stop = threading.Event()

    def read_current() -> None:
        # What a client sees while the push switches the link: a complete release, old or new.
        while not stop.is_set():
            try:
                target = os.readlink(bench.a.root / "current")
                version = json.loads(bench.a.get("current/manifest.json"))["version"]
                if not (bench.a.root / target / "Packages").is_file():
                    missing.append(f"{target} has no Packages index")
                seen.append(version)
            except (OSError, urllib.error.URLError, ValueError) as exc:
                missing.append(repr(exc))

    reader = threading.Thread(target=read_current, name="current-reader")
    reader.start()
    try:
        version = bench.cut_and_promote()
        for mirror in bench.mirrors:
            bench.wait_serving(mirror, version)
    finally:
        stop.set()
        reader.join(timeout=30)
    assert not missing, missing[:5]
    assert seen[0] == first and seen[-1] == version, (seen[:3], seen[-3:])
    for mirror in bench.mirrors:
        before = bench.synced(mirror, first)["data"]
        after = bench.synced(mirror, version)["data"]
        # One package of 24 changed: it alone travels (plus the index, manifest and file
        # list), far less than the first release's packages, which all travelled then.
        assert after["bytes"] < bench.first_size / 5, (before, after, bench.first_size)
        if not bench.failures(mirror):
            assert after["bytes"] < before["bytes"] / 5, (before, after)
        assert after["files"] <= 5, after
        # Unchanged packages are hard links to the first release's files on the mirror.
        unchanged = next(mirror.root.glob(f"releases/{version}/swarm-test/bench0005/*.gpkg.tar"))
        assert unchanged.stat().st_nlink == 2
        assert sorted(mirror.releases()) == sorted([first, version])


def test_a_mirror_whose_sshd_is_down_goes_stale_and_catches_up(bench: Bench) -> None:
    assert bench.fleet.controller_prefix is not None
    inject(bench.fleet.controller_prefix, ADDED)
    before = bench.versions[-1]
    bench.b.ssh_down()
    try:
        # The promote itself succeeds; mirror-a gets the release, mirror-b goes stale.
        version = bench.cut_and_promote()
        bench.wait_serving(bench.a, version)

        def stale() -> dict[str, Any] | None:
            state = bench.binhosts()[bench.b.name]
            return state if state["status"] == "stale" and "ssh" in state["error"] else None

        state = wait_for(stale, SYNC_TIMEOUT, "mirror-b stale", 0.2)
        assert state["release"] == before and bench.b.current() == before
        failed = bench.failures(bench.b)
        assert failed and failed[-1]["data"]["release"] == version
        # Out of every binrepos.conf answer, also its own network's, until it catches up.
        tailscale = bench.binrepos("tailscale")
        assert bench.b.sync_uri not in tailscale and bench.a.sync_uri in tailscale, tailscale
        status, refused = bench.fleet.controller.admin("POST", f"/admin/api/binhosts/{bench.b.name}/sync")
        assert status == 202, refused
    finally:
        bench.b.ssh_up()
    admin(bench.fleet, "POST", f"/admin/api/binhosts/{bench.b.name}/sync")
    bench.wait_serving(bench.b, version)
    assert bench.b.current() == version
    assert bench.b.sync_uri in bench.binrepos("tailscale")
    # The controller keeps what each mirror holds for its next start.
    path = bench.fleet.root / "controller" / "releases" / "mirrors.json"

    def saved() -> bool:
        held = json.loads(path.read_text())
        return all(held[m.name]["release"] == version for m in bench.mirrors)

    wait_for(saved, 10, "mirrors.json naming the new release for both mirrors")
