"""Payloads end to end: a real controller deploys to a real agent over
mTLS, which verifies, fetches, applies and reports (the agent's logic in
process: test_payload_agent.py; the controller's: test_payloads.py).

One fleet for the module: one drone with a Gentoo prefix of its own and
real emerge. The tests run in order on it: its Portage config (restored
when it breaks emerge --info, refused when tampered or a downgrade), a
payload taken only after a real build ends; rollouts to three drones: one
that runs through, and one whose controller process is killed (SIGKILL) in
the pause after its canary and started again on its data. Last, the agent
itself: a real wheel of this project with a bumped version rolled out to
the three, and a broken one that the drone's watchdog rolls back without
the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import json
import os
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarm.agent import credentials

from support.fleet import Fleet, start_fleet
from support.payloads import build_wheel
from support.procs import http, wait_for

pytestmark = pytest.mark.timeout(300)

DRONE = "pl-1"
PATH = "/admin/api/payloads"
# The window a new agent has to connect after its exec: enough for a start
# on a loaded machine, short enough for a broken one's rollback to be quick.
CONFIRM_WITHIN = 20
SLEEP = 3  # seconds the sleeper package builds


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("payload-deploy")
    fleet = start_fleet(
        root,
        (),
        "--payload-confirm-within",
        str(CONFIRM_WITHIN),
        portage=True,
    )
    try:
        fleet.add_agent(
            DRONE,
            package_env={"swarm-test/sleeper": {"SWARM_TEST_SLEEP": str(SLEEP)}},
            heartbeat_interval=1.0,
            online=True,
        )
        # An agent the watchdog starts again runs in the first one's process
        # group, which outlives it: killed with it at the end.
        fleet.orphans.append(fleet.agents[DRONE].pid)
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A good wheel with a bumped version, and one whose control link does not import."""
    root = tmp_path_factory.mktemp("wheels")
    good = build_wheel(root / "good", "0.1.0.post1")
    broken = build_wheel(
        root / "broken",
        "0.1.0.post2",
        # main.py imports fine (the install's --version check passes); the
        # daemon's first import after the exec does not.
        {"agent/link.py": ("import grpc\n", "import grpc\nimport swarm_no_such_module  # noqa\n")},
    )
    return {"good": good.read_bytes(), "broken": broken.read_bytes()}


def admin(swarm: Fleet, method: str, path: str, body: bytes | None = None) -> Any:
    status, reply = swarm.controller.admin(method, path, body)
    assert 200 <= status < 300, (method, path, status, reply)
    return reply


def push(swarm: Fleet, kind: str, data: bytes) -> int:
    """Upload (the raw bytes) and stage; the version."""
    c = swarm.controller
    status, reply = http(
        "POST", f"{c.admin_url}{PATH}?kind={kind}", headers={"X-Admin-Key": c.admin_key}, body=data
    )
    assert status == 201, reply
    version = int(reply["version"])
    admin(swarm, "POST", f"{PATH}/{kind}/{version}/stage")
    return version


def deploy(swarm: Fleet, kind: str, version: int, rollback: bool = False) -> str:
    body = json.dumps({"drones": [DRONE], "rollback": rollback}).encode()
    return str(admin(swarm, "POST", f"{PATH}/{kind}/{version}/deploy", body)["deploy_id"])


def final_event(swarm: Fleet, deploy_id: str, timeout: float = 120) -> dict[str, Any]:
    """The event of the drone's final answer to a deploy."""
    finals = ("payload_applied", "payload_refused", "payload_failed", "payload_rolled_back")

    def found() -> dict[str, Any] | None:
        for event in swarm.controller.events():
            if event["type"] in finals and event["data"].get("deploy_id") == deploy_id:
                return event
        return None

    event: dict[str, Any] = wait_for(found, timeout=timeout, what=f"the drone's answer to {deploy_id}")
    return event


def versions(swarm: Fleet) -> dict[str, dict[str, Any]]:
    reply = admin(swarm, "GET", "/admin/api/drones/versions")
    return {v["kind"]: v for v in reply["versions"] if v["drone"] == DRONE}


def held_for_payload(swarm: Fleet) -> str | None:
    """Why GET /admin/api/drones says the drone gets no new build for a payload (None: it does)."""
    drones = admin(swarm, "GET", "/admin/api/drones")["drones"]
    held: str | None = next(d for d in drones if d["name"] == DRONE)["dispatch"]["held_for_payload"]
    return held


def prefix(swarm: Fleet) -> Path:
    return swarm.root / f"{DRONE}-prefix"


