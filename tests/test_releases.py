"""Releases (controller/releases.py, signing.py) cut from a real staging binhost.

Once per module, a real controller process and two real drones build
leaf-data with real emerge (staged unsigned: the release key does not exist
before the first cut) and swarm-test/broken (it fails on both drones: the
session ends with a failed package). Then a controller in this process
serves the same data directory and stages leaf-script as an upload arrives
(a small real gpkg written by Portage's own gpkg code, tools/gpkgs.py: one
real build is enough to prove a build's id and drone reach a manifest), and
the tests call its Releases: real gpg, the real Portage worker, real gpkgs.
Portage itself verifies what a release holds.

The tests run in file order, each from the state the one before left (the
releases cut, promoted and deleted so far); the last ones kill -9 a
controller process in the middle of a cut and of a promote.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import prefix as pfx
import pytest

from swarm.controller.app import StartupError
from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound
from swarm.controller.releases import (
    CRASH_HOOK_ENV,
    VERSION_RE,
    Manifest,
    Promotion,
    Release,
    ReleasePackage,
    Releases,
    Repository,
    current_and_previous,
    manifest_bytes,
    parse_manifest,
)
from swarm.controller.store.records import EventRecord

from support.fleet import builders, start_fleet
from support.gpg import gnupg_home, gpg, new_key, readable_by_nobody, trust, verify_home
from support.gpkgs import write as write_gpkgs
from support.inproc import InProcessController, local_config
from support.procs import Controller, wait_for

pytestmark = pytest.mark.timeout(600)

T = TypeVar("T")
# Staged before the first cut: the first built by a drone, the second written and uploaded.
BUILT = ("swarm-test/leaf-data-1", "swarm-test/leaf-script-1")
BY_DRONE, WRITTEN = BUILT
FAILED = "swarm-test/broken-1"
# Never built by the fleet: written (tools/gpkgs.py), staged by hand once the key exists.
LATE = "swarm-test/leaf-hello-1"
CUT_TIMEOUT = 120.0


@dataclass
class Bench:
    root: Path
    ctl_prefix: pfx.Prefix
    inproc: InProcessController
    session_id: str  # the session the fleet built
    drone: str  # the one that built BY_DRONE
    build_id: str  # BY_DRONE's build
    late_gpkg: Path  # a real gpkg of LATE, written by Portage's gpkg code
    unsigned_before: dict[str, bool]  # staging's packages before the first cut: signed?
    inproc_stopped: bool = False
    # The controller process the kill -9 tests started last, and its flags (crash hook last).
    process: Controller | None = None
    process_args: tuple[str, ...] = ()
    # The next release key (a secret key file) and the public key in use before it.
    next_key: Path | None = None
    next_fingerprint: str = ""
    old_public: bytes = b""

    def stop_inproc(self) -> None:
        if not self.inproc_stopped:
            self.inproc_stopped = True
            self.inproc.stop()

    def end_process(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process = None

    @property
    def releases(self) -> Releases:
        releases = self.inproc.controller.releases
        assert releases is not None
        return releases

    def run(self, work: Callable[[], Awaitable[T]], timeout: float = CUT_TIMEOUT) -> T:
        return self.inproc.run(work, timeout)

    def cut(self, notes: str = "", *, force: bool = False) -> Release:
        return self.run(lambda: self.releases.cut(notes=notes, force=force, by="admin:test"))

    def events(self, kind: str) -> list[EventRecord]:
        """Events of one type since the controller in this process started, oldest first."""
        log = self.inproc.controller.events
        found = self.inproc.call(
            lambda: log.recent(after_id=None, since_ts=None, limit=1000, drone_id=None, types=[kind])
        )
        assert found is not None
        return sorted(found, key=lambda e: e.id)

    @property
    def staging(self) -> Path:
        return self.ctl_prefix.pkgdir


def staged_files(pkgdir: Path) -> dict[str, Path]:
    return {f"swarm-test/{p.parent.name}-1": p for p in pkgdir.rglob("*.gpkg.tar")}


def is_signed(path: Path) -> bool:
    with tarfile.open(path) as tar:
        return any(name.endswith(".sig") for name in tar.getnames())


def index_entries(packages: Path) -> dict[str, dict[str, str]]:
    """A Packages index's entries by CPV."""
    blocks = packages.read_text().split("\n\n")[1:]
    entries = {}
    for block in blocks:
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "CPV" in fields:
            entries[fields["CPV"]] = fields
    return entries


