"""Clients take a release from the binhost of their own network, and from the
other when that one is down (issue 17).

Once per module: two mirrors (tests/support/mirror.py: a real sshd, a
directory and a static HTTP server each), ``mirror-a`` serving network
``lan`` and ``mirror-b`` serving ``tailscale``, named in a
--binhosts-file; one real controller process with builds on, whose staging
gets leaf-script 1 and leaf-data 1 from real emerge; a release of them cut,
promoted and pushed to both mirrors over real rsync + ssh.

The clients are stock Portage prefixes that verify signatures against the
release key (tools/prefix.py). The first is given the controller's
``binrepos.conf?network=tailscale`` as its binrepos.conf, as an admin
would install it; the second is run by ``swarm-upgrade`` on network
tailscale. Which mirror served a package is read from the mirrors' HTTP
request logs. The tests run in file order; the last stops mirror-b's HTTP
server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import prefix as pfx
import pytest

from support.fleet import Fleet, admin, start_fleet
from support.gpg import end_agent, readable_by_nobody, trust
from support.mirror import Mirror, mirrors
from support.procs import http, wait_for

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]

SCRIPT, DATA = "swarm-test/leaf-script-1", "swarm-test/leaf-data-1"
SYNC_TIMEOUT = 90.0
RUN_TIMEOUT = 180.0


@dataclass
class Network:
    fleet: Fleet
    lan: Mirror
    tailscale: Mirror
    version: str
    paths: dict[str, str]  # cpv -> its gpkg's path in the release
    root: Path  # a directory nobody may enter (Portage verifies as nobody)
    client: pfx.Prefix  # the stock one

    @property
    def url(self) -> str:
        return self.fleet.controller.public_url

    def binrepos(self, query: str) -> str:
        status, text = http("GET", f"{self.url}/api/v1/binrepos.conf?{query}")
        assert status == 200, text
        return str(text)

    def served(self, mirror: Mirror, cpv: str) -> list[str]:
        return mirror.served("/" + self.paths[cpv])

    def fetches(self, cpv: str) -> dict[str, int]:
        """How often each mirror has served the package so far (its health checks
        read some packages too: a test compares the counts before and after)."""
        return {m.name: len(self.served(m, cpv)) for m in (self.lan, self.tailscale)}

    def fetched_since(self, before: dict[str, int], cpv: str) -> dict[str, list[str]]:
        return {m.name: self.served(m, cpv)[before[m.name] :] for m in (self.lan, self.tailscale)}


def serving(fleet: Fleet, version: str) -> set[str]:
    """The mirrors healthy with ``version``, as the admin API has them."""
    return {
        b["name"]
        for b in admin(fleet, "GET", "/admin/api/binhosts")["binhosts"]
        if b["kind"] == "rsync" and (b["status"], b["release"]) == ("healthy", version)
    }


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    private = tmp_path_factory.mktemp("binhost-client")
    root = Path(tempfile.mkdtemp(prefix="swarm-binhost-client-"))
    os.chmod(root, 0o755)
    try:
        with mirrors(private / "mirrors", 2) as started:
            lan, tailscale = started
            networks = {lan.name: "lan", tailscale.name: "tailscale"}
            fleet = start_fleet(
                private,
                (),
                *started.controller_args(private / "binhosts.toml", networks),
                # One health check after each push (awaited below), none while the tests run.
                "--mirror-check-interval",
                "86400",
                portage=True,
            )
            try:
                fleet.stage_packages(SCRIPT, DATA)
                version = admin(fleet, "POST", "/admin/api/releases", {"notes": "by network"})["version"]
                admin(fleet, "POST", f"/admin/api/releases/{version}/promote")
                wait_for(
                    lambda: serving(fleet, version) == {lan.name, tailscale.name},
                    SYNC_TIMEOUT,
                    f"both mirrors healthy with {version}",
                    0.2,
                )
                manifest = json.loads(lan.get(f"releases/{version}/manifest.json"))
                paths = {p["cpv"]: p["path"] for p in manifest["packages"]}
                status, key = http("GET", f"{fleet.controller.public_url}/releases/key.asc")
                assert status == 200
                home = root / "gnupg"
                home.mkdir(mode=0o700)
                trust(home, str(key).encode())
                readable_by_nobody(home)
                client = pfx.create_prefix(pfx.PrefixConfig(root / "client", pfx.Role.CLIENT, gnupghome=home))
                yield Network(fleet, lan, tailscale, version, paths, root, client)
            finally:
                fleet.stop()
    finally:
        for home in (root / "gnupg", root / "upgraded/etc/portage/gnupg"):
            end_agent(home)
        shutil.rmtree(root, ignore_errors=True)


def test_a_stock_client_on_tailscale_installs_from_the_tailscale_mirror(network: Network) -> None:
    answer = network.binrepos("network=tailscale")
    sections = [line for line in answer.splitlines() if line.startswith("[")]
    # Its network's mirror first, then the other and the controller as fallbacks.
    assert sections == ["[swarm-mirror-b]", "[swarm-mirror-a]", "[swarm-controller]"], answer
    assert answer.count("verify-signature = true") == 3
    (network.client.config_root / "binrepos.conf").write_text(answer)

    before = network.fetches(SCRIPT)
    done = pfx.run_emerge(network.client, "--getbinpkgonly", "--oneshot", f"={SCRIPT}", timeout=RUN_TIMEOUT)
    assert done.ok, done.output[-3000:]
    assert network.client.installed(SCRIPT)
    assert network.fetched_since(before, SCRIPT) == {
        "mirror-a": [],
        "mirror-b": [f"/current/{network.paths[SCRIPT]}"],
    }


def test_swarm_upgrade_on_tailscale_writes_the_answer_and_installs_from_its_mirror(network: Network) -> None:
    client = pfx.create_prefix(pfx.PrefixConfig(network.root / "upgraded", pfx.Role.CLIENT))
    (client.root / "var/lib/portage").mkdir(parents=True, exist_ok=True)
    (client.root / "var/lib/portage/world").write_text("swarm-test/leaf-script\n")

    def upgrade(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "swarm.cli.upgrade", "--eprefix", str(client.root), *args]
        done = subprocess.run(
            argv, env=client.env(), capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
        )
        print(f"$ swarm-upgrade {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    trusted = upgrade("trust", network.url, "--network", "tailscale")
    assert trusted.returncode == 0, trusted.stderr
    before = network.fetches(SCRIPT)
    applied = upgrade("apply")
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr
    assert client.installed(SCRIPT)
    v = network.version
    # The pinned release on the tailscale mirror, fetched from there only.
    assert network.fetched_since(before, SCRIPT) == {
        "mirror-a": [],
        "mirror-b": [f"/releases/{v}/{network.paths[SCRIPT]}"],
    }
    # Its entries: the release pinned on each binhost, the tailscale mirror first.
    conf = (client.config_root / "binrepos.conf/swarm-upgrade.conf").read_text()
    uris = [line.split(" = ", 1)[1] for line in conf.splitlines() if line.startswith("sync-uri = ")]
    assert uris == [
        f"{network.tailscale.url}/releases/{v}/",
        f"{network.lan.url}/releases/{v}/",
        f"{network.url}/binhost/releases/{v}/",
    ]
    assert conf.count("verify-signature = true") == 3


def test_with_the_tailscale_mirror_down_the_stock_client_installs_from_the_other(network: Network) -> None:
    network.tailscale.http_down()
    before = network.fetches(DATA)
    done = pfx.run_emerge(network.client, "--getbinpkgonly", "--oneshot", f"={DATA}", timeout=RUN_TIMEOUT)
    assert done.ok, done.output[-3000:]
    assert network.client.installed(DATA)
    assert network.fetched_since(before, DATA) == {
        "mirror-a": [f"/current/{network.paths[DATA]}"],
        "mirror-b": [],
    }
