"""Releases without a human: a cut at a weekly or daily slot, and its
promotion once nobody objected for a while.

``--release-schedule`` names a slot in the controller's local time,
``weekly:sun:03:00`` or ``daily:03:00``. When the slot passes, the
schedule cuts a release (``by="schedule"``), unless:

- a session is running or paused: the cut waits for it to end (checked
  every RECHECK seconds), so the release follows the last session rather
  than one half built; the wait is an event, ``release_schedule_waiting``;
- the cut is refused (nothing changed since the newest release, staging
  lacks or failed a package the last session needed): the slot is skipped
  with the reason, ``release_schedule_skipped``; the next slot tries again.

A slot passed while the controller was down is made up for once at start
(one cut, however many slots were missed).

``--auto-promote-after DURATION`` promotes the scheduled cut that long
after it was cut (``action="auto-promote"``), unless someone objected in
the meantime. An objection is any promote or rollback recorded since the
cut (by anyone: an admin who acted on the releases has taken over), or the
release deleted. To stop one scheduled release without touching the one
served, delete it. Whatever the outcome, an event says so
(``release_auto_promote_cancelled`` with the reason, or the core's own
``release_promoted``). A newer scheduled cut replaces a waiting one.

The slot last handled and the cut waiting for promotion are kept in
``DATA_DIR/release-schedule.json``, so a restart neither cuts twice nor
forgets a promotion that is due.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from swarm.clock import SYSTEM, Clock, iso
from swarm.controller.errors import FailedPrecondition, NotFound, SwarmError
from swarm.controller.events import EventLog
from swarm.controller.release_cadence import Cadence
from swarm.controller.releases import Promotion, Release
from swarm.controller.store.records import EventRecord
from swarm.files import write_atomic
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)

# Seconds between looks at a session the scheduled cut waits for.
RECHECK = 60.0
STATE_FILE = "release-schedule.json"
BY = "schedule"
# Events after which a waiting cut looks again at once.
SESSION_ENDS = frozenset({"session_complete", "session_control"})


class ReleaseCutter(Protocol):
    """What the schedule uses of swarm.controller.releases.Releases."""

    async def cut(self, *, notes: str, force: bool, by: str) -> Release: ...

    def get(self, version: str) -> Release: ...

    def promotions(self) -> list[Promotion]: ...

    async def promote(self, version: str, *, by: str, action: str = "promote") -> Release: ...


class SessionView(Protocol):
    state: str
    name: str


class Sessions(Protocol):
    """What the schedule uses of the build queue."""

    def current_session(self) -> SessionView | None: ...


@dataclass(frozen=True, slots=True)
class Pending:
    """A scheduled cut waiting for its promotion."""

    version: str
    cut_at: float
    promote_at: float
    promotions_seen: int  # promotions.json's length at the cut: any beyond is an objection


@dataclass(frozen=True, slots=True)
class ScheduleStatus:
    schedule: str  # "" when there is none
    next_cut_at: float | None
    waiting_since: float | None  # a slot passed and the cut waits for a session
    auto_promote_after: float | None
    pending: Pending | None


class ReleaseSchedule:
    def __init__(
        self,
        releases: ReleaseCutter,
        sessions: Sessions | None,
        events: EventLog,
        state_dir: Path,
        *,
        cadence: Cadence | None,
        auto_promote_after: float | None,
        clock: Clock = SYSTEM,
    ) -> None:
        self._releases = releases
        self._sessions = sessions
        self._events = events
        self._path = state_dir / STATE_FILE
        self._cadence = cadence
        self._after = auto_promote_after
        self._clock = clock
        self._tasks = TaskSet("release-schedule")
        self._wake = asyncio.Event()
        self._next_slot: float | None = None
        self._due_slot: float | None = None  # passed, cut not yet done
        self._waiting_since: float | None = None
        self._last_slot: float | None = None
        self._pending: Pending | None = None
        self._retry_at: float | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        state = await asyncio.to_thread(self._load)
        now = self._clock.time()
        pending = state.get("pending")
        if isinstance(pending, dict):
            try:
                self._pending = Pending(**pending)
            except TypeError:
                log.warning("%s: ignoring a malformed pending promotion: %r", self._path, pending)
        if self._pending is not None and self._after is None:
            log.info("auto-promote is off now: %s stays as it is", self._pending.version)
            self._pending = None
        if self._cadence is not None:
            last = state.get("last_slot")
            if state.get("schedule") != self._cadence.text or not isinstance(last, int | float):
                # A first start, or a new schedule: the slots before now are not owed.
                self._last_slot = self._cadence.last_at_or_before(now)
            else:
                self._last_slot = float(last)
            upcoming = self._cadence.next_after(self._last_slot)
            if upcoming <= now:
                self._due_slot = self._cadence.last_at_or_before(now)
                log.info(
                    "the release slot at %s passed while the controller was down: cutting now", iso(upcoming)
                )
            self._next_slot = self._cadence.next_after(now)
            await asyncio.to_thread(self._save)
        if self._cadence is not None or self._pending is not None:
            self._unsubscribe = self._events.subscribe(self._on_event)
            self._tasks.spawn(self._loop(), "loop")
            log.info(
                "release schedule %s; next cut %s; auto-promote %s",
                self._cadence.text if self._cadence else "off",
                iso(self._next_slot) or "-",
                f"after {self._after:g}s" if self._after else "off",
            )

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self._tasks.close()

    def status(self) -> ScheduleStatus:
        return ScheduleStatus(
            schedule=self._cadence.text if self._cadence else "",
            next_cut_at=self._due_slot if self._due_slot is not None else self._next_slot,
            waiting_since=self._waiting_since,
            auto_promote_after=self._after,
            pending=self._pending,
        )

    def _on_event(self, event: EventRecord) -> None:
        # A session that ended or was stopped: a waiting cut need not wait for the recheck.
        if event.type in SESSION_ENDS and self._due_slot is not None:
            self._retry_at = None
            self._wake.set()

    # -- the loop ------------------------------------------------------------

    def _deadline(self) -> float | None:
        if self._due_slot is not None:
            cut_at: float | None = self._retry_at if self._retry_at is not None else self._clock.time()
        else:
            cut_at = self._next_slot
        times = [t for t in (cut_at, self._pending.promote_at if self._pending else None) if t is not None]
        return min(times) if times else None

    async def _loop(self) -> None:
        while True:
            try:
                await self._tick()
            except Exception:
                # The state file could not be written, say: the loop goes on, and
                # what was due is tried again after a while rather than at once.
                log.exception("release schedule: a step failed; trying again in %.0fs", RECHECK)
                await self._clock.sleep(RECHECK)
                continue
            deadline = self._deadline()
            if deadline is None:
                return  # nothing scheduled and nothing to promote
            await self._clock.wait(self._wake, max(0.0, deadline - self._clock.time()))
            self._wake.clear()

    async def _tick(self) -> None:
        """Do what is due at the clock's time."""
        now = self._clock.time()
        if self._cadence is not None and self._next_slot is not None and now >= self._next_slot:
            self._due_slot = self._cadence.last_at_or_before(now)
            self._next_slot = self._cadence.next_after(now)
            self._retry_at = None
        if self._due_slot is not None and (self._retry_at is None or now >= self._retry_at):
            await self._try_cut(now)
        if self._pending is not None and now >= self._pending.promote_at:
            await self._try_promote()

    async def _try_cut(self, now: float) -> None:
        slot = self._due_slot
        assert slot is not None
        session = self._sessions.current_session() if self._sessions is not None else None
        if session is not None and session.state in ("running", "paused"):
            if self._waiting_since is None:
                self._waiting_since = now
                self._events.emit(
                    "release_schedule_waiting",
                    f"scheduled release cut waits for session {session.name} ({session.state}) to end",
                    slot=iso(slot),
                    session=session.name,
                )
            self._retry_at = now + RECHECK
            return
        self._due_slot = self._waiting_since = self._retry_at = None
        self._last_slot = slot
        try:
            release = await self._releases.cut(
                notes=f"scheduled cut ({self._cadence_text})", force=False, by=BY
            )
        except FailedPrecondition as exc:
            self._events.emit(
                "release_schedule_skipped",
                f"no scheduled release at {iso(slot)}: {exc.message}",
                slot=iso(slot),
                reason=exc.message,
            )
        except SwarmError as exc:
            log.error("scheduled release cut failed: %s", exc.message)
            self._events.emit(
                "release_schedule_skipped",
                f"scheduled release cut at {iso(slot)} failed: {exc.message}",
                slot=iso(slot),
                reason=exc.message,
            )
        except Exception as exc:
            log.exception("scheduled release cut failed")
            self._events.emit(
                "release_schedule_skipped",
                f"scheduled release cut at {iso(slot)} failed: {type(exc).__name__}",
                slot=iso(slot),
                reason=type(exc).__name__,
            )
        else:
            if self._after is not None:
                if self._pending is not None:
                    self._events.emit(
                        "release_auto_promote_cancelled",
                        f"{self._pending.version} will not be promoted automatically: "
                        f"{release.version} was cut since",
                        version=self._pending.version,
                        reason="superseded",
                    )
                cut_at = self._clock.time()
                self._pending = Pending(
                    release.version, cut_at, cut_at + self._after, len(self._releases.promotions())
                )
                log.info(
                    "%s will be promoted at %s unless someone objects",
                    release.version,
                    iso(cut_at + self._after),
                )
        await asyncio.to_thread(self._save)

    async def _try_promote(self) -> None:
        pending = self._pending
        assert pending is not None
        self._pending = None
        reason = ""
        try:
            self._releases.get(pending.version)
        except NotFound:
            reason = "deleted"
        if not reason:
            since = self._releases.promotions()[pending.promotions_seen :]
            if since:
                last = since[-1]
                how = {"rollback": "rolled back to", "auto-promote": "auto-promoted"}
                reason = f"{last.by} {how.get(last.action, 'promoted')} {last.version} since the cut"
        if not reason:
            try:
                await self._releases.promote(pending.version, by=BY, action="auto-promote")
            except SwarmError as exc:
                reason = exc.message
        if reason:
            self._events.emit(
                "release_auto_promote_cancelled",
                f"{pending.version} will not be promoted automatically: {reason}",
                version=pending.version,
                reason=reason,
            )
        await asyncio.to_thread(self._save)

    @property
    def _cadence_text(self) -> str:
        return self._cadence.text if self._cadence is not None else "none"

    # -- state on disk ---------------------------------------------------------

    def _load(self) -> dict[str, object]:
        try:
            loaded = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s, starting afresh: %s", self._path, exc)
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def _save(self) -> None:
        state = {
            "schedule": self._cadence.text if self._cadence else "",
            "last_slot": self._last_slot,
            "pending": asdict(self._pending) if self._pending is not None else None,
        }
        write_atomic(self._path, (json.dumps(state, indent=1) + "\n").encode())
