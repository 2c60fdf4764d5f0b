"""Faults of the controller's own parts during real builds: its database
unavailable while a drone uploads, and an agent killed during that upload.
(tests/test_build_crashes.py: the controller killed between saving an
assignment and sending it, and an agent killed mid-build.)

One swarm (a controller on SQLite, two drones in Gentoo prefixes) serves
the whole module; each test queues a package of its own and leaves the
swarm whole. The drones write their packages with Portage's gpkg code
instead of building them (support/gpkg_build.py: the faults are in the
upload, and real builds are tests/test_builds.py's), each build held at
its start until the test has locked the database. The database is made
unavailable for real: another connection holds SQLite's write lock, so
every write of the controller fails with "database is locked" until it
lets go.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.fleet import Fleet, builders, start_fleet, upload_refused_line
from support.gpkgs import WRITE_COMMAND
from support.procs import wait_for

# Each test waits out a database locked for tens of seconds.
pytestmark = pytest.mark.timeout(600)

BUILD_TIMEOUT = 180.0
# Polls of an agent's log (a debug log, read whole) and of the controller's
# health: a few a second is soon enough for waits of seconds.
POLL = 0.2


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # A long grace: a drone that comes back is handled by its Hello, not by the timer.
    root = tmp_path_factory.mktemp("build-faults")
    s = start_fleet(
        root,
        builders(2),
        "--build-grace",
        "120",
        # While the database is locked every write waits out SQLite's busy
        # timeout, one after another on the database thread: the batched
        # writes of live drone state (which no test here reads) would queue
        # ahead of the upload's.
        "--persist-interval",
        "60",
        portage=True,
        command=WRITE_COMMAND,
        env={"GPKG_BUILD_GATE": str(gate(root))},
    )
    yield s
    s.stop()


def gate(root: Path) -> Path:
    """The file the drones' builds wait for (support/gpkg_build.py)."""
    return root / "build-gate"


def held_build(swarm: Fleet, atom: str, cpv: str) -> tuple[str, dict[str, Any]]:
    """Queue ``atom``; its session id and its job, building but held at its
    start until database_locked lets it go on."""
    gate(swarm.root).unlink(missing_ok=True)
    session_id = swarm.queue(atom)["session"]["id"]
    return session_id, swarm.wait_building(cpv)


@contextlib.contextmanager
def database_locked(swarm: Fleet) -> Iterator[None]:
    """Hold the controller's SQLite write lock: its writes fail meanwhile (reads still work)."""
    db = sqlite3.connect(swarm.controller.data_dir / "swarm.db", isolation_level=None, timeout=30)
    try:
        db.execute("BEGIN EXCLUSIVE")  # waits for a write of the controller's in progress
        gate(swarm.root).touch()  # the held build goes on: its upload meets the locked database
        yield
    finally:
        db.rollback()
        db.close()
    # Health (from memory, checked every 2 s) says "writes failing" until its
    # next probe write: POST /queue is a 503 until then, so the next test
    # would meet one.
    wait_for(
        lambda: swarm.controller.get("/api/v1/health")["status"] == "ok",
        timeout=30,
        interval=POLL,
        what="health ok once the database takes writes again",
    )


def test_an_upload_the_controller_cannot_store_is_retried_and_never_counts_against_the_drone(
    swarm: Fleet,
) -> None:
    cpv = "swarm-test/leaf-hello-1"
    session_id, job = held_build(swarm, "swarm-test/leaf-hello", cpv)
    agent = swarm.agents[job["drone"]]
    with database_locked(swarm):
        refused = wait_for(
            lambda: upload_refused_line(agent, job["build_id"]),
            timeout=BUILD_TIMEOUT,
            interval=POLL,
            what="the controller refusing the upload as UNAVAILABLE",
        )
    assert "the controller's database is unavailable" in refused, refused

    swarm.wait_complete(session_id)
    done = swarm.jobs()[cpv]
    # The same attempt went through once the database was back: no retry elsewhere.
    assert (done["state"], done["attempts"], done["build_id"]) == ("done", 1, job["build_id"])
    assert f"build {job['build_id']}: upload of" in agent.log() and "went through after" in agent.log()
    assert not swarm.events("job_failed_on_drone")
    assert not swarm.events("drone_grounded")
    assert not swarm.events("job_requeued", job["id"])
    assert [e["data"]["build_id"] for e in swarm.events("package_staged") if e["data"]["cpv"] == cpv] == [
        job["build_id"]
    ]


def test_an_agent_killed_during_its_upload_is_requeued_and_its_drone_deletes_the_package(
    swarm: Fleet,
) -> None:
    cpv = "swarm-test/leaf-data-1"
    session_id, job = held_build(swarm, "swarm-test/leaf-data", cpv)
    victim = swarm.agents[job["drone"]]
    with database_locked(swarm):
        wait_for(
            lambda: upload_refused_line(victim, job["build_id"]),
            timeout=BUILD_TIMEOUT,
            interval=POLL,
            what="the upload under way (refused while the database is locked)",
        )
        victim.kill()  # SIGKILL, in the middle of retrying its upload
    left = swarm.drone_packages(victim.name, cpv)
    assert left, "the killed drone has no package of the build"

    victim.start()  # its Hello says it runs nothing: the upload is lost
    requeued = wait_for(
        lambda: swarm.events("job_requeued", job["id"]), timeout=60, interval=POLL, what="the job requeued"
    )
    causes = [(e["data"]["cause"], e["data"]["build_id"]) for e in requeued]
    assert causes == [("upload_lost", job["build_id"])]
    assert requeued[0]["drone_name"] == victim.name and "its upload was lost" in requeued[0]["data"]["reason"]
    # Told that the controller gave the build up, the drone deletes its package.
    wait_for(
        lambda: f"build {job['build_id']} ({cpv}) given up" in victim.log(),
        timeout=30,
        interval=POLL,
        what="the drone deleting what the build given up on left",
    )
    assert not any(p.exists() for p in left), left

    swarm.wait_complete(session_id)
    done = swarm.jobs()[cpv]
    assert done["state"] == "done"
    assert not swarm.events("job_failed_on_drone")
    staged = [e for e in swarm.events("package_staged") if e["data"]["cpv"] == cpv]
    assert len(staged) == 1, staged
    history = swarm.controller.get("/api/v1/history?limit=1000")["history"]
    attempt = next(h for h in history if h["build_id"] == job["build_id"])
    assert attempt["state"] == "lost" and "its upload was lost" in attempt["reason"]