def portage_tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def make_conf_with(swarm: Fleet, extra: str) -> bytes:
    """The drone prefix's make.conf as it is now, plus ``extra``."""
    return (prefix(swarm) / "etc/portage/make.conf").read_bytes() + extra.encode()


def more_drones(swarm: Fleet) -> tuple[str, ...]:
    """The module's other two drones (started by the first test that asks), online."""
    others = ("pl-2", "pl-3")
    for name in others:
        if name not in swarm.agents:
            swarm.add_agent(name, heartbeat_interval=1.0)
    swarm.wait_online(*others)
    return others


def rollout_of(swarm: Fleet, rollout_id: str) -> dict[str, Any]:
    reply: dict[str, Any] = admin(swarm, "GET", f"/admin/api/rollouts/{rollout_id}")
    return reply


def applied_lines(swarm: Fleet, name: str, kind: str, version: int) -> int:
    """How many times the drone's agent says it applied ``version`` (its own log)."""
    return swarm.agents[name].log().count(f"payload {kind} v{version}: APPLIED")


def test_the_drone_pinned_the_payload_key_at_enrollment_or_pins_it_at_renewal(swarm: Fleet) -> None:
    public = bytes.fromhex(admin(swarm, "GET", PATH)["public_key"])
    state_dir = swarm.agents[DRONE].state_dir
    assert credentials.load_payload_key(state_dir) == public
    # A drone enrolled before payloads has no key: its next renewal brings it.
    (state_dir / credentials.PAYLOAD_KEY_FILE).unlink()
    creds = credentials.load(state_dir)
    assert creds is not None
    asyncio.run(credentials.renew(state_dir, swarm.controller.grpc_target, creds))
    assert credentials.load_payload_key(state_dir) == public


def test_a_portage_config_that_breaks_emerge_info_is_restored(swarm: Fleet) -> None:
    before = (prefix(swarm) / "etc/portage/make.conf").read_bytes()
    version = push(
        swarm,
        "portage-config",
        portage_tar({"etc/portage/make.conf": make_conf_with(swarm, 'USE="unterminated\n')}),
    )
    event = final_event(swarm, deploy(swarm, "portage-config", version))
    assert event["type"] == "payload_failed", event
    assert "emerge --info" in event["data"]["reason"], event
    assert (prefix(swarm) / "etc/portage/make.conf").read_bytes() == before
    assert versions(swarm)["portage-config"]["running"] == 0


def test_tampered_bytes_and_a_downgrade_are_refused_saying_why(swarm: Fleet) -> None:
    marker = "etc/portage/env/payload-mark.conf"
    v_old = push(swarm, "portage-config", portage_tar({marker: b'MARK="old"\n'}))
    v_new = push(swarm, "portage-config", portage_tar({marker: b'MARK="new"\n'}))
    assert final_event(swarm, deploy(swarm, "portage-config", v_new))["type"] == "payload_applied"
    assert (prefix(swarm) / marker).read_bytes() == b'MARK="new"\n'
    assert versions(swarm)["portage-config"]["running"] == v_new

    refused = final_event(swarm, deploy(swarm, "portage-config", v_old))
    assert refused["type"] == "payload_refused", refused
    assert f"older than the running {v_new}" in refused["data"]["reason"]
    # Signed as a rollback, the same older version is taken.
    assert (
        final_event(swarm, deploy(swarm, "portage-config", v_old, rollback=True))["type"] == "payload_applied"
    )
    assert (prefix(swarm) / marker).read_bytes() == b'MARK="old"\n'

    # The controller's copy changed after it was signed (same size): the drone
    # fetches it, finds another sha256, and applies nothing.
    v_bad = push(swarm, "portage-config", portage_tar({marker: b'MARK="bad"\n'}))
    stored = swarm.controller.data_dir / "payloads" / "portage-config" / str(v_bad)
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    tampered = final_event(swarm, deploy(swarm, "portage-config", v_bad))
    assert tampered["type"] == "payload_refused" and "sha256" in tampered["data"]["reason"], tampered
    assert (prefix(swarm) / marker).read_bytes() == b'MARK="old"\n'


