"""The control stream's rules, spoken by a hand-driven gRPC client."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from swarm import protocol
from swarm.controller import gateway
from swarm.v1 import fleet_pb2, gateway_pb2, gateway_pb2_grpc, shell_pb2, shell_pb2_grpc

from support.fleet import Fleet, start_fleet
from support.procs import Agent, Controller, agent_credentials, enroll, enroll_here, http, wait_for

Messages = Callable[["Raw"], list[gateway_pb2.AgentMessage]]
WITNESS = "witness"


def hello(name: str, drone_id: str, **fields: object) -> gateway_pb2.AgentMessage:
    values: dict[str, Any] = {
        "cores": 4,
        "drone_type": fleet_pb2.DRONE_TYPE_LXC,
        "heartbeat_interval_ms": 1000,
        "agent_version": "test",
        **fields,
    }
    return gateway_pb2.AgentMessage(hello=fleet_pb2.Hello(drone_id=drone_id, name=name, **values))


def heartbeat(seq: int = 1) -> gateway_pb2.AgentMessage:
    return gateway_pb2.AgentMessage(heartbeat=fleet_pb2.Heartbeat(seq=seq, load1=0.5))


@dataclass(frozen=True)
class Raw:
    """An enrolled identity driven by hand instead of by an agent."""

    name: str
    drone_id: str
    creds: grpc.ChannelCredentials


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One controller for the tests that neither kill it nor need flags of their
    own, with a witness drone: each test speaks with identities of its own and
    counts only their events."""
    fleet = start_fleet(tmp_path_factory.mktemp("gateway"), (WITNESS,), "--ping-interval", "0.5")
    yield fleet
    fleet.stop()


@pytest.fixture
def controller(shared: Fleet) -> Controller:
    """The shared controller, with the witness online (a test before may have restarted it)."""
    shared.wait_online(WITNESS)
    return shared.controller


RAW_NAMES = itertools.count()


@pytest.fixture
def raw(controller: Controller, tmp_path: Path) -> Raw:
    """An identity of this test's own, enrolled under a fresh name."""
    return enrolled(controller, tmp_path, f"raw-{next(RAW_NAMES)}")


def errors_of(controller: Controller, raw: Raw, kind: str = "protocol_error") -> list[dict[str, Any]]:
    """The events of one type about this identity."""
    return [e for e in controller.events(type=kind) if e["drone_id"] == raw.drone_id]


async def exchange(
    target: str, creds: grpc.ChannelCredentials, messages: list[gateway_pb2.AgentMessage]
) -> tuple[grpc.StatusCode, str, list[str]]:
    """Send the messages, then read until the controller ends the stream.
    Pings are left out: the controller pings an open stream whenever its
    interval comes round, between any two replies the tests check."""
    async with grpc.aio.secure_channel(target, creds) as channel:
        call = gateway_pb2_grpc.DroneGatewayStub(channel).Connect()
        for message in messages:
            await call.write(message)
        received: list[str] = []
        while True:
            try:
                reply = await asyncio.wait_for(call.read(), 10)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or "", received
            if reply is grpc.aio.EOF:
                return await call.code(), await call.details(), received
            body = reply.WhichOneof("body")
            if body != "ping":
                received.append(body)


