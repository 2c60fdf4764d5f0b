"""The controller's own health: its database and its data disk.

A background loop looks every ``interval`` seconds and keeps the answer in
memory, so that /api/v1/health answers at once whatever the database does
(a frozen server answers nothing, and a health check that waits for it
hangs with it). Each pass:

- sends a probe write through the store runner (never more than one at a
  time, and never awaited by the pass: it may hang). The probe also brings
  a lost connection back (store/runner.py);
- reads what the runner knows: the connection lost, the latest error
  (``writes_failing`` until a probe write succeeds again), or one call
  running for more than ``stall_after`` seconds (``database_stalled``);
- reads the free space of the data directory's filesystem (statvfs, in a
  thread): below ``disk_min_free`` bytes it is ``disk_low``, until it is
  10 % above that again.

Changes are events: ``store_unavailable`` and ``store_recovered`` (the
first waits in the event log's backlog and is written with the rest once
the database is back), ``disk_low`` and ``disk_ok``. When the database
returns, every recovery listener is called (the event log's ``kick``:
write the backlog now rather than at the end of its backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from swarm.controller.events import EventLog
from swarm.controller.store.base import StoreUnavailable
from swarm.controller.store.runner import StoreRunner
from swarm.tasks import TaskSet, wait_event

log = logging.getLogger(__name__)

DATABASE_UNREACHABLE = "database_unreachable"
DATABASE_STALLED = "database_stalled"
WRITES_FAILING = "writes_failing"
DISK_LOW = "disk_low"
DATABASE_CODES = (DATABASE_UNREACHABLE, DATABASE_STALLED, WRITES_FAILING)
# The data disk counts as fine again only this far above the threshold, so a
# disk hovering at it does not flood the event log.
DISK_HYSTERESIS = 1.1
STATVFS_TIMEOUT = 5.0
MIB = 2**20


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    message: str  # for the admin: the driver's words, the path
    since: float
    summary: str = ""  # for the public tier: no host, port or path

    @property
    def public(self) -> str:
        return self.summary or self.message


@dataclass(frozen=True, slots=True)
class DiskSpace:
    path: str
    free: int  # bytes available to the controller (not root's reserve)
    total: int


@dataclass(frozen=True, slots=True)
class SelfHealth:
    problems: tuple[Problem, ...] = ()
    checked_at: float | None = None
    disk: DiskSpace | None = None

    @property
    def status(self) -> str:
        return "degraded" if self.problems else "ok"

    def problem(self, *codes: str) -> Problem | None:
        return next((p for p in self.problems if p.code in codes), None)


@dataclass(frozen=True, slots=True)
class SelfCheckSettings:
    interval: float  # seconds between passes
    stall_after: float  # seconds one database call may run before it counts as stalled
    disk_min_free: int  # bytes


class SelfCheck:
    def __init__(
        self,
        runner: StoreRunner,
        events: EventLog,
        data_dir: Path,
        settings: SelfCheckSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._runner = runner
        self._events = events
        self._data_dir = data_dir
        self.settings = settings
        self._clock = clock
        self._tasks = TaskSet("selfcheck")
        self._probe: asyncio.Task[None] | None = None
        self._probe_ok = True
        self._outage: Problem | None = None  # the database problem an outage began with
        self._wake = asyncio.Event()
        self._on_recovered: list[Callable[[], None]] = [events.kick]
        self.health = SelfHealth()

    def add_recovery_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (quick, not blocking) when the database is back after an outage."""
        self._on_recovered.append(listener)

    async def start(self) -> None:
        await self.check()
        self._tasks.spawn(self._loop(), "loop")

    async def stop(self) -> None:
        await self._tasks.close()

    def writes_failing(self) -> Problem | None:
        """Why the database takes no writes now, or None. Read from the store
        runner now, not from ``health``: that is up to an interval old, and a
        client told to retry should find the database back as soon as it is."""
        return self._database_problem(self._clock())

    async def _loop(self) -> None:
        while True:
            await wait_event(self._wake, self.settings.interval)
            self._wake.clear()
            try:
                await self.check()
            except Exception:
                log.exception("health check failed")

    async def check(self) -> SelfHealth:
        """One pass; the new health (also kept in ``health``)."""
        if self._probe is None or self._probe.done():
            self._probe = self._tasks.spawn(self._send_probe(), "probe")
        disk = await self._disk_space()
        now = self._clock()
        problems = [p for p in (self._database_problem(now), self._disk_problem(disk, now)) if p is not None]
        old, new = self.health, SelfHealth(tuple(problems), now, disk)
        self.health = new
        self._report(old, new, now)
        return new

    async def _send_probe(self) -> None:
        ok = False
        with contextlib.suppress(StoreUnavailable):
            await self._runner.probe()
            ok = True
        if ok != self._probe_ok:
            # A change: say so at once rather than at the next pass. (Not after
            # every probe: one failing fast while a reconnect waits would spin.)
            self._probe_ok = ok
            self._wake.set()

    def _database_problem(self, now: float) -> Problem | None:
        status = self._runner.status()
        failure = status.failure
        if failure is not None and failure.lost:
            return self._kept(DATABASE_UNREACHABLE, failure.message, failure.at, "database unreachable")
        if status.busy_for > self.settings.stall_after:
            message = f"database not answering for {status.busy_for:.0f}s ({status.waiting} calls waiting)"
            return self._kept(DATABASE_STALLED, message, now - status.busy_for)
        if failure is not None:
            return self._kept(WRITES_FAILING, failure.message, failure.at, "database writes failing")
        return None

    def _kept(self, code: str, message: str, since: float, summary: str = "") -> Problem:
        """The problem, keeping the time it began if it is the same one."""
        old = self.health.problem(code)
        return Problem(code, message, old.since if old is not None else since, summary)

    async def _disk_space(self) -> DiskSpace | None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(STATVFS_TIMEOUT):
                st = await loop.run_in_executor(None, os.statvfs, self._data_dir)
        except (OSError, TimeoutError) as exc:
            log.warning("cannot read the free space of %s: %s", self._data_dir, exc)
            return None
        return DiskSpace(str(self._data_dir), st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)

    def _disk_problem(self, disk: DiskSpace | None, now: float) -> Problem | None:
        limit = self.settings.disk_min_free
        if disk is None or limit <= 0:
            return None
        was_low = self.health.problem(DISK_LOW) is not None
        if disk.free >= (limit * DISK_HYSTERESIS if was_low else limit):
            return None
        summary = (
            f"data disk nearly full: {disk.free / MIB:.1f} MiB free of {disk.total / MIB:.0f} MiB "
            f"(threshold {limit / MIB:.0f} MiB)"
        )
        return self._kept(DISK_LOW, f"{summary} at {disk.path}", now, summary)

    def _report(self, old: SelfHealth, new: SelfHealth, now: float) -> None:
        was, down = old.problem(*DATABASE_CODES), new.problem(*DATABASE_CODES)
        if down is not None and was is None:
            # One outage may change codes on its way (unreachable, then
            # reconnected but not yet written to): it is told by how it began.
            self._outage = down
            # Events are public: they carry the summary, never the driver's
            # words (host, port, path); GET /admin/api/health has those.
            self._events.emit(
                "store_unavailable",
                f"database unavailable: {down.public}",
                code=down.code,
                reason=down.public,
            )
        elif was is not None and down is None:
            was, self._outage = self._outage or was, None
            took = now - was.since
            self._events.emit(
                "store_recovered",
                f"database available again after {took:.1f}s ({was.public})",
                code=was.code,
                reason=was.public,
                down_s=round(took, 3),
            )
            for listener in self._on_recovered:
                try:
                    listener()
                except Exception:
                    log.exception("recovery listener failed")
        low, was_low = new.problem(DISK_LOW), old.problem(DISK_LOW)
        if low is not None and was_low is None and new.disk is not None:
            figures = DiskFigures.of(new.disk, self.settings.disk_min_free)
            self._events.emit("disk_low", low.public, **dataclasses.asdict(figures))
        elif was_low is not None and low is None and new.disk is not None:
            self._events.emit(
                "disk_ok",
                f"data disk has room again: {new.disk.free / MIB:.1f} MiB free",
                **dataclasses.asdict(DiskFigures.of(new.disk, self.settings.disk_min_free)),
            )


@dataclass(frozen=True, slots=True)
class DiskFigures:
    """What the disk_low and disk_ok events say of the disk (never its path: events are public)."""

    free_mb: float
    total_mb: float
    min_free_mb: float

    @classmethod
    def of(cls, disk: DiskSpace, limit: int) -> DiskFigures:
        return cls(round(disk.free / MIB, 1), round(disk.total / MIB, 1), round(limit / MIB, 1))
