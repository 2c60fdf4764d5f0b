"""The agent's make-before-break stream switch, against a scripted controller.

The real controller ends a drone's old control stream the moment the new one
says Hello, and only then sends the new one's Welcome, so the agent can see
its old stream end before the new stream is welcomed. This pins that order
down (a real gRPC server on 127.0.0.1 holds the Welcome back) to show the
agent keeps its session instead of dropping it and reconnecting.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc

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


async def switch_while_the_old_stream_ends(cache: Path) -> tuple[int, int, int]:
    gateway = ScriptedGateway()
    server = grpc.aio.server()
    gateway_pb2_grpc.add_DroneGatewayServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    hello = serde.HelloInfo(
        drone_id=DRONE_ID,
        name="switcher",
        cores=1,
        drone_type="bare-metal",
        network="lan",
        agent_version="test",
        heartbeat_interval=0.1,
        hostname="switcher",
    )
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
