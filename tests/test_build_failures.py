"""Real builds when things go wrong: a drone killed in the middle of a build,
the controller killed in the middle of a session, and a drone whose builds
always fail (the circuit breaker grounds it, then probes it half-open).

Everything is real: the controller, the agents, emerge in Gentoo prefixes
(tools/prefix.py) and the staging binhost. Every wait is on a condition the
public API shows, never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import prefix as pfx
import psutil
import pytest

from swarm.agent.builder import Builder
from swarm.agent.logs import LogSources
from swarm.v1 import build_pb2, gateway_pb2

from support.fleet import Fleet, start_fleet
from support.procs import http, wait_for

# Each test runs several real emerge builds on a 2-core machine that may be busy.
pytestmark = pytest.mark.timeout(600)

EMERGE = Path(sys.executable).parent / "emerge"
BUILD_COMMAND = f"{sys.executable} {EMERGE} --oneshot --buildpkg --usepkg --getbinpkg --quiet-build=n"
# The builder appends --usepkg-exclude=cat/pn and =cpv: they land in "$@" and are ignored.
# bash, not sh: the drone must pass its emerge check (`bash --version`) and
# look healthy, so that only its failing builds can ground it.
FAILING_COMMAND = "bash -c 'echo \"this drone cannot build anything (nice $(nice))\"; exit 1' always-fails"
LEAVES = (
    "swarm-test/leaf-hello",
    "swarm-test/leaf-data",
    "swarm-test/leaf-script",
    "swarm-test/chain-a",
    "swarm-test/diamond-base",
)
SESSION_TIMEOUT = 300.0


def ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


# The fleet of each test (support/fleet.py); the name the tests below use for it.
Swarm = Fleet


@contextlib.contextmanager
def swarm_of(root: Path, *controller_args: str) -> Iterator[Swarm]:
    """A controller with builds on and no drones yet (each test adds its own)."""
    swarm = start_fleet(root, (), *controller_args, portage=True)
    try:
        yield swarm
    finally:
        swarm.stop()


def sleeper_env(seconds: float) -> dict[str, dict[str, str]]:
    return {"swarm-test/sleeper": {"SWARM_TEST_SLEEP": str(seconds)}}


def staged(swarm: Swarm) -> tuple[Counter[str], list[Path]]:
    """CPV entries of the staging index (as stock Portage reads it) and the gpkg files in the PKGDIR."""
    status, index = http("GET", swarm.controller.info["staging_url"] + "/Packages")
    assert status == 200, index
    cpvs = Counter(line.split(":", 1)[1].strip() for line in index.splitlines() if line.startswith("CPV:"))
    return cpvs, sorted(swarm.staging_pkgdir.rglob("*.gpkg.tar"))


# -- a drone dies ---------------------------------------------------------------


def test_a_drone_killed_mid_build_loses_its_job_to_another_drone(tmp_path: Path) -> None:
    with swarm_of(tmp_path, "--build-grace", "3") as swarm:
        for i in range(3):
            # Long enough that the build is surely still running when its agent dies.
            swarm.add_agent(f"builder-{i}", package_env=sleeper_env(15))
        swarm.wait_online()
        session_id = swarm.queue("swarm-test/sleeper", "swarm-test/leaf-data")["session"]["id"]

        building = wait_for(
            lambda: (j := swarm.jobs()["swarm-test/sleeper-1"])["state"] == "building" and j,
            timeout=120,
            what="the sleeper building on some drone",
        )
        victim = swarm.agents[building["drone"]]
        # emerge runs in a session of its own: it outlives the agent, like a
        # build whose drone lost its agent. Its group is killed at teardown.
        swarm.orphans += [p.pid for p in psutil.Process(victim.pid).children()]
        assert swarm.orphans, "the building agent has no emerge child"
        victim.kill()  # SIGKILL to the agent's whole process group

        requeued = wait_for(
            lambda: [e for e in swarm.events("job_requeued") if e["data"]["job_id"] == building["id"]],
            timeout=60,
            what="the sleeper requeued after the grace period",
        )
        lost_at = ts(swarm.events("drone_disconnected")[-1])
        assert ts(requeued[0]) - lost_at >= 3.0 - 0.5, "requeued before the grace period ran out"

        session = swarm.wait_complete(session_id)
        assert session["jobs"]["done"] == 2 and session["progress"] == 1.0
        job = swarm.jobs()["swarm-test/sleeper-1"]
        assert job["state"] == "done"
        assert job["drone"] != victim.name and job["drone"] in swarm.agents
        assert job["attempts"] == 2 and job["id"] == building["id"]
        assert job["build_id"] != building["build_id"]
        cpvs, files = staged(swarm)
        assert cpvs == Counter({"swarm-test/sleeper-1": 1, "swarm-test/leaf-data-1": 1})
        assert len(files) == 2
        # The dead drone's attempt never reached staging.
        staged_events = swarm.events("package_staged")
        assert [e["data"]["build_id"] for e in staged_events if e["data"]["cpv"] == job["cpv"]] == [
            job["build_id"]
        ]


# -- the controller dies ------------------------------------------------------------


def test_the_controller_killed_mid_session_finishes_it_after_restart_building_nothing_twice(
    tmp_path: Path,
) -> None:
    with swarm_of(tmp_path, "--build-grace", "3") as swarm:
        for i in range(3):
            swarm.add_agent(f"builder-{i}", package_env=sleeper_env(8))
        swarm.wait_online()
        reply = swarm.queue("swarm-test/diamond-top", "swarm-test/chain-d", "swarm-test/sleeper")
        session_id = reply["session"]["id"]
        cpvs = sorted(j["cpv"] for j in reply["jobs"])
        ids = sorted(j["id"] for j in reply["jobs"])
        assert len(cpvs) == 9

        def midway() -> dict[str, dict[str, Any]] | None:
            jobs = swarm.jobs()
            states = Counter(j["state"] for j in jobs.values())
            return jobs if states["done"] >= 1 and states["building"] >= 1 else None

        before = wait_for(midway, timeout=120, interval=0.05, what="some jobs done and one building")
        swarm.controller.kill()  # SIGKILL to its group: the Portage worker dies with it
        swarm.controller.restart()

        session = swarm.wait_complete(session_id)
        assert session["jobs"]["done"] == len(cpvs), session
        jobs = swarm.jobs()
        assert sorted(j["id"] for j in jobs.values()) == ids, "a job was lost or made up"
        assert {cpv: j["state"] for cpv, j in jobs.items()} == dict.fromkeys(cpvs, "done")
        # A build that ended while the controller was down uploads once it is
        # back: the restart is not a build failure on any drone.
        assert not swarm.events("job_failed_on_drone")
        resumed = 0
        for cpv, job in before.items():
            if job["state"] == "done":
                # Done before the kill: not built again after the restart.
                assert jobs[cpv]["build_id"] == job["build_id"] and jobs[cpv]["attempts"] == job["attempts"]
            elif job["state"] == "building" and jobs[cpv]["build_id"] == job["build_id"]:
                # Its log stream was cut by the kill and resumed: the controller holds all of
                # it, the same as the drone's own copy.
                status, held = swarm.controller.admin("GET", f"/admin/api/jobs/{job['id']}/log")
                assert status == 200, held
                status, local = swarm.controller.admin(
                    "GET", f"/admin/api/drones/{job['drone']}/logs?lines=10000&source=build/{job['build_id']}"
                )
                assert status == 200, local
                assert held.splitlines() == local["lines"] and ">>> Emerging" in held, (cpv, held[-500:])
                resumed += 1
        assert resumed, "no build was running across the restart"

        cpv_entries, files = staged(swarm)
        assert cpv_entries == Counter(dict.fromkeys(cpvs, 1)), "a package is in staging twice"
        assert len(files) == len(cpvs), [str(f.relative_to(swarm.staging_pkgdir)) for f in files]
        staged_cpvs = Counter(e["data"]["cpv"] for e in swarm.events("package_staged"))
        assert all(n == 1 for n in staged_cpvs.values()), staged_cpvs
        # Every successful build is recorded once per package.
        history = swarm.controller.get("/api/v1/history?limit=1000")["history"]
        assert Counter(h["cpv"] for h in history if h["state"] == "done") == Counter(dict.fromkeys(cpvs, 1))

        # And the result is usable: a stock client installs the top package from staging.
        client = pfx.create_prefix(
            pfx.PrefixConfig(
                tmp_path / "client", pfx.Role.CLIENT, binhost=swarm.controller.info["staging_url"]
            )
        )
        result = pfx.run_emerge(client, "--getbinpkgonly", "swarm-test/diamond-top", timeout=300)
        assert result.ok, result.output[-3000:]


# -- the circuit breaker --------------------------------------------------------------


def test_a_drone_whose_builds_always_fail_is_grounded(tmp_path: Path) -> None:
    """End to end: real failing builds ground the drone while the healthy
    ones build everything. The cooldown and the half-open probe after it
    are timer logic: tests/test_build_timers.py moves a clock through them."""
    with swarm_of(tmp_path, "--ground-after", "3", "--ground-cooldown", "600") as swarm:
        swarm.add_agent("builder-0")
        swarm.add_agent("builder-1")
        faulty = swarm.add_agent("faulty", command=FAILING_COMMAND)
        swarm.wait_online()

        # Five independent packages: the faulty drone fails one after another
        # (in a fraction of a second each) while the healthy ones build.
        first = swarm.queue(*LEAVES)["session"]["id"]
        grounded = wait_for(
            lambda: swarm.events("drone_grounded"), timeout=60, what="the faulty drone grounded"
        )
        assert [e["drone_name"] for e in grounded] == [faulty.name]
        session = swarm.wait_complete(first)
        assert session["jobs"]["done"] == len(LEAVES)
        jobs = swarm.jobs()
        assert {j["drone"] for j in jobs.values()} <= {"builder-0", "builder-1"}

        failures = [e for e in swarm.events("job_failed_on_drone") if e["drone_name"] == faulty.name]
        assert len(failures) == 3 and len({e["data"]["job_id"] for e in failures}) == 3
        assert all(e["id"] < grounded[0]["id"] for e in failures), "grounded only after 3 failures in a row"
        # Builds run niced (--build-nice, default 10), everything emerge starts with them.
        assert "cannot build anything (nice 10)" in failures[0]["message"]
        status, body = swarm.controller.admin("GET", "/admin/api/drones")
        assert status == 200, body
        dispatch = {d["name"]: d["dispatch"] for d in body["drones"]}
        assert dispatch[faulty.name]["grounded"] and dispatch[faulty.name]["grounded_until"] is not None
        assert not dispatch["builder-0"]["grounded"] and not dispatch["builder-1"]["grounded"]


def test_failures_that_follow_a_package_never_ground_more_than_half_the_fleet(tmp_path: Path) -> None:
    # One failure grounds a drone here, for longer than the test: without the
    # "at most half the fleet" rule, broken's failures would ground the healthy drones too.
    with swarm_of(tmp_path, "--ground-after", "1", "--ground-cooldown", "600") as swarm:
        swarm.add_agent("builder-0")
        swarm.add_agent("builder-1")
        faulty = swarm.add_agent("faulty", command=FAILING_COMMAND)
        swarm.wait_online()

        reply = swarm.queue("swarm-test/broken", "swarm-test/leaf-data", "swarm-test/leaf-script")
        session = swarm.wait_complete(reply["session"]["id"])
        assert session["jobs"] == {
            "blocked": 0,
            "queued": 0,
            "assigned": 0,
            "building": 0,
            "done": 2,
            "failed": 1,
            "cancelled": 0,
        }
        jobs = swarm.jobs()
        broken = jobs["swarm-test/broken-1"]
        assert broken["state"] == "failed" and len(broken["failed_on"]) == 2
        assert "fails in src_compile on purpose" in broken["reason"]
        healthy_failures = [
            e
            for e in swarm.events("job_failed_on_drone")
            if e["data"]["cpv"] == "swarm-test/broken-1" and e["drone_name"] != faulty.name
        ]
        assert healthy_failures, "broken never failed on a healthy drone"
        # Only the faulty drone is grounded: one of three, never more than half.
        assert [e["drone_name"] for e in swarm.events("drone_grounded")] == [faulty.name]
        assert {jobs[c]["drone"] for c in ("swarm-test/leaf-data-1", "swarm-test/leaf-script-1")} <= {
            "builder-0",
            "builder-1",
        }


def test_a_build_command_that_does_not_exist_is_refused_not_failed(tmp_path: Path) -> None:
    """Under nice(1) a missing emerge would be nice's failure, a failed build
    counting towards grounding; the builder refuses the job instead."""
    sent: list[gateway_pb2.AgentMessage] = []

    async def scenario() -> None:
        builder = Builder(
            emerge_command="/nonexistent/emerge --oneshot",
            pkgdir=tmp_path,
            eprefix="",
            logs=LogSources(None, tmp_path / "builds", tmp_path / "portage"),
            cache_path=tmp_path,
            min_free_bytes=0,
            nice=10,
            send=sent.append,
            channel=lambda: grpc.aio.insecure_channel("127.0.0.1:1"),
        )
        builder.start(build_pb2.StartBuild(job_id="j-1", build_id="b-1", cpv="swarm-test/leaf-data-1"))
        build = builder.current
        assert build is not None and build.task is not None
        await build.task

    asyncio.run(scenario())
    events = [m.build_event for m in sent]
    assert [(e.kind, e.reason) for e in events] == [
        (build_pb2.BuildEvent.REFUSED, "cannot run /nonexistent/emerge: not found")
    ]
