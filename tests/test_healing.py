"""The healer against real failures, over real SSH.

Drones are real agent processes managed by tools/dronectl.py, the way
OpenRC manages the agent on a real drone: the healer's restart commands
run dronectl through a private sshd on 127.0.0.1 (tests/support/sshd.py).
"The hypervisor host" is the same sshd; its reboot command restarts the
drone's agent from a second dronectl directory, the machine's pristine
image, so a drone whose own service is broken comes back only by a
reboot. Alerts go to a small HTTP server standing in for the webhook.
What the healer decides by its timers (the cool-off, the startup grace,
the hold while most of the fleet is dark) is tested in process with a
clock the test moves: tests/test_healer_timing.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from dronectl import write_spec

from support.fleet import start_fleet
from support.procs import FAST_HEARTBEAT, Agent, Controller, enroll_here, wait_for
from support.sshd import SshServer
from support.webhook import Webhook

pytestmark = pytest.mark.timeout(300)

DRONECTL = Path(__file__).resolve().parent.parent / "tools" / "dronectl.py"
STEP_TIMEOUT = 4.0


def dronectl(state: Path, action: str, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DRONECTL), "--state", str(state), action, name],
        capture_output=True,
        text=True,
        timeout=30,
    )


@dataclass
class HealSwarm:
    root: Path
    controller: Controller
    sshd: SshServer
    webhook: Webhook
    services: Path  # what each drone's service manager starts
    images: Path  # what a drone runs after a reboot through its host
    names: list[str] = field(default_factory=list)

    def add_drone(self, name: str, *, drone_type: str = "lxc", broken_service: bool = False) -> None:
        state_dir = self.root / f"agent-{name}"
        enroll_here(self.controller, name, state_dir)
        argv = Agent(
            self.root,
            name,
            self.controller.grpc_target,
            drone_type=drone_type,
            state_dir=state_dir,
            # A frozen drone is found by its silence, a recovery by its healthy beats.
            heartbeat_interval=FAST_HEARTBEAT,
        ).args
        write_spec(self.images, name, argv)
        # A broken service "starts" something that is not the agent.
        write_spec(self.services, name, ["sleep", "600"] if broken_service else argv)
        self.names.append(name)
        # A broken service's drone boots from its image; restarting the service is what fails.
        started = dronectl(self.images if broken_service else self.services, "start", name)
        assert started.returncode == 0, started.stderr
        wait_for(lambda: self.status(name) == "online", what=f"{name} online")
        access = {"ssh": str(self.sshd.target)}
        if drone_type in ("lxc", "qemu"):
            access |= {
                "host": str(self.sshd.target),
                # kill what runs now, boot the image again
                "reboot": f"{sys.executable} {DRONECTL} --state {self.services} kill {{name}}; "
                f"{sys.executable} {DRONECTL} --state {self.images} restart {{name}}",
            }
        status, body = self.admin("PUT", f"/admin/api/drones/{name}", access)
        assert status == 200, body

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.controller.admin(method, path, None if body is None else json.dumps(body).encode())

    def status(self, name: str) -> str | None:
        node = self.controller.node(name)
        return node["status"] if node else None

    def agent_pid(self, name: str) -> int:
        """The running agent's pid, whichever manager started it last."""
        for state in (self.services, self.images):
            if dronectl(state, "status", name).returncode == 0:
                return int(json.loads((state / name / "agent.pid").read_text())[0])
        raise AssertionError(f"no agent running for {name}")

    def kill(self, name: str) -> None:
        os.kill(self.agent_pid(name), signal.SIGKILL)

    def health(self, name: str) -> dict[str, Any]:
        status, body = self.admin("GET", f"/admin/api/drones/{name}/health")
        assert status == 200, body
        assert isinstance(body, dict), body
        return body

    def actions(self, name: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.controller.events(type="heal_action", drone=name)]

    def close(self) -> None:
        for name in self.names:
            for state in (self.services, self.images):
                dronectl(state, "kill", name)


@contextlib.contextmanager
def heal_swarm(tmp_path: Path, sshd: SshServer, *flags: str) -> Iterator[HealSwarm]:
    services, images = tmp_path / "services", tmp_path / "images"
    services.mkdir()
    images.mkdir()
    ctl = f"{sys.executable} {DRONECTL} --state {services} --timeout 2"
    webhook = Webhook()
    # The drones are not the fleet's agents: dronectl starts them (add_drone).
    fleet = start_fleet(
        tmp_path,
        (),
        "--ping-interval",
        "0.5",
        "--heal-grace",
        "0.5",
        # No --heal-startup-grace: a first start has none (no drone was known).
        "--heal-cooloff",
        "0.5",
        "--heal-restart-timeout",
        str(STEP_TIMEOUT),
        "--heal-hard-restart-timeout",
        str(STEP_TIMEOUT),
        "--heal-reboot-timeout",
        "15",
        "--restart-command",
        f"{ctl} restart {{name}}",
        "--hard-restart-command",
        f"{ctl} hard-restart {{name}}",
        "--ssh-identity",
        str(sshd.identity),
        "--ssh-known-hosts",
        str(sshd.known_hosts),
        "--alert-webhook",
        webhook.url,
        *flags,
    )
    swarm = HealSwarm(tmp_path, fleet.controller, sshd, webhook, services, images)
    try:
        yield swarm
    finally:
        # The controller first: its healer would start a drone killed before
        # it stops again, through sshd, and that agent would outlive the test.
        fleet.stop()
        swarm.close()
        sshd.kill_sessions()
        webhook.close()


