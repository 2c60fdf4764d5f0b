"""The mirror service: pushes the current release to every binhost mirror,
checks them, and says which a client may use (binhosts.MirrorsAPI).

Each enabled rsync target has a worker task of its own that sleeps until
it is woken, then pushes the current release (rsyncpush.Pusher) with at
most ``parallel`` pushes running at once. It is woken when a release is
promoted or rolled back (Releases' listeners), when its target is saved
(BinhostTargets' listeners: a changed target gets a new worker), by
``sync()`` (the admin API), when a health check finds it holding an
older release, and by its retry timer after a failed push (exponential
backoff with jitter, ``RETRY``). A failing mirror never delays another
one or the promote, which only wakes the workers.

Health checks run for every mirror right after start and then every
``check_interval`` seconds (and after each push): over HTTP at the
target's public URL, ``current/manifest.json`` (its version is what the
mirror serves) and the sha256 of a few of the release's packages, from
the controller's own manifest of that version.

How a mirror stands (binhosts.Status)::

    disabled     the target is not enabled
    syncing      a push is running
    unreachable  the last health check failed (no answer, or not what it should serve)
    stale        its current is not the controller's (a push failed or waits;
                 a new mirror that answers but holds nothing yet)
    unknown      nothing pushed or checked since the controller started
    healthy      otherwise

What each holds (release, releases, synced_at, the last push's figures)
is kept in RELEASES_DIR/mirrors.json, so that after a restart a mirror
known to hold the current release stays usable until its first check.

Events: binhost_sync_started, binhost_sync_progress (at most one per
mirror every PROGRESS_EVERY seconds), binhost_synced, binhost_sync_failed,
and binhost_healthy, binhost_stale, binhost_unreachable when a mirror's
standing changes to one of those.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from swarm.backoff import Backoff
from swarm.clock import SYSTEM, Clock
from swarm.controller.binhosts import (
    LOCAL_NAME,
    BinhostTarget,
    BinhostTargets,
    MirrorState,
    PushProgress,
    Status,
    destination_of,
    local_state,
)
from swarm.controller.errors import FailedPrecondition, NotFound, SwarmError
from swarm.controller.events import EventLog
from swarm.controller.oob import SshSettings
from swarm.controller.releases import Manifest, ReleasePackage, Releases, parse_manifest
from swarm.controller.rsyncpush import Progress, Pusher, PushError, version_order
from swarm.files import write_atomic
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)


class NothingServed(Exception):
    """The mirror answered and holds no release (no current/manifest.json)."""


STATE_FILE = "mirrors.json"
PARALLEL_DEFAULT = 4
CHECK_INTERVAL_DEFAULT = 300.0
# A failed push is tried again after 5 s, 10 s, ... up to 10 minutes (each a
# draw from the upper half of that, so retries never come in quick succession).
RETRY = Backoff(initial=5.0, cap=600.0)
PROGRESS_EVERY = 2.0
# Packages whose sha256 a health check fetches and compares; larger ones are
# passed over while smaller ones exist (a check should cost little).
SAMPLE = 3
SAMPLE_MAX_BYTES = 64 << 20
HTTP_TIMEOUT = 30.0
MANIFEST_MAX_BYTES = 64 << 20
CHUNK = 1 << 16
# Within the controller's services stop stage (app.STOP_SERVICES).
STOP_TIMEOUT = 2.0


@dataclass
class _Mirror:
    """One mirror's live state (the service's own, changed on its loop only)."""

    target: BinhostTarget
    release: str | None = None
    releases: tuple[str, ...] = ()
    synced_at: float | None = None
    checked_at: float | None = None
    bytes_sent: int = 0
    files_sent: int = 0
    push_error: str = ""
    check_error: str = ""
    confirmed: bool = False  # a push or a check succeeded since the controller started
    pushing: bool = False
    progress: PushProgress | None = None
    progress_emitted: float = 0.0
    attempt: int = 0  # failed pushes in a row
    reported: Status = "unknown"  # the standing the last event announced
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Mirrors:
    """binhosts.MirrorsAPI: see the module docstring."""

    def __init__(
        self,
        targets: BinhostTargets,
        releases: Releases,
        events: EventLog,
        ssh: SshSettings,
        *,
        parallel: int = PARALLEL_DEFAULT,
        check_interval: float = CHECK_INTERVAL_DEFAULT,
        retry: Backoff = RETRY,
        rsync: str = "rsync",
        clock: Clock = SYSTEM,
    ) -> None:
        if parallel < 1 or check_interval <= 0:
            raise ValueError("parallel must be at least 1 and check_interval positive")
        self._targets = targets
        self._releases = releases
        self._events = events
        self._ssh = ssh
        self._check_interval = check_interval
        self._retry = retry
        self._rsync = rsync
        self._clock = clock
        self._parallel = parallel
        self._bound = asyncio.Semaphore(parallel)
        self._state_path = releases.root / STATE_FILE
        self._mirrors: dict[str, _Mirror] = {}
        self._tasks = TaskSet("mirrors")
        self._http: aiohttp.ClientSession | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._check_now = asyncio.Event()
        self._saving = asyncio.Lock()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        saved = await asyncio.to_thread(_read_state, self._state_path)
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=HTTP_TIMEOUT, sock_read=HTTP_TIMEOUT)
        )
        for target in self._targets.list():
            if target.kind == "rsync":
                mirror = _Mirror(target)
                _restore(mirror, saved.get(target.name))
                self._mirrors[target.name] = mirror
                if target.enabled:
                    self._start_worker(mirror)
        self._unsubscribe = [
            self._targets.subscribe(self._target_changed),
            self._releases.add_listener(self._current_changed),
        ]
        # The first round of checks finds what is stale and wakes its worker.
        self._tasks.spawn(self._check_loop(), "checks")
        log.info("mirrors: %d, at most %d pushes at once", len(self._mirrors), self._parallel)

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        # Running pushes are cancelled: oob.run kills rsync's and ssh's process groups.
        await self._tasks.close(STOP_TIMEOUT)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _start_worker(self, mirror: _Mirror) -> None:
        mirror.task = self._tasks.spawn(self._worker(mirror), f"push:{mirror.target.name}")

    # -- MirrorsAPI -------------------------------------------------------------------------

    def states(self) -> dict[str, MirrorState]:
        states = {LOCAL_NAME: self._local_state()}
        for name, mirror in sorted(self._mirrors.items()):
            states[name] = self._state(mirror)
        return states

    async def sync(self, name: str | None, *, by: str) -> list[str]:
        current = self._releases.current()
        if current is None:
            raise FailedPrecondition("no release is current (none was promoted): there is nothing to push")
        if name is None:
            chosen = [m for m in self._mirrors.values() if m.target.enabled]
        else:
            target = self._targets.get(name)  # NotFound
            if target.kind != "rsync":
                raise FailedPrecondition(f"{name} is the controller's own binhost: it is never pushed to")
            if not target.enabled:
                raise FailedPrecondition(f"binhost {name} is disabled: enable it to push to it")
            mirror = self._mirrors.get(name)
            if mirror is None:
                raise NotFound(f"no mirror {name}")
            chosen = [mirror]
        names = [m.target.name for m in chosen]
        for mirror in chosen:
            mirror.wake.set()
        if names:
            self._events.emit(
                "binhost_sync_requested",
                f"push of {current} to {', '.join(names)} requested by {by}",
                names=names,
                release=current,
                by=by,
            )
        return names

    def usable(self, release: str | None = None) -> list[tuple[BinhostTarget, MirrorState]]:
        found: list[tuple[BinhostTarget, MirrorState]] = []
        current = self._releases.current()
        for target in self._targets.list():
            if not target.enabled:
                continue
            if target.kind == "local":
                found.append((target, self._local_state()))
                continue
            mirror = self._mirrors.get(target.name)
            if mirror is None:
                continue
            state = self._state(mirror)
            if release is None:
                # Clients fetch URL/current/: the mirror's link must name the current release.
                holds = current is not None and state.release == current
                fine = state.status in ("healthy", "syncing", "unknown")
            else:
                holds = release in state.releases or state.release == release
                fine = state.status in ("healthy", "syncing", "stale", "unknown")
            # Unknown: not seen since a restart, but known (mirrors.json) to hold it.
            if holds and fine:
                found.append((target, state))
        return found

    # -- state ------------------------------------------------------------------------------

    def _local_state(self) -> MirrorState:
        return local_state(self._releases.current(), tuple(r.version for r in self._releases.list_all()))

    def _status(self, mirror: _Mirror, *, settled: bool = False) -> Status:
        if not mirror.target.enabled:
            return "disabled"
        if mirror.pushing and not settled:
            return "syncing"
        if mirror.check_error:
            return "unreachable"
        current = self._releases.current()
        if current is not None and mirror.release != current:
            return "stale"
        if not mirror.confirmed:
            return "unknown"
        return "healthy"

    def _error(self, mirror: _Mirror, status: Status) -> str:
        if status == "unreachable":
            return mirror.check_error
        if status == "stale":
            current = self._releases.current()
            return mirror.push_error or f"holds {mirror.release or 'no release'}, current is {current}"
        return mirror.push_error if status == "syncing" else ""

    def _state(self, mirror: _Mirror) -> MirrorState:
        status = self._status(mirror)
        error = self._error(mirror, status)
        return MirrorState(
            name=mirror.target.name,
            status=status,
            release=mirror.release,
            releases=mirror.releases,
            synced_at=mirror.synced_at,
            checked_at=mirror.checked_at,
            error=error,
            bytes_sent=mirror.bytes_sent,
            files_sent=mirror.files_sent,
            progress=mirror.progress,
        )

    def _settle(self, mirror: _Mirror) -> None:
        """Announce a change of standing (healthy, stale, unreachable)."""
        status = self._status(mirror, settled=True)
        if status not in ("healthy", "stale", "unreachable") or status == mirror.reported:
            return
        mirror.reported = status
        name = mirror.target.name
        error = self._error(mirror, status)
        if status == "healthy":
            message = f"binhost {name} serves {mirror.release}"
        else:
            message = f"binhost {name} is {status}: {error}"
        self._events.emit(f"binhost_{status}", message, name=name, release=mirror.release, error=error)

    async def _save(self) -> None:
        data = {
            name: {
                "destination": m.target.destination,
                "release": m.release,
                "releases": list(m.releases),
                "synced_at": m.synced_at,
                "bytes_sent": m.bytes_sent,
                "files_sent": m.files_sent,
            }
            for name, m in sorted(self._mirrors.items())
        }
        text = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
        async with self._saving:
            try:
                await asyncio.to_thread(write_atomic, self._state_path, text)
            except OSError as exc:
                log.error("cannot write %s: %s", self._state_path, exc)

    # -- listeners ----------------------------------------------------------------------------

    def _current_changed(self, current: str | None) -> None:
        if current is None:
            return
        for mirror in self._mirrors.values():
            if mirror.target.enabled:
                mirror.wake.set()

    def _target_changed(self, name: str) -> None:
        old = self._mirrors.pop(name, None)
        if old is not None and old.task is not None:
            # Its push (if one runs) goes to where the target no longer points, or should not run.
            old.task.cancel()
        try:
            target = self._targets.get(name)
        except NotFound:
            self._tasks.spawn(self._save(), "save")
            return
        if target.kind != "rsync":
            return
        mirror = _Mirror(target)
        if old is not None and old.target.destination == target.destination:
            _carry(old, mirror)
        self._mirrors[name] = mirror
        if target.enabled:
            self._start_worker(mirror)
            if self._releases.current() is not None:
                mirror.wake.set()
        self._tasks.spawn(self._save(), "save")

    # -- pushing ------------------------------------------------------------------------------

    async def _worker(self, mirror: _Mirror) -> None:
        while True:
            if mirror.attempt == 0:
                await mirror.wake.wait()
            else:
                await self._clock.wait(mirror.wake, self._retry.delay(mirror.attempt - 1, least=0.5))
            mirror.wake.clear()
            if self._releases.current() is None:
                continue
            async with self._bound:
                try:
                    ok = await self._push(mirror)
                except Exception:  # a bug: the worker goes on, retrying as after a failure
                    log.exception("push to %s failed unexpectedly", mirror.target.name)
                    mirror.pushing, mirror.progress = False, None
                    mirror.attempt += 1
                    continue
            if ok:
                await self._save()
                await self._check(mirror)

    async def _push(self, mirror: _Mirror) -> bool:
        name = mirror.target.name
        version = self._releases.current()
        if version is None:
            return True
        started, began = self._clock.time(), self._clock.monotonic()
        mirror.pushing = True
        mirror.progress = PushProgress(version, started, 0, 0, 0)
        self._events.emit(
            "binhost_sync_started", f"pushing {version} to binhost {name}", name=name, release=version
        )
        try:
            pusher = Pusher(destination_of(mirror.target), self._ssh, rsync=self._rsync)
            release = self._releases.get(version)
            keep = {r.version for r in self._releases.list_all()}
            result = await pusher.push(
                self._releases.path(version),
                release.manifest,
                keep=keep,
                on_progress=lambda progress: self._progress(mirror, version, started, progress),
            )
        except (PushError, SwarmError, OSError) as exc:
            reason = getattr(exc, "message", None) or str(exc)
            mirror.attempt += 1
            mirror.push_error = f"push of {version} failed: {reason}"
            retry = self._retry.ceiling(mirror.attempt - 1)
            self._events.emit(
                "binhost_sync_failed",
                f"push of {version} to binhost {name} failed (attempt {mirror.attempt}, "
                f"again within {retry:.0f}s): {reason}",
                name=name,
                release=version,
                error=reason,
                attempt=mirror.attempt,
                retry_within=retry,
            )
            self._settle(mirror)
            return False
        finally:
            mirror.pushing = False
            mirror.progress = None
        seconds = self._clock.monotonic() - began
        mirror.attempt = 0
        mirror.push_error = ""
        mirror.release, mirror.releases = version, result.releases
        mirror.synced_at = self._clock.time()
        mirror.bytes_sent, mirror.files_sent = result.bytes_sent, result.files_sent
        mirror.confirmed = True
        self._events.emit(
            "binhost_synced",
            f"binhost {name} serves {version}: {result.files_sent} files, {result.bytes_sent} bytes "
            f"sent in {seconds:.1f}s" + (f"; removed {', '.join(result.removed)}" if result.removed else ""),
            name=name,
            release=version,
            bytes=result.bytes_sent,
            files=result.files_sent,
            seconds=round(seconds, 3),
            removed=list(result.removed),
        )
        self._settle(mirror)
        return True

    def _progress(self, mirror: _Mirror, version: str, started: float, progress: Progress) -> None:
        mirror.progress = PushProgress(
            version, started, progress.files_total, progress.files_done, progress.bytes_done
        )
        now = self._clock.monotonic()
        if now - mirror.progress_emitted < PROGRESS_EVERY:
            return
        mirror.progress_emitted = now
        self._events.emit(
            "binhost_sync_progress",
            f"pushing {version} to binhost {mirror.target.name}: {progress.files_done}/"
            f"{progress.files_total} files, {progress.bytes_done} bytes",
            name=mirror.target.name,
            release=version,
            files_done=progress.files_done,
            files_total=progress.files_total,
            bytes=progress.bytes_done,
        )

    # -- health checks --------------------------------------------------------------------------

    async def _check_loop(self) -> None:
        while True:
            mirrors = [m for m in self._mirrors.values() if m.target.enabled and not m.pushing]
            await asyncio.gather(*(self._check(m) for m in mirrors))
            current = self._releases.current()
            for mirror in mirrors:
                if current is not None and mirror.release != current and mirror.attempt == 0:
                    mirror.wake.set()
            if mirrors:
                await self._save()
            await self._clock.wait(self._check_now, self._check_interval)
            self._check_now.clear()

    async def _check(self, mirror: _Mirror) -> None:
        try:
            version = await self._probe(mirror.target)
        except NothingServed:
            # It answers and holds no release (a new mirror before its first push):
            # stale once there is a release to push, not unreachable.
            mirror.check_error = ""
            mirror.confirmed = True
            mirror.release, mirror.releases = None, ()
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            mirror.check_error = f"health check at {mirror.target.url}: {reason}"
        else:
            mirror.check_error = ""
            mirror.confirmed = True
            mirror.release = version
            if version not in mirror.releases:
                mirror.releases = tuple(sorted({*mirror.releases, version}, key=version_order))
        mirror.checked_at = self._clock.time()
        self._settle(mirror)

    async def _probe(self, target: BinhostTarget) -> str:
        """The release the mirror serves as current; ValueError when what it
        serves is not what the controller's manifest of that release says."""
        base = target.url.rstrip("/")
        served = parse_manifest(
            await self._get(f"{base}/current/manifest.json", MANIFEST_MAX_BYTES, empty=404)
        )
        try:
            manifest: Manifest = self._releases.get(served.version).manifest
        except SwarmError:
            # A release the controller no longer has: only its own manifest to go by.
            manifest = served
        for package in _sample(manifest.packages):
            digest = await self._sha256(f"{base}/current/{package.path}", package.size)
            if digest != package.sha256:
                raise ValueError(
                    f"{package.path} has sha256 {digest[:16]}..., the manifest says {package.sha256[:16]}..."
                )
        return served.version

    async def _get(self, url: str, limit: int, *, empty: int | None = None) -> bytes:
        """The body; NothingServed when the answer is the ``empty`` status."""
        assert self._http is not None
        async with self._http.get(url, allow_redirects=False) as answer:
            if answer.status == empty:
                raise NothingServed(url)
            if answer.status != 200:
                raise ValueError(f"GET {url}: HTTP {answer.status}")
            data = await answer.content.read(limit + 1)
            if len(data) > limit:
                raise ValueError(f"GET {url}: larger than {limit} bytes")
            return data

    async def _sha256(self, url: str, size: int) -> str:
        assert self._http is not None
        digest = hashlib.sha256()
        read = 0
        async with self._http.get(url, allow_redirects=False) as answer:
            if answer.status != 200:
                raise ValueError(f"GET {url}: HTTP {answer.status}")
            async for chunk in answer.content.iter_chunked(CHUNK):
                read += len(chunk)
                if read > size:
                    raise ValueError(f"GET {url}: more than the manifest's {size} bytes")
                digest.update(chunk)
        return digest.hexdigest()