@pytest.mark.parametrize(
    ("messages", "code", "needle"),
    [
        (lambda r: [heartbeat()], grpc.StatusCode.FAILED_PRECONDITION, "first message on a control stream"),
        (lambda r: [gateway_pb2.AgentMessage()], grpc.StatusCode.FAILED_PRECONDITION, "got nothing"),
        (lambda r: [hello("", r.drone_id)], grpc.StatusCode.INVALID_ARGUMENT, "hello.name must not be empty"),
        (lambda r: [hello("bad name!", r.drone_id)], grpc.StatusCode.INVALID_ARGUMENT, "hello.name"),
        (lambda r: [hello("ok", "")], grpc.StatusCode.INVALID_ARGUMENT, "drone_id"),
        (lambda r: [hello("ok", "../../etc")], grpc.StatusCode.INVALID_ARGUMENT, "drone_id"),
        (
            lambda r: [hello("ok", r.drone_id, heartbeat_interval_ms=5)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "heartbeat_interval",
        ),
        (
            lambda r: [hello(r.name, r.drone_id), hello(r.name, r.drone_id)],
            grpc.StatusCode.FAILED_PRECONDITION,
            "hello may only be",
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
    raw: Raw,
    messages: Messages,
    code: grpc.StatusCode,
    needle: str,
) -> None:
    got_code, details, _ = asyncio.run(exchange(controller.grpc_target, raw.creds, messages(raw)))
    assert got_code == code
    assert needle in details

    errors = errors_of(controller, raw)
    assert len(errors) == 1
    assert needle.split()[0] in errors[0]["message"]
    # The controller keeps serving: the witness stays online, a good stream still works.
    assert controller.known_node(WITNESS)["status"] == "online"
    _, _, received = asyncio.run(
        exchange(
            controller.grpc_target, raw.creds, [hello(raw.name, raw.drone_id), hello(raw.name, raw.drone_id)]
        )
    )
    assert received == ["welcome"]


def test_a_certificate_cannot_claim_another_drones_id(
    shared: Fleet, controller: Controller, raw: Raw
) -> None:
    victim = shared.agents[WITNESS]
    got_code, details, received = asyncio.run(
        exchange(controller.grpc_target, raw.creds, [hello(WITNESS, victim.drone_id)])
    )
    assert got_code == grpc.StatusCode.PERMISSION_DENIED
    assert received == []
    assert f"this certificate is for drone {raw.drone_id}" in details
    assert controller.known_node(WITNESS)["status"] == "online"
    assert controller.known_node(WITNESS)["hostname"] != ""
    assert len(errors_of(controller, raw)) == 1


def test_second_stream_with_the_same_drone_id_replaces_the_first(
    shared: Fleet, controller: Controller
) -> None:
    agent = shared.add_agent("drone-dup", online=True)
    drone_id = agent.drone_id
    # A clone of the drone (same state dir, same certificate) connects.
    creds = agent_credentials(agent.state_dir)

    async def clone() -> tuple[str, list[dict[str, object]]]:
        async with grpc.aio.secure_channel(controller.grpc_target, creds) as channel:
            call = gateway_pb2_grpc.DroneGatewayStub(channel).Connect()
            await call.write(hello("drone-dup", drone_id, hostname="clone"))
            first = await asyncio.wait_for(call.read(), 10)
            kind = first.WhichOneof("body")
            # While this stream holds the id, the node is ours, and there is one of it.
            node = await asyncio.to_thread(controller.node, "drone-dup")
            everyone = (await asyncio.to_thread(controller.get, "/api/v1/nodes"))["nodes"]
            nodes = [n for n in everyone if n["name"] == "drone-dup"]
            assert node is not None and node["hostname"] == "clone" and node["status"] == "online"
            call.cancel()
            return kind, nodes

    # The real agent is held still meanwhile: it would take the id back as soon as its stream
    # ended, before the test had looked (its Hello has an instance id, the clone's none).
    agent.signal(signal.SIGSTOP)
    try:
        kind, nodes = asyncio.run(clone())
    finally:
        agent.signal(signal.SIGCONT)
    assert kind == "welcome"
    assert len(nodes) == 1
    replaced = [e for e in controller.events(type="drone_replaced") if e["drone_id"] == drone_id]
    assert len(replaced) == 1
    # The controller ended the old stream with ABORTED; the real agent saw
    # it (or, when its heartbeat's write raced the end, grpc-python's local
    # INTERNAL: docs/protocol.md, bounds) and reconnects by itself once the
    # clone's stream is gone.
    wait_for(
        lambda: "ended: ABORTED" in agent.log() or "ended: INTERNAL Internal error from Core" in agent.log(),
        what="the old stream ended with ABORTED",
    )
    wait_for(
        lambda: (n := controller.node("drone-dup")) and n["status"] == "online" and n["hostname"] != "clone",
        what="the real agent back",
    )
    assert [n["id"] for n in controller.get("/api/v1/nodes")["nodes"] if n["name"] == "drone-dup"] == [
        drone_id
    ]


def test_stream_without_hello_times_out(tmp_path: Path) -> None:
    controller = Controller(tmp_path, "--hello-timeout", "0.5")
    controller.start()
    try:
        enroll_here(controller, "raw", tmp_path / "raw")
        creds = agent_credentials(tmp_path / "raw")
        got_code, details, _ = asyncio.run(exchange(controller.grpc_target, creds, []))
        assert got_code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "hello" in details
    finally:
        controller.kill()


def test_a_drone_that_stops_reading_is_unhealthy_until_it_answers_pings_in_time(tmp_path: Path) -> None:
    """Heartbeats alone do not prove that a drone reads its stream: pings left
    unanswered make it unhealthy; pongs too late measure nothing; a pong in
    time makes it healthy again."""
    controller = Controller(tmp_path, "--ping-interval", "0.3", "--ping-timeout", "1", "--missed-pings", "3")
    controller.start()
    try:
        enroll_here(controller, "deaf", tmp_path / "deaf")
        drone_id = (tmp_path / "deaf" / "drone-id").read_text().strip()
        creds = agent_credentials(tmp_path / "deaf")

        def status() -> str:
            node = controller.node("deaf")
            return node["status"] if node else ""

        async def scenario() -> dict[str, Any]:
            async with grpc.aio.secure_channel(controller.grpc_target, creds) as channel:
                call = gateway_pb2_grpc.DroneGatewayStub(channel).Connect()
                await call.write(hello("deaf", drone_id, heartbeat_interval_ms=200))
                assert (await asyncio.wait_for(call.read(), 10)).WhichOneof("body") == "welcome"
                seq = 0
                # One write at a time on a call (grpc.aio refuses a second with
                # TOO_MANY_OPERATIONS): the heartbeats and the pongs take turns.
                writing = asyncio.Lock()

                async def beat_until(what: Callable[[], bool]) -> None:
                    nonlocal seq
                    for _ in range(100):
                        seq += 1
                        async with writing:
                            await call.write(heartbeat(seq))
                        if await asyncio.to_thread(what):
                            return
                        await asyncio.sleep(0.2)
                    raise AssertionError(f"still {status()!r}")

                # Heartbeats go on; nothing is read, so no ping is answered.
                await beat_until(lambda: status() == "unhealthy")
                node = await asyncio.to_thread(controller.known_node, "deaf")

                async def answer() -> None:
                    while True:
                        message = await call.read()
                        if message is grpc.aio.EOF:
                            return
                        if message.WhichOneof("body") == "ping":
                            ping = message.ping
                            pong = fleet_pb2.Pong(seq=ping.seq, sent_at_unix_ns=ping.sent_at_unix_ns)
                            async with writing:
                                await call.write(gateway_pb2.AgentMessage(pong=pong))

                reader = asyncio.create_task(answer())
                try:
                    await beat_until(lambda: status() == "online")
                finally:
                    reader.cancel()
                    call.cancel()
                return node

        node = asyncio.run(scenario())
        assert node["last_heartbeat_at"] is not None
        unhealthy = controller.events(type="drone_unhealthy")
        assert len(unhealthy) == 1 and "3 pings in a row unanswered" in unhealthy[0]["message"]
        assert controller.events(type="drone_healthy")
        # The stale pongs (queued while it did not read) were not taken for latencies.
        latency = controller.known_node("deaf")["ping_latency_ms"]
        assert latency is not None and latency < 1000
    finally:
        controller.kill()


def test_a_drone_cannot_answer_to_another_drones_name(
    shared: Fleet, controller: Controller, raw: Raw, tmp_path: Path
) -> None:
    """Names are bound to drone ids at enrollment: an impostor's Hello is
    refused, an enrollment under a taken name is refused before its token is
    spent, admin actions by name reach the drone enrolled under it, and only
    an admin renames."""
    real = shared.add_agent("py-ref", online=True)

    got_code, details, received = asyncio.run(
        exchange(controller.grpc_target, raw.creds, [hello("py-ref", raw.drone_id)])
    )
    assert got_code == grpc.StatusCode.PERMISSION_DENIED and received == []
    assert "the name 'py-ref' belongs to another drone" in details
    errors = errors_of(controller, raw)
    assert len(errors) == 1
    nodes = controller.get("/api/v1/nodes")["nodes"]
    assert [n["id"] for n in nodes if n["name"] == "py-ref"] == [real.drone_id]
    status, reply = controller.admin("POST", "/admin/api/drones/py-ref/ping")
    assert status == 200 and reply["drone"] in ("py-ref", real.drone_id)
    assert controller.events(type="drone_pinged")[0]["drone_id"] == real.drone_id

    # Enrolling another drone as py-ref is refused, and the token is still good.
    token = controller.create_token()
    taken = enroll(controller, "py-ref", tmp_path / "second", token=token)
    assert taken.returncode == 1 and "the name 'py-ref' belongs to enrolled drone" in taken.stderr
    assert enroll(controller, "second", tmp_path / "second", token=token).returncode == 0

    # A Hello with another, free name: the drone keeps the name it is bound to.
    _, _, received = asyncio.run(
        exchange(controller.grpc_target, raw.creds, [hello("free-name", raw.drone_id), hello("x", "y")])
    )
    assert received == ["welcome"]
    assert controller.node("free-name") is None
    assert controller.known_node(raw.drone_id)["name"] == raw.name
    mismatch = errors_of(controller, raw, "drone_name_mismatch")
    assert len(mismatch) == 1 and mismatch[0]["data"]["claimed"] == "free-name"

    # The admin renames: the new name is bound, the old one free for another drone.
    status, reply = controller.admin("POST", "/admin/api/drones/py-ref/rename", b'{"name": "py-new"}')
    assert status == 200 and reply == {"drone": real.drone_id, "name": "py-new", "old_name": "py-ref"}
    assert controller.known_node("py-new")["id"] == real.drone_id
    status, reply = controller.admin(
        "POST", "/admin/api/drones/py-new/rename", json.dumps({"name": raw.name}).encode()
    )
    assert status == 409 and "belongs to another drone" in reply["error"]["message"]
    status, reply = controller.admin("POST", "/admin/api/drones/py-new/rename", b'{"name": "no spaces"}')
    assert status == 400
    assert enroll(controller, "py-ref", tmp_path / "third").returncode == 0
    renamed = [e for e in controller.events(type="drone_renamed") if e["drone_id"] == real.drone_id]
    assert [e["data"]["old_name"] for e in renamed] == ["py-ref"]


async def raw_exchange(
    target: str,
    creds: grpc.ChannelCredentials,
    frames: list[bytes],
    meanwhile: Callable[[], Any] | None = None,
) -> tuple[grpc.StatusCode | str, str, int]:
    """Send frames as they are (bytes on the wire). Without ``meanwhile``, read
    until the stream ends: (code, details, replies). With it, read the first
    reply, run it while the stream is open, and say whether it still is."""
    async with grpc.aio.secure_channel(target, creds) as channel:
        call = channel.stream_stream(
            "/swarm.v1.DroneGateway/Connect", request_serializer=bytes, response_deserializer=bytes
        )()
        for frame in frames:
            await call.write(frame)
        replies = 0
        try:
            if meanwhile is not None:
                await asyncio.wait_for(call.read(), 10)
                await asyncio.to_thread(meanwhile)
                still_open = not call.done()
                call.cancel()
                return ("open" if still_open else "closed"), "", 1
            while await asyncio.wait_for(call.read(), 10) is not grpc.aio.EOF:
                replies += 1
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or "", replies
        return await call.code(), await call.details(), replies


def test_corrupt_input_is_invalid_argument_and_what_a_newer_agent_sends_is_ignored(
    controller: Controller, raw: Raw
) -> None:
    garbage = b"\xff\xff\xff\x07not protobuf"
    code, details, _ = asyncio.run(raw_exchange(controller.grpc_target, raw.creds, [garbage]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == gateway.UNPARSABLE

    first = hello(raw.name, raw.drone_id).SerializeToString()
    code, details, replies = asyncio.run(raw_exchange(controller.grpc_target, raw.creds, [first, garbage]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == gateway.UNPARSABLE
    assert replies >= 1  # the welcome came first
    errors = errors_of(controller, raw)
    assert [e["message"].split(": ", 1)[1] for e in errors] == [gateway.UNPARSABLE] * 2
    assert "Traceback" not in controller.log()

    # A newer agent: a type this controller does not know, and a message kind
    # from field 20 of AgentMessage (reserved for later additions).
    newer = hello(raw.name, raw.drone_id, drone_type=42).SerializeToString()
    kind_20 = bytes([0xA2, 0x01, 3, 0x08, 0x96, 0x01])  # field 20 (a varint tag), a message: field 1 = 150
    seen: dict[str, Any] = {}

    def look() -> None:
        def unknown_and_heartbeat() -> bool:
            _, body = controller.admin("GET", f"/admin/api/protocol?drone={raw.drone_id}")
            kinds = [e["type"] for e in body["entries"]]
            seen["unknown"] = [k for k in kinds if k == "unknown"]
            return "heartbeat" in kinds

        wait_for(unknown_and_heartbeat, what="the heartbeat after the unknown kind")
        seen["node"] = controller.node(raw.name)

    code, _, _ = asyncio.run(
        raw_exchange(
            controller.grpc_target, raw.creds, [newer, kind_20, heartbeat(7).SerializeToString()], look
        )
    )
    assert code == "open"
    assert seen["node"]["status"] == "online" and seen["node"]["drone_type"] == "unknown"
    assert "drone type 42 is unknown to this controller" in seen["node"]["drone_type_reason"]
    assert len(seen["unknown"]) == 1
    assert len(errors_of(controller, raw)) == 2


# -- bounds per identity (controller/bounds.py) and versions ---------------------------

BOUNDS = {"--stream-pending-per-peer": "4", "--stream-pending-total": "6", "--stream-replace-max": "3"}
BOUNDS_WINDOW = 2.0  # long enough for a burst to fit in one window, short for the summaries


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """One controller with small caps for the bounds tests (each uses identities of its own)."""
    root = tmp_path_factory.mktemp("bounded")
    extra = [arg for pair in BOUNDS.items() for arg in pair]
    proc = Controller(
        root, *extra, "--stream-replace-window", str(BOUNDS_WINDOW), "--channel-streams-per-drone", "3"
    )
    proc.start()
    yield proc
    proc.kill()


def enrolled(controller: Controller, root: Path, name: str) -> Raw:
    state = root / name
    return Raw(name, enroll_here(controller, name, state), agent_credentials(state))


def counted(events: list[dict[str, Any]], key: str) -> int:
    """What a burst's events add up to: the first says 1, the summary how many more."""
    return sum(int(e["data"][key]) for e in events)


def first_reply(
    channel: grpc.Channel, message: gateway_pb2.AgentMessage, hold: threading.Event
) -> tuple[str, Any]:
    """Open a stream that sends one message and stays open until ``hold`` is
    set: the kind of the first reply (or how the controller ended the
    stream), and the call. Blocking grpc on purpose: grpc.aio replaces the
    controller's status with a local INTERNAL when its write races a refusal."""

    def requests() -> Iterator[gateway_pb2.AgentMessage]:
        yield message
        hold.wait(30)

    call = gateway_pb2_grpc.DroneGatewayStub(channel).Connect(requests(), timeout=30)
    try:
        reply = next(call)
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}", call
    return reply.WhichOneof("body") or "empty", call


def test_a_burst_of_streams_with_one_certificate_replaces_a_few_times_and_refuses_the_rest(
    bounded: Controller, tmp_path: Path
) -> None:
    """200 Connects at once with one certificate: a bounded number replace the
    drone's stream, the rest get RESOURCE_EXHAUSTED, and the events are one
    per burst with counts that add up."""
    drone = enrolled(bounded, tmp_path, "burst")
    hold = threading.Event()
    with grpc.secure_channel(bounded.grpc_target, drone.creds) as channel:
        try:
            outcome, first = first_reply(channel, hello("burst", drone.drone_id), hold)
            assert outcome == "welcome"
            with ThreadPoolExecutor(200) as pool:
                burst = [
                    pool.submit(first_reply, channel, hello("burst", drone.drone_id), hold)
                    for _ in range(200)
                ]
                outcomes = [f.result()[0] for f in burst]
            # The stream in place before the burst was replaced, with ABORTED.
            with pytest.raises(grpc.RpcError) as ended:
                for _ in first:
                    pass
            assert ended.value.code() == grpc.StatusCode.ABORTED
            node = bounded.node("burst")
            assert node is not None and node["connected"], "one of the burst holds the drone"
        finally:
            hold.set()

    # Attached: welcomed, or replaced by the next before its Welcome was written.
    attached = [o for o in outcomes if o == "welcome" or o.startswith("ABORTED: replaced by a newer")]
    refused = [o for o in outcomes if o.startswith("RESOURCE_EXHAUSTED")]
    assert 1 <= len(attached) <= 3, attached
    assert len(refused) == 200 - len(attached), [o for o in outcomes if o not in refused + attached]
    assert all("limit per drone is 4" in o or "replaced 3 times within 2s" in o for o in refused), refused

    def events(kind: str) -> list[dict[str, Any]]:
        return [e for e in bounded.events(type=kind) if e["drone_id"] == drone.drone_id]

    # Each attached stream replaced the one before it; the refusals add up too,
    # once the bursts' windows have ended and reported their counts.
    wait_for(lambda: counted(events("drone_replaced"), "replaced") == len(attached), what="replacements")
    wait_for(lambda: counted(events("protocol_error"), "refused") == len(refused), what="refusals")
    assert len(events("drone_replaced")) <= 2
    assert len(events("protocol_error")) <= 4  # two bounds, a first event and a summary each


async def first_ended(calls: Collection[asyncio.Future[Any]], count: int) -> set[asyncio.Future[Any]]:
    """The calls ended once ``count`` of them have, or after 8 s. Refusals
    come at once and the calls held last until the hello timeout (10 s):
    waiting for the count, not a fixed half second, holds on a loaded
    machine, and a refusal too many ends with the others."""
    done: set[asyncio.Future[Any]] = set()
    deadline = asyncio.get_running_loop().time() + 8
    while len(done) < count and (left := deadline - asyncio.get_running_loop().time()) > 0:
        more, _ = await asyncio.wait(set(calls) - done, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        done |= more
    return {call for call in calls if call.done()}


def test_streams_that_never_say_hello_are_capped_per_drone_and_in_all(
    bounded: Controller, tmp_path: Path
) -> None:
    one, two = enrolled(bounded, tmp_path, "silent-1"), enrolled(bounded, tmp_path, "silent-2")

    async def ended(calls: list[Any], refusals: int) -> list[str]:
        """How the controller ended the calls it ended at once."""
        for call in calls:
            with contextlib.suppress(grpc.aio.AioRpcError):  # refused already
                await call.wait_for_connection()
        codes = {asyncio.ensure_future(c.code()): c for c in calls}
        done = await first_ended(codes, refusals)
        return [f"{t.result().name}: {await codes[t].details()}" for t in done]

    async def scenario() -> tuple[list[str], list[str]]:
        async with (
            grpc.aio.secure_channel(bounded.grpc_target, one.creds) as channel_1,
            grpc.aio.secure_channel(bounded.grpc_target, two.creds) as channel_2,
        ):
            # The first drone's 20 silent streams: 4 held, 16 refused at once.
            refused_1 = await ended(
                [gateway_pb2_grpc.DroneGatewayStub(channel_1).Connect() for _ in range(20)], 16
            )
            # The second drone fits 2 more under the total of 6; 3 are refused.
            refused_2 = await ended(
                [gateway_pb2_grpc.DroneGatewayStub(channel_2).Connect() for _ in range(5)], 3
            )
            return refused_1, refused_2

    refused_1, refused_2 = asyncio.run(scenario())
    assert len(refused_1) == 16, refused_1
    assert all("RESOURCE_EXHAUSTED" in r and "limit per drone is 4" in r for r in refused_1), refused_1
    assert len(refused_2) == 3, refused_2
    assert all("RESOURCE_EXHAUSTED" in r and "limit in all is 6" in r for r in refused_2), refused_2

    # Once the first drone's silent streams are gone, its Hello gets through again.
    hold = threading.Event()
    with grpc.secure_channel(bounded.grpc_target, one.creds) as channel:
        try:
            for _ in range(100):
                afterwards, _ = first_reply(channel, hello("silent-1", one.drone_id), hold)
                if "RESOURCE_EXHAUSTED" not in afterwards:
                    break
                time.sleep(0.05)  # the cancellations are on their way to the controller
        finally:
            hold.set()
    assert afterwards == "welcome"

    def errors(raw: Raw) -> list[dict[str, Any]]:
        return [e for e in bounded.events(type="protocol_error") if e["drone_id"] == raw.drone_id]

    wait_for(lambda: counted(errors(two), "refused") == 3, what="the second drone's refusals counted")
    assert len(errors(two)) == 2  # the first refusal, then "2 more"
    # (the retries above may have added refusals of their own to the first drone's)
    wait_for(lambda: counted(errors(one), "refused") >= 16, what="the first drone's refusals counted")
    assert 2 <= len(errors(one)) <= 4


def test_channel_streams_beyond_the_cap_per_drone_are_refused(bounded: Controller, tmp_path: Path) -> None:
    drone = enrolled(bounded, tmp_path, "channels")

    async def scenario() -> tuple[list[str], str]:
        async with grpc.aio.secure_channel(bounded.grpc_target, drone.creds) as channel:
            stub = shell_pb2_grpc.ChannelsStub(channel)
            calls = [stub.Shell() for _ in range(10)]
            codes = {asyncio.ensure_future(c.code()): c for c in calls}
            done = await first_ended(codes, 7)
            refused = [f"{t.result().name}: {await codes[t].details()}" for t in done]
            # The three held ones still follow the rules: an Attach to a channel
            # the controller did not ask for is NOT_FOUND.
            held = [c for c in calls if not c.done()]
            await held[0].write(shell_pb2.ShellFrame(attach=shell_pb2.Attach(channel_id="0" * 32)))
            not_asked = (await held[0].code()).name
            for call in calls:
                call.cancel()
            return refused, not_asked

    refused, not_asked = asyncio.run(scenario())
    assert len(refused) == 7, refused
    assert all("RESOURCE_EXHAUSTED" in r and "3 channel streams of" in r for r in refused), refused
    assert not_asked == "NOT_FOUND"
    wait_for(
        lambda: (
            counted(
                [e for e in bounded.events(type="protocol_error") if e["drone_id"] == drone.drone_id],
                "refused",
            )
            == 7
        ),
        what="the channel refusals counted",
    )


def test_hello_and_welcome_say_the_revision_and_features_each_side_speaks(
    bounded: Controller, launch: Callable[..., Agent], tmp_path: Path
) -> None:
    agent = launch(bounded, "speaker")
    node = wait_for(lambda: (n := bounded.node("speaker")) and n["connected"] and n, what="speaker connected")
    assert node["protocol_revision"] == protocol.PROTOCOL_REVISION
    assert node["features"] == list(protocol.AGENT_FEATURES)
    wait_for(lambda: f"it speaks: {', '.join(protocol.CONTROLLER_FEATURES)}" in agent.log(), what="agent log")

    # An agent from before feature lists (none in its Hello) gets the Welcome's,
    # reads as revision 1, and is asked for anything of revision 1; one that
    # lists its features is never asked for what it left out.
    old = enrolled(bounded, tmp_path, "narrow")

    async def welcome_and_exec(features: list[str]) -> tuple[fleet_pb2.Welcome, int, Any]:
        async with grpc.aio.secure_channel(bounded.grpc_target, old.creds) as channel:
            call = gateway_pb2_grpc.DroneGatewayStub(channel).Connect()
            await call.write(hello("narrow", old.drone_id, features=features))
            welcome = (await asyncio.wait_for(call.read(), 10)).welcome
            body = json.dumps({"command": "true", "timeout": 1}).encode()
            status, answer = await asyncio.to_thread(
                bounded.admin, "POST", "/admin/api/drones/narrow/exec", body
            )
            call.cancel()
            return welcome, status, answer

    welcome, status, answer = asyncio.run(welcome_and_exec(["builds", "some-later-feature"]))
    assert welcome.protocol_revision == protocol.PROTOCOL_REVISION
    assert list(welcome.features) == list(protocol.CONTROLLER_FEATURES)
    assert status == 409 and "does not speak channels.exec" in answer["error"]["message"], answer
    assert bounded.known_node("narrow")["features"] == ["builds", "some-later-feature"]


def test_figures_no_database_or_json_reader_takes_are_kept_as_finite_values(
    controller: Controller, raw: Raw
) -> None:
    """NaN and infinity in a heartbeat stopped the controller saving any
    drone's state and made /api/v1/nodes invalid JSON."""
    nan, inf = float("nan"), float("inf")
    wild = gateway_pb2.AgentMessage(
        heartbeat=fleet_pb2.Heartbeat(
            seq=1,
            load1=nan,
            load5=inf,
            load15=-3.0,
            cpu_percent=inf,
            memory_percent=250.0,
            disk_percent=nan,
            disk_free_bytes=2**64 - 1,
        )
    )

    def saved() -> bool:
        node = controller.node(raw.name)
        return node is not None and node["memory_percent"] == 100.0

    code, _, _ = asyncio.run(
        raw_exchange(
            controller.grpc_target,
            raw.creds,
            [hello(raw.name, raw.drone_id).SerializeToString(), wild.SerializeToString()],
            lambda: wait_for(saved, what="the heartbeat's figures"),
        )
    )
    assert code == "open"
    status, text = http("GET", controller.public_url + "/api/v1/nodes")
    assert status == 200
    node = next(n for n in text["nodes"] if n["name"] == raw.name)
    figures = {
        k: node[k] for k in ("load1", "load5", "load15", "cpu_percent", "memory_percent", "disk_percent")
    }
    assert figures == {
        "load1": 0.0,
        "load5": 0.0,
        "load15": 0.0,
        "cpu_percent": 0.0,
        "memory_percent": 100.0,
        "disk_percent": 0.0,
    }
    assert node["disk_free_bytes"] == 2**63 - 1
    # Saved too: a stopping controller writes what changed, and the next one reads it back.
    assert controller.terminate() == 0
    controller.restart()
    assert controller.known_node(raw.name)["memory_percent"] == 100.0
