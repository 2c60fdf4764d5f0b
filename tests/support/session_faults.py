"""Watching a real build session through a fault of the controller's own
parts, and judging what it left (issue 14). Shared by
tests/test_session_faults.py (which asserts) and bench/faults.py (which
counts).

``EventFollower`` is a client of the public tier, in a thread: it follows
/api/v1/events (what it saw was served, so it must be written) and asks
/api/v1/health each time (what it said, and whether it answered at all).

``session_outcome`` reads what reached the database (SQLite file or
PostgreSQL URL) and the drones' build logs, and says what went wrong:
jobs lost, builds no attempt in history accounts for, good packages
failed, drones grounded, events served and never written.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.procs import http

# Quick checks for a quick test: the defaults (2 s, 10 s, 5 s) are for production.
FAST_HEALTH = ("--health-interval", "0.2", "--db-stall-after", "0.5", "--db-retry-max", "0.5")

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


@dataclass(frozen=True, slots=True)
class HealthSample:
    at: float  # monotonic, when asked
    took: float  # seconds until the answer (or the failure)
    status: str  # "ok", "degraded", "HTTP 500", "no answer (...)"
    codes: tuple[str, ...] = ()  # the reasons' codes


class EventFollower:
    """Follows /api/v1/events like a client and samples /api/v1/health, from a thread."""

    def __init__(self, public_url: str, *, after: int = 0, interval: float = 0.2) -> None:
        self._url = public_url
        self._last = after
        self._interval = interval
        self.seen: dict[int, str] = {}  # event id -> type
        self.health: list[HealthSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def __enter__(self) -> EventFollower:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll()

    def poll(self) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            status, body = http("GET", f"{self._url}/api/v1/events?since={self._last}&limit=1000")
            if status == 200:
                for event in body["events"]:
                    self.seen[int(event["id"])] = str(event["type"])
                    self._last = max(self._last, int(event["id"]))
        asked = time.monotonic()
        try:
            status, body = http("GET", f"{self._url}/api/v1/health")
        except (OSError, ValueError) as exc:
            sample = HealthSample(asked, time.monotonic() - asked, f"no answer ({type(exc).__name__})")
        else:
            if status == 200 and isinstance(body, dict):
                codes = tuple(str(r.get("code", r)) for r in body.get("reasons") or ())
                sample = HealthSample(asked, time.monotonic() - asked, str(body.get("status", "ok")), codes)
            else:
                sample = HealthSample(asked, time.monotonic() - asked, f"HTTP {status}")
        self.health.append(sample)

    def during(self, start: float, end: float) -> list[HealthSample]:
        return [s for s in self.health if start <= s.at <= end]


def said(samples: Sequence[HealthSample]) -> list[str]:
    """What health said, in short and without repeats: 'degraded (database_unreachable)'."""
    out: list[str] = []
    for s in samples:
        text = s.status + (f" ({', '.join(s.codes)})" if s.codes else "")
        if text not in out:
            out.append(text)
    return out


# -- what the session left ------------------------------------------------------


@contextlib.contextmanager
def database(where: Path | str) -> Iterator[Query]:
    """Queries (%s placeholders) on the controller's database: a SQLite file, or a PostgreSQL URL."""
    if isinstance(where, Path):
        with contextlib.closing(sqlite3.connect(where, timeout=10)) as db:
            yield lambda sql, args: db.execute(sql.replace("%s", "?"), tuple(args)).fetchall()
        return
    import psycopg2

    with contextlib.closing(psycopg2.connect(where, connect_timeout=10)) as conn, conn.cursor() as cur:

        def run(sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
            cur.execute(sql, tuple(args))
            return list(cur.fetchall())

        yield run
        conn.rollback()


def stored_event_ids(where: Path | str) -> set[int]:
    with database(where) as run:
        return {int(r[0]) for r in run("SELECT id FROM event", ())}


@dataclass(frozen=True, slots=True)
class Outcome:
    """A session's result as written, against what a client saw and the drones built."""

    jobs: dict[str, str]  # job id -> state, in the database
    attempts: dict[str, tuple[str, ...]]  # job id -> build ids (history: every attempt)
    builds: dict[str, tuple[str, ...]]  # build log name -> drones that ran that build
    lost: tuple[str, ...]  # queued jobs neither done nor failed
    failed_jobs: tuple[str, ...]
    failed_on_drone: int  # job_failed_on_drone events
    grounded: int  # drone_grounded events
    requeued: int  # job_requeued events
    events_seen: int
    events_lost: dict[int, str] = field(default_factory=dict)  # served, never written

    @property
    def unrecorded_builds(self) -> list[str]:
        """Builds a drone ran that no attempt in history accounts for (built for nothing)."""
        known = {f"{job}.{build}.log" for job, builds in self.attempts.items() for build in builds}
        return sorted(name for name in self.builds if name not in known)

    @property
    def duplicate_builds(self) -> int:
        """Builds beyond one per attempt that history shows."""
        again = sum(len(drones) - 1 for drones in self.builds.values())
        return again + len(self.unrecorded_builds)

    @property
    def good_failed(self) -> int:
        return self.failed_on_drone + len(self.failed_jobs)


def session_outcome(
    where: Path | str,
    session_id: str,
    queued: Sequence[str],
    drone_dirs: dict[str, Path],
    seen: dict[int, str],
    *,
    after: int = 0,
) -> Outcome:
    """``queued``: the session's job ids; ``drone_dirs``: drone name -> agent state dir
    (its builds/ holds one log per build it ran); events count from id ``after`` on."""
    with database(where) as run:
        jobs = {
            str(j): str(s) for j, s in run("SELECT id, state FROM job WHERE session_id = %s", (session_id,))
        }
        attempts: dict[str, list[str]] = {}
        for job_id, build_id in run(
            "SELECT job_id, id FROM build WHERE session_id = %s ORDER BY created_at", (session_id,)
        ):
            attempts.setdefault(str(job_id), []).append(str(build_id))
        counts = dict(
            run(
                "SELECT type, count(*) FROM event WHERE id > %s AND type IN "
                "('job_failed_on_drone', 'drone_grounded', 'job_requeued') GROUP BY type",
                (after,),
            )
        )
        stored = {int(r[0]) for r in run("SELECT id FROM event WHERE id > %s", (after,))}
    builds: dict[str, list[str]] = {}
    for drone, state_dir in drone_dirs.items():
        for job_id in queued:
            for log in (state_dir / "builds").glob(f"{job_id}.*.log"):
                builds.setdefault(log.name, []).append(drone)
    return Outcome(
        jobs=jobs,
        attempts={j: tuple(b) for j, b in attempts.items()},
        builds={name: tuple(d) for name, d in builds.items()},
        lost=tuple(j for j in queued if jobs.get(j) not in ("done", "failed")),
        failed_jobs=tuple(j for j in queued if jobs.get(j) == "failed"),
        failed_on_drone=int(counts.get("job_failed_on_drone", 0)),
        grounded=int(counts.get("drone_grounded", 0)),
        requeued=int(counts.get("job_requeued", 0)),
        events_seen=len(seen),
        events_lost={i: t for i, t in sorted(seen.items()) if i > after and i not in stored},
    )
