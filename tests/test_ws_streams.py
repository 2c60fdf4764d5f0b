"""Live admin streams: /ws/events (live, filtered, resumable) and
/ws/protocol (heartbeats of a real agent, sampled); a client that stops
reading costs bounded memory and is told what it missed; streams close
when the controller stops.

/ws/events' filters and resumption are tested on a controller in this
process (support/inproc.py); the rest needs a real agent or a controller
process (its memory, its SIGTERM)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from support.inproc import InProcessController, local_config
from support.procs import Agent, Controller, ControllerApi, wait_for

QUEUE = 50


def ws_url(ctl: ControllerApi, path: str) -> str:
    return ctl.admin_url + path


def key(ctl: ControllerApi) -> dict[str, str]:
    return {"X-Admin-Key": ctl.admin_key}


async def next_item(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.receive(), timeout)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    item: dict[str, Any] = json.loads(message.data)
    return item


async def until(
    ws: aiohttp.ClientWebSocketResponse, found: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Items up to and including the first that ``found`` accepts."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        seen.append(await next_item(ws, max(0.01, deadline - time.monotonic())))
        if found(seen[-1]):
            return seen


async def _events_live_and_resumed(ctl: ControllerApi) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url(ctl, "/ws/events"), headers=key(ctl)) as ws:
            await asyncio.to_thread(ctl.create_token, 600, "first")
            seen = await until(ws, lambda e: e["type"] == "token_created")
            first = seen[-1]
            assert "first" in first["message"]
            # The same object as the public API's item.
            public = await asyncio.to_thread(ctl.events, since=str(first["id"] - 1))
            assert public[0] == first

        # Missed while disconnected, then resumed from the last id seen.
        await asyncio.to_thread(ctl.create_token, 600, "second")
        url = ws_url(ctl, f"/ws/events?since={first['id']}")
        async with session.ws_connect(url, headers=key(ctl)) as ws:
            backlog = await until(ws, lambda e: e["type"] == "token_created")
            assert "second" in backlog[-1]["message"]
            ids = [e["id"] for e in backlog]
            assert ids == sorted(ids) and ids[0] == first["id"] + 1, "a gap or a repeat"
            await asyncio.to_thread(ctl.create_token, 600, "third")
            live = await until(ws, lambda e: e["type"] == "token_created")
            assert "third" in live[-1]["message"]
            assert live[0]["id"] == ids[-1] + 1

        # Filtered by type, from the start of the log.
        url = ws_url(ctl, "/ws/events?since=0&type=token_created,controller_started")
        async with session.ws_connect(url, headers=key(ctl)) as ws:
            got = [await next_item(ws) for _ in range(4)]
            assert [e["type"] for e in got] == ["controller_started"] + ["token_created"] * 3
            await asyncio.to_thread(ctl.admin, "GET", "/admin/api/whoami")
            await asyncio.to_thread(ctl.create_token, 600, "fourth")
            assert "fourth" in (await next_item(ws))["message"]


@pytest.fixture
def inproc(tmp_path: Path) -> Iterator[InProcessController]:
    proc = InProcessController(local_config(tmp_path)).start()
    yield proc
    proc.stop()


def test_events_stream_live_filtered_and_resumable(inproc: InProcessController) -> None:
    asyncio.run(_events_live_and_resumed(inproc))


async def _heartbeats(ctl: Controller, beats: int) -> tuple[list[Any], list[Any]]:
    """What /ws/protocol sends of alpha until ``beats`` heartbeats, a ping and
    a pong have come, and what the sampled stream sent of the same stretch of
    the log (by seq). Each read has a deadline of its own: a read loop ended
    only by an outer timeout can outlive it (3.11's wait_for keeps a result
    that comes with the cancellation, and the loop reads on)."""
    async with (
        aiohttp.ClientSession() as session,
        # Sampled first: its count of heartbeats has begun before the first one `every` sees.
        session.ws_connect(ws_url(ctl, "/ws/protocol?type=heartbeat&sample=4"), headers=key(ctl)) as sampled,
        session.ws_connect(ws_url(ctl, "/ws/protocol?drone=alpha"), headers=key(ctl)) as every,
    ):
        seen: list[Any] = []

        def enough() -> bool:
            kinds = [e["type"] for e in seen]
            return kinds.count("heartbeat") >= beats and {"ping", "pong"} <= set(kinds)

        while not enough():
            seen.append(await next_item(every, timeout=30))
        first, last = seen[0]["seq"], seen[-1]["seq"]
        # The sampled stream gets as far: a heartbeat after `last`, a few beats on.
        passed = await until(sampled, lambda e: e["seq"] > last, timeout=30)
        return seen, [e for e in passed if first <= e["seq"] <= last]


def test_protocol_stream_carries_a_real_agents_heartbeats_sampled(
    controller: Controller, agents: Callable[..., Agent]
) -> None:
    alpha = agents("alpha", heartbeat_interval=0.1)
    wait_for(lambda: (n := controller.node("alpha")) and n["status"] == "online", what="alpha online")
    every, sampled = asyncio.run(_heartbeats(controller, 15))

    assert all(e["drone_id"] == alpha.drone_id for e in every)
    heartbeats = [e for e in every if e["type"] == "heartbeat"]
    for entry in every:
        assert set(entry) == {
            "seq",
            "ts",
            "direction",
            "drone_id",
            "type",
            "size",
            "latency_ms",
            "unknown_fields",
        }
        if entry["type"] in ("heartbeat", "pong", "ping"):
            assert entry["direction"] == ("out" if entry["type"] == "ping" else "in")
        # A pong carries its ping's round trip; nothing else has one.
        assert (entry["latency_ms"] is not None) == (entry["type"] == "pong"), entry
    pong = next(e for e in every if e["type"] == "pong")
    assert 0 < pong["latency_ms"] < 10_000, pong  # milliseconds; seconds on a loaded machine

    # One message decoded, while it is in the buffer.
    beat = heartbeats[-1]
    status, body = controller.admin("GET", f"/admin/api/protocol/{beat['seq']}")
    assert status == 200, body
    assert body["drone"] == "alpha" and body["type"] == "heartbeat" and body["seq"] == beat["seq"]
    decoded = body["message"]["heartbeat"]
    assert int(decoded["seq"]) > 0 and int(decoded["sent_at_unix_ns"]) > 0 and "load1" in decoded
    status, body = controller.admin("GET", f"/admin/api/protocol/{pong['seq']}")
    assert status == 200 and body["latency_ms"] == pong["latency_ms"]
    assert body["message"]["pong"]["status"]["checks"], body
    # One the controller sent: decoded as a ControllerMessage.
    ping = next(e for e in every if e["type"] == "ping")
    status, body = controller.admin("GET", f"/admin/api/protocol/{ping['seq']}")
    assert status == 200 and body["direction"] == "out" and int(body["message"]["ping"]["seq"]) > 0, body
    for bad, code in (("99999999", 404), ("x1", 400)):
        status, body = controller.admin("GET", f"/admin/api/protocol/{bad}")
        assert status == code, body
    seqs = [e["seq"] for e in every]
    assert seqs == sorted(seqs)
    # The same objects as GET /admin/api/protocol.
    status, body = controller.admin("GET", f"/admin/api/protocol?after={seqs[0] - 1}&limit=5000&drone=alpha")
    assert status == 200
    by_seq = {e["seq"]: e for e in body["entries"]}
    assert all(by_seq[e["seq"]] == e for e in every if e["seq"] in by_seq)

    assert all(e["type"] == "heartbeat" for e in sampled)
    # Every fourth of the same heartbeats, counted from its subscription, which came first.
    assert len(heartbeats) // 4 <= len(sampled) <= len(heartbeats) // 4 + 1, (len(sampled), len(heartbeats))


def raw_websocket(ctl: Controller, path: str, receive_buffer: int = 4096) -> socket.socket:
    """A websocket client that reads nothing after the handshake, with a
    small receive buffer (aiohttp's client keeps reading into its own
    buffers, and an autotuned kernel buffer holds megabytes)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", ctl.info["admin_port"]))
    nonce = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{ctl.info['admin_port']}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
            f"Sec-WebSocket-Version: 13\r\nX-Admin-Key: {ctl.admin_key}\r\n\r\n"
        ).encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def read_messages(
    sock: socket.socket, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0
) -> list[dict[str, Any]]:
    """The text messages the server sent, read until ``until`` holds for them.

    Waits for what must come, not for a quiet moment: on a busy machine the
    controller may pause longer than any quiet period between two sends."""
    deadline = time.monotonic() + timeout
    data = b""
    messages: list[dict[str, Any]] = []
    while not until(messages):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout:.0f}s, {len(messages)} read: {messages[-3:]}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            continue
        assert chunk, f"the server closed the stream after {len(messages)} messages"
        data += chunk
        frames, data = split_frames(data)
        messages += [json.loads(payload) for opcode, payload in frames if opcode == 0x1]
    return messages