@pytest.fixture
def swarm(tmp_path: Path, sshd: SshServer) -> Iterator[HealSwarm]:
    with heal_swarm(tmp_path, sshd) as made:
        yield made


@pytest.fixture(scope="module")
def picky(tmp_path_factory: pytest.TempPathFactory, sshd: SshServer) -> Iterator[HealSwarm]:
    """One heal swarm with one drone for every refused access setting: a
    refused PUT changes nothing, so each case finds the drone as it was."""
    with heal_swarm(tmp_path_factory.mktemp("picky"), sshd) as made:
        made.add_drone("picky")
        yield made


def recovered(swarm: HealSwarm, name: str) -> dict[str, Any] | None:
    incidents = swarm.health(name)["incidents"]
    return incidents[0] if incidents and incidents[0]["recovered_at"] else None


def test_a_killed_agent_is_restarted_over_ssh(swarm: HealSwarm) -> None:
    swarm.add_drone("crash")
    status, healing = swarm.admin("GET", "/admin/api/healing")
    assert status == 200 and healing["startup_grace"] is None
    assert healing["settings"]["cooloff_max_s"] == 300 and healing["settings"]["cooloff_reset_s"] == 600
    before = swarm.agent_pid("crash")
    # The figures are computed by the healer's loop (health answers from memory), again as soon
    # as an incident is written, not after the few seconds they are otherwise kept.
    assert swarm.controller.get("/api/v1/health")["fleet"]["incidents"] == 0
    swarm.kill("crash")
    incident = wait_for(lambda: recovered(swarm, "crash"), timeout=30, what="crash recovered")
    assert swarm.agent_pid("crash") != before
    assert incident["kind"] == "offline" and incident["outcome"] == "recovered after restart"
    assert 0 < incident["recovery_s"] < 30 and incident["detection_s"] == 0
    [action] = swarm.actions("crash")
    assert action["step"] == "restart" and action["exit_code"] == 0 and "started" in action["output"]
    # The healer acted once: the drone's next incident would wait its first cool-off (0.5 s).
    cooloff = swarm.health("crash")["cooloff"]
    assert cooloff["incidents_in_a_row"] == 1 and cooloff["current_s"] == 0.5 and cooloff["resets_at"]
    health = wait_for(
        lambda: (
            (fleet := swarm.controller.get("/api/v1/health")["fleet"])["incidents"] == 1
            and fleet["open_incidents"] == 0
            and fleet
        ),
        timeout=4,  # less than the figures' 5 s lifetime: they must follow the written incident
        what="health figures with the recovered incident",
    )
    assert health["mttr_s"] == pytest.approx(incident["recovery_s"], abs=0.01)
    assert 0 < health["availability"] < 1


def test_a_frozen_agent_gets_a_hard_restart(swarm: HealSwarm) -> None:
    swarm.add_drone("frozen")
    os.kill(swarm.agent_pid("frozen"), signal.SIGSTOP)
    incident = wait_for(lambda: recovered(swarm, "frozen"), timeout=40, what="frozen recovered")
    assert incident["kind"] == "suspect" and incident["outcome"] == "recovered after hard restart"
    # Detected from silence: a few heartbeat intervals after the last one.
    assert 0 < incident["detection_s"] < 3
    steps = [(a["step"], a["done"], a.get("exit_code")) for a in swarm.actions("frozen")]
    # A silent agent reads no stream and ignores SIGTERM: straight to the hard restart.
    assert steps == [("restart", False, None), ("hard restart", True, 0)]


def test_a_drone_whose_restarts_do_nothing_is_rebooted_through_its_host(swarm: HealSwarm) -> None:
    swarm.add_drone("stuck", drone_type="lxc", broken_service=True)
    swarm.kill("stuck")
    incident = wait_for(lambda: recovered(swarm, "stuck"), timeout=60, what="stuck recovered")
    assert incident["outcome"] == "recovered after reboot"
    assert [a["step"] for a in swarm.actions("stuck")] == ["restart", "hard restart", "reboot"]
    assert swarm.webhook.received == []


