"""Crashes during real builds: the controller killed between saving an
assignment and sending it, and an agent killed mid-build (its emerge left
running). (tests/test_build_faults.py: the controller's database
unavailable during uploads.)

One swarm (a controller on SQLite, two drones in Gentoo prefixes) serves
the whole module; each test queues a package of its own and leaves the
swarm whole. The drone whose agent is killed runs real emerge; the other,
which only has to succeed where it builds, writes its packages with
Portage's gpkg code (support/gpkg_build.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
from collections.abc import Iterator

import psutil
import pytest

from swarm.agent.logs import build_log_name
from swarm.controller.builds import CRASH_HOOK_ENV

from support.fleet import Fleet, start_fleet
from support.gpkgs import WRITE_COMMAND
from support.procs import http, wait_for

# Real emerge builds, a controller restarted twice.
pytestmark = pytest.mark.timeout(600)

BUILD_TIMEOUT = 180.0
# The sleeper's sleep on the drone whose agent is killed: long enough to kill
# its agent, and for the agent started again to find its emerge still running.
VICTIM, VICTIM_SLEEP = "builder-0", 15


def sleeper_env(seconds: int) -> dict[str, dict[str, str]]:
    return {"swarm-test/sleeper": {"SWARM_TEST_SLEEP": str(seconds)}}


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # A long grace: a drone that comes back is handled by its Hello, not by the timer.
    s = start_fleet(tmp_path_factory.mktemp("build-crashes"), (), "--build-grace", "120", portage=True)
    try:
        s.add_agent(VICTIM, package_env=sleeper_env(VICTIM_SLEEP))
        s.add_agent("builder-1", command=WRITE_COMMAND)  # builds the retry
        s.wait_online()
        yield s
    finally:
        s.stop()


def test_a_controller_killed_between_saving_an_assignment_and_sending_it_resumes_it(swarm: Fleet) -> None:
    cpv = "swarm-test/leaf-script-1"
    controller = swarm.controller
    controller.kill()
    controller.env = {CRASH_HOOK_ENV: "1"}
    controller.restart()
    swarm.wait_online(timeout=30)
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
    assert [(h["build_id"], h["state"]) for h in history] == [(build_id, "done")]
    # No drone built it for nothing: one build log, on one drone, of that attempt.
    logs = [p.name for a in swarm.agents.values() for p in (a.state_dir / "builds").glob(f"{job_id}.*")]
    assert logs == [build_log_name(job_id, build_id)]
    assert not swarm.events("job_requeued", job_id)


def test_a_build_whose_agent_died_mid_build_is_cleaned_off_its_drone(swarm: Fleet) -> None:
    cpv = "swarm-test/sleeper-1"
    # The first attempt goes to the drone with the long sleep, the retry to the other.
    with swarm.dispatching_only_to(VICTIM):
        session_id = swarm.queue("swarm-test/sleeper")["session"]["id"]
        job = swarm.wait_building(cpv)
    assert job["drone"] == VICTIM, job
    victim = swarm.agents[job["drone"]]
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
            lambda: swarm.events("job_requeued", job["id"]), timeout=60, what="the job requeued"
        )
        assert [e["data"]["cause"] for e in requeued] == ["build_lost"]
        wait_for(
            lambda: f"build {job['build_id']} ({cpv}) given up" in victim.log(),
            timeout=30,
            what="the drone cleaning up after the build given up on",
        )
        assert not build_dir.exists(), "Portage's build directory of the lost build is still there"
        # SIGKILL is delivered when the process next runs, which on a busy
        # machine can be a moment after the agent said so.
        wait_for(lambda: all(gone(pid) for pid in emerge), timeout=10, what="the orphaned emerge killed")
        assert "killed its emerge left running" in victim.log()

        swarm.wait_complete(session_id)
        done = swarm.jobs()[cpv]
        assert done["state"] == "done" and done["drone"] != victim.name and done["attempts"] == 2
        assert not swarm.events("job_failed_on_drone")
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
