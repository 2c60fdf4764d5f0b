"""Faults of the controller's own parts during real builds: its database
unavailable while a drone uploads, an agent killed during its upload, the
controller killed between saving an assignment and sending it, and an
agent killed mid-build (its emerge left running).

One swarm (a controller on SQLite, two drones running real emerge in
Gentoo prefixes) serves the whole module; each test queues a package of
its own and leaves the swarm whole. The database is made unavailable for
real: another connection holds SQLite's write lock, so every write of the
controller fails with "database is locked" until it lets go.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from swarm.agent.logs import build_log_name
from swarm.controller.builds import CRASH_HOOK_ENV

from support.fleet import Fleet, builders, start_fleet, upload_refused_line
from support.procs import Agent, http, wait_for

# Real emerge builds, a controller restarted twice.
pytestmark = pytest.mark.timeout(600)

BUILD_TIMEOUT = 180.0
SLEEP = 15


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # A long grace: a drone that comes back is handled by its Hello, not by the timer.
    s = start_fleet(
        tmp_path_factory.mktemp("build-faults"),
        builders(2),
        "--build-grace",
        "120",
        # While the database is locked every write waits out SQLite's busy
        # timeout, one after another on the database thread: the batched
        # writes of live drone state (which no test here reads) would queue
        # ahead of the upload's.
        "--persist-interval",
        "60",
        # Long enough to kill its agent while emerge is in src_compile.
        portage=True,
        package_env={"swarm-test/sleeper": {"SWARM_TEST_SLEEP": str(SLEEP)}},
    )
    yield s
    s.stop()


@contextlib.contextmanager
def database_locked(swarm: Fleet) -> Iterator[None]:
    """Hold the controller's SQLite write lock: its writes fail meanwhile (reads still work)."""
    db = sqlite3.connect(swarm.controller.data_dir / "swarm.db", isolation_level=None, timeout=30)
    try:
        db.execute("BEGIN EXCLUSIVE")  # waits for a write of the controller's in progress
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
        what="health ok once the database takes writes again",
    )


def building(swarm: Fleet, cpv: str) -> dict[str, Any]:
    job: dict[str, Any] = wait_for(
        lambda: (j := swarm.jobs().get(cpv)) and j["state"] == "building" and j,
        timeout=BUILD_TIMEOUT,
        interval=0.05,
        what=f"{cpv} building",
    )
    return job


def agent_named(swarm: Fleet, name: str) -> Agent:
    return swarm.agents[name]


def events(swarm: Fleet, kind: str, job_id: str | None = None) -> list[dict[str, Any]]:
    found = swarm.controller.events(type=kind)
    return [e for e in found if job_id is None or e["data"].get("job_id") == job_id]


def test_an_upload_the_controller_cannot_store_is_retried_and_never_counts_against_the_drone(
    swarm: Fleet,
) -> None:
    cpv = "swarm-test/leaf-hello-1"
    session_id = swarm.queue("swarm-test/leaf-hello")["session"]["id"]
    job = building(swarm, cpv)
    agent = agent_named(swarm, job["drone"])
    with database_locked(swarm):
        refused = wait_for(
            lambda: upload_refused_line(agent, job["build_id"]),
            timeout=BUILD_TIMEOUT,
            what="the controller refusing the upload as UNAVAILABLE",
        )
    assert "the controller's database is unavailable" in refused, refused

    swarm.wait_complete(session_id)
    done = swarm.jobs()[cpv]
    # The same attempt went through once the database was back: no retry elsewhere.
    assert (done["state"], done["attempts"], done["build_id"]) == ("done", 1, job["build_id"])
    assert f"build {job['build_id']}: upload of" in agent.log() and "went through after" in agent.log()
    assert not events(swarm, "job_failed_on_drone")
    assert not events(swarm, "drone_grounded")
    assert not events(swarm, "job_requeued", job["id"])
    assert [e["data"]["build_id"] for e in events(swarm, "package_staged") if e["data"]["cpv"] == cpv] == [
        job["build_id"]
    ]


def test_an_agent_killed_during_its_upload_is_requeued_and_its_drone_deletes_the_package(
    swarm: Fleet,
) -> None:
    cpv = "swarm-test/leaf-data-1"
    session_id = swarm.queue("swarm-test/leaf-data")["session"]["id"]
    job = building(swarm, cpv)
    victim = agent_named(swarm, job["drone"])
    with database_locked(swarm):
        wait_for(
            lambda: upload_refused_line(victim, job["build_id"]),
            timeout=BUILD_TIMEOUT,
            what="the upload under way (refused while the database is locked)",
        )
        victim.kill()  # SIGKILL, in the middle of retrying its upload
    left = swarm.drone_packages(victim.name, cpv)
    assert left, "the killed drone has no package of the build"

    victim.start()  # its Hello says it runs nothing: the upload is lost
    requeued = wait_for(lambda: events(swarm, "job_requeued", job["id"]), timeout=60, what="the job requeued")
    causes = [(e["data"]["cause"], e["data"]["build_id"]) for e in requeued]
    assert causes == [("upload_lost", job["build_id"])]
    assert requeued[0]["drone_name"] == victim.name and "its upload was lost" in requeued[0]["data"]["reason"]
    # Told that the controller gave the build up, the drone deletes its package.
    wait_for(
        lambda: f"build {job['build_id']} ({cpv}) given up" in victim.log(),
        timeout=30,
        what="the drone deleting what the build given up on left",
    )
    assert not any(p.exists() for p in left), left

    swarm.wait_complete(session_id)
    done = swarm.jobs()[cpv]
    assert done["state"] == "done"
    assert not events(swarm, "job_failed_on_drone")
    staged = [e for e in events(swarm, "package_staged") if e["data"]["cpv"] == cpv]
    assert len(staged) == 1, staged
    history = swarm.controller.get("/api/v1/history?limit=1000")["history"]
    attempt = next(h for h in history if h["build_id"] == job["build_id"])
    assert attempt["result"] == "lost" and "its upload was lost" in attempt["reason"]


