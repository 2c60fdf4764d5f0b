"""Faults of the controller's own parts during a real build session
(issue 14): its PostgreSQL killed with SIGKILL and restarted, or stopped
with SIGSTOP, and its SQLite data disk filled, while a real drone builds
a few packages of the test overlay with real emerge.

Each fault is injected once the session is under way (one job done, one
building) and lasts until a package was built meanwhile (its upload meets
the fault: refused as UNAVAILABLE, or waiting for a frozen database), and a
few seconds more. The session must then complete by itself, in the same
controller process: every job done, every package built once per attempt
that history shows (no drone built for nothing), no good package failed
and no drone grounded, every event a client was served written to the
database, and health ``degraded`` with the reason while it lasts, ``ok``
after. bench/faults.py repeats the same faults and counts.

One PostgreSQL-backed swarm serves the two PostgreSQL tests (each builds
packages of its own: what is in staging is not built again); one swarm
with its SQLite data dir on a small tmpfs serves the full disk.

How long each fault lasts is configurable (seconds): SWARM_SESSION_OUTAGE
(PostgreSQL down, default 2), SWARM_SESSION_FREEZE (PostgreSQL stopped,
default 2), SWARM_SESSION_FULL (disk full, default 2), each counted from the
package built meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from swarm.agent.logs import build_log_name

from support.disk import fill
from support.fleet import BUILD_TIMEOUT, Fleet, builders, start_fleet, upload_refused_line
from support.postgres import PostgresServer, private_server
from support.procs import Agent, wait_for
from support.session_faults import (
    FAST_HEALTH,
    EventFollower,
    HealthSample,
    Outcome,
    database,
    said,
    session_outcome,
)

# Real emerge builds of three sessions on two swarms.
pytestmark = pytest.mark.timeout(300)

OUTAGE = float(os.environ.get("SWARM_SESSION_OUTAGE", "2"))
FREEZE = float(os.environ.get("SWARM_SESSION_FREEZE", "2"))
FULL = float(os.environ.get("SWARM_SESSION_FULL", "2"))
RECOVERY = 30.0  # deadline for health to come back once the dependency is
# Each session is a chain (every job waits for the one before), built one
# package at a time: a second drone would only idle. A job the controller
# gave up on during a fault would still be built again, on this drone once
# it is free, and show as a build beyond its attempts (assert_whole).
DRONES = 1
# Polls of a debug log read whole, or of the controller's API: a few a second
# is soon enough for waits of seconds.
POLL = 0.2
# The fault comes once the first job is done and the second builds; what the
# second built meanwhile meets the fault. In the chain a third job waits for
# the second: the queue dispatches it only once the controller, recovered,
# took the second's package.
PAIR = "swarm-test/diamond-left"  # 2 jobs: diamond-base, then diamond-left
CHAIN = "swarm-test/chain-c"  # 3 jobs, one after the other


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = private_server(durable=True)  # killed with SIGKILL: what it acknowledged must stay
    server.start()
    try:
        server.create_database("swarm")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pg_swarm(pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    swarm = start_fleet(
        tmp_path_factory.mktemp("session-pg"),
        builders(DRONES),
        "--db",
        pg.url("swarm"),
        *FAST_HEALTH,
        portage=True,
    )
    try:
        yield swarm
    finally:
        swarm.stop()


@pytest.fixture(scope="module")
def disk_swarm(small_disk: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # Only the data dir (database, staging binhost) on the small disk: logs stay readable.
    swarm = start_fleet(
        tmp_path_factory.mktemp("session-disk"),
        builders(DRONES),
        *("--data-dir", str(small_disk / "data"), "--disk-min-free-mb", "4"),
        *FAST_HEALTH,
        portage=True,
    )
    try:
        yield swarm
    finally:
        swarm.stop()


@dataclass
class Watched:
    session_id: str
    jobs: list[str]  # the session's job ids
    after: int  # the last event id before it
    follower: EventFollower


@contextlib.contextmanager
def watched_session(swarm: Fleet, *atoms: str) -> Iterator[Watched]:
    """Queue a session while a client follows the events and health."""
    after = int(swarm.controller.get("/api/v1/events?limit=1")["last_id"])
    with EventFollower(swarm.controller.public_url, after=after) as follower:
        body = swarm.queue(*atoms)
        yield Watched(body["session"]["id"], [j["id"] for j in body["jobs"]], after, follower)
        follower.poll()  # the last events, up to the session's end


def built_meanwhile(swarm: Fleet, session_id: str) -> dict[str, Any]:
    """Wait for a job of the session built while the fault lasts: emerge
    made its package on the drone, whose upload now meets the fault."""
    job: dict[str, Any] = wait_for(
        lambda: next(
            (
                j
                for j in swarm.jobs().values()
                if j["session_id"] == session_id
                and j["state"] == "building"
                and swarm.drone_packages(j["drone"], j["cpv"])
            ),
            None,
        ),
        timeout=BUILD_TIMEOUT,
        interval=0.1,
        what="a package of the session built during the fault",
    )
    return job


def agent(swarm: Fleet, name: str) -> Agent:
    return swarm.agents[name]


def assert_taken(swarm: Fleet, job: dict[str, Any]) -> None:
    """The package built during the fault was taken once the controller could: not built again."""
    done = swarm.jobs()[job["cpv"]]
    assert (done["state"], done["attempts"], done["build_id"]) == ("done", 1, job["build_id"]), done


def health(swarm: Fleet) -> dict[str, Any]:
    return dict(swarm.controller.get("/api/v1/health"))


def wait_degraded(swarm: Fleet, *codes: str) -> dict[str, object]:
    found: dict[str, object] = wait_for(
        lambda: (
            (h := health(swarm))["status"] == "degraded"
            and set(codes) <= {r["code"] for r in h["reasons"]}
            and h
        ),
        timeout=RECOVERY,
        interval=POLL / 2,
        what=f"health degraded: {', '.join(codes)}",
    )
    return found


def degraded_with(samples: list[HealthSample], code: str) -> bool:
    """Whether a client asking health meanwhile was told 'degraded' for that reason."""
    assert samples, "health was never asked during the fault"
    told = any(s.status == "degraded" and code in s.codes for s in samples)
    assert told, f"health said {said(samples)}, never degraded for {code}"
    return told


def wait_ok(swarm: Fleet) -> None:
    wait_for(
        lambda: health(swarm)["status"] == "ok", timeout=RECOVERY, interval=POLL / 2, what="health ok again"
    )


def outcome(swarm: Fleet, where: Path | str, watched: Watched) -> Outcome:
    """What the session left, once its jobs and every event a client saw are
    written (the backlog goes soon after the database is back)."""

    def read() -> Outcome:
        return session_outcome(
            where,
            watched.session_id,
            watched.jobs,
            swarm.agent_dirs(),
            watched.follower.seen,
            after=watched.after,
        )

    # On a timeout the last reading fails assert_whole, saying what is missing.
    with contextlib.suppress(AssertionError):
        wait_for(
            lambda: not (r := read()).lost and not r.events_lost,
            timeout=RECOVERY,
            interval=POLL,
            what="the session's jobs and the events seen written",
        )
    return read()


def assert_whole(result: Outcome, watched: Watched) -> None:
    """The session as if nothing had happened to the controller."""
    assert result.jobs == {j: "done" for j in watched.jobs}, result.jobs
    assert not result.lost
    # Every build a drone ran is an attempt in history, run once.
    assert set(result.attempts) == set(watched.jobs), result.attempts
    assert result.builds and not result.unrecorded_builds, (result.builds, result.attempts)
    assert result.duplicate_builds == 0, result.builds
    assert {name.split(".")[0] for name in result.builds} == set(watched.jobs)
    # The controller's fault is not the drones' nor the packages'.
    assert (result.failed_on_drone, result.grounded, result.failed_jobs) == (0, 0, ())
    assert result.events_seen > 0 and not result.events_lost, result.events_lost
    # Health answered every time it was asked, whatever the database did.
    unanswered = [s for s in watched.follower.health if s.status not in ("ok", "degraded")]
    assert not unanswered, unanswered


def seen_types(watched: Watched) -> set[str]:
    return set(watched.follower.seen.values())


# -- PostgreSQL ---------------------------------------------------------------


def test_a_session_completes_through_a_postgresql_killed_and_restarted(
    pg: PostgresServer, pg_swarm: Fleet
) -> None:
    swarm = pg_swarm
    pid = swarm.controller.pid
    with watched_session(swarm, PAIR) as watched:
        swarm.wait_under_way(watched.session_id)
        killed = time.monotonic()
        pg.kill()
        wait_degraded(swarm, "database_unreachable")
        job = built_meanwhile(swarm, watched.session_id)
        refused = wait_for(
            lambda: upload_refused_line(agent(swarm, job["drone"]), job["build_id"]),
            interval=POLL,
            what="its upload refused as UNAVAILABLE",
        )
        time.sleep(OUTAGE)  # the outage itself
        pg.restart()
        back = time.monotonic()
        wait_ok(swarm)
        swarm.wait_complete(watched.session_id)
    assert "the controller's database is unavailable" in refused, refused
    assert_taken(swarm, job)
    assert degraded_with(watched.follower.during(killed, back), "database_unreachable")
    assert {"store_unavailable", "store_recovered"} <= seen_types(watched)
    assert_whole(outcome(swarm, pg.url("swarm"), watched), watched)
    assert health(swarm)["status"] == "ok"
    assert swarm.controller.alive() and swarm.controller.pid == pid  # no restart


def test_a_session_completes_through_a_postgresql_stopped_a_while(
    pg: PostgresServer, pg_swarm: Fleet
) -> None:
    swarm = pg_swarm
    pid = swarm.controller.pid
    with watched_session(swarm, CHAIN) as watched:
        swarm.wait_under_way(watched.session_id)
        frozen = time.monotonic()
        pg.freeze()
        try:
            wait_degraded(swarm, "database_stalled")
            job = built_meanwhile(swarm, watched.session_id)  # its upload waits for the database
            time.sleep(FREEZE)  # the freeze itself
        finally:
            pg.thaw()
        back = time.monotonic()
        wait_ok(swarm)
        swarm.wait_complete(watched.session_id)
    assert_taken(swarm, job)
    assert degraded_with(watched.follower.during(frozen, back), "database_stalled")
    assert {"store_unavailable", "store_recovered"} <= seen_types(watched)
    assert_whole(outcome(swarm, pg.url("swarm"), watched), watched)
    assert health(swarm)["status"] == "ok"
    assert swarm.controller.alive() and swarm.controller.pid == pid


# -- SQLite on a full data disk -------------------------------------------------


def test_a_session_completes_through_a_full_data_disk(small_disk: Path, disk_swarm: Fleet) -> None:
    swarm = disk_swarm
    db = small_disk / "data" / "swarm.db"
    pid = swarm.controller.pid
    with watched_session(swarm, CHAIN) as watched:
        swarm.wait_under_way(watched.session_id)
        filled = time.monotonic()
        filler = fill(small_disk, db)
        try:
            wait_degraded(swarm, "disk_low", "writes_failing")
            # Its build log has nowhere to go: the drone keeps it (and the
            # package, uploaded after the log) and resumes with backoff.
            job = built_meanwhile(swarm, watched.session_id)
            builder = agent(swarm, job["drone"])
            wait_for(
                lambda: f"build {job['build_id']}: log stream ended (UNAVAILABLE)" in builder.log(),
                interval=POLL,
                what="its build log refused as UNAVAILABLE",
            )
            time.sleep(FULL)  # the disk stays full a while
        finally:
            filler.unlink()
        back = time.monotonic()
        wait_ok(swarm)
        swarm.wait_complete(watched.session_id)
    assert "taking a build log: the controller's data disk is full" in swarm.controller.log()
    assert_taken(swarm, job)
    # Its log reached the controller whole, resumed where the disk cut it off.
    kept = builder.state_dir / "builds" / build_log_name(job["id"], job["build_id"])
    received = small_disk / "data" / "buildlogs" / f"{job['build_id']}.log"
    assert received.read_bytes() == kept.read_bytes()
    assert degraded_with(watched.follower.during(filled, back), "disk_low")
    # Said once the disk had room again, and written with everything else.
    assert {"disk_low", "disk_ok", "store_unavailable", "store_recovered"} <= seen_types(watched)
    result = outcome(swarm, db, watched)
    assert_whole(result, watched)
    # Everything written afterwards: each package's upload is recorded.
    with database(db) as run:
        stored = {r[0] for r in run("SELECT cpv FROM artifact", ())}
    assert {j["cpv"] for j in swarm.jobs().values() if j["session_id"] == watched.session_id} <= stored
    assert health(swarm)["status"] == "ok"
    assert swarm.controller.alive() and swarm.controller.pid == pid
