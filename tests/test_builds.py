"""Real builds: a controller, drones running real emerge in Gentoo prefixes,
the staging binhost, and a stock Portage client installing from it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import prefix as pfx
import pytest

from support.fleet import Fleet, builders, start_fleet
from support.procs import http

# Real emerge runs take seconds each; the whole graph far longer than the default per-test timeout.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One three-drone fleet for the module: each test queues packages of its own
    and reads only its own session's jobs (the first restarts the controller)."""
    s = start_fleet(tmp_path_factory.mktemp("builds"), builders(3), portage=True)
    yield s
    s.stop()


def test_three_drones_build_the_graph_and_a_client_installs_from_staging(swarm: Fleet) -> None:
    # The diamond: three levels, a job two others wait for and one that waits
    # for two, the middle two side by side on two drones. (Chains, one job
    # after another, are built for real by test_session_faults and
    # test_build_failures.)
    reply = swarm.queue("swarm-test/diamond-top")
    session_id = reply["session"]["id"]
    cpvs = sorted(j["cpv"] for j in reply["jobs"])
    assert cpvs == sorted(
        [
            "swarm-test/diamond-top-1",
            "swarm-test/diamond-left-1",
            "swarm-test/diamond-right-1",
            "swarm-test/diamond-base-1",
        ]
    )
    swarm.wait_complete(session_id, timeout=240)
    jobs = {cpv: j for cpv, j in swarm.jobs().items() if j["session_id"] == session_id}
    assert {cpv: j["state"] for cpv, j in jobs.items()} == dict.fromkeys(cpvs, "done")
    by_id = {j["id"]: j for j in jobs.values()}
    for job in jobs.values():
        for dep in job["deps"]:
            # No job started before its dependencies were in staging.
            assert by_id[dep]["finished_at"] <= job["started_at"], (job["cpv"], by_id[dep]["cpv"])
    assert jobs["swarm-test/diamond-top-1"]["deps"] and len({j["drone"] for j in jobs.values()}) >= 2

    history = [h for h in swarm.controller.get("/api/v1/history")["history"] if h["session_id"] == session_id]
    assert {h["cpv"] for h in history} == set(cpvs)
    assert all(h["state"] == "done" and h["duration_s"] > 0 for h in history)
    status = swarm.controller.get("/api/v1/status")
    assert status["session"]["jobs"]["done"] == len(cpvs) and status["session"]["progress"] == 1.0

    # The staging binhost, as stock Portage sees it.
    status_code, index = http("GET", swarm.controller.info["staging_url"] + "/Packages")
    assert status_code == 200 and "CPV: swarm-test/diamond-top-1" in index
    client = pfx.create_prefix(
        pfx.PrefixConfig(swarm.root / "client", pfx.Role.CLIENT, binhost=swarm.controller.info["staging_url"])
    )
    result = pfx.run_emerge(client, "--getbinpkgonly", "swarm-test/diamond-top", timeout=300)
    assert result.ok, result.output[-3000:]
    assert client.installed("swarm-test/diamond-top-1") and client.installed("swarm-test/diamond-base-1")

    # Each job's build log reached the controller on its own stream.
    top = jobs["swarm-test/diamond-top-1"]
    status_code, log = swarm.controller.admin("GET", f"/admin/api/jobs/{top['id']}/log")
    assert status_code == 200 and "diamond-top" in log
    status_code, detail = swarm.controller.admin("GET", f"/admin/api/jobs/{top['id']}")
    assert status_code == 200 and detail["job"]["why"].startswith("built on ")
    # And stays on the drone that built it, with Portage's own log of the build.
    drone_logs = f"/admin/api/drones/{top['drone']}/logs?lines=10000&source="
    status_code, log = swarm.controller.admin("GET", drone_logs + f"build/{top['id']}")
    assert status_code == 200 and any(">>> Emerging" in line for line in log["lines"]), log
    status_code, log = swarm.controller.admin("GET", drone_logs + "portage/swarm-test/diamond-top")
    assert status_code == 200 and any("swarm-test/diamond-top-1" in line for line in log["lines"]), log

    # A restart keeps the finished session on show, nothing to build again.
    assert swarm.controller.terminate() == 0
    swarm.controller.restart()
    session = swarm.session_by_id(session_id)
    assert session is not None and session["state"] == "complete" and session["jobs"]["done"] == len(cpvs)
    kept = {cpv: j["state"] for cpv, j in swarm.jobs().items() if j["session_id"] == session_id}
    assert kept == dict.fromkeys(cpvs, "done")
    # Queued again, everything is in staging already: a session complete at once.
    again = swarm.queue("swarm-test/diamond-top")["session"]
    assert again["state"] == "complete" and again["jobs"]["done"] == again["total"] > 0


def test_a_broken_package_fails_on_two_drones_and_the_rest_completes(swarm: Fleet) -> None:
    swarm.wait_online()  # all three (the test before restarted the controller)
    session_id = swarm.queue("swarm-test/broken", "swarm-test/leaf-data")["session"]["id"]
    swarm.wait_complete(session_id, timeout=240)
    jobs = {cpv: j for cpv, j in swarm.jobs().items() if j["session_id"] == session_id}
    assert set(jobs) == {"swarm-test/broken-1", "swarm-test/leaf-data-1"}
    broken = jobs["swarm-test/broken-1"]
    assert broken["state"] == "failed"
    assert len(set(broken["failed_on"])) == 2
    assert "fails in src_compile on purpose" in broken["reason"]
    assert jobs["swarm-test/leaf-data-1"]["state"] == "done"
    events = [e["type"] for e in swarm.controller.events() if e["data"].get("job_id") == broken["id"]]
    assert events.count("job_failed_on_drone") == 2 and "job_failed" in events


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"atoms": []}, 400, "non-empty list"),
        ({"atoms": ["not an atom!"]}, 400, "not a package atom"),
        ({"atoms": ["swarm-test/no-such-package"]}, 404, "no ebuilds to satisfy"),
        ({"atoms": "swarm-test/leaf-data", "session": ""}, 400, "session must not be empty"),
    ],
)
def test_bad_queue_requests_are_refused(swarm: Fleet, body: dict[str, Any], status: int, needle: str) -> None:
    before = swarm.controller.get("/api/v1/queue?limit=5000")
    got, reply = swarm.controller.admin("POST", "/admin/api/queue", json.dumps(body).encode())
    assert got == status and needle in reply["error"]["message"]
    assert swarm.controller.get("/api/v1/queue?limit=5000") == before  # nothing queued


def test_queue_and_control_need_the_admin_key(swarm: Fleet) -> None:
    before = swarm.controller.get("/api/v1/queue?limit=5000")
    for path in ("/admin/api/queue", "/admin/api/control"):
        assert http("POST", swarm.controller.admin_url + path, body=b"{}")[0] == 401
    assert swarm.controller.get("/api/v1/queue?limit=5000") == before