def test_a_controller_killed_between_saving_an_assignment_and_sending_it_resumes_it(swarm: Fleet) -> None:
    cpv = "swarm-test/leaf-script-1"
    controller = swarm.controller
    controller.kill()
    controller.env = {CRASH_HOOK_ENV: "1"}
    controller.restart()
    for agent in swarm.agents.values():
        wait_for(
            lambda a=agent: (n := controller.node(a.name)) and n["status"] == "online",
            timeout=30,
            what=f"{agent.name} back online",
        )
    with contextlib.suppress(OSError):  # the controller may die before it answers
        http(
            "POST",
            controller.admin_url + "/admin/api/queue",
            headers={"X-Admin-Key": controller.admin_key, "Content-Type": "application/json"},
            body=json.dumps({"atoms": ["swarm-test/leaf-script"]}).encode(),
        )
    wait_for(lambda: not controller.alive(), timeout=60, what="the controller killing itself")
    assert f"test hook {CRASH_HOOK_ENV}" in controller.log()

    # What it left: the attempt saved, its StartBuild never sent.
    with contextlib.closing(sqlite3.connect(controller.data_dir / "swarm.db")) as db:
        saved = db.execute("SELECT id, job_id, state FROM build WHERE cpv = ?", (cpv,)).fetchall()
    assert len(saved) == 1 and saved[0][2] == "assigned", saved
    build_id, job_id, _ = saved[0]

    controller.env = None
    controller.restart()
    session_id = next(
        s["id"] for s in controller.get("/api/v1/sessions")["sessions"] if s["state"] != "complete"
    )
    swarm.wait_complete(session_id)
    done = swarm.jobs()[cpv]
    # The drone's Hello resumed the saved attempt: built once, under the saved build id.
    assert (done["state"], done["attempts"], done["build_id"]) == ("done", 1, build_id)
    history = [h for h in controller.get("/api/v1/history?limit=1000")["history"] if h["job_id"] == job_id]
    assert [(h["build_id"], h["result"]) for h in history] == [(build_id, "done")]
    # No drone built it for nothing: one build log, on one drone, of that attempt.
    logs = [p.name for a in swarm.agents.values() for p in (a.state_dir / "builds").glob(f"{job_id}.*")]
    assert logs == [build_log_name(job_id, build_id)]
    assert not events(swarm, "job_requeued", job_id)


def test_a_build_whose_agent_died_mid_build_is_cleaned_off_its_drone(swarm: Fleet) -> None:
    cpv = "swarm-test/sleeper-1"
    session_id = swarm.queue("swarm-test/sleeper")["session"]["id"]
    job = building(swarm, cpv)
    victim = agent_named(swarm, job["drone"])
    build_dir = swarm.root / f"{victim.name}-prefix" / "var" / "tmp" / "portage" / cpv
    wait_for(
        lambda: "Sleeping" in swarm.build_log(job),
        timeout=BUILD_TIMEOUT,
        what="the sleeper in src_compile",
    )
    assert build_dir.is_dir()
    # emerge runs in a session of its own: it outlives its agent.
    emerge = [p.pid for p in psutil.Process(victim.pid).children()]
    assert emerge, "the building agent has no emerge child"
    status, body = swarm.controller.admin("POST", f"/admin/api/drones/{victim.name}/drain")
    assert status == 200, body  # the retry goes to the other drone
    try:
        victim.kill()
        victim.start()
        requeued = wait_for(
            lambda: events(swarm, "job_requeued", job["id"]), timeout=60, what="the job requeued"
        )
        assert [e["data"]["cause"] for e in requeued] == ["build_lost"]
        wait_for(
            lambda: f"build {job['build_id']} ({cpv}) given up" in victim.log(),
            timeout=30,
            what="the drone cleaning up after the build given up on",
        )
        assert not build_dir.exists(), "Portage's build directory of the lost build is still there"
        assert all(gone(pid) for pid in emerge), "the orphaned emerge still runs"
        assert "killed its emerge left running" in victim.log()

        swarm.wait_complete(session_id)
        done = swarm.jobs()[cpv]
        assert done["state"] == "done" and done["drone"] != victim.name and done["attempts"] == 2
        assert not events(swarm, "job_failed_on_drone")
    finally:
        for pid in emerge:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        swarm.controller.admin("POST", f"/admin/api/drones/{victim.name}/undrain")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
