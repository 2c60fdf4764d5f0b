"""Releases: dated, immutable, signed snapshots of the staging binhost.

This module is the contract the web tier, swarm-cli, the console, the
release schedule and swarm-upgrade are written against. Layout on disk
(``ControllerConfig.releases_dir``, on the same filesystem as staging so
that a cut hard-links instead of copying)::

    <releases_dir>/
      releases/v2026.12.05/          one release, never changed once here
        Packages                     its own Portage index
        manifest.json                see Manifest below
        manifest.json.asc            detached armored signature of manifest.json
        <cat>/<pn>/<file>.gpkg.tar   hard links to staging's signed gpkgs
      releases/.v2026.12.05.partial/ a cut in progress; removed at start
      current -> releases/vX         symlink, replaced by rename (atomic)
      previous -> releases/vY        symlink, replaced by rename (atomic)
      promotions.json                every promote and rollback, oldest first
      versions                       every version ever cut, one a line (never reused)
      staging-signed-by              the key staging's packages are signed with
      gnupg/                         the release key's GnuPG home (0700)
      key.asc                        its public half, armored

Served read-only on the public tier: ``/binhost/releases/{v}/``,
``/binhost/current/``, ``/releases.json``, ``/releases/key.asc``,
``/api/v1/releases[/{v}]`` and ``/api/v1/releases/{a}/diff/{b}``.

A cut first signs, in staging, whatever is still unsigned there (packages
are signed as they are staged once the key exists; see signing.py and
portage_worker.py), then links the newest package of each slot into
``.vX.partial`` with its own Packages index (Portage's code writes it),
writes and signs the manifest, and renames the directory into place: a
crash leaves only a partial directory, which ``start`` removes. The
release's files are hard links to staging's: nothing is copied, and
staging never writes a file in place (Portage replaces files by rename),
so a release never changes.

promotions.json is the record of what was promoted: ``current`` is the
release of its last entry, ``previous`` the one current before it (a
rollback steps back one). It is written before the links, so that after
a crash between the two ``start`` sets the links from it; each link is
replaced by rename, so it names the old release or the new one, never
none.

Memory holds every manifest and the promotions, so that the read methods
answer without touching the disk; every file operation runs in one thread
of the Releases' own.

Test-only hook: with SWARM_TEST_CRASH_IN_RELEASE=cut in its environment
the controller kills itself (SIGKILL) when a cut's partial directory is
complete and before it is renamed into place; with =promote, after
promotions.json and ``previous`` are written and before ``current`` is
(tests/test_releases.py). Never set it in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, cast

from swarm.clock import SYSTEM, Clock
from swarm.controller import releasefiles as disk
from swarm.controller.builds import PAUSED, RUNNING, Session
from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound, SwarmError
from swarm.controller.events import EventLog
from swarm.controller.portage import IndexEntry, PortageWorker, Signing
from swarm.controller.scheduler import FAILED, Job
from swarm.controller.signing import ReleaseKey
from swarm.controller.staging import StagingBinhost
from swarm.controller.store.runner import StoreRunner
from swarm.files import fsync_dir, sha256_file, write_atomic

log = logging.getLogger(__name__)
T = TypeVar("T")

# vYYYY.MM.DD, then vYYYY.MM.DD-1, -2 ... for more on one day (in releasefiles,
# which reads the links with it; named here for the callers of this module).
VERSION_RE = disk.VERSION_RE
MANIFEST_FORMAT = 1
NOTES_MAX = 10_000
KEEP_DEFAULT = 10
# Test-only (see the module docstring).
CRASH_HOOK_ENV = "SWARM_TEST_CRASH_IN_RELEASE"
PROMOTE_ACTIONS = ("promote", "auto-promote")
# Every version ever cut, one a line: a name is never given to other contents.
VERSIONS = "versions"
# The fingerprint of the key staging's packages are signed with.
SIGNED_BY = "staging-signed-by"
# Packages whose version a manifest names as its kernel.
KERNEL_SUFFIXES = ("-kernel", "-kernel-bin", "-sources")

Standing = Literal["current", "previous", ""]


@dataclass(frozen=True, slots=True)
class ReleasePackage:
    cpv: str  # category/package-version, as Portage writes it
    slot: str  # SLOT from the index ("0" when the index has none)
    path: str  # relative to the release directory, as in its Packages index
    build_id: str  # the swarm build that produced it ("" if staged before records)
    drone: str  # name of the drone that built it ("" when unknown)
    sha256: str
    size: int
    use: str  # USE as in the index: space-separated enabled flags


@dataclass(frozen=True, slots=True)
class Repository:
    name: str
    revision: str  # git commit of the tree, "" when it is not a git checkout
    snapshot_time: float | None  # metadata/timestamp.chk, seconds since the epoch


@dataclass(frozen=True, slots=True)
class Manifest:
    """manifest.json, field for field (plus ``format``: MANIFEST_FORMAT)."""

    version: str
    created_at: float  # seconds since the epoch
    notes: str
    sessions: tuple[str, ...]  # ids of the build sessions its packages came from
    profile: str  # the controller prefix's Portage profile
    repository: Repository
    kernel: str  # cpv of the kernel package when there is one, else ""
    packages: tuple[ReleasePackage, ...]  # sorted by cpv
    total_size: int
    signing_key: str  # fingerprint of the key that signed the gpkgs and this manifest

    @property
    def package_count(self) -> int:
        return len(self.packages)


@dataclass(frozen=True, slots=True)
class Release:
    manifest: Manifest
    standing: Standing  # "current", "previous" or ""
    promoted_at: float | None  # the last time it was promoted, if ever

    @property
    def version(self) -> str:
        return self.manifest.version


@dataclass(frozen=True, slots=True)
class Promotion:
    """One line of promotions.json."""

    version: str
    action: Literal["promote", "rollback", "auto-promote"]
    at: float
    by: str  # who: an admin ("admin:NAME"), "schedule", ...


@dataclass(frozen=True, slots=True)
class PackageChange:
    before: ReleasePackage
    after: ReleasePackage


@dataclass(frozen=True, slots=True)
class ReleaseDiff:
    """Packages keyed by category/name and slot."""

    older: str
    newer: str
    added: tuple[ReleasePackage, ...]
    removed: tuple[ReleasePackage, ...]
    changed: tuple[PackageChange, ...]  # another version, or the same one rebuilt


class SessionView(Protocol):
    """What a cut asks of the build queue (builds.BuildQueue)."""

    def current_session(self) -> Session | None: ...

    def latest_session(self) -> Session | None: ...

    def session_jobs(self, session: Session) -> list[Job]: ...


class Releases:
    """Cuts, lists, promotes, rolls back and prunes releases.

    Every failure a caller can act on raises a ``swarm.controller.errors``
    class with the reason: FailedPrecondition (409) for a refused cut,
    promote, rollback or delete; NotFound (404) for an unknown version;
    InvalidArgument (400) for a malformed one. Each action is an event
    (release_cut, release_promoted, release_rolled_back, release_deleted,
    release_pruned) naming who did it.
    """

    def __init__(
        self,
        root: Path,
        *,
        staging: StagingBinhost,
        worker: PortageWorker,
        runner: StoreRunner,
        events: EventLog,
        sessions: SessionView | None = None,
        drone_names: Callable[[], dict[str, str]] = dict,
        keep: int = KEEP_DEFAULT,
        key_file: Path | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.root = root
        self.releases_dir = root / disk.RELEASES
        self._staging = staging
        self._worker = worker
        self._runner = runner
        self._events = events
        self._sessions = sessions
        self._drone_names = drone_names
        self.keep = keep
        self._clock = clock
        self.key = ReleaseKey(root, key_file)
        self._manifests: dict[str, Manifest] = {}
        self._promotions: list[Promotion] = []
        self._current: str | None = None
        self._previous: str | None = None
        self._lock = asyncio.Lock()
        # One thread for every file operation: they run one at a time, in order.
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="releases")
        self._stopped = False
        self._unusable = ""  # why no cut can be made here, if none can
        self._cut_before: set[str] = set()  # every version ever cut here (VERSIONS)
        self._listeners: list[Callable[[str | None], None]] = []

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Remove partial cuts left by a crash, repair a dangling link, load
        or create the release key.

        (The key is imported here when a key file is given, else loaded if
        one was made before; the first cut makes it otherwise.)"""
        await self._disk_work(self._load)
        if self.key.fingerprint:
            self._worker.signing = Signing(self.key.home, self.key.fingerprint)
        log.info(
            "releases in %s: %d, current %s, key %s",
            self.releases_dir,
            len(self._manifests),
            self._current or "none",
            self.key.fingerprint or "none yet (made at the first cut)",
        )

    def _load(self) -> None:
        self.releases_dir.mkdir(parents=True, exist_ok=True)
        staging = self._staging.pkgdir
        staging.mkdir(parents=True, exist_ok=True)
        if os.stat(self.releases_dir).st_dev != os.stat(staging).st_dev:
            # Builds go on; a cut says why it cannot be.
            self._unusable = (
                f"the releases directory {self.root} is not on the filesystem of the staging "
                f"binhost {staging}: a release hard-links staging's packages; set --releases-dir "
                "to a directory on that filesystem"
            )
            log.error("no release can be cut: %s", self._unusable)
        for name in disk.remove_leftovers(self.releases_dir):
            log.warning("removed %s, left by a cut or delete that did not finish", name)
        self.key.load()
        self._manifests = load_manifests(self.releases_dir)
        with contextlib.suppress(FileNotFoundError):
            self._cut_before = set((self.root / VERSIONS).read_text().split())
        try:
            self._promotions = read_promotions(self.root / disk.PROMOTIONS)
        except ValueError as exc:
            raise FailedPrecondition(str(exc)) from None
        self._current, self._previous = current_and_previous(self._promotions, self._manifests.__contains__)
        self._fix_links()

    def _fix_links(self) -> None:
        for name, version in (("previous", self._previous), ("current", self._current)):
            found = disk.read_link(self.root, name)
            if found != version or (version is not None and not (self.root / name).is_dir()):
                log.warning("link %s named %s; set to %s from promotions.json", name, found, version)
                disk.set_link(self.root, name, version)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self._disk_work(self.key.close)
        self._disk.shutdown(wait=True)  # idle by now: returns at once

    async def _disk_work(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._disk, functools.partial(fn, *args))

    def add_listener(self, callback: Callable[[str | None], None]) -> Callable[[], None]:
        """Call ``callback(current)`` after every promote and rollback (the
        mirror pusher); returns the function that removes it. It must not block."""
        self._listeners.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return remove

    # -- reading (from memory) ----------------------------------------------------

    def _release(self, manifest: Manifest) -> Release:
        version = manifest.version
        standing: Standing = (
            "current" if version == self._current else "previous" if version == self._previous else ""
        )
        # A rollback to it counts: it became current then.
        promoted = [p.at for p in self._promotions if p.version == version]
        return Release(manifest, standing, max(promoted) if promoted else None)

    def list_all(self) -> list[Release]:
        """Newest first."""
        ordered = sorted(self._manifests.values(), key=_age, reverse=True)
        return [self._release(m) for m in ordered]

    def get(self, version: str) -> Release:
        return self._release(self._manifest(version))

    def _manifest(self, version: str) -> Manifest:
        if not VERSION_RE.match(version):
            raise InvalidArgument(f"not a release version: {version[:40]!r} (vYYYY.MM.DD or vYYYY.MM.DD-N)")
        manifest = self._manifests.get(version)
        if manifest is None:
            raise NotFound(f"no release {version}")
        return manifest

    def current(self) -> str | None:
        return self._current

    def previous(self) -> str | None:
        return self._previous

    def promotions(self) -> list[Promotion]:
        return list(self._promotions)

    def diff(self, older: str, newer: str) -> ReleaseDiff:
        return diff_manifests(self._manifest(older), self._manifest(newer))

    def public_key(self) -> str:
        """The release key, armored (what /releases/key.asc serves); "" until
        the first cut makes it (unless one was imported)."""
        return self.key.public_key

    def fingerprint(self) -> str:
        return self.key.fingerprint

    def path(self, version: str) -> Path:
        """The directory of a release (NotFound if there is none)."""
        return self.releases_dir / self._manifest(version).version

    # -- cut ------------------------------------------------------------------------

    async def cut(self, *, notes: str, force: bool, by: str) -> Release:
        """Snapshot staging into the next version of today.

        Refused (FailedPrecondition) while a session runs, when the last
        session needed a package staging lacks or that failed, and when
        nothing changed since the newest release unless ``force``.
        """
        if len(notes) > NOTES_MAX:
            raise InvalidArgument(f"notes are limited to {NOTES_MAX} characters")
        async with self._lock:
            if self._unusable:
                raise FailedPrecondition(self._unusable)
            self._check_sessions()
            if not self.key.fingerprint:
                await self._disk_work(self.key.ensure)
                self._worker.signing = Signing(self.key.home, self.key.fingerprint)
            await self._sign_staging()
            version = await self._disk_work(self._next_version)
            partial = self.releases_dir / f".{version}{disk.PARTIAL_SUFFIX}"
            await self._disk_work(_fresh_dir, partial)
            try:
                manifest = await self._build(version, partial, notes=notes, force=force)
            except BaseException:
                await self._disk_work(shutil.rmtree, partial, True)
                raise
            self._manifests[version] = manifest
            self._events.emit(
                "release_cut",
                f"release {version} cut by {by}: {manifest.package_count} packages, "
                f"{manifest.total_size} bytes",
                version=version,
                by=by,
                packages=manifest.package_count,
                total_size=manifest.total_size,
                forced=force,
            )
            try:
                await self._prune(self.keep, by=by)
            except OSError as exc:  # the release is made all the same
                log.error("could not prune old releases after cutting %s: %s", version, exc)
            return self._release(manifest)

    async def _sign_staging(self) -> None:
        """Sign what staging holds unsigned; all of it when the key changed."""
        fingerprint = self.key.fingerprint
        marker = self.root / SIGNED_BY
        before = await self._disk_work(_read_text, marker)
        resign = bool(before) and before != fingerprint
        signed = await self._worker.sign_staged(resign=resign)
        if resign:
            log.warning(
                "staging was signed with %s: re-signed %d package(s) with %s",
                before,
                len(signed),
                fingerprint,
            )
        elif signed:
            log.info("signed %d package(s) staged before the release key existed", len(signed))
        if before != fingerprint:
            await self._disk_work(write_atomic, marker, f"{fingerprint}\n".encode())

    def _check_sessions(self) -> None:
        sessions = self._sessions
        if sessions is None:
            return
        running = sessions.current_session()
        if running is not None and running.state in (RUNNING, PAUSED):
            raise FailedPrecondition(
                f"session {running.name} is {running.state}: cut a release once it is complete"
            )
        last = sessions.latest_session()
        if last is None:
            return
        jobs = sessions.session_jobs(last)
        failed = sorted(j.cpv for j in jobs if j.state == FAILED)
        if failed:
            raise FailedPrecondition(
                f"the last session ({last.name}) has {len(failed)} failed package(s): {_some(failed)}"
            )
        missing = sorted(j.cpv for j in jobs if not self._staging.has(j.cpv))
        if missing:
            raise FailedPrecondition(
                f"staging lacks {len(missing)} package(s) the last session ({last.name}) "
                f"needed: {_some(missing)}"
            )

    def _next_version(self) -> str:
        day = datetime.fromtimestamp(self._clock.time(), UTC).strftime("v%Y.%m.%d")
        # A name is never given to other contents, even once deleted.
        used = self._cut_before | set(self._manifests) | {p.version for p in self._promotions}
        for n in range(10_000):
            version = day if n == 0 else f"{day}-{n}"
            if version not in used and not (self.releases_dir / version).exists():
                return version
        raise FailedPrecondition(f"too many releases on {day[1:]}")

    async def _build(self, version: str, partial: Path, *, notes: str, force: bool) -> Manifest:
        entries = await self._worker.snapshot(partial)
        if not entries:
            raise FailedPrecondition("staging holds no packages: there is nothing to release")
        newest = max(self._manifests.values(), key=_age, default=None)
        known = await self._disk_work(_known_digests, self.releases_dir, newest)
        digests = await self._disk_work(_link_all, self._staging.pkgdir, partial, entries, known)
        if newest is not None and not force:
            before = {(p.cpv, p.sha256) for p in newest.packages}
            if before == {(e.cpv, digests[e.path]) for e in entries}:
                raise FailedPrecondition(
                    f"nothing changed since {newest.version} (the same packages, byte for byte); "
                    "force the cut to make one anyway"
                )
        packages, sessions = await self._provenance(entries, digests)
        info = await self._worker.prefix_info()
        manifest = Manifest(
            version=version,
            created_at=self._clock.time(),
            notes=notes,
            sessions=sessions,
            profile=info.profile,
            repository=Repository(info.repository, info.revision, info.snapshot_time),
            kernel=kernel_of(packages),
            packages=packages,
            total_size=sum(p.size for p in packages),
            signing_key=self.key.fingerprint,
        )
        await self._disk_work(self._remember, version)
        await self._disk_work(self._seal, partial, manifest)
        return manifest

    def _remember(self, version: str) -> None:
        names = self._cut_before | {version}
        write_atomic(self.root / VERSIONS, "".join(f"{v}\n" for v in sorted(names, key=_order)).encode())
        self._cut_before = names

    async def _provenance(
        self, entries: Sequence[IndexEntry], digests: dict[str, str]
    ) -> tuple[tuple[ReleasePackage, ...], tuple[str, ...]]:
        """Each package with the build and drone that made it; the sessions they came from."""
        store = self._runner.store
        first: dict[str, str] = {}
        for artifact in await self._runner.call(store.list_artifacts):
            # The first upload of a package version is the one staging kept.
            first.setdefault(artifact.cpv, artifact.build_id)
        wanted = [first[e.cpv] for e in entries if e.cpv in first]
        builds = {b.id: b for b in await self._runner.call(store.get_builds, wanted)}
        names = self._drone_names()
        packages = []
        sessions: set[str] = set()
        for e in entries:
            build = builds.get(first.get(e.cpv, ""))
            if build is not None:
                sessions.add(build.session_id)
            packages.append(
                ReleasePackage(
                    cpv=e.cpv,
                    slot=e.slot,
                    path=e.path,
                    build_id=first.get(e.cpv, ""),
                    drone=names.get(build.drone_id, build.drone_id) if build is not None else "",
                    sha256=digests[e.path],
                    size=e.size,
                    use=e.use,
                )
            )
        return tuple(sorted(packages, key=lambda p: p.cpv)), tuple(sorted(sessions))

    def _seal(self, partial: Path, manifest: Manifest) -> None:
        data = manifest_bytes(manifest)
        write_atomic(partial / disk.MANIFEST, data)
        write_atomic(partial / disk.SIGNATURE, self.key.sign(data))
        for folder in {(partial / p.path).parent for p in manifest.packages}:
            fsync_dir(folder)
        os.chmod(partial, 0o755)
        _crash_point("cut")
        os.rename(partial, self.releases_dir / manifest.version)
        fsync_dir(self.releases_dir)

    # -- promote, rollback ------------------------------------------------------------

    async def promote(self, version: str, *, by: str, action: str = "promote") -> Release:
        """Make ``version`` current; the release that was current becomes previous."""
        if action not in PROMOTE_ACTIONS:
            raise InvalidArgument(f"action must be one of {', '.join(PROMOTE_ACTIONS)}")
        async with self._lock:
            self._manifest(version)
            if version == self._current:
                raise FailedPrecondition(f"{version} is the current release already")
            was = self._current
            await self._record(Promotion(version, cast(Any, action), self._clock.time(), by))
            self._events.emit(
                "release_promoted",
                f"release {version} promoted by {by}" + (f" (was {was})" if was else ""),
                version=version,
                previous=was,
                action=action,
                by=by,
            )
            return self.get(version)

    async def rollback(self, version: str, *, by: str) -> Release:
        """``version`` must be current (a guard against a repeated click):
        the release promoted before it becomes current again. Returns it."""
        async with self._lock:
            self._manifest(version)
            if version != self._current:
                raise FailedPrecondition(
                    f"{version} is not the current release ({self._current or 'none is'}): "
                    "nothing to roll back"
                )
            back = self._previous
            if back is None:
                raise FailedPrecondition(f"no release was promoted before {version}: nothing to roll back to")
            await self._record(Promotion(back, "rollback", self._clock.time(), by))
            self._events.emit(
                "release_rolled_back",
                f"release {version} rolled back to {back} by {by}",
                version=back,
                rolled_back=version,
                by=by,
            )
            return self.get(back)

    async def _record(self, promotion: Promotion) -> None:
        promotions = [*self._promotions, promotion]
        current, previous = current_and_previous(promotions, self._manifests.__contains__)
        await self._disk_work(self._write_standing, promotions, current, previous)
        self._promotions, self._current, self._previous = promotions, current, previous
        for callback in list(self._listeners):
            try:
                callback(current)
            except Exception:
                log.exception("a release listener failed on %s", current)

    def _write_standing(self, promotions: list[Promotion], current: str | None, previous: str | None) -> None:
        write_promotions(self.root / disk.PROMOTIONS, promotions)
        disk.set_link(self.root, "previous", previous)
        _crash_point("promote")
        disk.set_link(self.root, "current", current)

    # -- delete, prune ------------------------------------------------------------------

    async def delete(self, version: str, *, by: str) -> None:
        """Never current or previous (FailedPrecondition)."""
        async with self._lock:
            self._manifest(version)
            self._deletable(version)
            await self._delete(version)
            self._events.emit("release_deleted", f"release {version} deleted by {by}", version=version, by=by)

    def _deletable(self, version: str) -> None:
        if version in (self._current, self._previous):
            which = "current" if version == self._current else "previous"
            raise FailedPrecondition(
                f"{version} is the {which} release: promote another one before deleting it"
            )

    async def _delete(self, version: str) -> None:
        await self._disk_work(_remove_release, self.releases_dir, version)
        del self._manifests[version]

    async def prune(self, keep: int, *, by: str) -> list[str]:
        """Delete the oldest releases beyond ``keep``, never current or
        previous; the versions deleted."""
        async with self._lock:
            return await self._prune(keep, by=by)

    async def _prune(self, keep: int, *, by: str) -> list[str]:
        if keep < 1:
            raise InvalidArgument("keep must be at least 1")
        ordered = sorted(self._manifests.values(), key=_age, reverse=True)
        doomed = [m.version for m in ordered[keep:] if m.version not in (self._current, self._previous)]
        for version in doomed:
            await self._delete(version)
        if doomed:
            self._events.emit(
                "release_pruned",
                f"{len(doomed)} old release(s) pruned by {by} (keeping {keep}): {', '.join(doomed)}",
                versions=doomed,
                keep=keep,
                by=by,
            )
        return doomed