def _sample(packages: tuple[ReleasePackage, ...]) -> list[ReleasePackage]:
    small = [p for p in packages if p.size <= SAMPLE_MAX_BYTES]
    pool = small or sorted(packages, key=lambda p: p.size)[:SAMPLE]
    return random.sample(pool, min(SAMPLE, len(pool)))


def _carry(old: _Mirror, new: _Mirror) -> None:
    """What a mirror holds, kept when its target changes but its destination does not."""
    new.release, new.releases, new.synced_at = old.release, old.releases, old.synced_at
    new.bytes_sent, new.files_sent, new.checked_at = old.bytes_sent, old.files_sent, old.checked_at


def _restore(mirror: _Mirror, saved: dict[str, Any] | None) -> None:
    if not saved or saved.get("destination") != mirror.target.destination:
        return
    try:
        mirror.release = saved["release"]
        mirror.releases = tuple(str(v) for v in saved["releases"])
        mirror.synced_at = saved["synced_at"]
        mirror.bytes_sent = int(saved["bytes_sent"])
        mirror.files_sent = int(saved["files_sent"])
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("mirrors.json: the entry of %s is unreadable (%s); ignored", mirror.target.name, exc)


def _read_state(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): mirrors start unknown", path, exc)
        return {}
    return data if isinstance(data, dict) else {}
