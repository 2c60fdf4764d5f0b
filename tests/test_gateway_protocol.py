"""The control stream's rules, spoken by a hand-driven gRPC client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import grpc
import pytest

from swarm.v1 import fleet_pb2, gateway_pb2, gateway_pb2_grpc

from support.procs import Agent, Controller, wait_for


def hello(name: str, drone_id: str | None = None, **fields: object) -> gateway_pb2.AgentMessage:
    values: dict[str, object] = {
        "cores": 4,
        "drone_type": fleet_pb2.DRONE_TYPE_LXC,
        "heartbeat_interval_ms": 1000,
        "agent_version": "test",
        **fields,
    }
    return gateway_pb2.AgentMessage(
        hello=fleet_pb2.Hello(
            drone_id=drone_id if drone_id is not None else uuid.uuid4().hex, name=name, **values
        )
    )


def heartbeat(seq: int = 1) -> gateway_pb2.AgentMessage:
    return gateway_pb2.AgentMessage(heartbeat=fleet_pb2.Heartbeat(seq=seq, load1=0.5))


async def exchange(
    target: str, messages: list[gateway_pb2.AgentMessage]
) -> tuple[grpc.StatusCode, str, list[str]]:
    """Send the messages, then read until the controller ends the stream."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = gateway_pb2_grpc.DroneGatewayStub(channel).Connect()
        for message in messages:
            await call.write(message)
        received = []
        while True:
            try:
                reply = await asyncio.wait_for(call.read(), 10)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or "", received
            if reply is grpc.aio.EOF:
                return await call.code(), await call.details(), received
            received.append(reply.WhichOneof("body"))


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("messages", "code", "needle"),
    [
        (
            [heartbeat()],
            grpc.StatusCode.FAILED_PRECONDITION,
            "first message on a control stream must be hello",
        ),
        ([gateway_pb2.AgentMessage()], grpc.StatusCode.FAILED_PRECONDITION, "got nothing"),
        ([hello("")], grpc.StatusCode.INVALID_ARGUMENT, "hello.name must not be empty"),
        ([hello("bad name!")], grpc.StatusCode.INVALID_ARGUMENT, "hello.name"),
        ([hello("ok", drone_id="")], grpc.StatusCode.INVALID_ARGUMENT, "drone_id"),
        ([hello("ok", drone_id="../../etc")], grpc.StatusCode.INVALID_ARGUMENT, "drone_id"),
        ([hello("ok", heartbeat_interval_ms=5)], grpc.StatusCode.INVALID_ARGUMENT, "heartbeat_interval_ms"),
        (
            [hello("twice"), hello("twice")],
            grpc.StatusCode.FAILED_PRECONDITION,
            "hello may only be the first",
        ),
    ],
    ids=[
        "heartbeat-first",
        "empty-message",
        "empty-name",
        "bad-name",
        "empty-id",
        "path-id",
        "interval",
        "hello-twice",
    ],
)
def test_protocol_violations_get_a_clear_status_and_an_event(
    controller: Controller,
    agents: Callable[..., Agent],
    messages: list[gateway_pb2.AgentMessage],
    code: grpc.StatusCode,
    needle: str,
) -> None:
    agents("witness")
    wait_for(lambda: (n := controller.node("witness")) and n["status"] == "online", what="witness online")

    got_code, details, _ = run(exchange(controller.grpc_target, messages))  # type: ignore[misc]
    assert got_code == code
    assert needle in details

    errors = [e for e in controller.events(type="protocol_error")]
    assert len(errors) == 1
    assert needle.split()[0] in errors[0]["message"]
    # The controller keeps serving: the witness is still online and a good stream still works.
    assert controller.node("witness")["status"] == "online"
    status, _ = controller.admin("GET", "/admin/api/whoami")
    assert status == 200


def test_second_stream_with_the_same_drone_id_replaces_the_first(
    controller: Controller, agents: Callable[..., Agent]
) -> None:
    agent = agents("drone-dup")
    wait_for(lambda: (n := controller.node("drone-dup")) and n["status"] == "online", what="online")
    drone_id = agent.drone_id

    async def impostor() -> tuple[str, list[dict[str, object]]]:
        async with grpc.aio.insecure_channel(controller.grpc_target) as channel:
            call = gateway_pb2_grpc.DroneGatewayStub(channel).Connect()
            await call.write(hello("drone-dup", drone_id=drone_id, hostname="impostor"))
            first = await asyncio.wait_for(call.read(), 10)
            kind = first.WhichOneof("body")
            # While this stream holds the id, the node is ours, and there is one of it.
            node = await asyncio.to_thread(controller.node, "drone-dup")
            nodes = (await asyncio.to_thread(controller.get, "/api/v1/nodes"))["nodes"]
            assert node is not None and node["hostname"] == "impostor" and node["status"] == "online"
            call.cancel()
            return kind, nodes

    kind, nodes = run(impostor())  # type: ignore[misc]
    assert kind == "welcome"
    assert len(nodes) == 1
    replaced = controller.events(type="drone_replaced")
    assert len(replaced) == 1 and replaced[0]["drone_id"] == drone_id
    # The old stream was ended by the controller with ABORTED; the real agent
    # saw it and reconnects by itself, replacing the impostor's closed stream.
    wait_for(lambda: "ABORTED" in agent.log(), what="the old stream ended with ABORTED")
    wait_for(
        lambda: (
            (n := controller.node("drone-dup")) and n["status"] == "online" and n["hostname"] != "impostor"
        ),
        what="the real agent back",
    )
    assert len(controller.get("/api/v1/nodes")["nodes"]) == 1


def test_stream_without_hello_times_out(tmp_path: object) -> None:
    from pathlib import Path

    controller = Controller(Path(str(tmp_path)), "--hello-timeout", "0.5")
    controller.start()
    try:
        got_code, details, _ = run(exchange(controller.grpc_target, []))  # type: ignore[misc]
        assert got_code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "hello" in details
    finally:
        controller.kill()