def test_a_drone_busy_with_a_build_takes_the_payload_when_it_ends(swarm: Fleet) -> None:
    marker = "etc/portage/env/payload-busy.conf"
    session = swarm.queue("swarm-test/sleeper")["session"]["id"]
    swarm.wait_building("swarm-test/sleeper-1")
    version = push(swarm, "portage-config", portage_tar({marker: b'BUSY="1"\n'}))
    deploy_id = deploy(swarm, "portage-config", version)
    wait_for(lambda: versions(swarm)["portage-config"]["state"] == "waiting", what="the drone waiting")
    assert not (prefix(swarm) / marker).exists()  # not while the build runs
    # Meanwhile the admin API says why it gets no new build.
    held = held_for_payload(swarm)
    assert held is not None and f"portage-config version {version} (deploy {deploy_id}" in held, held
    event = final_event(swarm, deploy_id)
    assert event["type"] == "payload_applied", event
    wait_for(lambda: held_for_payload(swarm) is None, what="the hold over")
    complete = swarm.wait_complete(session)
    assert complete["jobs"]["done"] == 1  # the build was not lost
    assert swarm.jobs()["swarm-test/sleeper-1"]["attempts"] == 1, swarm.jobs()
    assert (prefix(swarm) / marker).read_bytes() == b'BUSY="1"\n'


def test_a_portage_config_rolls_out_to_three_drones_the_canary_first(swarm: Fleet) -> None:
    """The rollout (controller/rollout.py; its state machine in process:
    test_rollouts.py) on real agents: the canary takes it and passes its
    gate before the next batch is sent it."""
    others = more_drones(swarm)
    marker = "etc/portage/env/payload-rollout.conf"
    version = push(swarm, "portage-config", portage_tar({marker: b'ROLLOUT="1"\n'}))
    body = {"drones": [DRONE, *others], "canary": 1, "batch": 2, "gate_timeout_s": 120}
    rollout = admin(swarm, "POST", f"{PATH}/portage-config/{version}/deploy", json.dumps(body).encode())
    assert [(d["drone"], d["batch"]) for d in rollout["drones"]] == [(DRONE, 0), ("pl-2", 1), ("pl-3", 1)]
    done = wait_for(
        lambda: (r := rollout_of(swarm, rollout["id"]))["state"] in ("done", "failed") and r,
        timeout=120,
        what="the rollout over",
    )
    assert done["state"] == "done", done
    assert all(d["state"] == "passed" for d in done["drones"]), done
    for name in (DRONE, *others):
        assert (swarm.root / f"{name}-prefix" / marker).read_bytes() == b'ROLLOUT="1"\n'
    # In order: the canary applied it before the batch was sent it.
    events = sorted(swarm.controller.events(), key=lambda e: e["id"])
    mine = [e for e in events if e["data"].get("rollout_id") == rollout["id"]]
    assert [e["type"] for e in mine] == ["rollout_started", "rollout_batch", "rollout_batch", "rollout_done"]
    assert [e["data"]["drones"] for e in mine[1:3]] == [[DRONE], list(others)]
    applied = {
        e["drone_name"]: e["id"]
        for e in events
        if e["type"] == "payload_applied" and e["data"]["version"] == version
    }
    assert applied[DRONE] < mine[2]["id"] < min(applied[name] for name in others)


def test_a_controller_killed_mid_rollout_finds_it_paused_and_no_drone_applies_it_twice(swarm: Fleet) -> None:
    """kill -9 of the controller process in the pause after the canary; a
    new one on the same DATA_DIR finds the rollout paused where it was, and
    on resume the batch after the canary takes it: every drone applied it
    once, as each agent's own log says."""
    names = (DRONE, *more_drones(swarm))
    marker = "etc/portage/env/payload-killed.conf"
    version = push(swarm, "portage-config", portage_tar({marker: b'KILLED="1"\n'}))
    # Canary, then one batch of the other two, an hour apart: the kill comes in the pause.
    body = {"drones": list(names), "canary": 1, "batch": 2, "pause_s": 3600, "gate_timeout_s": 120}
    rid = admin(swarm, "POST", f"{PATH}/portage-config/{version}/deploy", json.dumps(body).encode())["id"]
    # In the pause (next_batch_at is set once next_batch is written): the canary passed.
    wait_for(lambda: rollout_of(swarm, rid)["next_batch_at"], timeout=120, what="the pause after the canary")

    controller = swarm.controller
    pid = controller.pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not controller.alive(), what="the controller dead")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # what it left in its group (its Portage worker)
    controller.kill()  # and its release key's gpg-agent
    controller.restart()

    found = rollout_of(swarm, rid)
    assert found["state"] == "paused" and "restarted" in found["reason"], found
    assert found["next_batch"] == 1
    assert [(d["drone"], d["batch"], d["state"]) for d in found["drones"]] == [
        (DRONE, 0, "passed"),
        ("pl-2", 1, "pending"),
        ("pl-3", 1, "pending"),
    ]
    assert applied_lines(swarm, DRONE, "portage-config", version) == 1
    assert [applied_lines(swarm, name, "portage-config", version) for name in names[1:]] == [0, 0]
    swarm.wait_online(*names)

    admin(swarm, "POST", f"/admin/api/rollouts/{rid}/resume")
    done = wait_for(
        lambda: (r := rollout_of(swarm, rid))["state"] in ("done", "failed") and r,
        timeout=120,
        what="the rollout over",
    )
    assert done["state"] == "done", done
    assert all(d["state"] == "passed" for d in done["drones"]), done
    for name in names:
        assert (swarm.root / f"{name}-prefix" / marker).read_bytes() == b'KILLED="1"\n'
        assert applied_lines(swarm, name, "portage-config", version) == 1, name
    reply = admin(swarm, "GET", "/admin/api/drones/versions")
    running = {v["drone"]: v["running"] for v in reply["versions"] if v["kind"] == "portage-config"}
    assert [running[name] for name in names] == [version] * 3