def split_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole frames (opcode, payload) at the start of ``data``, and the rest."""
    frames = []
    while len(data) >= 2:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        # A length of 126 or 127 says the real one follows in 2 or 8 bytes,
        # which a read can split from the first two like any other bytes.
        extended = {126: "!H", 127: "!Q"}.get(length)
        offset = 2 if extended is None else 2 + struct.calcsize(extended)
        if len(data) < offset:
            break
        if extended is not None:
            (length,) = struct.unpack(extended, data[2:offset])
        if len(data) < offset + length:
            break
        frames.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames, data


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def small_queue(tmp_path: Path) -> Iterator[Controller]:
    # Join tokens are the events these tests make by the thousand: no cap on them here.
    proc = Controller(tmp_path, "--ws-queue", str(QUEUE), "--join-tokens-max", "100000")
    proc.start()
    yield proc
    proc.kill()


async def _count_while(ctl: Controller, flood: Callable[[], None]) -> list[dict[str, Any]]:
    """What a reading client gets of /ws/events while ``flood`` runs."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(ctl, "/ws/events?type=token_created"), headers=key(ctl)) as ws,
    ):
        reader = asyncio.create_task(until(ws, lambda e: "last" in e.get("message", ""), timeout=60))
        await asyncio.to_thread(flood)
        return await reader


