"""Views of build sessions, jobs and builds (both tiers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from swarm.clock import iso
from swarm.controller.builds import BuildQueue, Session
from swarm.controller.scheduler import Job
from swarm.controller.store.records import BuildRecord
from swarm.controller.web.views.base import Doc, Range, Timestamp

SessionState = Literal["running", "paused", "stopped", "complete"]
JobState = Literal["queued", "blocked", "assigned", "building", "done", "failed", "cancelled"]
Count = Annotated[int, Range(0)]


@dataclass(frozen=True, slots=True)
class JobCounts:
    """A session's jobs by state."""

    blocked: Count
    queued: Count
    assigned: Count
    building: Count
    done: Count
    failed: Count
    cancelled: Count


@dataclass(frozen=True, slots=True)
class SessionView:
    id: str
    name: str
    state: SessionState
    atoms: tuple[str, ...]
    created_at: Timestamp
    created_by: str
    started_at: Timestamp
    finished_at: Timestamp
    jobs: JobCounts
    total: Count
    progress: Annotated[float, Range(0, 1), Doc("share of the jobs done")]


def session_view(queue: BuildQueue, session: Session) -> SessionView:
    counts = queue.counts(session)
    total = sum(counts.values())
    return SessionView(
        id=session.id,
        name=session.name,
        state=session.state,  # type: ignore[arg-type]
        atoms=tuple(session.atoms),
        created_at=iso(session.created_at),
        created_by=session.created_by,
        started_at=iso(session.started_at),
        finished_at=iso(session.finished_at),
        jobs=JobCounts(**counts),
        total=total,
        progress=round(counts["done"] / total, 4) if total else 0.0,
    )


@dataclass(frozen=True, slots=True)
class JobView:
    id: str
    session_id: str
    cpv: str
    state: JobState
    deps: tuple[str, ...]
    drone: Annotated[str | None, Doc("the drone's name (its id if it has none)")]
    build_id: str | None
    attempts: Count
    failed_on: Annotated[tuple[str, ...], Doc("drones it failed on")]
    priority: float
    reason: str
    ready_at: Timestamp
    started_at: Timestamp
    finished_at: Timestamp


def _job_fields(job: Job, names: dict[str, str]) -> dict[str, object]:
    return dict(
        id=job.id,
        session_id=job.session_id,
        cpv=job.cpv,
        state=job.state,
        deps=tuple(job.deps),
        drone=names.get(job.drone_id or "", job.drone_id),
        build_id=job.build_id,
        attempts=job.attempts,
        failed_on=tuple(names.get(d, d) for d in job.failed_on),
        priority=round(job.priority, 3),
        reason=job.reason,
        ready_at=iso(job.ready_at),
        started_at=iso(job.started_at),
        finished_at=iso(job.finished_at),
    )


def job_view(job: Job, names: dict[str, str]) -> JobView:
    return JobView(**_job_fields(job, names))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class JobWhyView(JobView):
    why: Annotated[str, Doc("why it is not running (or how it ended)")]


def job_why_view(job: Job, names: dict[str, str], why: str) -> JobWhyView:
    return JobWhyView(**_job_fields(job, names), why=why)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class BuildView:
    """One attempt of a job on one drone."""

    build_id: str
    job_id: str
    session_id: str
    cpv: str
    drone: str
    state: Annotated[str, Doc("assigned, building, done, failed, refused, cancelled or lost")]
    exit_code: int | None
    reason: str
    started_at: Timestamp
    finished_at: Timestamp
    duration_s: float | None


def build_view(build: BuildRecord, names: dict[str, str]) -> BuildView:
    duration = None
    if build.finished_at is not None:
        duration = round(build.finished_at - (build.started_at or build.created_at), 3)
    return BuildView(
        build_id=build.id,
        job_id=build.job_id,
        session_id=build.session_id,
        cpv=build.cpv,
        drone=names.get(build.drone_id, build.drone_id),
        state=build.state,
        exit_code=build.exit_code,
        reason=build.reason,
        started_at=iso(build.started_at or build.created_at),
        finished_at=iso(build.finished_at),
        duration_s=duration,
    )


@dataclass(frozen=True, slots=True)
class JobsPage:
    jobs: Annotated[tuple[JobView, ...], Doc("most critical first")]
    total: Annotated[int, Doc("jobs that matched, before the limit"), Range(0)]


@dataclass(frozen=True, slots=True)
class JobDetailView:
    job: JobWhyView
    builds: Annotated[tuple[BuildView, ...], Doc("its builds, newest first")]


@dataclass(frozen=True, slots=True)
class HistoryView:
    history: Annotated[tuple[BuildView, ...], Doc("finished builds, newest first")]


@dataclass(frozen=True, slots=True)
class SessionsView:
    sessions: Annotated[tuple[SessionView, ...], Doc("newest first")]


@dataclass(frozen=True, slots=True)
class SessionReply:
    session: SessionView


@dataclass(frozen=True, slots=True)
class QueuedView:
    session: SessionView
    jobs: Annotated[tuple[JobView, ...], Doc("the jobs this request added")]