def upload(inproc: InProcessController, build_id: str, cpv: str, gpkg: Path) -> None:
    """``gpkg`` into staging as a drone's upload of build ``build_id`` arrives."""
    staging = inproc.controller.staging
    assert staging is not None
    data = gpkg.read_bytes()
    sha = hashlib.sha256(data).hexdigest()

    async def chunks() -> AsyncIterator[tuple[int, bytes, int]]:
        yield 0, data, zlib.crc32(data)

    inproc.run(lambda: staging.receive(build_id, cpv, gpkg.name, len(data), sha, chunks()), CUT_TIMEOUT)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    root = tmp_path_factory.mktemp("releases")
    fleet = start_fleet(root, builders(2), portage=True)
    try:
        session_id = fleet.queue(f"={BY_DRONE}", f"={FAILED}")["session"]["id"]
        fleet.wait_complete(session_id)
        jobs = fleet.jobs()
        assert {cpv: jobs[cpv]["state"] for cpv in (BY_DRONE, FAILED)} == {BY_DRONE: "done", FAILED: "failed"}
        drone, build_id = jobs[BY_DRONE]["drone"], jobs[BY_DRONE]["build_id"]
    finally:
        fleet.stop()
    assert fleet.controller_prefix is not None
    # Packages the fleet did not build: WRITTEN is uploaded now, LATE by a test.
    written, late = write_gpkgs(fleet.controller_prefix, root / "written", WRITTEN, LATE)
    config = local_config(root, portage_eprefix=fleet.controller_prefix.root)
    inproc = InProcessController(config).start()
    # The loop's default executor at its full size now, before any test: staging's
    # uploads use it, and a thread it starts under a test would look leaked.
    inproc.run(lambda: asyncio.gather(*(asyncio.to_thread(time.sleep, 0.05) for _ in range(64))))
    upload(inproc, "b-written", WRITTEN, written)
    unsigned = {cpv: is_signed(path) for cpv, path in staged_files(fleet.controller_prefix.pkgdir).items()}
    bench = Bench(root, fleet.controller_prefix, inproc, session_id, drone, build_id, late, unsigned)
    try:
        yield bench
    finally:
        bench.end_process()
        bench.stop_inproc()


# -- cut -------------------------------------------------------------------------------


def test_a_cut_is_refused_while_the_last_session_failed_or_lacks_packages_or_runs(bench: Bench) -> None:
    with pytest.raises(FailedPrecondition, match=rf"failed package\(s\): {FAILED}"):
        bench.cut()
    builds = bench.inproc.controller.builds
    assert builds is not None

    # A session of staged packages only is complete at once: the last session is fine now.
    bench.run(lambda: builds.queue([f"={BUILT[0]}"], name="again", by="test"))
    # One that needs a package no drone is there to build runs...
    bench.run(lambda: builds.queue([f"={LATE}"], name="pending", by="test"))
    with pytest.raises(FailedPrecondition, match="session pending is running"):
        bench.cut()
    # ... and once stopped, still lacks it.
    bench.inproc.call(builds.control, "stop", None, "test")
    with pytest.raises(FailedPrecondition, match=rf"staging lacks 1 package\(s\) .*{LATE}"):
        bench.cut()
    bench.run(lambda: builds.queue([f"={BUILT[1]}"], name="clean", by="test"))
    assert not bench.releases.list_all(), "a refused cut left a release behind"
    assert not list(bench.releases.releases_dir.iterdir()), "a refused cut left a partial directory"