# -- helpers --------------------------------------------------------------------------


def _order(version: str) -> tuple[str, int]:
    day, _, n = version.partition("-")
    return day, int(n or 0)


def _age(manifest: Manifest) -> tuple[float, tuple[str, int]]:
    return manifest.created_at, _order(manifest.version)


def _some(items: Sequence[str], shown: int = 5) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _crash_point(where: str) -> None:
    if os.environ.get(CRASH_HOOK_ENV) == where:
        log.error("%s=%s: killing the controller mid-%s (test hook)", CRASH_HOOK_ENV, where, where)
        os.kill(os.getpid(), signal.SIGKILL)


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=0o700)


def _known_digests(releases: Path, newest: Manifest | None) -> dict[str, tuple[int, str]]:
    """path -> (inode, sha256) of the newest release's files: a package staging
    still holds as that same file needs no hashing again."""
    known: dict[str, tuple[int, str]] = {}
    if newest is None:
        return known
    for package in newest.packages:
        with contextlib.suppress(OSError):
            known[package.path] = (os.stat(releases / newest.version / package.path).st_ino, package.sha256)
    return known


def _link_all(
    pkgdir: Path, dest: Path, entries: Sequence[IndexEntry], known: dict[str, tuple[int, str]]
) -> dict[str, str]:
    """Hard-link each package into ``dest``; path -> sha256."""
    digests: dict[str, str] = {}
    for entry in entries:
        source, target = pkgdir / entry.path, dest / entry.path
        if not target.resolve().is_relative_to(dest.resolve()):
            raise SwarmError(f"staging's index names a path outside it: {entry.path[:200]!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target)
        stat = os.stat(target)
        if stat.st_size != entry.size:
            raise FailedPrecondition(
                f"staging's index is out of date for {entry.path} ({entry.size} bytes listed, "
                f"{stat.st_size} on disk); cut again"
            )
        seen = known.get(entry.path)
        digests[entry.path] = (
            seen[1] if seen is not None and seen[0] == stat.st_ino else sha256_file(target)[0]
        )
    return digests


def _remove_release(releases: Path, version: str) -> None:
    # Out of the listing at once (a rename), then its files.
    doomed = releases / f".{version}{disk.DELETING_SUFFIX}"
    os.rename(releases / version, doomed)
    fsync_dir(releases)
    shutil.rmtree(doomed, ignore_errors=True)


def cpn_of(cpv: str) -> str:
    """category/name of category/name-version."""
    category, _, pf = cpv.partition("/")
    for i in range(len(pf) - 1, 0, -1):
        if pf[i] == "-" and pf[i + 1 : i + 2].isdigit():
            return f"{category}/{pf[:i]}"
    return cpv


def kernel_of(packages: Sequence[ReleasePackage]) -> str:
    for package in packages:
        cpn = cpn_of(package.cpv)
        if cpn.startswith("sys-kernel/") and cpn.endswith(KERNEL_SUFFIXES):
            return package.cpv
    return ""


def _slot_key(package: ReleasePackage) -> tuple[str, str]:
    return cpn_of(package.cpv), package.slot.split("/")[0]


def diff_manifests(older: Manifest, newer: Manifest) -> ReleaseDiff:
    before = {_slot_key(p): p for p in older.packages}
    after = {_slot_key(p): p for p in newer.packages}
    return ReleaseDiff(
        older=older.version,
        newer=newer.version,
        added=tuple(after[k] for k in sorted(after.keys() - before.keys())),
        removed=tuple(before[k] for k in sorted(before.keys() - after.keys())),
        changed=tuple(
            PackageChange(before[k], after[k])
            for k in sorted(before.keys() & after.keys())
            if (before[k].cpv, before[k].sha256) != (after[k].cpv, after[k].sha256)
        ),
    )


def current_and_previous(
    promotions: Sequence[Promotion], exists: Callable[[str], bool]
) -> tuple[str | None, str | None]:
    """(current, previous) from the promotions, oldest first: each promote
    puts a release on top, each rollback steps back to the one below.
    Releases deleted since are passed over."""
    stack: list[str] = []
    for promotion in promotions:
        if promotion.action == "rollback":
            while stack and stack[-1] != promotion.version:
                stack.pop()
        if not stack or stack[-1] != promotion.version:
            stack.append(promotion.version)
    alive: list[str] = []
    for version in stack:
        if exists(version) and (not alive or alive[-1] != version):
            alive.append(version)
    return (alive[-1] if alive else None), (alive[-2] if len(alive) > 1 else None)


# -- files ------------------------------------------------------------------------------


def manifest_dict(manifest: Manifest) -> dict[str, Any]:
    """manifest.json's content: the Manifest's fields, ``format`` and ``package_count``."""
    return {"format": MANIFEST_FORMAT, **asdict(manifest), "package_count": manifest.package_count}


def manifest_bytes(manifest: Manifest) -> bytes:
    return (json.dumps(manifest_dict(manifest), indent=1, sort_keys=True) + "\n").encode()


def parse_manifest(data: bytes) -> Manifest:
    """ValueError (saying why) for anything but a manifest of a known format."""
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        if raw.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {raw.get('format')!r}")
        repo = raw["repository"]
        snapshot = repo["snapshot_time"]
        return Manifest(
            version=str(raw["version"]),
            created_at=float(raw["created_at"]),
            notes=str(raw["notes"]),
            sessions=tuple(str(s) for s in raw["sessions"]),
            profile=str(raw["profile"]),
            repository=Repository(
                str(repo["name"]), str(repo["revision"]), float(snapshot) if snapshot is not None else None
            ),
            kernel=str(raw["kernel"]),
            packages=tuple(
                ReleasePackage(
                    cpv=str(p["cpv"]),
                    slot=str(p["slot"]),
                    path=str(p["path"]),
                    build_id=str(p["build_id"]),
                    drone=str(p["drone"]),
                    sha256=str(p["sha256"]),
                    size=int(p["size"]),
                    use=str(p["use"]),
                )
                for p in raw["packages"]
            ),
            total_size=int(raw["total_size"]),
            signing_key=str(raw["signing_key"]),
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed manifest ({type(exc).__name__}: {exc})") from None


def load_manifests(releases: Path) -> dict[str, Manifest]:
    """The complete releases in ``releases/``; anything else there is logged and left out."""
    found: dict[str, Manifest] = {}
    for entry in sorted(releases.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not VERSION_RE.match(entry.name):
            log.warning("%s is not named like a release; ignored", entry)
            continue
        try:
            manifest = parse_manifest((entry / disk.MANIFEST).read_bytes())
        except (OSError, ValueError) as exc:
            log.error("release %s has no readable manifest and is not listed: %s", entry.name, exc)
            continue
        if manifest.version != entry.name:
            log.error("%s holds the manifest of %s; not listed", entry, manifest.version)
            continue
        found[manifest.version] = manifest
    return found


def read_promotions(path: Path) -> list[Promotion]:
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read: {exc}") from None
    if not isinstance(raw, list):
        raise ValueError(f"{path} is not a JSON list")
    promotions = []
    for item in raw:
        try:
            action = item["action"]
            if action not in (*PROMOTE_ACTIONS, "rollback"):
                raise ValueError(f"unknown action {action!r}")
            promotions.append(Promotion(str(item["version"]), action, float(item["at"]), str(item["by"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} holds a malformed entry: {exc}") from None
    return promotions


def write_promotions(path: Path, promotions: Sequence[Promotion]) -> None:
    data = json.dumps([asdict(p) for p in promotions], indent=1) + "\n"
    write_atomic(path, data.encode())
