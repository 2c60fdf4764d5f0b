"""What drones say is taken in batches (controller/inbox.py): in the order it
came, within the inbox's delay or at once when a batch is full, judged by
the time it came, and never lost when its stream ends.

The inbox on its own, then the gateway's use of it in a real controller in
this process (support/inproc.py, a clock the test moves, real gRPC over
127.0.0.1, drones spoken by hand)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarm.controller.inbox import Inbox
from swarm.v1 import fleet_pb2, gateway_pb2

from fakes.clock import ManualClock
from support.inproc import InProcessController, local_config
from support.payloads import Drone, Stream, enrolled, grpc_target
from support.procs import wait_for

pytestmark = pytest.mark.timeout(60)


# -- the inbox --------------------------------------------------------------


def test_a_batch_is_taken_in_the_order_it_came_after_the_delay() -> None:
    async def scenario() -> None:
        taken: list[str] = []
        done = asyncio.Event()

        def take(item: str) -> None:
            taken.append(item)
            if item == "b":
                done.set()

        inbox: Inbox[str] = Inbox(take, delay=0.05)
        loop = asyncio.get_running_loop()
        first = loop.time()
        inbox.put("a", 1)
        inbox.put("b", 1)
        assert taken == [] and len(inbox) == 2
        await asyncio.wait_for(done.wait(), 10)
        assert taken == ["a", "b"]
        assert loop.time() - first >= 0.05
        # The next message starts a batch of its own.
        inbox.put("c", 1)
        assert taken == ["a", "b"]
        inbox.drain()
        assert taken == ["a", "b", "c"] and len(inbox) == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("size", [1, 400])
def test_a_full_batch_is_taken_at_once(size: int) -> None:
    """At its count (3) or its bytes (1,000), whichever comes first: a reader never holds more."""

    async def scenario() -> None:
        taken: list[int] = []
        inbox: Inbox[int] = Inbox(taken.append, delay=3600, max_messages=3, max_bytes=1000)
        inbox.put(0, size)
        inbox.put(1, size)
        assert taken == []
        inbox.put(2, size)
        assert taken == [0, 1, 2] and len(inbox) == 0
        inbox.put(3, 1)
        assert taken == [0, 1, 2]
        inbox.drain()

    asyncio.run(scenario())


def test_what_is_put_while_a_batch_is_taken_is_the_next_batchs() -> None:
    async def scenario() -> None:
        taken: list[str] = []
        echoed = asyncio.Event()

        def take(item: str) -> None:
            taken.append(item)
            if item == "a":
                inbox.put("echo", 1)
            if item == "echo":
                echoed.set()

        inbox: Inbox[str] = Inbox(take, delay=0.01)
        inbox.put("a", 1)
        inbox.put("b", 1)
        inbox.drain()
        assert taken == ["a", "b"] and len(inbox) == 1
        await asyncio.wait_for(echoed.wait(), 10)
        assert taken == ["a", "b", "echo"]

    asyncio.run(scenario())


def test_a_drained_inbox_leaves_no_timer_behind() -> None:
    async def scenario() -> None:
        taken: list[str] = []
        inbox: Inbox[str] = Inbox(taken.append, delay=0.05)
        inbox.put("a", 1)
        inbox.drain()
        await asyncio.sleep(0.1)
        assert taken == ["a"]
        assert inbox._timer is None

    asyncio.run(scenario())


# -- the gateway's inbox ------------------------------------------------------


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, clock: ManualClock) -> Iterator[InProcessController]:
    root = tmp_path_factory.mktemp("inbox")
    proc = InProcessController(local_config(root, ping_interval=3600.0), clock).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def held(api: InProcessController) -> Iterator[Inbox[Any]]:
    """The gateway's inbox, holding what it is given until the test drains it."""
    inbox = api.controller.gateway.inbox
    delay = inbox.delay
    inbox.delay = 3600.0
    try:
        yield inbox
    finally:
        inbox.delay = delay
        api.call(inbox.drain)


def state_of(api: InProcessController, drone: Drone) -> dict[str, object]:
    def read() -> dict[str, object]:
        state = api.controller.fleet.get(drone.drone_id)
        assert state is not None
        return {
            "status": state.status,
            "last_heartbeat_at": state.last_heartbeat_at,
            "load1": state.beat.load1,
            "ping_latency_ms": state.ping_latency_ms,
        }

    return api.call(read)


def heartbeat(load1: float) -> gateway_pb2.AgentMessage:
    return gateway_pb2.AgentMessage(heartbeat=fleet_pb2.Heartbeat(seq=1, load1=load1))


def test_a_heartbeat_is_judged_by_when_it_came_not_when_it_was_taken(
    api: InProcessController, held: Inbox[Any], clock: ManualClock, tmp_path: Path
) -> None:
    taker = enrolled(api, tmp_path, "came-at")

    async def scenario() -> None:
        async with Stream(grpc_target(api), taker) as stream:
            came = clock.time()
            await stream.call.write(heartbeat(1.25))
            await asyncio.to_thread(wait_for, lambda: api.call(len, held) == 1, 10, "the message read")
            api.run(lambda: clock.advance(30.0))
            assert state_of(api, taker)["load1"] != 1.25  # still in the inbox
            api.call(held.drain)
            seen = state_of(api, taker)
            assert seen["load1"] == 1.25
            assert seen["last_heartbeat_at"] == pytest.approx(came, abs=1e-6)

    asyncio.run(scenario())


def test_a_pongs_round_trip_leaves_out_its_wait_in_the_inbox(
    api: InProcessController, held: Inbox[Any], clock: ManualClock, tmp_path: Path
) -> None:
    taker = enrolled(api, tmp_path, "round-trip")

    def ping() -> tuple[int, int]:
        state = api.controller.fleet.get(taker.drone_id)
        assert state is not None
        seq = api.controller.pinger.ping_now(state)
        assert seq is not None
        return seq, state.pings_out[seq]

    async def scenario() -> None:
        async with Stream(grpc_target(api), taker) as stream:
            seq, sent = api.call(ping)
            api.run(lambda: clock.advance(0.004))  # the round trip
            pong = fleet_pb2.Pong(seq=seq, sent_at_unix_ns=sent)
            await stream.call.write(gateway_pb2.AgentMessage(pong=pong))
            await asyncio.to_thread(wait_for, lambda: api.call(len, held) == 1, 10, "the message read")
            api.run(lambda: clock.advance(2.0))  # its wait for the batch
            api.call(held.drain)
            assert state_of(api, taker)["ping_latency_ms"] == pytest.approx(4.0, abs=0.01)

    asyncio.run(scenario())


def test_what_a_drone_said_before_its_stream_ended_is_taken_before_it_is_offline(
    api: InProcessController, held: Inbox[Any], tmp_path: Path
) -> None:
    taker = enrolled(api, tmp_path, "last-words")

    async def scenario() -> None:
        async with Stream(grpc_target(api), taker) as stream:
            await stream.call.write(heartbeat(3.5))
            await asyncio.to_thread(wait_for, lambda: api.call(len, held) == 1, 10, "the message read")
            await stream.call.done_writing()
            await asyncio.to_thread(
                wait_for, lambda: state_of(api, taker)["status"] == "offline", 10, "the drone offline"
            )
        assert state_of(api, taker)["load1"] == 3.5
        assert api.call(len, held) == 0

    asyncio.run(scenario())
