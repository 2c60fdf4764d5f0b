"""The circuit breaker on real builds: a drone whose builds always fail is
grounded while the healthy drones build everything, failures that follow a
package never ground more than half the fleet, and a build command that
does not exist is refused, not failed (it would count towards grounding).

Everything is real: the controller, the agents, emerge in Gentoo prefixes
(tools/prefix.py) and the staging binhost. Where the healthy drones' builds
only have to succeed (the first test), they write their packages with
Portage's gpkg code instead of building them (support/gpkg_build.py); the
second builds for real, a real failure included. The cooldown and the half-open
probe after it are timer logic: tests/test_build_timers.py moves a clock
through them. (tests/test_build_failures.py: drones and the controller
killed during builds.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from swarm.agent.builder import Builder
from swarm.agent.logs import LogSources
from swarm.v1 import build_pb2, gateway_pb2

from support.fleet import start_fleet
from support.gpkgs import WRITE_COMMAND
from support.procs import wait_for

# Each test runs several real emerge builds on a 2-core machine that may be busy.
pytestmark = pytest.mark.timeout(600)

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


def test_a_drone_whose_builds_always_fail_is_grounded(tmp_path: Path) -> None:
    """End to end: failing builds ground the drone while the healthy ones
    make everything (packages written, not built: the test is about the
    failures)."""
    with start_fleet(tmp_path, (), "--ground-after", "3", "--ground-cooldown", "600", portage=True) as swarm:
        swarm.add_agent("builder-0", command=WRITE_COMMAND)
        swarm.add_agent("builder-1", command=WRITE_COMMAND)
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
    with start_fleet(tmp_path, (), "--ground-after", "1", "--ground-cooldown", "600", portage=True) as swarm:
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