def test_the_first_cut_signs_staging_and_hard_links_it_with_a_full_manifest(bench: Bench) -> None:
    assert bench.unsigned_before == dict.fromkeys(BUILT, False), "staged signed before any key existed"
    assert bench.releases.fingerprint() == "", "the key is made by the first cut"
    before = bench.run(
        lambda: bench.inproc.controller.runner.call(bench.inproc.controller.store.list_artifacts)
    )

    release = bench.cut("first")

    day = datetime.now(UTC).strftime("v%Y.%m.%d")
    assert release.version == day and VERSION_RE.match(release.version)
    assert release.standing == "" and release.promoted_at is None
    manifest = release.manifest
    fingerprint = bench.releases.fingerprint()
    assert len(fingerprint) == 40 and manifest.signing_key == fingerprint
    assert [p.cpv for p in manifest.packages] == sorted(BUILT), "the failed package is not released"
    assert manifest.notes == "first" and manifest.package_count == 2
    assert manifest.sessions == (bench.session_id,)
    assert manifest.profile == pfx.default_profile()
    assert manifest.repository.name == "gentoo" and manifest.kernel == ""
    assert manifest.total_size == sum(p.size for p in manifest.packages)

    staging = staged_files(bench.staging)
    directory = bench.releases.releases_dir / release.version
    artifacts = {a.cpv: a for a in before}
    for package in manifest.packages:
        linked, staged = directory / package.path, staging[package.cpv]
        # A hard link to staging's (now signed) file: not one byte copied.
        assert linked.stat().st_ino == staged.stat().st_ino and linked.stat().st_nlink >= 2
        assert is_signed(staged)
        data = linked.read_bytes()
        assert package.sha256 == hashlib.sha256(data).hexdigest() and package.size == len(data)
        assert package.build_id == artifacts[package.cpv].build_id and package.slot == "0"
    # The drone's build, by id and drone; an upload with no build known is named but by no drone.
    by_cpv = {p.cpv: p for p in manifest.packages}
    assert (by_cpv[BY_DRONE].build_id, by_cpv[BY_DRONE].drone) == (bench.build_id, bench.drone)
    assert (by_cpv[WRITTEN].build_id, by_cpv[WRITTEN].drone) == ("b-written", "")

    # Its own index, in Portage's format, true to the files; staging's was re-indexed too.
    index = index_entries(directory / "Packages")
    assert sorted(index) == sorted(BUILT)
    for package in manifest.packages:
        assert package.use == index[package.cpv].get("USE", "") and package.path == index[package.cpv]["PATH"]
    for entry in index.values():
        path = directory / entry["PATH"]
        assert int(entry["SIZE"]) == path.stat().st_size
        assert entry["SHA1"] == hashlib.sha1(path.read_bytes()).hexdigest()
    staging_index = index_entries(bench.staging / "Packages")
    for cpv in BUILT:
        assert staging_index[cpv]["SHA1"] == index[cpv]["SHA1"], (
            "staging's index still lists the unsigned file"
        )

    saved = json.loads((directory / "manifest.json").read_text())
    assert saved["format"] == 1 and saved["version"] == release.version and saved["package_count"] == 2
    assert {p["cpv"]: p["build_id"] for p in saved["packages"]} == {
        p.cpv: p.build_id for p in manifest.packages
    }
    # The manifest's signature verifies with the published key, and only for these bytes.
    public = (bench.releases.root / "key.asc").read_bytes()
    assert public.decode() == bench.releases.public_key() and b"BEGIN PGP PUBLIC KEY" in public
    assert oct((bench.releases.root / "gnupg").stat().st_mode & 0o777) == "0o700"
    with gnupg_home(bench.root / "check-manifest") as home:
        trust(home, public)
        gpg(home, "--verify", str(directory / "manifest.json.asc"), str(directory / "manifest.json"))
        tampered = bench.root / "manifest-tampered.json"
        tampered.write_bytes((directory / "manifest.json").read_bytes().replace(b'"first"', b'"fir5t"'))
        with pytest.raises(subprocess.CalledProcessError):
            gpg(home, "--verify", str(directory / "manifest.json.asc"), str(tampered))
    [event] = bench.events("release_cut")
    assert event.data["version"] == release.version and event.data["by"] == "admin:test"


