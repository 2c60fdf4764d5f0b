"""swarm-upgrade end to end: a controller's releases, a stock Portage client.

Once per module: real emerge builds leaf-script 1 in a drone prefix (an
overlay copy that has a second leaf-script); leaf-data and leaf-script 2 are
written with its metadata by Portage's own gpkg code (tools/gpkgs.py: they
install like a built one, each with a file of its own); a controller
in this process stages them as an upload does (staging.receive) and,
through its core (the admin routes' verbs), cuts release A (leaf-script-1,
leaf-data-1) and promotes it, then cuts B (leaf-script-2, leaf-data-1).
The client is a stock Portage prefix that verifies signatures
(tools/prefix.py); ``swarm-upgrade`` runs as a process against the
controller's public tier, with real gpg and real emerge.

The tests run in file order, each from the state the one before left.
Portage verifies as nobody: the client lives in a directory of /tmp that
nobody may enter (pytest's tmp_path is 0700).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prefix as pfx
import pytest

from swarm.cli.upgrade_errors import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_UNTRUSTED
from swarm.controller.releases import Releases

from support.gpg import end_agent, gnupg_home, gpg, new_key
from support.gpkgs import write as write_gpkgs
from support.inproc import InProcessController, local_config

pytestmark = pytest.mark.timeout(600)

RUN_TIMEOUT = 300.0
OLD, NEW, DATA = "swarm-test/leaf-script-1", "swarm-test/leaf-script-2", "swarm-test/leaf-data-1"


@dataclass
class World:
    root: Path
    controller: InProcessController
    drone: pfx.Prefix
    client: pfx.Prefix
    built: dict[str, Path]  # cpv -> the drone's (unsigned) gpkg
    versions: list[str] = field(default_factory=list)  # cut so far, oldest first

    @property
    def url(self) -> str:
        return self.controller.public_url

    @property
    def releases(self) -> Releases:
        releases = self.controller.controller.releases
        assert releases is not None
        return releases

    def release_dir(self, version: str) -> Path:
        return self.releases.releases_dir / version

    def upgrade(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run swarm-upgrade on the client prefix; prints its output (pytest -s shows it)."""
        argv = [sys.executable, "-m", "swarm.cli.upgrade", "--eprefix", str(self.client.root), *args]
        done = subprocess.run(
            argv, env=self.client.env(), capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
        )
        print(f"$ swarm-upgrade {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    def stage(self, cpv: str) -> None:
        """Into the controller's staging, as a drone's upload arrives."""
        staging = self.controller.controller.staging
        assert staging is not None
        path = self.built[cpv]
        data = path.read_bytes()

        async def chunks() -> AsyncIterator[tuple[int, bytes, int]]:
            yield 0, data, zlib.crc32(data)

        sha = hashlib.sha256(data).hexdigest()
        self.controller.run(
            lambda: staging.receive(f"b-{path.stem}", cpv, path.name, len(data), sha, chunks()), timeout=120
        )

    def cut(self, notes: str) -> str:
        """A cut by the controller's core, as its admin route calls it."""
        cut = self.controller.run(lambda: self.releases.cut(notes=notes, force=False, by="admin:test"), 120)
        self.versions.append(cut.version)
        return cut.version

    def promote(self, version: str) -> None:
        self.controller.run(lambda: self.releases.promote(version, by="admin:test"), 60)

    def status(self) -> dict[str, Any]:
        done = self.upgrade("status", "--json")
        report: dict[str, Any] = json.loads(done.stdout)
        report["exit"] = done.returncode
        return report

    def installed(self) -> set[str]:
        return {f"{c.name}/{p.name}" for c in self.client.vdb.iterdir() for p in c.iterdir()}

    def client_files(self) -> dict[str, bytes]:
        """What an apply that stops must leave as it was: the vdb, binrepos.conf, the
        releases swarm-upgrade keeps (state.json aside: its log records the failure)."""
        root = self.client.root
        watched = [root / "var/db/pkg", root / "etc/portage/binrepos.conf", root / "var/lib/swarm-upgrade"]
        files = {}
        for top in watched:
            for path in sorted(top.rglob("*")):
                if path.is_file() and path.name not in ("lock", "state.json"):
                    files[str(path.relative_to(root))] = path.read_bytes()
        state = json.loads((root / "var/lib/swarm-upgrade/state.json").read_bytes())
        files["stack"] = json.dumps(state["stack"]).encode()
        return files


def overlay_with_a_second_leaf_script(dest: Path) -> Path:
    shutil.copytree(pfx.OVERLAY, dest)
    ebuilds = dest / "swarm-test" / "leaf-script"
    shutil.copy(ebuilds / "leaf-script-1.ebuild", ebuilds / "leaf-script-2.ebuild")
    return dest


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    private = tmp_path_factory.mktemp("upgrade")
    root = Path(tempfile.mkdtemp(prefix="swarm-upgrade-"))
    os.chmod(root, 0o755)  # Portage verifies as nobody, who must reach the client's keyring
    controller = None
    try:
        overlay = overlay_with_a_second_leaf_script(private / "overlay")
        drone = pfx.create_prefix(pfx.PrefixConfig(private / "drone", pfx.Role.DRONE, repo=overlay))
        built = pfx.run_emerge(drone, "--oneshot", "--buildpkgonly", f"={OLD}", timeout=RUN_TIMEOUT)
        assert built.ok, built.output[-3000:]
        [old] = drone.pkgdir.rglob("leaf-script-1-*.gpkg.tar")
        # The others only have to install and differ: written with the built one's metadata.
        written = write_gpkgs(drone, private / "written", DATA, NEW, template=old)
        gpkgs = {f"swarm-test/{p.name.rsplit('-', 1)[0]}": p for p in (old, *written)}
        ctl = pfx.create_prefix(pfx.PrefixConfig(private / "ctl", pfx.Role.CONTROLLER, repo=overlay))
        controller = InProcessController(local_config(private, portage_eprefix=ctl.root)).start()
        client = pfx.create_prefix(pfx.PrefixConfig(root / "client", pfx.Role.CLIENT, repo=overlay))
        # The packages this machine uses: apply takes them from the release.
        (client.root / "var/lib/portage").mkdir(parents=True, exist_ok=True)
        (client.root / "var/lib/portage/world").write_text("swarm-test/leaf-script\nswarm-test/leaf-data\n")
        w = World(root, controller, drone, client, gpkgs)
        # The loop's default executor at its full size before any test: the public
        # tier reads the files it serves there, and a thread it started under a test
        # would look leaked.
        controller.run(lambda: asyncio.gather(*(asyncio.to_thread(time.sleep, 0.05) for _ in range(64))))
        w.stage(OLD)
        w.stage(DATA)
        w.promote(w.cut("leaf-script 1"))
        w.stage(NEW)
        w.cut("leaf-script 2")  # promoted by the test that applies it
        yield w
    finally:
        if controller is not None:
            controller.stop()
        end_agent(root / "client/etc/portage/gnupg")
        shutil.rmtree(root, ignore_errors=True)


def test_trust_installs_the_release_key_where_and_as_portage_needs_it(world: World) -> None:
    keyring = world.client.config_root / "gnupg"
    config = world.client.root / "etc/swarm-upgrade.conf"
    fingerprint = world.releases.fingerprint()
    spaced = " ".join(fingerprint[i : i + 4] for i in range(0, 40, 4))

    untrusted = world.upgrade("status")
    assert untrusted.returncode == EXIT_UNTRUSTED and "run swarm-upgrade trust URL first" in untrusted.stderr
    wrong = world.upgrade("trust", world.url, "--fingerprint", "0" * 40)
    assert wrong.returncode == EXIT_UNTRUSTED and "not trusted" in wrong.stderr
    assert spaced in wrong.stdout and not config.exists() and not keyring.exists()
    unreachable = world.upgrade("trust", "http://127.0.0.1:9/")
    assert unreachable.returncode == EXIT_UNREACHABLE and "cannot reach the controller" in unreachable.stderr

    done = world.upgrade("trust", world.url, "--fingerprint", spaced)
    assert done.returncode == 0, done.stderr
    assert f"fingerprint: {spaced}" in done.stdout
    assert "nobody:nogroup reads it with full trust" in done.stdout
    # getuto's layout: readable by the user Portage verifies as, the local key's secrets not.
    mode = {
        name: stat.S_IMODE((keyring / name).stat().st_mode) for name in ("pubring.kbx", "trustdb.gpg", "pass")
    }
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o755
    assert mode == {"pubring.kbx": 0o644, "trustdb.gpg": 0o644, "pass": 0o600}
    local = (keyring / "mykeyid").read_text().strip()
    # Fully valid through the local key's signature, not ultimately trusted itself.
    lines = gpg(keyring, "--with-colons", "--check-sigs", fingerprint).decode().splitlines()
    assert next(line for line in lines if line.startswith("pub:")).split(":")[1] == "f"
    assert any(line.startswith("sig:") and local.endswith(line.split(":")[4]) for line in lines)
    assert f'url = "{world.url}"' in config.read_text() and fingerprint in config.read_text()


def test_apply_installs_the_promoted_release_verified_by_portage(world: World) -> None:
    older = world.versions[0]
    before = world.status()  # the newer release is cut, not promoted yet
    assert before["installed"] is None and before["current"] == older and before["exit"] == 0

    done = world.upgrade("apply")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert world.installed() == {OLD, DATA}
    assert (world.client.root / "usr/bin/swarm-script").is_file()
    conf = (world.client.config_root / "binrepos.conf/swarm-upgrade.conf").read_text()
    assert f"sync-uri = {world.url}/binhost/releases/{older}/\n" in conf
    assert "verify-signature = true\n" in conf
    # Portage verified each fetched package before anything was merged.
    out = done.stdout
    assert "good signature by the release key" in out
    assert out.index("Portage verifies the 2 fetched package(s)") < out.index(">>> Emerging binary")
    assert len(re.findall(r"^    ok .*\.gpkg\.tar$", out, re.MULTILINE)) == 2
    after = world.status()
    assert (after["installed"], after["current"], after["drift"], after["exit"]) == (older, older, [], 0)
    # No network set, no mirror: the controller's own binhost is the one entry, and status says so.
    assert after["network"] is None
    assert [(b["name"], b["sync_uri"]) for b in after["binhosts"]] == [
        ("controller", f"{world.url}/binhost/releases/{older}/")
    ]


def resign(world: World, cpv: str, dest: Path) -> None:
    """The drone's unsigned build of ``cpv``, signed with a key nobody trusts, at ``dest``."""
    home = world.root / "mallory"
    with gnupg_home(home):
        key = new_key(home, "Mallory")
        signer = pfx.create_prefix(
            pfx.PrefixConfig(
                world.root / "mallory-prefix",
                pfx.Role.DRONE,
                gnupghome=home,
                signing_gnupghome=home,
                signing_key=key,
            )
        )
        work = world.root / "resigned.gpkg.tar"
        shutil.copyfile(world.built[cpv], work)
        done = subprocess.run(
            [str(Path(sys.executable).parent / "gpkg-sign"), str(work)],
            env=signer.env(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    os.replace(work, dest)


def fix_index(release: Path, path: str) -> None:
    """The release's index entry made true to the file at ``path``, as a tamperer would."""
    data = (release / path).read_bytes()
    sums = {"MD5": hashlib.md5(data), "SHA1": hashlib.sha1(data)}
    blocks = (release / "Packages").read_text().split("\n\n")
    for i, block in enumerate(blocks):
        if f"PATH: {path}\n" in block + "\n":
            for name, digest in sums.items():
                block = re.sub(rf"(?m)^{name}: .*$", f"{name}: {digest.hexdigest()}", block)
            blocks[i] = re.sub(r"(?m)^SIZE: .*$", f"SIZE: {len(data)}", block)
    tmp = release / ".Packages.tampered"
    tmp.write_text("\n\n".join(blocks))
    os.replace(tmp, release / "Packages")


def test_a_tampered_package_and_one_signed_by_another_key_are_refused_leaving_the_client_unchanged(
    world: World,
) -> None:
    newer = world.versions[-1]
    world.promote(newer)
    release = world.release_dir(newer)
    [pkg] = [p for p in world.releases.get(newer).manifest.packages if p.cpv == NEW]
    target, index = release / pkg.path, release / "Packages"
    saved = {target: target.read_bytes(), index: index.read_bytes()}
    unchanged = world.client_files()
    try:
        # One byte flipped, same size: Portage's check against the index refuses it.
        flipped = bytearray(saved[target])
        flipped[len(flipped) // 3] ^= 0xFF
        (release / "flipped").write_bytes(flipped)
        os.replace(release / "flipped", target)  # a new file: staging's hard link stays intact
        done = world.upgrade("apply")
        assert done.returncode == EXIT_FAILED, done.stdout[-3000:]
        assert "Digest verification failed" in done.stdout and "nothing was installed" in done.stderr
        assert world.client_files() == unchanged

        # Signed by another key, the index made to match: Portage's signature check refuses it.
        resign(world, NEW, target)
        assert target.stat().st_size == pkg.size, "re-signing changed the size: the index check would stop it"
        fix_index(release, pkg.path)
        done = world.upgrade("apply")
        assert done.returncode == EXIT_UNTRUSTED, done.stdout[-3000:]
        assert "binpkg signed with at least one unknown key" in done.stdout + done.stderr
        assert re.search(
            r"^    refused .*leaf-script-2-1\.gpkg\.tar: InvalidSignature", done.stdout, re.MULTILINE
        )
        assert "nothing was installed" in done.stderr
        assert world.client_files() == unchanged
        assert world.installed() == {OLD, DATA}
    finally:
        for path, content in saved.items():
            (release / ".restored").write_bytes(content)
            os.replace(release / ".restored", path)


def test_a_manifest_changed_after_signing_is_not_trusted(world: World) -> None:
    newer = world.versions[-1]
    manifest = world.release_dir(newer) / "manifest.json"
    saved = manifest.read_bytes()
    try:
        manifest.write_bytes(saved.replace(b'"leaf-script 2"', b'"leaf-script 3"'))
        done = world.upgrade("verify")
        assert done.returncode == EXIT_UNTRUSTED and "BAD signature" in done.stderr
    finally:
        manifest.write_bytes(saved)
    done = world.upgrade("verify")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "=swarm-test/leaf-script-2" in done.stdout and "[binary" in done.stdout
    conf = (world.client.config_root / "binrepos.conf/swarm-upgrade.conf").read_text()
    assert f"/{world.versions[0]}/" in conf, "verify put binrepos.conf back"


def test_zero_drift_applying_a_newer_release_then_rolling_back(world: World) -> None:
    older, newer = world.versions
    done = world.upgrade("apply")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "swarm-test/leaf-script:0  1 -> 2" in done.stdout
    assert world.installed() == {NEW, DATA}
    status = world.status()
    assert (status["installed"], status["before"], status["drift"], status["exit"]) == (newer, older, [], 0)

    done = world.upgrade("rollback")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "swarm-test/leaf-script:0  2 -> 1" in done.stdout  # a downgrade, to the manifest's version
    assert world.installed() == {OLD, DATA}
    status = world.status()
    assert (status["installed"], status["current"], status["drift"], status["exit"]) == (older, newer, [], 0)
    assert f"/{older}/" in (world.client.config_root / "binrepos.conf/swarm-upgrade.conf").read_text()

    again = world.upgrade("rollback")
    assert again.returncode == EXIT_FAILED and "nothing to roll back to" in again.stderr
