"""An admin drains and grounds drones: real controller, real agents in
Gentoo prefixes. Held drones get no work, the job says why it waits, the
holds survive a controller restart, and releasing a drone lets the job
build (the drones write their packages with Portage's gpkg code,
support/gpkg_build.py: the holds are the point, not the build)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.fleet import Fleet, builders, start_fleet
from support.gpkgs import WRITE_COMMAND
from support.procs import http, wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[Fleet]:
    s = start_fleet(tmp_path, builders(2), portage=True, command=WRITE_COMMAND)
    yield s
    s.stop()


def hold(swarm: Fleet, drone: str, action: str) -> tuple[int, Any]:
    return swarm.controller.admin("POST", f"/admin/api/drones/{drone}/{action}")


def dispatch(swarm: Fleet) -> dict[str, dict[str, Any]]:
    status, body = swarm.controller.admin("GET", "/admin/api/drones")
    assert status == 200, body
    return {d["name"]: d["dispatch"] for d in body["drones"]}


def test_drained_and_grounded_drones_get_no_work_until_released(swarm: Fleet) -> None:
    status, body = hold(swarm, "builder-0", "drain")
    assert status == 200 and body["dispatch"]["draining"] and body["dispatch"]["drained_by"] == "admin"
    status, body = hold(swarm, "builder-1", "ground")
    assert status == 200 and body["dispatch"]["grounded"] and body["dispatch"]["grounded_by"] == "admin"
    assert body["dispatch"]["grounded_until"] is None  # until ungrounded, not a cooldown

    for drone, action, code in (
        ("builder-0", "drain", 409),
        ("builder-1", "ground", 409),
        ("builder-0", "unground", 409),
        ("builder-1", "undrain", 409),
        ("nobody", "drain", 404),
    ):
        status, body = hold(swarm, drone, action)
        assert status == code, (drone, action, body)
    status, _ = http("POST", swarm.controller.admin_url + "/admin/api/drones/builder-0/undrain")
    assert status == 401

    job = swarm.queue("swarm-test/leaf-data")["jobs"][0]
    why = wait_for(
        lambda: (d := swarm.controller.admin("GET", f"/admin/api/jobs/{job['id']}")[1]["job"])["why"] and d,
        what="the job's reason",
    )
    assert why["state"] == "queued" and why["why"] == "every drone is grounded or draining", why

    # Holds are the admins' decisions: a restart keeps them; the public sees the state, not who.
    assert swarm.controller.terminate() == 0
    swarm.controller.restart()
    swarm.wait_online()
    holds = dispatch(swarm)
    assert holds["builder-0"]["draining"] and not holds["builder-0"]["grounded"]
    assert holds["builder-1"]["grounded"] and holds["builder-1"]["grounded_by"] == "admin"
    public = swarm.controller.known_node("builder-1")["dispatch"]
    assert public["grounded"] and "grounded_by" not in public and "drained_by" not in public
    assert swarm.jobs()["swarm-test/leaf-data-1"]["state"] == "queued"

    status, body = hold(swarm, "builder-0", "undrain")
    assert status == 200 and not body["dispatch"]["draining"]
    wait_for(lambda: swarm.session()["state"] == "complete", timeout=180, what="the session to end")
    assert swarm.jobs()["swarm-test/leaf-data-1"]["drone"] == "builder-0"
    assert dispatch(swarm)["builder-1"]["grounded"]  # still grounded: it built nothing

    status, body = hold(swarm, "builder-1", "unground")
    assert status == 200 and not body["dispatch"]["grounded"]
    kinds = [(e["type"], e["drone_name"], e["data"].get("by")) for e in swarm.controller.events()]
    for expected in (
        ("drone_draining", "builder-0", "admin"),
        ("drone_grounded", "builder-1", "admin"),
        ("drone_undrained", "builder-0", "admin"),
        ("drone_ungrounded", "builder-1", "admin"),
    ):
        assert expected in kinds, (expected, kinds)