def test_a_new_agent_rolls_out_to_three_drones_and_a_broken_one_rolls_itself_back(
    swarm: Fleet, wheels: dict[str, bytes]
) -> None:
    """A real wheel with a bumped version, rolled out canary first: each
    drone's same process runs the new program (exec) and says so in its
    Hello. Then a broken one the same way: the canary's own watchdog goes
    back, the rollout stops, and the other drones never get it."""
    names = (DRONE, *more_drones(swarm))
    pids = {name: swarm.agents[name].pid for name in names}
    good = push(swarm, "agent", wheels["good"])
    body = {"drones": list(names), "canary": 1, "batch": 2, "gate_timeout_s": 120}
    rid = admin(swarm, "POST", f"{PATH}/agent/{good}/deploy", json.dumps(body).encode())["id"]
    done = wait_for(
        lambda: (r := rollout_of(swarm, rid))["state"] in ("done", "failed") and r,
        timeout=180,
        what="the agent rollout over",
    )
    assert done["state"] == "done" and all(d["state"] == "passed" for d in done["drones"]), done

    def says_new_version(name: str) -> dict[str, Any] | None:
        node = swarm.controller.online(name)
        return node if node and node["agent_version"] == "0.1.0.post1" else None

    for name in names:
        node = wait_for(
            functools.partial(says_new_version, name), what=f"{name} saying 0.1.0.post1 in its Hello"
        )
        assert node["payload_version"] == str(good)
        agent = swarm.agents[name]
        assert agent.alive() and agent.pid == pids[name]  # the same process, the new program
        state = agent.state_dir / "payloads" / "agent"
        assert (state / "current").readlink() == Path(str(good))
        assert hashlib.sha256(wheels["good"]).hexdigest() in (state / str(good) / "meta.json").read_text()
    assert versions(swarm)["agent"]["running"] == good and not versions(swarm)["agent"]["drift"]

    state = swarm.agents[DRONE].state_dir / "payloads" / "agent"
    # The broken one rolled out the same way: its canary goes back by itself, the
    # rollout stops, and the other two drones are never sent it.
    broken = push(swarm, "agent", wheels["broken"])
    body["gate_timeout_s"] = CONFIRM_WITHIN + 60
    rid = admin(swarm, "POST", f"{PATH}/agent/{broken}/deploy", json.dumps(body).encode())["id"]
    # Failed, then (auto-rollback) rolled back: nobody else had taken it, so nobody goes back.
    stopped = wait_for(
        lambda: (r := rollout_of(swarm, rid))["state"] in ("done", "rolled_back") and r,
        timeout=CONFIRM_WITHIN + 120,
        what="the broken agent's rollout over",
    )
    assert stopped["state"] == "rolled_back" and "rolled back" in stopped["reason"], stopped
    assert [(d["drone"], d["state"]) for d in stopped["drones"]] == [
        (DRONE, "failed"),
        ("pl-2", "pending"),
        ("pl-3", "pending"),
    ], stopped
    event = next(
        e
        for e in swarm.controller.events()
        if e["type"] == "payload_rolled_back" and e["data"]["version"] == broken
    )
    assert event["drone_name"] == DRONE and "exited before it connected" in event["data"]["reason"]
    assert not any(
        e["data"].get("version") == broken and e["drone_name"] in names[1:]
        for e in swarm.controller.events()
        if e["type"].startswith("payload_")
    )
    node = wait_for(lambda: swarm.controller.online(DRONE))
    assert node["agent_version"] == "0.1.0.post1" and node["payload_version"] == str(good)
    assert (state / "current").readlink() == Path(str(good))
    assert versions(swarm)["agent"]["running"] == good
