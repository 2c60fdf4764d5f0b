"""Build sessions and their jobs: state, dispatch, outcomes, durability.

The queue keeps every unfinished session and its jobs in memory and
writes each change to the database at once (batched when many land
together), so a kill -9 of the controller loses no job. A write that
fails (the database down, its disk full) keeps its changes and is tried
again with backoff: the changes are keyed by session, job and build, so
they are bounded by what the queue holds, and no new attempt is sent
while they wait (below).

Scheduling is event-driven: a job becoming ready, a drone connecting or a
build ending wakes the scheduler, which places ready jobs with
``scheduler.Planner``. An assignment is written to the database before
its StartBuild goes over the drone's control stream (persist before
send): a kill -9 in between leaves an assignment the restarted controller
knows, and the drone's Hello resumes it (the StartBuild is sent again
with the same build id). History therefore shows every attempt a drone
ever got.

A requeue is a ``job_requeued`` event with its reason and ``cause``
(drone_lost, build_lost, upload_lost, controller_restart, not_started,
timeout, refused, cancelled, failed, session_stopped). An attempt the
controller gives up on is also cancelled on its drone (CancelBuild, at
once or after its next Hello), which then deletes what the build left.

Job lifecycle::

    blocked --deps in staging--> queued --placed--> assigned --STARTED--> building
    building --SUCCEEDED + artifact in staging--> done
    building --FAILED--> queued (another drone) | failed (on 2 drones; dependents cancelled)
    assigned --not started within the start timeout--> queued
    assigned/building --drone gone past the grace period, timeout, REFUSED--> queued

Test-only hook: with SWARM_TEST_CRASH_BEFORE_SEND=1 in its environment the
controller kills itself (SIGKILL) right after it has saved its first
assignment and before sending it (tests/test_build_crashes.py). Never set
it in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import secrets
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from swarm.backoff import Backoff
from swarm.clock import SYSTEM, Clock
from swarm.controller.binhosts import BinhostTarget, MirrorsAPI
from swarm.controller.domain import BuildEventData
from swarm.controller.drone_binhosts import portage_binhost
from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound
from swarm.controller.events import EventLog
from swarm.controller.fleet import ONLINE, DroneState, Fleet
from swarm.controller.metrics import Metrics
from swarm.controller.scheduler import (
    ACTIVE,
    ASSIGNED,
    BLOCKED,
    BUILDING,
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    MAX_DRONES_PER_PACKAGE,
    QUEUED,
    DroneView,
    Job,
    Planner,
    critical_paths,
)
from swarm.controller.store.records import BuildRecord, JobRecord, PackageStat, SessionRecord
from swarm.controller.store.retrying import RetryingWriter
from swarm.controller.store.runner import StoreRunner
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)

RUNNING, PAUSED, STOPPED, COMPLETE = "running", "paused", "stopped", "complete"
# An attempt the controller gave up on (drone gone, never started) rather
# than one the drone reported the end of.
LOST = "lost"
SESSION_STATES = (RUNNING, PAUSED, STOPPED, COMPLETE)
DEFAULT_ESTIMATE = 60.0
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
EWMA = 0.3
TIMER = 1.0
GIVEN_UP_KEPT = 1024  # attempts remembered after the controller gave up on them
COMPLETE_KEPT = 20  # complete sessions loaded at start, so the APIs still show them
HOLDS_KEY = "drone_holds"  # setting: drones drained or grounded by an admin
# A failed write of build state is tried again after a delay growing up to this.
FLUSH_BACKOFF = Backoff(initial=0.5, cap=10.0)
# Test-only (see the module docstring): die between saving an assignment and sending it.
CRASH_HOOK_ENV = "SWARM_TEST_CRASH_BEFORE_SEND"


@dataclass(frozen=True, slots=True)
class Resolved:
    """One package of a resolved dependency graph."""

    cpv: str
    deps: tuple[str, ...]


class Resolver(Protocol):
    async def resolve(self, atoms: Sequence[str]) -> list[Resolved]:
        """The packages the atoms need, each with its in-graph dependencies.
        Raises InvalidArgument / NotFound for bad or unknown atoms."""


class Staging(Protocol):
    def has(self, cpv: str) -> bool:
        """True if a binary package for the cpv is in the staging binhost."""

    url: str


@dataclass(frozen=True, slots=True)
class BuildSettings:
    build_timeout: float = 3600.0
    grace: float = 30.0
    start_timeout: float = 60.0
    ground_after: int = 3
    cooldown: float = 300.0


@dataclass(slots=True)
class Session:
    id: str
    name: str
    state: str
    atoms: tuple[str, ...]
    created_at: float
    created_by: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    job_ids: list[str] = field(default_factory=list)

    def record(self) -> SessionRecord:
        return SessionRecord(
            self.id,
            self.name,
            self.state,
            self.atoms,
            self.created_at,
            self.created_by,
            self.started_at,
            self.finished_at,
        )


def _job_record(job: Job) -> JobRecord:
    return JobRecord(
        job.id,
        job.session_id,
        job.cpv,
        job.deps,
        job.state,
        job.attempts,
        tuple(job.failed_on),
        job.drone_id,
        job.build_id,
        job.reason,
        job.priority,
        job.created_at,
        job.ready_at,
        job.assigned_at,
        job.started_at,
        job.finished_at,
    )


def _job(record: JobRecord) -> Job:
    return Job(
        record.id,
        record.session_id,
        record.cpv,
        record.deps,
        record.state,
        record.attempts,
        list(record.failed_on),
        record.drone_id,
        record.build_id,
        record.reason,
        record.priority,
        record.created_at,
        record.ready_at,
        record.assigned_at,
        record.started_at,
        record.finished_at,
    )


def failure_summary(output: str) -> str:
    """The line that says why a build failed: Portage's ERROR line and the
    die message under it, else the last line."""
    plain = ANSI_RE.sub("", output)
    lines = [line.strip().lstrip("*").strip() for line in plain.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("ERROR:"):
            detail = next((ln for ln in lines[i + 1 : i + 4] if ln), "")
            return f"{line} {detail}".strip()
    meaningful = [line for line in lines if line]
    return meaningful[-1] if meaningful else "failed"


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class DispatchState:
    """Whether a drone gets work, as the admin API shows it."""

    draining: bool
    drained_by: str | None
    grounded: bool
    grounded_by: str | None  # an admin (until ungrounded); None: its breaker
    grounded_until: float | None  # the breaker's cooldown end
    failures: int  # consecutive failed builds
    running: int  # its jobs assigned or building
    held_for_payload: str = ""  # why it gets no new build: a payload it is to take ("": none)


class BuildQueue:
    def __init__(
        self,
        fleet: Fleet,
        events: EventLog,
        runner: StoreRunner,
        resolver: Resolver,
        staging: Staging,
        settings: BuildSettings,
        *,
        metrics: Metrics | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self._fleet = fleet
        self._clock = clock
        self._events = events
        self._runner = runner
        self._resolver = resolver
        self._staging = staging
        self.settings = settings
        self._metrics = metrics
        self.planner = Planner(ground_after=settings.ground_after, cooldown=settings.cooldown)
        self.sessions: dict[str, Session] = {}
        self.jobs: dict[str, Job] = {}
        self.builds: dict[str, BuildRecord] = {}  # build id -> the attempt, while it matters
        self.stats: dict[str, PackageStat] = {}
        self.dispatch_delays: list[float] = []  # seconds from ready to StartBuild sent (bench)
        # Attempts given up on (job requeued): build id -> (drone id, why), oldest
        # first, so that a late upload from the drone is told why it is refused.
        self._given_up: dict[str, tuple[str, str]] = {}
        # Given up on, and the drone not told yet (a CancelBuild, so that it deletes
        # what the build left): build id -> (drone id, why), oldest first.
        self._untold: dict[str, tuple[str, str]] = {}
        # Assignments chosen but whose StartBuild is not sent yet: build id -> job id.
        # Sent once the database holds them (persist before send).
        self._unsent: dict[str, str] = {}
        # Jobs assigned by an earlier run of the controller: it may have died before
        # sending them, so the drone's Hello without them resumes them.
        self._unconfirmed: set[str] = set()
        self._uploading: set[str] = set()  # build ids whose drone asked to upload
        self._dirty_jobs: set[str] = set()
        self._dirty_sessions: set[str] = set()
        self._dirty_builds: set[str] = set()
        self._dirty_stats: set[str] = set()
        self._flush_lock = asyncio.Lock()
        self._crash_before_send = os.environ.get(CRASH_HOOK_ENV) == "1"
        self._wake = asyncio.Event()
        self.writer = RetryingWriter("build state", self._save, FLUSH_BACKOFF, log)
        self._tasks = TaskSet("builds")
        self._started_at = 0.0
        self.draining: dict[str, str] = {}  # drone id -> the admin who drained it
        # Drones to take a payload (payloads.py): no new build until it is over;
        # each with why (which payload, which deploy) for the admin API.
        self.payload_holds: dict[str, str] = {}
        # The binhost mirrors, once the controller runs them (use_mirrors): drones
        # then pull the current release from the mirrors of their network before staging.
        self._mirrors: MirrorsAPI | None = None
        self._url_of: Callable[[BinhostTarget], str] = lambda target: target.url
        # Builds other than the queue's running on drones (the test runner's):
        # drone id -> count. The planner counts them as the drone's jobs.
        self.elsewhere: Callable[[], Mapping[str, int]] = dict

    # -- lifecycle ---------------------------------------------------------

    def use_mirrors(self, mirrors: MirrorsAPI | None, url_of: Callable[[BinhostTarget], str]) -> None:
        """Point the drones' dependency pulls at the mirrors too (None: staging only).
        ``url_of``: a target's public URL (BinhostTargets.url_of)."""
        self._mirrors, self._url_of = mirrors, url_of

    def binhost_for(self, network: str) -> str:
        """StartBuild's binhost_url for a drone on ``network`` (drone_binhosts)."""
        if self._mirrors is None:
            return self._staging.url
        return portage_binhost(self._staging.url, network, self._mirrors.usable(), self._url_of)

    async def start(self) -> None:
        store = self._runner.store
        complete_kept = 0
        for record in await self._runner.call(store.list_sessions, 1000):
            # Every unfinished session, and the newest complete ones for the APIs.
            if record.state != COMPLETE or complete_kept < COMPLETE_KEPT:
                complete_kept += record.state == COMPLETE
                self.sessions[record.id] = Session(
                    record.id,
                    record.name,
                    record.state,
                    record.atoms,
                    record.created_at,
                    record.created_by,
                    record.started_at,
                    record.finished_at,
                )
        # (No session: no jobs to load; an empty list would mean all of them.)
        records = await self._runner.call(store.list_jobs, list(self.sessions)) if self.sessions else []
        for job_record in records:
            job = _job(job_record)
            self.jobs[job.id] = job
            self.sessions[job.session_id].job_ids.append(job.id)
        for build in await self._runner.call(store.list_builds, limit=1000):
            if build.finished_at is None:
                self.builds[build.id] = build
        self.stats = {s.cpn: s for s in await self._runner.call(store.list_package_stats)}
        await self._load_holds()
        now = self._started_at = self._clock.time()
        for job in self.jobs.values():
            if job.state in ACTIVE:
                # Still ours until its drone says otherwise in its Hello, or the grace period runs out.
                job.assigned_at = job.assigned_at or now
                if job.state == ASSIGNED:
                    self._unconfirmed.add(job.id)
        self._tasks.spawn(self._schedule_loop(), "schedule")
        self._tasks.spawn(self.writer.run(), "persist")
        self._tasks.spawn(self._timer_loop(), "timers")
        self._wake.set()

    async def stop(self) -> None:
        await self._tasks.close()
        try:
            await self.flush()
        except Exception as exc:
            # The database has the state of the last write that worked; the drones'
            # Hellos and the grace period put the rest right after the restart.
            log.error(
                "build state not written at stop (%s): %d job(s), %d attempt(s) as last written",
                exc,
                len(self._dirty_jobs),
                len(self._dirty_builds),
            )

    # -- admin holds -------------------------------------------------------
    # Draining and grounding by an admin outlive a controller restart (a setting).

    async def _load_holds(self) -> None:
        raw = await self._runner.call(self._runner.store.get_setting, HOLDS_KEY)
        try:
            holds = json.loads(raw) if raw else {}
            self.draining = {str(k): str(v) for k, v in holds.get("drain", {}).items()}
            for drone_id, by in holds.get("ground", {}).items():
                self.planner.ground(str(drone_id), str(by))
        except (ValueError, AttributeError, TypeError):
            log.error("the stored drone holds are unreadable (%.100s); starting without them", raw)

    async def _save_holds(self) -> None:
        grounded = {d: b.grounded_by for d, b in self.planner.breakers.items() if b.grounded_by}
        value = json.dumps({"drain": self.draining, "ground": grounded}, sort_keys=True)
        await self._runner.call(self._runner.store.set_setting, HOLDS_KEY, value)

    async def drain(self, drone: DroneState, by: str, on: bool) -> None:
        """Drain a drone (it finishes its job and gets no more) or put it back in the rotation."""
        if on == (drone.id in self.draining):
            raise FailedPrecondition(f"{drone.name} is {'draining' if on else 'not draining'} already")
        if on:
            self.draining[drone.id] = by
        else:
            del self.draining[drone.id]
        await self._save_holds()
        if on:
            running = self.running_by_drone().get(drone.id, 0)
            then = f": its {running} job(s) finish first" if running else ""
            message = f"{drone.name} drained by {by}{then}"
        else:
            message = f"{drone.name} back in the rotation ({by})"
        self._events.emit(
            "drone_draining" if on else "drone_undrained",
            message,
            drone_id=drone.id,
            drone_name=drone.name,
            by=by,
        )
        self._changed()

    async def ground(self, drone: DroneState, by: str, on: bool) -> None:
        """Ground a drone until ungrounded, or unground one (by an admin or its breaker)."""
        breaker = self.planner.breakers.get(drone.id)
        if on:
            if breaker is not None and breaker.grounded_by:
                raise FailedPrecondition(f"{drone.name} is grounded by {breaker.grounded_by} already")
            self.planner.ground(drone.id, by)
        else:
            if not self.planner.grounded(drone.id, self._clock.time()):
                raise FailedPrecondition(f"{drone.name} is not grounded")
            self.planner.unground(drone.id)
        await self._save_holds()
        self._events.emit(
            "drone_grounded" if on else "drone_ungrounded",
            f"{drone.name} grounded by {by} until ungrounded" if on else f"{drone.name} ungrounded by {by}",
            drone_id=drone.id,
            drone_name=drone.name,
            by=by,
            manual=True,
        )
        self._changed()

    def dispatch_state(self, drone_id: str, now: float, running: Mapping[str, int]) -> DispatchState:
        """``running``: running_by_drone(), counted once for all the drones of an answer."""
        breaker = self.planner.breakers.get(drone_id)
        grounded = self.planner.grounded(drone_id, now)
        return DispatchState(
            draining=drone_id in self.draining,
            drained_by=self.draining.get(drone_id),
            grounded=grounded,
            grounded_by=breaker.grounded_by or None if breaker is not None and grounded else None,
            grounded_until=(
                breaker.grounded_until
                if breaker is not None and grounded and math.isfinite(breaker.grounded_until)
                else None
            ),
            failures=len(breaker.failures) if breaker is not None else 0,
            running=running.get(drone_id, 0),
            held_for_payload=self.payload_holds.get(drone_id, ""),
        )

    # -- queries -------------------------------------------------------------

    def session_jobs(self, session: Session) -> list[Job]:
        return [self.jobs[j] for j in session.job_ids if j in self.jobs]

    def counts(self, session: Session) -> dict[str, int]:
        counts = {state: 0 for state in (BLOCKED, QUEUED, ASSIGNED, BUILDING, DONE, FAILED, CANCELLED)}
        for job in self.session_jobs(session):
            counts[job.state] += 1
        return counts

    def current_session(self) -> Session | None:
        live = [s for s in self.sessions.values() if s.state != COMPLETE]
        return max(live, key=lambda s: s.created_at) if live else None

    # -- queries for the web tiers --------------------------------------------

    def newest_sessions(self) -> list[Session]:
        return sorted(self.sessions.values(), key=lambda x: x.created_at, reverse=True)

    def find_jobs(
        self,
        *,
        states: frozenset[str] = frozenset(),
        session_id: str | None = None,
        text: str = "",
        limit: int,
    ) -> tuple[list[Job], int]:
        """Jobs, most critical first, and how many matched before ``limit``:
        of one session (NotFound if there is none), in any of ``states``
        (all if empty), whose package, id or drone name holds ``text``
        (case-insensitive)."""
        if session_id:
            session = self.sessions.get(session_id)
            if session is None:
                raise NotFound(f"no session {session_id[:40]!r}")
            pool: Iterable[Job] = self.session_jobs(session)
        else:
            pool = self.jobs.values()
        needle = text.strip().lower()
        names = self._fleet.names() if needle else {}
        found = [
            j
            for j in pool
            if (not states or j.state in states)
            and (not needle or needle in f"{j.cpv} {j.id} {names.get(j.drone_id or '', '')}".lower())
        ]
        found.sort(key=lambda j: (-j.priority, j.created_at, j.id))
        return found[:limit], len(found)

    async def history(self, limit: int) -> list[BuildRecord]:
        """Finished builds, newest first."""
        return await self._runner.call(self._runner.store.list_builds, limit=limit, finished=True)

    async def builds_of(self, job: Job, limit: int) -> list[BuildRecord]:
        """The job's builds, newest first."""
        return await self._runner.call(self._runner.store.list_builds, job_id=job.id, limit=limit)

    async def log_build_id(self, job: Job) -> str | None:
        """The build whose log stands for the job: the current one, else the latest."""
        if job.build_id is not None:
            return job.build_id
        latest = await self.builds_of(job, 1)
        return latest[0].id if latest else None

    def latest_session(self) -> Session | None:
        """The session started last, finished or not (what a status page shows)."""
        return max(self.sessions.values(), key=lambda s: s.created_at) if self.sessions else None

    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id[:40]!r}")
        return job

    def estimate(self, job: Job) -> float:
        stat = self.stats.get(job.cpn)
        return stat.mean_seconds if stat is not None else DEFAULT_ESTIMATE

    def why(self, job: Job) -> str:
        if job.state in FINISHED or job.state in ACTIVE:
            return job.reason
        session = self.sessions.get(job.session_id)
        paused = session is None or session.state != RUNNING
        names = self._fleet.names()
        now = self._clock.time()
        return self.planner.why_waiting(job, self.jobs, self._drone_views(), names, now, paused)

    def owner(self, build_id: str) -> str | None:
        """The drone a build was given to (for authorization of its uploads)."""
        build = self.builds.get(build_id)
        if build is not None:
            return build.drone_id
        given_up = self._given_up.get(build_id)
        return given_up[0] if given_up is not None else None

    def uploading(self, build_id: str) -> None:
        """The drone of the build asks to upload its package: its emerge is over
        (if the drone is lost now, what is lost is the upload)."""
        if build_id in self.builds:
            self._uploading.add(build_id)

    def superseded(self, build_id: str) -> str | None:
        """None while the build is its job's current attempt; else why what it
        uploads must not reach staging (the job was requeued or stopped without it)."""
        build = self.builds.get(build_id)
        job = self.jobs.get(build.job_id) if build is not None else None
        if job is not None and job.build_id != build_id:
            return f"build {build_id} is no longer the current attempt of job {job.id} ({job.reason[:200]})"
        given_up = self._given_up.get(build_id)
        return given_up[1] if given_up is not None else None

    # -- admin actions ---------------------------------------------------------

    async def queue(self, atoms: Sequence[str], *, name: str | None, by: str) -> tuple[Session, list[Job]]:
        atoms = [a.strip() for a in atoms if a.strip()]
        if not atoms:
            raise InvalidArgument("queue at least one package atom")
        resolved = await self._resolver.resolve(atoms)
        now = self._clock.time()
        session = (
            self.current_session()
            if name is None
            else next((s for s in self.sessions.values() if s.name == name and s.state != COMPLETE), None)
        )
        if session is None:
            session = Session(
                _new_id("s-"),
                name or time.strftime("session-%Y%m%d-%H%M%S", time.localtime(now)),
                RUNNING,
                (),
                now,
                by,
                started_at=now,
            )
            self.sessions[session.id] = session
            self._events.emit(
                "session_created", f"session {session.name} created by {by}", session_id=session.id
            )
        session.atoms = tuple(dict.fromkeys((*session.atoms, *atoms)))
        by_cpv = {self.jobs[j].cpv: self.jobs[j] for j in session.job_ids if j in self.jobs}
        added: list[Job] = []
        for package in resolved:
            if package.cpv in by_cpv:
                continue
            job = Job(_new_id("j-"), session.id, package.cpv, state=BLOCKED, created_at=now)
            by_cpv[package.cpv] = job
            added.append(job)
        for package in resolved:
            job = by_cpv[package.cpv]
            if job in added:
                job.deps = tuple(by_cpv[d].id for d in package.deps if d in by_cpv and d != package.cpv)
        for job in added:
            self.jobs[job.id] = job
            session.job_ids.append(job.id)
            if self._staging.has(job.cpv):
                job.state, job.reason, job.finished_at = DONE, "already in staging", now
            self._dirty_jobs.add(job.id)
        if session.state == COMPLETE or session.finished_at is not None:
            session.state, session.finished_at = RUNNING, None
        self._reprioritise(session)
        for job in added:
            self._maybe_ready(job, now)
        self._dirty_sessions.add(session.id)
        self._events.emit(
            "jobs_queued",
            f"{len(added)} jobs queued in {session.name} ({', '.join(atoms)[:200]})",
            session_id=session.id,
            atoms=atoms,
            jobs=len(added),
            by=by,
        )
        # Everything may be in staging already: then the session is complete now.
        self._check_session(session.id, now)
        self._changed()
        return session, added

    def control(self, action: str, session_id: str | None, by: str) -> Session:
        session = self.sessions.get(session_id) if session_id else self.current_session()
        if session is None:
            raise NotFound("no such session" if session_id else "there is no session to control")
        now = self._clock.time()
        if action in ("start", "resume"):
            if session.state == COMPLETE:
                raise FailedPrecondition(f"session {session.name} is complete; reset it to build again")
            session.state = RUNNING
            session.started_at = session.started_at or now
        elif action == "pause":
            session.state = PAUSED  # running builds finish; nothing new starts
        elif action == "stop":
            session.state = STOPPED
            for job in self.session_jobs(session):
                if job.state in ACTIVE:
                    self._requeue(
                        job, "the session was stopped", now, attempt=CANCELLED, cause="session_stopped"
                    )
        elif action == "reset":
            for job in self.session_jobs(session):
                if job.state in (FAILED, CANCELLED):
                    job.state, job.attempts, job.failed_on, job.reason = BLOCKED, 0, [], ""
                    job.finished_at = None
                    self.planner.forgive(job.id)
                    self._maybe_ready(job, now)
                    self._dirty_jobs.add(job.id)
            session.state, session.finished_at = RUNNING, None
        else:
            raise InvalidArgument(f"unknown action {action[:20]!r}: use start, stop, pause, resume or reset")
        self._dirty_sessions.add(session.id)
        self._events.emit(
            "session_control",
            f"session {session.name}: {action} by {by}",
            session_id=session.id,
            action=action,
            by=by,
        )
        self._changed()
        return session

    # -- scheduling ------------------------------------------------------------------

    def hold_for_payload(self, drone_id: str, why: str) -> None:
        """Keep a drone out of the rotation while it is to take a payload
        (it takes one only when idle; ``why`` says which, for the admin API),
        or put it back (``why`` "")."""
        if why:
            self.payload_holds[drone_id] = why
        else:
            self.payload_holds.pop(drone_id, None)
        self._wake.set()

    def _changed(self) -> None:
        self._wake.set()
        self.writer.wake()

    def _reprioritise(self, session: Session) -> None:
        jobs = {j.id: j for j in self.session_jobs(session) if j.state not in FINISHED}
        for job_id, priority in critical_paths(jobs, self.estimate).items():
            if jobs[job_id].priority != priority:
                jobs[job_id].priority = priority
                self._dirty_jobs.add(job_id)

    def _maybe_ready(self, job: Job, now: float) -> None:
        if job.state != BLOCKED:
            return
        if all(self.jobs[d].state == DONE for d in job.deps if d in self.jobs):
            job.state, job.ready_at, job.reason = QUEUED, now, ""
            self._dirty_jobs.add(job.id)

    def running_by_drone(self) -> dict[str, int]:
        """Each drone's jobs assigned or building (drones with none left out)."""
        running: dict[str, int] = {}
        for job in self.jobs.values():
            if job.state in ACTIVE and job.drone_id:
                running[job.drone_id] = running.get(job.drone_id, 0) + 1
        return running

    def ready(self) -> bool:
        """Whether a job of a running session waits for a drone (test builds wait then)."""
        return any(
            j.state == QUEUED and (s := self.sessions.get(j.session_id)) is not None and s.state == RUNNING
            for j in self.jobs.values()
        )

    def wake(self) -> None:
        """Schedule now (a drone was freed by a build that is not the queue's)."""
        self._wake.set()

    def _drone_views(self) -> list[DroneView]:
        running = self.running_by_drone()
        for drone_id, count in self.elsewhere().items():
            running[drone_id] = running.get(drone_id, 0) + count
        return [
            DroneView(
                d.id,
                d.name,
                d.cores,
                d.load1,
                1,
                running.get(d.id, 0),
                d.status == ONLINE,
                "draining" if d.id in self.draining else "payload" if d.id in self.payload_holds else "",
            )
            for d in self._fleet.connected()
        ]

    async def _schedule_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self.schedule(self._clock.time())
                self._tell_given_up()
            except Exception:
                log.exception("scheduling pass failed")

    def schedule(self, now: float) -> None:
        ready = [
            j
            for j in self.jobs.values()
            if j.state == QUEUED
            and self.sessions.get(j.session_id) is not None
            and self.sessions[j.session_id].state == RUNNING
        ]
        for job in ready:
            if self._staging.has(job.cpv):
                # Built already (say its SUCCEEDED was lost and the job requeued):
                # building it again would stage a second copy.
                job.state, job.finished_at, job.reason = DONE, now, "already in staging"
                self._dirty_jobs.add(job.id)
                for other in self.jobs.values():
                    if job.id in other.deps:
                        self._maybe_ready(other, now)
                self._check_session(job.session_id, now)
                self._changed()
        ready = [j for j in ready if j.state == QUEUED]
        if ready:
            for assignment in self.planner.plan(ready, self._drone_views(), now):
                self._assign(self.jobs[assignment.job_id], assignment.drone_id, now)
        if self._unsent:
            # Sent once written (a StartBuild that did not fit a drone's outbox is tried again here).
            self.writer.wake()

    def _assign(self, job: Job, drone_id: str, now: float) -> None:
        """The job is the drone's from now on; its StartBuild goes out once the
        database holds the assignment (``flush`` sends it)."""
        state = self._fleet.get(drone_id)
        if state is None or state.link is None:
            return
        build_id = _new_id("b-")
        job.state, job.drone_id, job.build_id, job.assigned_at = ASSIGNED, drone_id, build_id, now
        job.attempts += 1
        job.reason = f"assigned to {state.name}"
        self.builds[build_id] = BuildRecord(
            build_id, job.id, job.session_id, job.cpv, drone_id, ASSIGNED, now
        )
        self._unsent[build_id] = job.id
        self._dirty_builds.add(build_id)
        self._dirty_jobs.add(job.id)
        self.writer.wake()

    def _send_saved(self, build_ids: Iterable[str]) -> None:
        """Send the StartBuilds of these assignments, which the database holds now."""
        now = self._clock.time()
        for build_id in build_ids:
            job = self.jobs.get(self._unsent.get(build_id, ""))
            if job is None or job.build_id != build_id or job.state != ASSIGNED:
                self._unsent.pop(build_id, None)  # requeued or stopped meanwhile
                continue
            state = self._fleet.get(job.drone_id or "")
            if state is None or state.link is None:
                continue  # sent when the drone says Hello again, or requeued after the grace period
            if self._crash_before_send:
                log.critical(
                    "test hook %s: dying between saving build %s and sending it", CRASH_HOOK_ENV, build_id
                )
                os.kill(os.getpid(), signal.SIGKILL)
            binhost = self.binhost_for(state.network)
            if not state.link.start_build(
                job.id, build_id, job.cpv, int(self.settings.build_timeout), binhost
            ):
                continue  # the drone is not keeping up; tried again on the next pass
            del self._unsent[build_id]
            self._unconfirmed.discard(job.id)
            # The start timeout counts from here, not from a wait for the database.
            job.assigned_at, job.reason = now, f"sent to {state.name}"
            self._dirty_jobs.add(job.id)
            if job.ready_at is not None:
                self.dispatch_delays.append(now - job.ready_at)
                del self.dispatch_delays[:-10_000]
                if self._metrics is not None:
                    self._metrics.dispatch_latency.observe(now - job.ready_at)

    def _tell_given_up(self) -> None:
        """Cancel the attempts given up on at their drones (connected ones), so
        that they delete what those builds left behind."""
        for build_id, (drone_id, why) in list(self._untold.items()):
            state = self._fleet.get(drone_id)
            if state is not None and state.link is not None and state.link.cancel_build(build_id, why):
                del self._untold[build_id]

    # -- outcomes ------------------------------------------------------------------

    def on_build_event(self, drone: DroneState, event: BuildEventData) -> None:
        job = self.jobs.get(event.job_id)
        build = self.builds.get(event.build_id)
        if job is None or build is None or build.drone_id != drone.id:
            log.debug("ignoring %s for unknown or foreign build %s", event.kind, event.build_id)
            return
        now = self._clock.time()
        if build.finished_at is not None:
            return  # already applied (sent again after a reconnect)
        current = job.build_id == event.build_id and job.state in ACTIVE
        if event.kind == "started":
            if current:
                job.state, job.started_at, job.reason = BUILDING, now, f"building on {drone.name}"
                self._dirty_jobs.add(job.id)
            self._update_build(build, state=BUILDING, started_at=now)
            return
        outcome = {"succeeded": DONE, "failed": FAILED, "refused": "refused", "cancelled": CANCELLED}[
            event.kind
        ]
        self._update_build(
            build, state=outcome, finished_at=now, exit_code=event.exit_code, reason=event.reason[:500]
        )
        if not current:
            return
        if event.kind == "succeeded":
            self._succeeded(job, drone, event, now)
        elif event.kind == "failed":
            self._failed(job, drone, event.reason, now)
        elif event.kind == "refused":
            self._requeue(job, f"{drone.name} refused: {event.reason}", now, cause="refused")
            # Do not hand it straight back to the same drone.
            breaker = self.planner.breaker(drone.id)
            breaker.grounded_until = max(breaker.grounded_until, now + 30.0)
        else:
            self._requeue(job, f"cancelled on {drone.name}: {event.reason}", now, cause="cancelled")
        self._changed()

    def _update_build(self, build: BuildRecord, **changes: object) -> None:
        updated = self.builds[build.id] = replace(build, **changes)  # type: ignore[arg-type]
        if updated.finished_at is not None:
            self._uploading.discard(build.id)
            self._unsent.pop(build.id, None)
            if build.finished_at is None and updated.started_at is not None and self._metrics is not None:
                seconds = max(0.0, updated.finished_at - updated.started_at)
                self._metrics.build_duration.labels(updated.state).observe(seconds)
        self._dirty_builds.add(build.id)
        self.writer.wake()

    def _succeeded(self, job: Job, drone: DroneState, event: BuildEventData, now: float) -> None:
        if not self._staging.has(job.cpv):
            self._failed(job, drone, "reported success but no package reached staging", now)
            return
        job.state, job.finished_at, job.reason = DONE, now, f"built on {drone.name}"
        self.planner.record_success(drone.id)
        duration = event.duration or (now - (job.started_at or now))
        old = self.stats.get(job.cpn)
        mean = duration if old is None else (1 - EWMA) * old.mean_seconds + EWMA * duration
        self.stats[job.cpn] = PackageStat(job.cpn, mean, (old.builds if old else 0) + 1, now)
        self._dirty_stats.add(job.cpn)
        self._dirty_jobs.add(job.id)
        self._events.emit(
            "job_done",
            f"{job.cpv} built on {drone.name} in {duration:.1f}s",
            drone_id=drone.id,
            drone_name=drone.name,
            job_id=job.id,
            cpv=job.cpv,
            duration=round(duration, 3),
        )
        for other in self.jobs.values():
            if job.id in other.deps:
                self._maybe_ready(other, now)
        self._check_session(job.session_id, now)

    def _failed(self, job: Job, drone: DroneState, reason: str, now: float) -> None:
        if drone.id not in job.failed_on:
            job.failed_on.append(drone.id)
        last = failure_summary(reason)
        grounded = self.planner.record_failure(drone.id, job.id, now, self._fleet.connected_count())
        # The failure first, then what it caused: the event log reads in order.
        self._events.emit(
            "job_failed_on_drone",
            f"{job.cpv} failed on {drone.name}: {last[:200]}",
            drone_id=drone.id,
            drone_name=drone.name,
            job_id=job.id,
            cpv=job.cpv,
        )
        if grounded:
            self._events.emit(
                "drone_grounded",
                f"{drone.name} grounded for {self.settings.cooldown:.0f}s after "
                f"{self.settings.ground_after} failures in a row",
                drone_id=drone.id,
                drone_name=drone.name,
            )
        if len(job.failed_on) >= MAX_DRONES_PER_PACKAGE:
            names = ", ".join(self._name(d) for d in job.failed_on)
            job.state, job.finished_at, job.reason = FAILED, now, f"failed on {names}: {last[:300]}"
            self.planner.forgive(job.id)
            self._dirty_jobs.add(job.id)
            self._events.emit("job_failed", f"{job.cpv} failed on {names}", job_id=job.id, cpv=job.cpv)
            self._cancel_dependents(job, now)
            self._check_session(job.session_id, now)
        else:
            self._requeue(
                job, f"failed on {drone.name}: {last[:300]}; retrying on another drone", now, cause="failed"
            )

    def _cancel_dependents(self, failed: Job, now: float) -> None:
        pending = [failed.id]
        while pending:
            current = pending.pop()
            for job in self.jobs.values():
                if current in job.deps and job.state not in FINISHED:
                    if job.state in ACTIVE:
                        self._cancel_on_drone(job, "a dependency failed")
                    job.state, job.finished_at = CANCELLED, now
                    job.reason = f"dependency {failed.cpv} failed"
                    self._dirty_jobs.add(job.id)
                    pending.append(job.id)

    def _requeue(self, job: Job, reason: str, now: float, *, cause: str, attempt: str = LOST) -> None:
        """Back to the queue, said in a ``job_requeued`` event. An attempt still
        open ends here as ``attempt``, so history never shows it running for
        ever (the drone's own report of it, if one comes, is then ignored), and
        its drone is told to cancel it and delete what it left."""
        build = self.builds.get(job.build_id or "")
        drone_id = job.drone_id
        if build is not None and build.finished_at is None:
            self._update_build(build, state=attempt, finished_at=now, reason=reason[:500])
            self._given_up[build.id] = (
                build.drone_id,
                f"build {build.id} is no longer the current attempt of job {job.id} ({reason[:200]})",
            )
            if len(self._given_up) > GIVEN_UP_KEPT:
                del self._given_up[next(iter(self._given_up))]
            self._untold[build.id] = (build.drone_id, f"given up: {reason[:300]}")
            if len(self._untold) > GIVEN_UP_KEPT:
                del self._untold[next(iter(self._untold))]
        self._unconfirmed.discard(job.id)
        job.state, job.drone_id, job.build_id, job.reason = QUEUED, None, None, reason
        job.ready_at, job.assigned_at, job.started_at = now, None, None
        self._dirty_jobs.add(job.id)
        drone = self._fleet.get(drone_id or "")
        self._events.emit(
            "job_requeued",
            f"{job.cpv} requeued: {reason[:300]}",
            drone_id=drone_id,
            drone_name=drone.name if drone is not None else None,
            job_id=job.id,
            cpv=job.cpv,
            build_id=build.id if build is not None else None,
            cause=cause,
            reason=reason[:500],
        )
        self._changed()

    def _cancel_on_drone(self, job: Job, reason: str) -> None:
        state = self._fleet.get(job.drone_id or "")
        if state is not None and state.link is not None and job.build_id:
            state.link.cancel_build(job.build_id, reason)

    def _check_session(self, session_id: str, now: float) -> None:
        session = self.sessions.get(session_id)
        if session is None or session.state == COMPLETE:
            return
        jobs = self.session_jobs(session)
        if jobs and all(j.state in FINISHED for j in jobs):
            session.state, session.finished_at = COMPLETE, now
            counts = self.counts(session)
            self._dirty_sessions.add(session.id)
            self._events.emit(
                "session_complete",
                f"session {session.name} complete: {counts[DONE]} done, "
                f"{counts[FAILED]} failed, {counts[CANCELLED]} cancelled",
                session_id=session.id,
                counts=counts,
            )

    def _name(self, drone_id: str) -> str:
        state = self._fleet.get(drone_id)
        return state.name if state is not None else drone_id

    # -- drones coming and going -------------------------------------------------------

    def on_hello(self, drone: DroneState, current_build: str, recent: Iterable[BuildEventData]) -> None:
        """A drone (re)connected: learn what it runs and what it finished meanwhile."""
        for event in recent:
            self.on_build_event(drone, event)
        now = self._clock.time()
        for job in list(self.jobs.values()):
            if job.drone_id != drone.id or job.state not in ACTIVE:
                continue
            if job.build_id == current_build:
                self._unconfirmed.discard(job.id)
                self._unsent.pop(current_build, None)
                if job.state == ASSIGNED:
                    # Its STARTED was sent while the stream was down.
                    job.state, job.started_at, job.reason = BUILDING, now, f"building on {drone.name}"
                    self._dirty_jobs.add(job.id)
                    build = self.builds.get(current_build)
                    if build is not None:
                        self._update_build(build, state=BUILDING, started_at=now)
            elif job.state == ASSIGNED and (job.id in self._unconfirmed or job.build_id in self._unsent):
                # Saved, but perhaps never sent (an earlier run of the controller died
                # in between, or the drone was away): the same attempt goes out now,
                # after the Welcome (the scheduling pass that this wakes sends it).
                log.info("build %s of %s: resuming it on %s", job.build_id, job.cpv, drone.name)
                self._unsent[job.build_id or ""] = job.id
            # A job assigned a moment ago may not have reached the drone yet.
            elif job.state == BUILDING or (now - (job.assigned_at or now)) > 5.0:
                # The drone runs something else or nothing: that attempt is gone.
                phase, cause = (
                    ("upload", "upload_lost") if job.build_id in self._uploading else ("build", "build_lost")
                )
                self._requeue(
                    job,
                    f"{drone.name} reconnected without build {job.build_id} (its {phase} was lost)",
                    now,
                    cause=cause,
                )
        self._changed()

    async def _timer_loop(self) -> None:
        while True:
            await self._clock.sleep(TIMER)
            with contextlib.suppress(Exception):
                self.check_timers(self._clock.time())

    def check_timers(self, now: float) -> None:
        for job in list(self.jobs.values()):
            if job.state not in ACTIVE:
                continue
            drone = self._fleet.get(job.drone_id or "")
            # A drone last seen before this controller started had no chance to
            # reconnect yet: its grace period starts with us, not at its last message.
            gone_since = (
                None if drone is None or drone.connected else max(drone.last_seen_at or 0.0, self._started_at)
            )
            if drone is None or (gone_since is not None and now - gone_since > self.settings.grace):
                name = self._name(job.drone_id or "")
                if gone_since == self._started_at:
                    why = f"{name} not back within {self.settings.grace:.0f}s of the controller's restart"
                    cause = "controller_restart"
                else:
                    why = f"{name} went away during the build (gone for more than {self.settings.grace:.0f}s)"
                    cause = "drone_lost"
                self._requeue(job, why, now, cause=cause)
            elif job.build_id in self._unsent or job.id in self._unconfirmed:
                # Waits for the database, the drone's outbox or its Hello after our
                # restart: not for the drone to start it.
                continue
            elif job.state == ASSIGNED and now - (job.assigned_at or now) > self.settings.start_timeout:
                self._requeue(
                    job,
                    f"{self._name(job.drone_id or '')} did not start the build "
                    f"within {self.settings.start_timeout:.0f}s",
                    now,
                    attempt=CANCELLED,
                    cause="not_started",
                )
            elif job.started_at and now - job.started_at > self.settings.build_timeout + 30:
                self._requeue(
                    job,
                    f"timed out after {self.settings.build_timeout:.0f}s",
                    now,
                    attempt=CANCELLED,
                    cause="timeout",
                )
        self._wake.set()

    # -- persistence ------------------------------------------------------------------

    @property
    def flush_failures(self) -> int:
        """Background writes of build state failed in a row (0: the last one worked)."""
        return self.writer.failures

    async def _save(self) -> None:
        saving = list(self._unsent)  # assignments made so far: held by the write below
        await self.flush()
        self._send_saved(saving)

    async def flush(self) -> None:
        """Write every change made before the call. A failed write keeps its
        changes for the next one (which writes their newest state) and raises."""
        async with self._flush_lock:
            store = self._runner.store
            session_ids, self._dirty_sessions = self._dirty_sessions, set()
            job_ids, self._dirty_jobs = self._dirty_jobs, set()
            build_ids, self._dirty_builds = self._dirty_builds, set()
            stat_keys, self._dirty_stats = self._dirty_stats, set()
            sessions = [self.sessions[s].record() for s in session_ids if s in self.sessions]
            jobs = [_job_record(self.jobs[j]) for j in job_ids if j in self.jobs]
            builds = [self.builds[b] for b in build_ids if b in self.builds]
            stats = [self.stats[c] for c in stat_keys if c in self.stats]

            def write_build_state() -> None:
                store.upsert_sessions(sessions)
                store.upsert_jobs(jobs)
                store.upsert_builds(builds)
                store.upsert_package_stats(stats)

            try:
                await self._runner.call(write_build_state)
            except BaseException:
                # Nothing of it is forgotten (cancelled too: the write may not have run).
                self._dirty_sessions |= session_ids
                self._dirty_jobs |= job_ids
                self._dirty_builds |= build_ids
                self._dirty_stats |= stat_keys
                raise
            for build in builds:
                if build.finished_at is not None and self.builds.get(build.id) is build:
                    # Outcomes sent again after a reconnect find no build and are ignored.
                    self.builds.pop(build.id, None)
