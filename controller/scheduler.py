"""Scheduling decisions, free of I/O: which ready job goes to which drone,
and why a job is not running.

Jobs are ordered by critical path: a job's priority is its own expected
build time plus the longest chain of work that waits on it, so the chain
that bounds the session's makespan starts first. A ready job goes to the
eligible drone with the most spare capacity (cores minus load, idle
slots); since the longest chains are placed first, they get the strongest
drones.

A drone that keeps failing is grounded (circuit breaker): after
``ground_after`` consecutive failures it gets nothing for ``cooldown``
seconds, then one probe job (half-open); success closes the breaker, a
failure grounds it again. Failures that follow a package rather than a
drone are forgiven once the package is known bad, and the breaker never
grounds more than half of the online fleet. An admin may also ground a
drone (until ungrounded) or drain it (it finishes its job, then gets no
more): the build service holds those, the planner only skips the drone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

QUEUED, BLOCKED, ASSIGNED, BUILDING, DONE, FAILED, CANCELLED = (
    "queued",
    "blocked",
    "assigned",
    "building",
    "done",
    "failed",
    "cancelled",
)
JOB_STATES = (QUEUED, BLOCKED, ASSIGNED, BUILDING, DONE, FAILED, CANCELLED)
ACTIVE = frozenset({ASSIGNED, BUILDING})
FINISHED = frozenset({DONE, FAILED, CANCELLED})
MAX_DRONES_PER_PACKAGE = 2  # a package that fails on this many drones is failed


@dataclass(slots=True)
class Job:
    """One package to build in a session. Mutable; owned by the build service."""

    id: str
    session_id: str
    cpv: str
    deps: tuple[str, ...] = ()
    state: str = BLOCKED
    attempts: int = 0
    failed_on: list[str] = field(default_factory=list)
    drone_id: str | None = None
    build_id: str | None = None
    reason: str = ""
    priority: float = 0.0
    created_at: float = 0.0
    ready_at: float | None = None
    assigned_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def cpn(self) -> str:
        """category/package without the version: what build times are learned by."""
        category, _, pf = self.cpv.partition("/")
        name = pf
        for i in range(len(pf) - 1, 0, -1):
            if pf[i] == "-" and pf[i + 1 : i + 2].isdigit():
                name = pf[:i]
                break
        return f"{category}/{name}"


@dataclass(frozen=True, slots=True)
class DroneView:
    """What the scheduler needs to know of a drone right now."""

    id: str
    name: str
    cores: int
    load1: float
    slots: int
    running: int
    healthy: bool
    held: str = ""  # out of the rotation: why ("draining", "payload": taking one when idle)


@dataclass(slots=True)
class Breaker:
    failures: list[str] = field(default_factory=list)  # job ids of consecutive failures
    grounded_until: float = 0.0
    probing: bool = False  # half-open: one probe job allowed
    grounded_by: str = ""  # an admin grounded it (no cooldown: until ungrounded)


@dataclass(frozen=True, slots=True)
class Assignment:
    job_id: str
    drone_id: str


def critical_paths(jobs: Mapping[str, Job], expected: Callable[[Job], float]) -> dict[str, float]:
    """Each job's own expected time plus the longest chain that depends on it."""
    dependents: dict[str, list[str]] = {job_id: [] for job_id in jobs}
    for job in jobs.values():
        for dep in job.deps:
            if dep in dependents:
                dependents[dep].append(job.id)
    memo: dict[str, float] = {}
    # Iterative post-order: a deep chain must not hit the recursion limit.
    for root in jobs:
        stack = [(root, False)]
        while stack:
            job_id, expanded = stack.pop()
            if job_id in memo:
                continue
            if expanded:
                tail = max((memo[d] for d in dependents[job_id]), default=0.0)
                memo[job_id] = expected(jobs[job_id]) + tail
            else:
                stack.append((job_id, True))
                stack.extend((d, False) for d in dependents[job_id] if d not in memo)
    return memo


