"""The agent's control link against scripted controllers: its make-before-break
stream switch, and a refusal that grpc reports as something else.

The real controller ends a drone's old control stream the moment the new one
says Hello, and only then sends the new one's Welcome, so the agent can see
its old stream end before the new stream is welcomed. This pins that order
down (a real gRPC server on 127.0.0.1 holds the Welcome back) to show the
agent keeps its session instead of dropping it and reconnecting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from swarm.agent import serde
from swarm.agent.link import ControlLink
from swarm.agent.probes import SystemProbe
from swarm.backoff import Backoff
from swarm.v1 import fleet_pb2, gateway_pb2, gateway_pb2_grpc

DRONE_ID = "0f3c2a9e-6f1d-4c55-9a57-0d5a1c1b2e3f"
# Long enough that the old stream's end reaches the agent before this Welcome.
WELCOME_HELD_BACK = 0.5


class ScriptedGateway(gateway_pb2_grpc.DroneGatewayServicer):
    def __init__(self) -> None:
        self.connects = 0
        self.replaced = asyncio.Event()
        self.first_ended = asyncio.Event()
        self.heartbeats: asyncio.Queue[int] = asyncio.Queue()

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        self.connects += 1
        stream = self.connects
        first = await context.read()
        assert first.WhichOneof("body") == "hello"
        if stream == 1:
            await context.write(welcome())
            await self.replaced.wait()
            self.first_ended.set()
            await context.abort(grpc.StatusCode.ABORTED, "replaced by a newer stream")
        if stream == 2:
            self.replaced.set()
            await self.first_ended.wait()
            await asyncio.sleep(WELCOME_HELD_BACK)
        await context.write(welcome())
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            if message.WhichOneof("body") == "heartbeat":
                self.heartbeats.put_nowait(stream)


def welcome() -> gateway_pb2.ControllerMessage:
    return gateway_pb2.ControllerMessage(welcome=fleet_pb2.Welcome(drone_id=DRONE_ID))


def hello_of(name: str) -> serde.HelloInfo:
    return serde.HelloInfo(
        drone_id=DRONE_ID,
        name=name,
        cores=1,
        drone_type="bare-metal",
        network="lan",
        agent_version="test",
        heartbeat_interval=0.1,
        hostname=name,
    )


async def switch_while_the_old_stream_ends(cache: Path) -> tuple[int, int, int]:
    gateway = ScriptedGateway()
    server = grpc.aio.server()
    gateway_pb2_grpc.add_DroneGatewayServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    hello = hello_of("switcher")
    link = ControlLink(
        f"127.0.0.1:{port}", hello, SystemProbe(cache), Backoff(initial=0.05, cap=0.1), lambda: None
    )
    await link.start()
    try:
        await asyncio.wait_for(link.connected.wait(), 10)
        link.credentials_changed()
        await asyncio.wait_for(gateway.first_ended.wait(), 10)
        while True:
            stream = await asyncio.wait_for(gateway.heartbeats.get(), 10)
            if stream != 1:
                return stream, link.sessions, gateway.connects
    finally:
        await link.stop()
        await server.stop(None)


def test_old_stream_ending_before_the_new_welcome_keeps_the_session(tmp_path: Path) -> None:
    stream, sessions, connects = asyncio.run(switch_while_the_old_stream_ends(tmp_path / "cache.json"))
    assert (stream, sessions, connects) == (2, 1, 2)


class RefusingGateway(gateway_pb2_grpc.DroneGatewayServicer):
    """Refuses every drone as a revoked one, after reading its Hello (so that
    the Hello's write itself always succeeds here)."""

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        await context.read()
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "the client certificate is revoked or unknown")


class HiddenStatusCall:
    """A control stream as grpc.aio hands it over when the controller ended it
    just before the Hello was written: the write fails with INTERNAL "Internal
    error from Core" and the controller's own status is lost (grpc/grpc#36066).
    The race needs the controller's end and the write to cross; this stands in
    for it so the agent's answer can be checked every time."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self._call = call

    async def write(self, message: Any) -> None:
        self._call.cancel()
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), "Internal error from Core"
        )


async def refused_with_a_hidden_status_between(
    cache: Path, monkeypatch: pytest.MonkeyPatch, hidden: int, tries: int
) -> ControlLink:
    """Runs a link against a gateway that refuses it until it has tried
    ``tries`` times; the ``hidden``-th try ends as grpc's race ends it."""
    real_stub: Callable[[grpc.aio.Channel], Any] = gateway_pb2_grpc.DroneGatewayStub
    calls: list[object] = []
    enough = asyncio.Event()

    class Stub:
        def __init__(self, channel: grpc.aio.Channel) -> None:
            self._stub = real_stub(channel)

        def Connect(self) -> object:
            call = self._stub.Connect()
            calls.append(call)
            if len(calls) >= tries:
                enough.set()
            return HiddenStatusCall(call) if len(calls) == hidden else call

    monkeypatch.setattr(gateway_pb2_grpc, "DroneGatewayStub", Stub)
    server = grpc.aio.server()
    gateway_pb2_grpc.add_DroneGatewayServicer_to_server(RefusingGateway(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    hello = hello_of("revoked")
    link = ControlLink(
        f"127.0.0.1:{port}",
        hello,
        SystemProbe(cache),
        Backoff(initial=0.05, cap=0.1),
        lambda: None,
        refused_backoff=Backoff(initial=0.02, cap=0.04),
    )
    await link.start()
    try:
        await asyncio.wait_for(enough.wait(), 10)
    finally:
        await link.stop()
        await server.stop(None)
    return link


def test_a_refusal_whose_status_grpc_hid_is_the_same_refusal_not_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="swarm.agent.link")
    link = asyncio.run(
        refused_with_a_hidden_status_between(tmp_path / "cache.json", monkeypatch, hidden=3, tries=6)
    )
    said = [r for r in caplog.records if r.name == "swarm.agent.link"]
    warned = [r.getMessage() for r in said if r.levelno >= logging.WARNING]
    # One line for the refusal; the hidden end in its middle changes nothing
    # (no "reconnecting" line, no second refusal line, no fast retry).
    assert len(warned) == 1, warned
    assert "UNAUTHENTICATED the client certificate is revoked or unknown: refused" in warned[0]
    again = [r.getMessage() for r in said if r.getMessage().startswith("refused again")]
    assert [m.split(" in a row")[0] for m in again][:4] == [f"refused again ({n}" for n in (2, 3, 4, 5)]
    assert link.refusals >= 5