@pytest.mark.real  # the controller's process: its memory
def test_a_client_that_stops_reading_costs_bounded_memory(small_queue: Controller) -> None:
    ctl = small_queue
    stalled = raw_websocket(ctl, "/ws/events?type=token_created")
    try:
        before = rss_kb(ctl.pid)
        # What the stalled client is sent fills the socket buffers and the
        # writer's (bytes), then the queue (events). Names of the longest kind
        # (63 characters) make each event larger: the buffers fill with fewer
        # of them, and the flood is over before the stream's 30 s heartbeat
        # would cut off a client that answers no ping, even on a busy machine.
        total = 2000

        def flood() -> None:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: ctl.create_token(600, f"t{i}".ljust(63, "x")), range(total - 1)))
            ctl.create_token(600, "last")

        # A client that reads meanwhile gets everything: nobody waits for the stalled one.
        fast = asyncio.run(_count_while(ctl, flood))
        assert [e for e in fast if "dropped" in e] == []
        assert len(fast) == total
        grown = rss_kb(ctl.pid) - before

        # Read until the stalled client has had every event, delivered or counted as dropped.
        messages = read_messages(stalled, lambda ms: sum(m.get("dropped", 1) for m in ms) >= total)
        notices = [m for m in messages if "dropped" in m]
        items = [m for m in messages if "dropped" not in m]
        assert notices, f"no drop notice among {len(messages)} messages"
        dropped = sum(n["dropped"] for n in notices)
        # Every event is either delivered or counted, in order, and the
        # notice says after which one the gap is.
        assert len(items) + dropped == total
        ids = [m["id"] for m in items]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        first_gap = notices[0]["after_id"]
        assert first_gap in ids
        # What the controller held for it is bounded by the queue and the
        # socket buffers, not by the flood.
        assert len(items) < total / 2
        assert grown < 40_000, f"controller RSS grew {grown} KiB"

        # The stream goes on: the next event arrives after the notice.
        ctl.create_token(600, "after")
        later = read_messages(stalled, lambda ms: any("after" in m.get("message", "") for m in ms))
        assert "after" in later[-1]["message"], later
    finally:
        stalled.close()


async def _closed_on_stop(ctl: Controller) -> tuple[list[Any], float, int]:
    async with aiohttp.ClientSession() as session:
        sockets = [
            await session.ws_connect(ws_url(ctl, path), headers=key(ctl))
            for path in ("/ws/events", "/ws/protocol")
        ]
        started = time.monotonic()
        stopping = asyncio.create_task(asyncio.to_thread(ctl.terminate, 10.0))
        codes = []
        for ws in sockets:
            message = await asyncio.wait_for(ws.receive(), 10)
            while message.type is aiohttp.WSMsgType.TEXT:
                message = await asyncio.wait_for(ws.receive(), 10)
            codes.append(message.data if message.type is aiohttp.WSMsgType.CLOSE else message.type)
            await ws.close()
        exit_code = await stopping
        return codes, time.monotonic() - started, exit_code


@pytest.mark.real  # the controller's process: SIGTERM
def test_streams_close_when_the_controller_stops(small_queue: Controller) -> None:
    ctl = small_queue
    stalled = raw_websocket(ctl, "/ws/events")
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: ctl.create_token(), range(1000)))
        codes, took, exit_code = asyncio.run(_closed_on_stop(ctl))
    finally:
        stalled.close()
    assert codes == [1001, 1001]
    assert exit_code == 0
    assert took < 5, f"stopping took {took:.1f}s"
    assert "still open" not in ctl.log()


def test_a_feed_is_bounded_and_counts_what_it_drops() -> None:
    from swarm.controller.web.streams import Feed

    async def main() -> None:
        feed: Feed[int] = Feed(10)
        for i in range(1000):
            feed.put(i)
        assert len(feed) == 10
        items, dropped = await feed.take()
        assert items == list(range(10)) and dropped == 990
        feed.put(1000)
        assert await feed.take() == ([1000], 0)

    asyncio.run(main())