class Planner:
    def __init__(self, *, ground_after: int = 3, cooldown: float = 300.0) -> None:
        self.ground_after = ground_after
        self.cooldown = cooldown
        self.breakers: dict[str, Breaker] = {}

    # -- circuit breaker -------------------------------------------------

    def breaker(self, drone_id: str) -> Breaker:
        return self.breakers.setdefault(drone_id, Breaker())

    def grounded(self, drone_id: str, now: float) -> bool:
        b = self.breakers.get(drone_id)
        if b is None or b.grounded_until == 0.0:
            return False
        if now < b.grounded_until:
            return True
        # Cooldown over: half-open, one probe at a time.
        return b.probing

    def ground(self, drone_id: str, by: str) -> None:
        """An admin grounds a drone until ``unground``."""
        b = self.breaker(drone_id)
        b.grounded_until = math.inf
        b.grounded_by = by
        b.probing = False

    def unground(self, drone_id: str) -> None:
        """An admin lets a drone fly again at once: its failures are forgotten."""
        self.breakers.pop(drone_id, None)

    def record_success(self, drone_id: str) -> None:
        b = self.breaker(drone_id)
        b.failures.clear()
        if not b.grounded_by:  # an admin's grounding outlasts the job it let finish
            b.grounded_until = 0.0
            b.probing = False

    def record_failure(self, drone_id: str, job_id: str, now: float, online: int) -> bool:
        """Count a failure; True if the drone is grounded by it."""
        b = self.breaker(drone_id)
        b.failures.append(job_id)
        b.probing = False
        # A failed half-open probe grounds again at once, the count aside.
        probe_failed = bool(b.grounded_until) and now >= b.grounded_until
        if not probe_failed and len(b.failures) < self.ground_after:
            return False
        grounded = sum(
            1 for other, ob in self.breakers.items() if other != drone_id and ob.grounded_until > now
        )
        if (grounded + 1) * 2 > online:
            # Grounding this one would take out more than half the fleet:
            # the fault more likely follows the packages than the drones.
            b.grounded_until = 0.0
            return False
        b.grounded_until = now + self.cooldown
        return True

    def forgive(self, job_id: str) -> None:
        """The package is bad, not the drones: its failures do not count, and a
        drone grounded only because of them flies again."""
        for b in self.breakers.values():
            if job_id in b.failures:
                b.failures = [j for j in b.failures if j != job_id]
                if b.grounded_until and not b.grounded_by and len(b.failures) < self.ground_after:
                    b.grounded_until = 0.0
                    b.probing = False

    def start_probe(self, drone_id: str, now: float) -> None:
        b = self.breakers.get(drone_id)
        if b is not None and b.grounded_until and now >= b.grounded_until:
            b.probing = True

    # -- placement ---------------------------------------------------------

    def eligible(self, job: Job, drones: Iterable[DroneView], now: float) -> list[DroneView]:
        return [
            d
            for d in drones
            if d.healthy
            and not d.held
            and d.running < d.slots
            and d.id not in job.failed_on
            and not self.grounded(d.id, now)
        ]

    def plan(self, ready: list[Job], drones: list[DroneView], now: float) -> list[Assignment]:
        """Assignments for ready jobs, most critical first."""
        capacity = {d.id: d.slots - d.running for d in drones}
        spare = {d.id: d.cores - d.load1 for d in drones}
        planned: list[Assignment] = []
        for job in sorted(ready, key=lambda j: (-j.priority, j.created_at, j.id)):
            candidates = [d for d in self.eligible(job, drones, now) if capacity[d.id] > 0]
            if not candidates:
                continue
            best = max(candidates, key=lambda d: (capacity[d.id], spare[d.id], d.cores, d.name))
            capacity[best.id] -= 1
            # The job will add load: spread the next ones elsewhere.
            spare[best.id] -= max(1.0, best.cores / max(best.slots, 1))
            if self.breakers.get(best.id) and self.breakers[best.id].grounded_until:
                self.start_probe(best.id, now)
            planned.append(Assignment(job.id, best.id))
        return planned

    def why_waiting(
        self,
        job: Job,
        jobs: Mapping[str, Job],
        drones: list[DroneView],
        names: Mapping[str, str],
        now: float,
        paused: bool,
    ) -> str:
        """One line on why a queued or blocked job is not running."""
        if job.state == BLOCKED:
            waiting = [jobs[d] for d in job.deps if d in jobs and jobs[d].state != DONE]
            parts = []
            for dep in waiting[:3]:
                where = f" on {names.get(dep.drone_id or '', dep.drone_id)}" if dep.drone_id else ""
                parts.append(f"{dep.cpv} ({dep.state}{where})")
            more = f" and {len(waiting) - 3} more" if len(waiting) > 3 else ""
            return "waiting on " + ", ".join(parts) + more if parts else "waiting on its dependencies"
        if paused:
            return "the session is paused"
        if not drones:
            return "no drone online"
        healthy = [d for d in drones if d.healthy]
        if not healthy:
            return "no healthy drone online"
        untried = [d for d in healthy if d.id not in job.failed_on]
        if not untried:
            failed = ", ".join(names.get(d, d) for d in job.failed_on)
            return f"failed on {failed}; waiting for another drone"
        if all(self.grounded(d.id, now) or d.held for d in untried):
            held = {d.held for d in untried if d.held and not self.grounded(d.id, now)}
            if not held:
                return "all drones grounded"
            if held == {"draining"}:
                return "every drone is grounded or draining"
            if held == {"payload"}:
                return "every drone is grounded or taking a payload"
            return "every drone is grounded, draining or taking a payload"
        return "all drones busy"