def test_a_package_staged_once_the_key_exists_is_signed_as_it_is_staged(bench: Bench) -> None:
    assert not is_signed(bench.late_gpkg)
    upload(bench.inproc, "b-late", LATE, bench.late_gpkg)
    staged = staged_files(bench.staging)[LATE]
    assert is_signed(staged)
    entry = index_entries(bench.staging / "Packages")[LATE]
    assert entry["SHA1"] == hashlib.sha1(staged.read_bytes()).hexdigest()
    [event] = [e for e in bench.events("package_staged") if e.data["cpv"] == LATE]
    assert event.data["build_id"] == "b-late"


# -- Portage verifies ----------------------------------------------------------------------


VERIFY = """
import sys
import portage
from portage.gpkg import gpkg
try:
    gpkg(settings=portage.settings, gpkg_file=sys.argv[1]).decompress(sys.argv[2])
except Exception as exc:
    print(type(exc).__name__, exc)
    sys.exit(1)
"""


def portage_verifies(client: pfx.Prefix, package: Path, scratch: Path) -> tuple[bool, str]:
    """Whether Portage, with binpkg-request-signature in the client's prefix, accepts the package."""
    scratch.mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", VERIFY, str(package), str(scratch)],
        env=client.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_portage_accepts_a_released_package_and_refuses_a_changed_or_foreign_one(bench: Bench) -> None:
    version = bench.releases.list_all()[0].version
    directory = bench.releases.releases_dir / version
    good = directory / bench.releases.get(version).manifest.packages[0].path
    with verify_home() as trusted, gnupg_home(bench.root / "foreign") as foreign:
        trust(trusted, bench.releases.public_key().encode())
        readable_by_nobody(trusted)
        client = pfx.create_prefix(
            pfx.PrefixConfig(
                bench.root / "client",
                pfx.Role.CLIENT,
                binhost="http://127.0.0.1:1/",
                gnupghome=trusted,
                make_conf={"FEATURES": "binpkg-request-signature"},
            )
        )
        ok, output = portage_verifies(client, good, bench.root / "unpack-good")
        assert ok, output

        # One byte of the image changed (same size): its signature no longer matches.
        flipped = bench.root / "flipped.gpkg.tar"
        shutil.copyfile(good, flipped)
        with tarfile.open(flipped) as tar:
            image = next(m for m in tar.getmembers() if m.name.endswith("image.tar.zst"))
        with open(flipped, "r+b") as fh:
            fh.seek(image.offset_data + image.size // 2)
            byte = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte[0] ^ 0xFF]))
        ok, output = portage_verifies(client, flipped, bench.root / "unpack-flipped")
        assert not ok and ("DigestException" in output or "InvalidSignature" in output), output

        # Signed again with another key, through Portage's own gpkg-sign.
        fingerprint = new_key(foreign, "Someone Else")
        other = pfx.create_prefix(
            pfx.PrefixConfig(
                bench.root / "other-signer",
                pfx.Role.DRONE,
                gnupghome=foreign,
                signing_gnupghome=foreign,
                signing_key=fingerprint,
                make_conf={"GPG_VERIFY_USER_DROP": "", "GPG_VERIFY_GROUP_DROP": ""},
            )
        )
        resigned = bench.root / "resigned.gpkg.tar"
        unsigned = bench.root / "unsigned.gpkg.tar"
        shutil.copyfile(bench.late_gpkg, unsigned)  # the drone's own: never signed
        shutil.copyfile(unsigned, resigned)
        signed = subprocess.run(
            [sys.executable, str(pfx.find_tool("gpkg-sign")), str(resigned)],
            env=other.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert signed.returncode == 0 and is_signed(resigned), signed.stdout + signed.stderr
        ok, output = portage_verifies(client, resigned, bench.root / "unpack-foreign")
        assert not ok and "Signature" in output, output
        ok, output = portage_verifies(client, unsigned, bench.root / "unpack-unsigned")
        assert not ok and "Signature" in output, output


# -- nothing changed, promote, rollback ----------------------------------------------------


def test_a_cut_with_nothing_changed_is_refused_unless_forced(bench: Bench) -> None:
    first = bench.releases.list_all()[0]
    # LATE entered staging since: this cut has it.
    second = bench.cut("with hello")
    assert second.version == f"{first.version}-1"
    diff = bench.releases.diff(first.version, second.version)
    assert [p.cpv for p in diff.added] == [LATE] and not diff.removed and not diff.changed
    # Its upload's build id, though no build record exists for it (it came by hand).
    assert [(p.build_id, p.drone) for p in diff.added] == [("b-late", "")]
    with pytest.raises(FailedPrecondition, match=f"nothing changed since {second.version}"):
        bench.cut()
    forced = bench.cut("again", force=True)
    assert forced.version == f"{first.version}-2"
    assert {p.cpv for p in forced.manifest.packages} == {p.cpv for p in second.manifest.packages}
    assert [r.version for r in bench.releases.list_all()] == [forced.version, second.version, first.version]


def test_promote_and_rollback_move_current_and_previous(bench: Bench) -> None:
    releases = bench.releases
    newest, middle, oldest = (r.version for r in releases.list_all())
    root = releases.root

    def link(name: str) -> str | None:
        return os.readlink(root / name) if (root / name).is_symlink() else None

    assert releases.current() is None and link("current") is None
    promoted = bench.run(lambda: releases.promote(oldest, by="admin:test"))
    assert promoted.standing == "current" and promoted.promoted_at is not None
    assert link("current") == f"releases/{oldest}" and link("previous") is None
    with pytest.raises(FailedPrecondition, match="current release already"):
        bench.run(lambda: releases.promote(oldest, by="admin:test"))

    bench.run(lambda: releases.promote(middle, by="admin:test"))
    bench.run(lambda: releases.promote(newest, by="schedule", action="auto-promote"))
    assert (releases.current(), releases.previous()) == (newest, middle)
    assert (link("current"), link("previous")) == (f"releases/{newest}", f"releases/{middle}")
    assert (root / "current" / "Packages").is_file()

    with pytest.raises(FailedPrecondition, match="not the current release"):
        bench.run(lambda: releases.rollback(middle, by="admin:test"))
    back = bench.run(lambda: releases.rollback(newest, by="admin:test"))
    assert back.version == middle and back.standing == "current"
    assert (releases.current(), releases.previous()) == (middle, oldest)
    assert (link("current"), link("previous")) == (f"releases/{middle}", f"releases/{oldest}")
    assert [r.standing for r in releases.list_all()] == ["", "current", "previous"]

    saved = json.loads((root / "promotions.json").read_text())
    assert [(p["version"], p["action"], p["by"]) for p in saved] == [
        (oldest, "promote", "admin:test"),
        (middle, "promote", "admin:test"),
        (newest, "auto-promote", "schedule"),
        (middle, "rollback", "admin:test"),
    ]
    assert [(p.version, p.action) for p in releases.promotions()] == [
        (p["version"], p["action"]) for p in saved
    ]
    promoted_events = bench.events("release_promoted")
    assert [e.data["version"] for e in promoted_events] == [
        oldest,
        middle,
        newest,
    ]
    [rolled] = bench.events("release_rolled_back")
    assert rolled.data == {"version": middle, "rolled_back": newest, "by": "admin:test"}

    with pytest.raises(InvalidArgument):
        bench.run(lambda: releases.promote("v2026.1.1", by="admin:test"))
    with pytest.raises(NotFound):
        bench.run(lambda: releases.promote("v1999.01.01", by="admin:test"))
    with pytest.raises(InvalidArgument):
        bench.run(lambda: releases.promote(newest, by="admin:test", action="sideways"))


def test_delete_and_prune_never_touch_current_or_previous(bench: Bench) -> None:
    releases = bench.releases
    current, previous = releases.current(), releases.previous()
    assert current and previous
    for version in (current, previous):
        with pytest.raises(FailedPrecondition, match="promote another one before deleting"):
            bench.run(functools.partial(releases.delete, version, by="admin:test"))
    spare = next(r.version for r in releases.list_all() if r.standing == "")
    bench.run(lambda: releases.delete(spare, by="admin:test"))
    assert spare not in [r.version for r in releases.list_all()]
    assert not (releases.releases_dir / spare).exists()
    with pytest.raises(NotFound):
        releases.get(spare)

    extra = [bench.cut(f"extra {i}", force=True).version for i in range(2)]
    assert spare not in extra, "a deleted release's name is never given again"
    assert (releases.root / "versions").read_text().split() == sorted(
        {r.version for r in releases.list_all()} | {spare},
        key=lambda v: (v.partition("-")[0], int(v.partition("-")[2] or 0)),
    )
    pruned = bench.run(lambda: releases.prune(1, by="admin:test"))
    # Newest first: the newest stays as the one kept; current and previous always stay.
    assert pruned == [extra[0]]
    assert {r.version for r in releases.list_all()} == {extra[1], current, previous}
    [event] = bench.events("release_pruned")
    assert event.data["versions"] == [extra[0]] and event.data["by"] == "admin:test"
    [deleted] = bench.events("release_deleted")
    assert deleted.data == {"version": spare, "by": "admin:test"}
    again = bench.cut("after the prune", force=True)
    assert again.version not in (spare, extra[0]), "a pruned release's name is never given again"
    # Staging keeps its files: a release's links were only links.
    assert set(staged_files(bench.staging)) == {*BUILT, LATE}


def test_releases_on_another_filesystem_than_staging_refuse_to_cut_and_say_why(
    bench: Bench, small_disk: Path, tmp_path: Path
) -> None:
    config = local_config(
        tmp_path, portage_eprefix=bench.ctl_prefix.root, releases_dir=small_disk / "releases"
    )
    ctl = InProcessController(config).start()  # builds go on all the same
    try:
        releases = ctl.controller.releases
        assert releases is not None
        with pytest.raises(FailedPrecondition, match="not on the filesystem of the staging binhost"):
            ctl.run(lambda: releases.cut(notes="", force=True, by="admin:test"))
        assert not list((small_disk / "releases" / "releases").iterdir())
    finally:
        ctl.stop()


def test_a_release_key_given_is_imported_and_one_without_a_secret_is_refused(
    bench: Bench, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Not the test's own tmp_path: gpg-agent's socket path in it would be too long.
    tmp_path = tmp_path_factory.mktemp("key")
    with gnupg_home(tmp_path / "own-key") as home:
        fingerprint = new_key(home, "Our Own Release Key")
        secret = tmp_path / "release.key"
        secret.write_bytes(gpg(home, "--armor", "--export-secret-keys", fingerprint))
        public_only = tmp_path / "public.asc"
        public_only.write_bytes(gpg(home, "--armor", "--export", fingerprint))

    def start(key: Path, data: str) -> InProcessController:
        config = local_config(tmp_path / data, portage_eprefix=bench.ctl_prefix.root, release_key=key)
        return InProcessController(config).start()

    with pytest.raises(StartupError, match="holds no secret key"):
        start(public_only, "public-only")
    ctl = start(secret, "imported")
    try:
        releases = ctl.controller.releases
        assert releases is not None
        # In use from the start (no cut needed), published, and trusted enough to sign.
        assert releases.fingerprint() == fingerprint
        assert (releases.root / "key.asc").read_text() == releases.public_key()
        with gnupg_home(tmp_path / "check") as check:
            assert trust(check, releases.public_key().encode()) == fingerprint
        signature = ctl.run(lambda: asyncio.to_thread(releases.key.sign, b"data"))
        assert b"BEGIN PGP SIGNATURE" in signature
    finally:
        ctl.stop()


def test_current_and_previous_follow_promotes_and_rollbacks_past_deleted_releases() -> None:
    def replay(*steps: str, gone: frozenset[str] = frozenset()) -> tuple[str | None, str | None]:
        promotions = [
            Promotion(step.lstrip("<"), "rollback" if step.startswith("<") else "promote", float(i), "test")
            for i, step in enumerate(steps)
        ]
        return current_and_previous(promotions, lambda v: v not in gone)

    a, b, c = "v2026.01.01", "v2026.01.02", "v2026.01.03"
    assert replay() == (None, None)
    assert replay(a) == (a, None)
    assert replay(a, b, c) == (c, b)
    assert replay(a, b, c, "<" + b) == (b, a), "a rollback steps back to the release promoted before"
    assert replay(a, b, c, "<" + b, "<" + a) == (a, None)
    assert replay(a, b, a) == (a, b) and replay(a, b, a, "<" + b) == (b, a)
    assert replay(a, b, c, gone=frozenset({b})) == (c, a), "previous passes over a deleted release"


def test_a_manifest_reads_back_as_written_and_anything_else_is_refused() -> None:
    package = ReleasePackage("cat/p-1", "0", "cat/p/p-1-1.gpkg.tar", "b-1", "builder-0", "ab" * 32, 10, "ssl")
    manifest = Manifest(
        "v2026.12.05",
        1.5,
        "notes",
        ("s-1",),
        "swarm/amd64",
        Repository("gentoo", "abc", None),
        "",
        (package,),
        10,
        "F" * 40,
    )
    data = manifest_bytes(manifest)
    assert parse_manifest(data) == manifest
    assert json.loads(data)["package_count"] == 1
    for bad in (
        b"[]",
        b"{",
        data.replace(b'"format": 1', b'"format": 2'),
        data.replace(b'"sessions"', b'"x"'),
    ):
        with pytest.raises(ValueError):
            parse_manifest(bad)


# -- kill -9 in the middle ---------------------------------------------------------------------


def controller_process(bench: Bench, *args: str, crash_in: str = "") -> Controller:
    """A controller process on the module's data, that kills itself (SIGKILL) in the middle of
    its next ``crash_in`` ("cut" or "promote": releases.CRASH_HOOK_ENV). The controller in this
    process stops first and the process started before is killed; the module's end kills this one.
    Each process serves the next test too where it can: a controller start is CPU."""
    bench.stop_inproc()
    bench.end_process()
    env = {CRASH_HOOK_ENV: crash_in} if crash_in else {}
    ctl = Controller(bench.root, "--portage-eprefix", str(bench.ctl_prefix.root), *args, env=env)
    bench.process, bench.process_args = ctl, (*args, crash_in)
    ctl.start()
    return ctl


def next_release_key(bench: Bench, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A secret key file for the next release key, made once; the key in use before it is
    kept in bench.old_public."""
    if bench.next_key is None:
        bench.old_public = (bench.releases.root / "key.asc").read_bytes()
        short = tmp_path_factory.mktemp("newkey")  # gpg-agent's socket path must stay short
        with gnupg_home(short / "home") as home:
            bench.next_fingerprint = new_key(home, "The Next Release Key")
            bench.next_key = short / "release.key"
            bench.next_key.write_bytes(gpg(home, "--armor", "--export-secret-keys", bench.next_fingerprint))
    return bench.next_key


def running(bench: Bench, *args: str, crash_in: str = "") -> Controller | None:
    """The controller process a test before this one left running with these flags, if any."""
    ctl = bench.process
    if ctl is not None and ctl.alive() and bench.process_args == (*args, crash_in):
        return ctl
    return None


def killed_by(ctl: Controller, method: str, path: str, body: dict[str, Any]) -> None:
    """Ask for a change the controller dies in the middle of; wait until it is dead."""
    with contextlib.suppress(OSError, http.client.HTTPException):
        status, answer = ctl.admin(method, path, json.dumps(body).encode())
        raise AssertionError(f"{method} {path} answered {status} {answer}: the controller did not die")
    wait_for(lambda: not ctl.alive(), what="the controller killed by its crash hook")
    assert ctl.popen is not None and ctl.popen.returncode == -signal.SIGKILL
    ctl.kill()  # its gpg-agent


def listing(ctl: Controller) -> dict[str, Any]:
    status, body = ctl.admin("GET", "/admin/api/releases")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def test_a_controller_killed_mid_cut_leaves_no_release_and_no_partial(bench: Bench) -> None:
    known = sorted(r.version for r in bench.releases.list_all())
    releases_dir = bench.releases.releases_dir
    ctl = controller_process(bench, crash_in="cut")
    killed_by(ctl, "POST", "/admin/api/releases", {"notes": "never", "force": True})
    # It died with the release complete but not yet renamed into place.
    [partial] = [p for p in releases_dir.iterdir() if p.name.endswith(".partial")]
    assert (partial / "manifest.json.asc").is_file()
    assert sorted(p.name for p in releases_dir.iterdir() if not p.name.startswith(".")) == known

    # Restarted (set to die mid-promote: the next test's).
    ctl = controller_process(bench, crash_in="promote")
    assert not partial.exists(), "the restarted controller kept the partial cut"
    assert sorted(r["version"] for r in listing(ctl)["releases"]) == known
    # And it cuts again, under a new name: the crashed cut's was recorded as used.
    crashed = partial.name.removeprefix(".").removesuffix(".partial")
    status, cut = ctl.admin("POST", "/admin/api/releases", json.dumps({"force": True}).encode())
    assert status == 201, cut
    assert cut["version"] not in (*known, crashed)


def test_a_controller_killed_mid_promote_keeps_a_current_release(
    bench: Bench, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = bench.releases.root
    before = os.readlink(root / "current")
    ctl = running(bench, crash_in="promote") or controller_process(bench, crash_in="promote")
    body = listing(ctl)
    target = next(r["version"] for r in body["releases"] if not r["current"] and not r["previous"])
    old = body["current"]
    assert before == f"releases/{old}"
    killed_by(ctl, "POST", f"/admin/api/releases/{target}/promote", {})
    # Killed between the two links: current still names the old release, whole.
    assert os.readlink(root / "current") == f"releases/{old}"
    assert (root / "current" / "Packages").is_file()
    assert json.loads((root / "promotions.json").read_text())[-1]["version"] == target

    # Restarted (with the next test's new release key: the links do not depend on it).
    ctl = controller_process(bench, "--release-key", str(next_release_key(bench, tmp_path_factory)))
    body = listing(ctl)
    assert (body["current"], body["previous"]) == (target, old)
    assert os.readlink(root / "current") == f"releases/{target}"
    assert os.readlink(root / "previous") == f"releases/{old}"
    assert (root / "current" / "manifest.json").is_file()


def test_a_new_release_key_re_signs_staging_at_the_next_cut(
    bench: Bench, tmp_path_factory: pytest.TempPathFactory
) -> None:
    key_file = next_release_key(bench, tmp_path_factory)
    flags = ("--release-key", str(key_file))
    ctl = running(bench, *flags) or controller_process(bench, *flags)
    status, cut = ctl.admin("POST", "/admin/api/releases", json.dumps({"force": True}).encode())
    assert status == 201, cut
    status, shown = ctl.admin("GET", f"/admin/api/releases/{cut['version']}")
    assert status == 200 and shown["signing_key"] == bench.next_fingerprint, shown
    assert (bench.releases.root / "staging-signed-by").read_text().strip() == bench.next_fingerprint
    package = bench.releases.releases_dir / cut["version"] / shown["packages"][0]["path"]
    with verify_home() as new, verify_home() as old:
        trust(new, (bench.releases.root / "key.asc").read_bytes())
        trust(old, bench.old_public)
        for which, home in (("new", new), ("old", old)):
            readable_by_nobody(home)
            client = pfx.create_prefix(
                pfx.PrefixConfig(
                    bench.root / f"client-{which}-key",
                    pfx.Role.CLIENT,
                    binhost="http://127.0.0.1:1/",
                    gnupghome=home,
                    make_conf={"FEATURES": "binpkg-request-signature"},
                )
            )
            ok, output = portage_verifies(client, package, bench.root / f"unpack-{which}-key")
            assert ok == (which == "new"), output
