"""JSON shapes of sessions, jobs and builds, for both web tiers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from swarm.clock import iso
from swarm.controller.builds import BuildQueue, Session
from swarm.controller.errors import FailedPrecondition
from swarm.controller.scheduler import Job
from swarm.controller.services import Services
from swarm.controller.store.records import BuildRecord


def queue_of(services: Services) -> BuildQueue:
    if services.builds is None:
        raise FailedPrecondition("builds are off: start the controller with --portage-eprefix")
    return services.builds


def session_json(queue: BuildQueue, session: Session) -> dict[str, Any]:
    counts = queue.counts(session)
    total = sum(counts.values())
    return {
        "id": session.id,
        "name": session.name,
        "state": session.state,
        "atoms": list(session.atoms),
        "created_at": iso(session.created_at),
        "created_by": session.created_by,
        "started_at": iso(session.started_at),
        "finished_at": iso(session.finished_at),
        "jobs": counts,
        "total": total,
        "progress": round(counts["done"] / total, 4) if total else 0.0,
    }


def job_json(queue: BuildQueue, job: Job, names: dict[str, str], *, why: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": job.id,
        "session_id": job.session_id,
        "cpv": job.cpv,
        "state": job.state,
        "deps": list(job.deps),
        "drone": names.get(job.drone_id or "", job.drone_id),
        "build_id": job.build_id,
        "attempts": job.attempts,
        "failed_on": [names.get(d, d) for d in job.failed_on],
        "priority": round(job.priority, 3),
        "reason": job.reason,
        "ready_at": iso(job.ready_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }
    if why:
        data["why"] = queue.why(job)
    return data


def build_json(build: BuildRecord, names: dict[str, str]) -> dict[str, Any]:
    duration = None
    if build.finished_at is not None:
        duration = round(build.finished_at - (build.started_at or build.created_at), 3)
    return {
        "build_id": build.id,
        "job_id": build.job_id,
        "session_id": build.session_id,
        "package": build.cpv,
        "drone": names.get(build.drone_id, build.drone_id),
        "result": build.state,
        "exit_code": build.exit_code,
        "reason": build.reason,
        "started_at": iso(build.started_at or build.created_at),
        "finished_at": iso(build.finished_at),
        "duration_s": duration,
    }


def dispatch_views(services: Services, now: float, *, admin: bool) -> Callable[[str], dict[str, Any] | None]:
    """Whether a drone gets work, by drone id (None without builds), for one
    answer: the fleet's running jobs are counted once for all its drones.
    The admins' view also names who drained or grounded a drone, and its
    failures in a row."""
    queue = services.builds
    if queue is None:
        return lambda drone_id: None
    running = queue.running_by_drone()

    def view(drone_id: str) -> dict[str, Any]:
        d = queue.dispatch_state(drone_id, now, running)
        public = {
            "draining": d.draining,
            "grounded": d.grounded,
            "grounded_until": iso(d.grounded_until),
            "running_jobs": d.running,
        }
        if not admin:
            return public
        return {**public, "drained_by": d.drained_by, "grounded_by": d.grounded_by, "failures": d.failures}

    return view
