"""Real builds when things go wrong: a drone killed in the middle of a build,
and the controller killed in the middle of a session.
(tests/test_build_grounding.py: drones whose builds fail, and the circuit
breaker.)

Everything is real: the controller, the agents, emerge in Gentoo prefixes
(tools/prefix.py) and the staging binhost; only the drones that take over
from a killed one write their packages with Portage's gpkg code instead of
building them (support/gpkg_build.py). Every wait is on a condition the
public API shows, never on a fixed sleep.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import prefix as pfx
import psutil
import pytest

from support.fleet import Fleet, start_fleet
from support.gpkgs import WRITE_COMMAND
from support.procs import FAST_HEARTBEAT, http, wait_for

# Each test runs several real emerge builds on a 2-core machine that may be busy.
pytestmark = pytest.mark.timeout(600)


def ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def sleeper_env(seconds: float) -> dict[str, dict[str, str]]:
    return {"swarm-test/sleeper": {"SWARM_TEST_SLEEP": str(seconds)}}


def staged(swarm: Fleet) -> tuple[Counter[str], list[Path]]:
    """CPV entries of the staging index (as stock Portage reads it) and the gpkg files in the PKGDIR."""
    status, index = http("GET", swarm.controller.info["staging_url"] + "/Packages")
    assert status == 200, index
    cpvs = Counter(line.split(":", 1)[1].strip() for line in index.splitlines() if line.startswith("CPV:"))
    return cpvs, sorted(swarm.staging_pkgdir.rglob("*.gpkg.tar"))


# -- a drone dies ---------------------------------------------------------------


def test_a_drone_killed_mid_build_loses_its_job_to_another_drone(tmp_path: Path) -> None:
    with start_fleet(tmp_path, (), "--build-grace", "3", portage=True) as swarm:
        # The agent dies once the sleep began: long enough that the build
        # surely still runs then. The drones that build the retry and the
        # other package only have to succeed: they write the packages.
        # Its grace is counted from the last message it sent, and checked here
        # against its disconnection: quarter-second beats keep the two close.
        swarm.add_agent("builder-0", package_env=sleeper_env(6), heartbeat_interval=FAST_HEARTBEAT)
        for i in (1, 2):
            swarm.add_agent(f"builder-{i}", command=WRITE_COMMAND)
        swarm.wait_online()
        with swarm.dispatching_only_to("builder-0"):
            session_id = swarm.queue("swarm-test/sleeper", "swarm-test/leaf-data")["session"]["id"]
            building = wait_for(
                lambda: (j := swarm.jobs()["swarm-test/sleeper-1"])["state"] == "building" and j,
                timeout=120,
                what="the sleeper building on builder-0",
            )
        assert building["drone"] == "builder-0", building
        wait_for(
            lambda: "Sleeping" in swarm.build_log(building),
            timeout=120,
            what="the sleeper in src_compile",
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
    with start_fleet(tmp_path, (), "--build-grace", "3", portage=True) as swarm:
        for i in range(3):
            swarm.add_agent(f"builder-{i}", package_env=sleeper_env(8))
        swarm.wait_online()
        # chain-a and the sleeper build side by side; chain-a is done while the
        # sleeper still builds (the kill comes then), and chain-b waits for
        # chain-a's package: a job of each kind across the restart, in 3 builds.
        reply = swarm.queue("swarm-test/chain-b", "swarm-test/sleeper")
        session_id = reply["session"]["id"]
        cpvs = sorted(j["cpv"] for j in reply["jobs"])
        ids = sorted(j["id"] for j in reply["jobs"])
        assert cpvs == ["swarm-test/chain-a-1", "swarm-test/chain-b-1", "swarm-test/sleeper-1"]

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

        # And the result is usable: a stock client installs the top package
        # (and so its dependency) from staging.
        client = pfx.create_prefix(
            pfx.PrefixConfig(
                tmp_path / "client", pfx.Role.CLIENT, binhost=swarm.controller.info["staging_url"]
            )
        )
        result = pfx.run_emerge(client, "--getbinpkgonly", "swarm-test/chain-b", timeout=300)
        assert result.ok, result.output[-3000:]
        assert client.installed("swarm-test/chain-b-1") and client.installed("swarm-test/chain-a-1")
