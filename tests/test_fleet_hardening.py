"""The drone side under misuse, with real agents and a real controller over
gRPC on 127.0.0.1: two agents on one identity (a cloned machine), a
revoked agent that keeps trying, failed enrollments and garbage as bounded
events, and control characters in what a drone reports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_gateway_protocol import enrolled, hello, raw_exchange
from test_unparsable import GARBAGE, protocol_errors, send_raw

from swarm.controller.bounds import NOISE_ALLOWANCE
from swarm.v1 import enroll_pb2, enroll_pb2_grpc, fleet_pb2, gateway_pb2

from support.procs import Agent, Controller, enroll, wait_for
from support.webhook import Webhook

WINDOW = 2.0  # --stream-replace-window: how long the controller counts a peer's mistakes as one burst
INITIAL, CAP = 0.4, 1.6  # the refused backoff of these tests' agents (900 s by default)
REFUSED_BACKOFF = ("--refused-backoff-initial", str(INITIAL), "--refused-backoff-max", str(CAP))
FIRST_REFUSAL = re.compile(r"retrying in ([\d.]+)s \(refusal (\d+) in a row\)")
NEXT_REFUSAL = re.compile(r"refused again \((\d+) in a row\); retrying in ([\d.]+)s")


@dataclass
class Hub:
    controller: Controller
    webhook: Webhook


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    webhook = Webhook()
    controller = Controller(
        tmp_path_factory.mktemp("hub"),
        "--ping-interval",
        "0.5",
        "--stream-replace-window",
        str(WINDOW),
        "--alert-webhook",
        webhook.url,
    )
    controller.start()
    yield Hub(controller, webhook)
    controller.kill()
    webhook.close()


@pytest.fixture
def started() -> Iterator[list[Agent]]:
    """Agents a test started, killed at its end."""
    agents: list[Agent] = []
    yield agents
    for agent in agents:
        agent.kill()


def refusals(log: str) -> list[tuple[int, float]]:
    """(refusals in a row, the delay before the next try) as the agent logged them."""
    found = [(int(n), float(d)) for d, n in FIRST_REFUSAL.findall(log)]
    found += [(int(n), float(d)) for n, d in NEXT_REFUSAL.findall(log)]
    return sorted(found)


def assert_refused_schedule(found: list[tuple[int, float]]) -> None:
    """Each wait is between half and all of min(cap, initial * 2^(n-1)): no
    quick retries, growing to the cap (0.05: the log's rounding)."""
    for n, delay in found:
        ceiling = min(CAP, INITIAL * 2 ** (n - 1))
        assert ceiling / 2 - 0.05 <= delay <= ceiling + 0.05, (n, delay, found)
    assert max(n for n, _ in found) >= 4  # at the cap (from the third) by now


def instance_of(agent: Agent) -> str:
    """The agent process's instance id, as it logs it when it starts."""
    pattern = re.compile(r"starting: drone \S+ \(\w+\), instance (\w+)")
    match = wait_for(lambda: pattern.search(agent.log()), what="the agent's instance id in its log")
    return str(match.group(1))


def online_as(controller: Controller, name: str, instance: str) -> bool:
    node = controller.node(name)
    return node is not None and node["status"] == "online" and node["instance_id"] == instance


def test_a_second_agent_on_one_identity_is_refused_and_the_first_keeps_the_drone(
    hub: Hub, tmp_path: Path, started: list[Agent]
) -> None:
    controller = hub.controller
    # One-second heartbeats: the first agent's stream stays live (not suspect)
    # even if this busy machine delays a beat.
    first = Agent(tmp_path, "twin", controller.grpc_target, heartbeat_interval=1.0)
    assert enroll(controller, "twin", first.state_dir).returncode == 0
    first.start()
    started.append(first)
    wait_for(lambda: online_as(controller, "twin", instance_of(first)), what="the first agent online")
    drone_id = first.drone_id
    # A copy of the machine: the same state directory (drone id, key, certificate).
    (tmp_path / "clone").mkdir()
    second = Agent(
        tmp_path / "clone",
        "twin",
        controller.grpc_target,
        *REFUSED_BACKOFF,
        heartbeat_interval=1.0,
        state_dir=first.state_dir,
    )
    second.start()
    started.append(second)

    def duplicates() -> list[dict[str, Any]]:
        return [e for e in controller.events(type="drone_duplicate") if e["drone_id"] == drone_id]

    [event] = wait_for(duplicates, timeout=10, what="a drone_duplicate event within seconds")
    assert event["data"]["kept"]["instance_id"] == instance_of(first)
    assert event["data"]["duplicate"]["instance_id"] == instance_of(second)
    [alert] = wait_for(
        lambda: [a for a in hub.webhook.received if a["type"] == "drone_duplicate"], what="the alert"
    )
    assert alert["drone"]["id"] == drone_id and alert["duplicate"]["instance_id"] == instance_of(second)

    # The newer one is refused with a clear status and backs off: it does not spin.
    wait_for(lambda: len(refusals(second.log())) >= 4, timeout=30, what="four refusals of the clone")
    assert_refused_schedule(refusals(second.log()))
    said = second.log()
    assert "ALREADY_EXISTS drone twin is connected already from another agent process" in said
    assert said.count("refused (another agent process holds this drone's control stream)") == 1
    # The one in place was told, once; it kept the drone throughout.
    wait_for(lambda: "another agent process says it is this drone" in first.log(), what="the first told")
    assert first.log().count("another agent process says it is this drone") == 1
    assert online_as(controller, "twin", instance_of(first))
    assert duplicates() == [event]  # the clone's later refusals are counted, not each an event
    assert not [e for e in controller.events(type="drone_replaced") if e["drone_id"] == drone_id]

    # Once the first is gone for good, the second takes the drone at its next try.
    first.kill()
    wait_for(lambda: online_as(controller, "twin", instance_of(second)), timeout=10, what="the clone online")


def test_a_revoked_agent_backs_off_and_says_so_once_per_change(
    hub: Hub, tmp_path: Path, started: list[Agent]
) -> None:
    controller = hub.controller
    agent = Agent(tmp_path, "revokee", controller.grpc_target, *REFUSED_BACKOFF)
    assert enroll(controller, "revokee", agent.state_dir).returncode == 0
    agent.start()
    started.append(agent)
    wait_for(lambda: (n := controller.node("revokee")) and n["status"] == "online", what="online")
    status, body = controller.admin("POST", "/admin/api/drones/revokee/revoke")
    assert status == 200, body
    # Four in a row: a try that failed some other way (seen on a loaded CI
    # machine) starts the count again, as it should.
    wait_for(
        lambda: max((n for n, _ in refusals(agent.log())), default=0) >= 4,
        timeout=30,
        what="four refusals in a row",
    )
    assert_refused_schedule(refusals(agent.log()))
    warned = [
        line
        for line in agent.log().splitlines()
        if " WARNING " in line and "refused (its certificate" in line
    ]
    # The stream cut at the revocation, then the refused new calls: a line per change, not per try.
    assert 1 <= len(warned) <= 2, warned
    assert "the client certificate is revoked or unknown" in agent.log()


def test_failed_enrollments_are_events_a_few_at_once_then_a_count(hub: Hub) -> None:
    controller = hub.controller
    tries = 8
    stranger = grpc.ssl_channel_credentials(
        root_certificates=(controller.data_dir / "pki" / "ca.crt").read_bytes()
    )

    async def guess() -> list[grpc.StatusCode]:
        codes = []
        async with grpc.aio.secure_channel(controller.enroll_target, stranger) as channel:
            stub = enroll_pb2_grpc.EnrollmentStub(channel)
            for attempt in range(tries):
                request = enroll_pb2.EnrollRequest(
                    token=f"abcdef012345.guessed-secret-{attempt}",
                    csr_pem=b"-",
                    drone_id="f" * 32,
                    name="intruder",
                )
                try:
                    await stub.Enroll(request, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
        return codes

    assert asyncio.run(guess()) == [grpc.StatusCode.UNAUTHENTICATED] * tries

    def failures() -> list[dict[str, Any]]:
        return controller.events(type="enrollment_failed")

    # The first few at once, the rest in one event when the window ends: they add up.
    wait_for(lambda: sum(e["data"]["repeated"] for e in failures()) == tries, what="the count")
    events = sorted(failures(), key=lambda e: e["id"])
    assert len(events) == NOISE_ALLOWANCE + 1
    first, summary = events[0], events[-1]
    assert first["data"]["name"] == "intruder" and first["data"]["claimed_drone_id"] == "f" * 32
    assert first["data"]["token_id"] == "abcdef012345" and first["data"]["code"] == "UNAUTHENTICATED"
    assert first["data"]["peer"].startswith("ipv4:127.0.0.1:")
    assert f"{tries - NOISE_ALLOWANCE} more like this within {WINDOW:g}s" in summary["message"]
    assert "guessed-secret" not in json.dumps(events)  # the secret never reaches the record


def test_garbage_in_a_loop_makes_a_few_protocol_errors_then_a_count(hub: Hub, tmp_path: Path) -> None:
    controller = hub.controller
    drone = enrolled(controller, tmp_path, "looper")
    method = "/swarm.v1.Enrollment/Renew"
    tries = 7

    async def loop() -> None:
        for _ in range(tries):
            code, _ = await send_raw(controller.grpc_target, drone.creds, method, "unary", [GARBAGE])
            assert code == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(loop())

    def mine() -> list[dict[str, Any]]:
        return [e for e in protocol_errors(controller, method) if e["drone_id"] == drone.drone_id]

    wait_for(lambda: sum(e["data"]["repeated"] for e in mine()) == tries, what="the count")
    assert len(mine()) == NOISE_ALLOWANCE + 1


def test_control_characters_a_drone_reports_are_neither_stored_nor_served(hub: Hub, tmp_path: Path) -> None:
    controller = hub.controller
    drone = enrolled(controller, tmp_path, "painted")
    dirty = "\x1b[31mred\x1b[0m\u202eevil\x00\x07\x9b2Jhost\u200b"
    first = hello(
        "painted",
        drone.drone_id,
        hostname=dirty,
        agent_version="1.0\x1b]0;owned\x07",
        drone_type_reason="lxc\u2066 says\u2069 so\x1b[2J",
        network="lan\r\n",
        instance_id="abc\x00def",
    )
    beat = gateway_pb2.AgentMessage(heartbeat=fleet_pb2.Heartbeat(seq=1, current_job_id="b-\x1b[1m42"))
    seen: dict[str, Any] = {}

    def look() -> None:
        seen["node"] = wait_for(
            lambda: (n := controller.node("painted")) and n["current_job_id"] == "b-42" and n,
            what="the heartbeat",
        )

    code, _, _ = asyncio.run(
        raw_exchange(
            controller.grpc_target,
            drone.creds,
            [first.SerializeToString(), beat.SerializeToString()],
            look,
        )
    )
    assert code == "open"
    node = seen["node"]
    reported = {
        k: node[k] for k in ("hostname", "agent_version", "drone_type_reason", "network", "instance_id")
    }
    assert reported == {
        "hostname": "redevilhost",
        "agent_version": "1.0",
        "drone_type_reason": "lxc says so",
        "network": "lan",
        "instance_id": "abcdef",
    }
    [connected] = [e for e in controller.events(type="drone_connected") if e["drone_id"] == drone.drone_id]
    assert connected["data"]["agent_version"] == "1.0"


def test_failed_tls_handshakes_leave_no_line_each_in_the_log(hub: Hub) -> None:
    """A port scan, plaintext or HTTP/1.1 on the TLS ports: grpc-core would log each."""
    controller = hub.controller
    before = controller.log().count("\n")
    for port in (controller.info["grpc_port"], controller.info["enroll_port"]):
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                with contextlib.suppress(OSError):
                    conn.recv(4096)  # until the server answers or closes: the handshake is over
    # A mark after them: once it is in the log, whatever they made the controller write is too.
    stranger = grpc.ssl_channel_credentials(
        root_certificates=(controller.data_dir / "pki" / "ca.crt").read_bytes()
    )

    async def mark() -> None:
        async with grpc.aio.secure_channel(controller.enroll_target, stranger) as channel:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await enroll_pb2_grpc.EnrollmentStub(channel).Enroll(
                    enroll_pb2.EnrollRequest(token="mark", name="after-the-scan"), timeout=10
                )

    asyncio.run(mark())
    wait_for(lambda: "after-the-scan" in controller.log(), what="the mark in the log")
    written = controller.log().split("\n")[before:]
    assert not [line for line in written if "Handshake failed" in line], written