def test_a_bare_metal_drone_is_never_rebooted_and_the_admin_is_alerted(swarm: HealSwarm) -> None:
    swarm.add_drone("metal", drone_type="bare-metal", broken_service=True)
    swarm.kill("metal")
    wait_for(lambda: swarm.webhook.received, timeout=60, what="the alert webhook")
    [alert] = swarm.webhook.received
    assert alert["type"] == "drone_alert" and alert["drone"]["name"] == "metal"
    assert alert["drone"]["type"] == "bare-metal" and alert["incident"]["kind"] == "offline"
    events = swarm.controller.events(type="heal_action", drone="metal")
    assert [e["data"]["step"] for e in events] == ["restart", "hard restart", "reboot", "alert"]
    assert not events[2]["data"]["done"] and "a bare-metal drone is never rebooted" in events[2]["message"]
    health = swarm.health("metal")
    assert health["exhausted"] and health["level"] == 4 and health["next_action"] is None
    status, body = swarm.admin("POST", "/admin/api/drones/metal/reboot")
    assert status == 409 and "bare-metal" in body["error"]["message"]


def test_paused_healing_does_nothing_until_resumed(swarm: HealSwarm) -> None:
    swarm.add_drone("napper")
    status, body = swarm.admin("POST", "/admin/api/healing", {"action": "pause"})
    assert status == 200 and body["paused"] is True
    swarm.kill("napper")

    def held_past_due() -> bool:
        upcoming = swarm.health("napper")["next_action"]
        if upcoming is None:
            return False  # the healer has not seen it go yet
        assert upcoming["held"] == "healing paused", upcoming
        return past(upcoming["at"])

    wait_for(held_past_due, what="napper past its first step")
    assert swarm.actions("napper") == []
    status, body = swarm.admin("POST", "/admin/api/healing", {"action": "resume"})
    assert status == 200 and body["paused"] is False
    incident = wait_for(lambda: recovered(swarm, "napper"), timeout=30, what="napper recovered")
    assert incident["outcome"] == "recovered after restart"
    types = [e["type"] for e in swarm.controller.events(drone="napper") if e["type"].startswith("heal")]
    assert types == ["heal_action"]
    assert [e["type"] for e in swarm.controller.events(type="healing_paused,healing_resumed")] == [
        "healing_paused",
        "healing_resumed",
    ]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"ssh": "root@bad host"}, "invalid host name"),
        ({"ssh": "-oProxyCommand=x"}, "invalid host name"),
        ({"type": "toaster"}, "type must be one of"),
        ({"colour": "red"}, "unknown field"),
        ({"host": "pve", "reboot": "pct reboot {vmid}"}, "needs the drone's vmid"),
        ({"host": "pve", "vmid": "101", "reboot": "reboot {disk}"}, "unknown placeholder"),
        ({"vmid": "10a"}, "vmid must be a number"),
        ({"reboot": "proxmox-lxc", "vmid": "7"}, "set host too"),
    ],
)
def test_bad_access_settings_are_refused(picky: HealSwarm, body: dict[str, Any], needle: str) -> None:
    status, reply = picky.admin("PUT", "/admin/api/drones/picky", body)
    assert status == 400 and needle in reply["error"]["message"], reply
    assert picky.health("picky")["access"]["ssh"] == str(picky.sshd.target)


def test_manual_restart_and_unknown_drones(swarm: HealSwarm) -> None:
    swarm.add_drone("manual")

    def pinged() -> dict[str, Any] | None:
        status, pong = swarm.admin("POST", "/admin/api/drones/manual/ping")
        assert status == 200, pong
        # A check appears once it has run (emerge --version takes a moment).
        return pong if len(pong["checks"]) == 4 else None

    pong = wait_for(pinged, what="a pong with every check")
    assert pong["seq"] > 0 and pong["latency_ms"] > 0 and pong["emerge_running"] is False
    assert {c["name"] for c in pong["checks"] if c["ok"]} == {"event_loop", "cache_disk", "builder", "emerge"}
    before = swarm.agent_pid("manual")
    status, body = swarm.admin("POST", "/admin/api/drones/manual/restart")
    # Connected: the agent is asked over its control stream and replaces itself.
    assert status == 200 and body["done"] and "control stream" in body["detail"], body
    # One action at a time: until the fresh agent is back, another restart is refused.
    status, body = swarm.admin("POST", "/admin/api/drones/manual/restart")
    assert status == 409 and "a restart asked by admin is under way" in body["error"]["message"], body
    wait_for(
        lambda: swarm.controller.events(type="drone_connected", drone="manual")[1:],
        what="the restarted agent connected",
    )
    assert swarm.agent_pid("manual") == before  # exec keeps the pid
    assert swarm.health("manual")["busy"] is None  # back: the next action may run
    assert [a["why"] for a in swarm.actions("manual")] == ["restart asked by admin"]
    swarm.kill("manual")
    wait_for(lambda: swarm.status("manual") == "offline", what="manual offline")
    status, body = swarm.admin("POST", "/admin/api/drones/manual/ping")
    assert status == 409 and "no control stream" in body["error"]["message"]
    for path in ("/admin/api/drones/nobody/restart", "/admin/api/drones/nobody/health"):
        status, body = swarm.admin("POST" if path.endswith("restart") else "GET", path)
        assert status == 404 and "nobody" in body["error"]["message"]


def past(iso_time: str) -> bool:
    """Whether that moment is a good second behind us (the healer ticks every 0.25 s)."""
    return datetime.fromisoformat(iso_time).timestamp() < time.time() - 1.0
