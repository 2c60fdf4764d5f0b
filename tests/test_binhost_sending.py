"""Binhost files sent by threads (controller/web/binfiles.py), in process:
a small aiohttp app with the public tier's sender and BinhostFile on a
16 MB file, real sockets over 127.0.0.1.

What is checked: a download by a sender thread is the file, byte for
byte, whole or a range; a client that stops reading hands its download
back to the event loop within the send timeout (the thread is free
again) and still gets every byte once it reads; a client that goes away
mid-download frees its thread and leaves the server answering; a tier
stopped while a thread waits on a stalled client stops at once, thread
included. Each on both of the controller's event loops (``on_loop``): the
sender borrows the socket of the loop's transport, and uvloop's is
libuv's. Range, If-Modified-Since and the rest against a real
controller with curl and wget: tests/test_release_api.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from swarm.controller.eventloop import LoopRunner
from swarm.controller.web import binfiles

pytestmark = pytest.mark.timeout(60)

SIZE = 16 << 20
WAIT = 10.0  # seconds a condition gets before the test fails


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A file far larger than what a socket's buffers hold, and its sha256."""
    path = tmp_path_factory.mktemp("binfiles") / "big.gpkg.tar"
    data = os.urandom(1 << 20) * (SIZE >> 20)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@asynccontextmanager
async def serving(
    path: Path, *, senders: int = 1, send_timeout: float = 5.0
) -> AsyncIterator[tuple[int, binfiles.FileSender]]:
    app = web.Application()
    binfiles.install(app, senders, send_timeout)

    async def handler(request: web.Request) -> web.StreamResponse:
        return binfiles.BinhostFile(path)

    app.router.add_get("/f", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    await web.SockSite(runner, listening).start()
    try:
        yield port, app[binfiles.SENDER]
    finally:
        await runner.cleanup()


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT}s: {what}"
        await asyncio.sleep(0.01)


async def stalled_request(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A GET of the whole file from a client with a small receive buffer that
    then reads nothing: its head (and whatever came with it) is returned."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
    writer.write(b"GET /f HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer, head


def test_a_thread_sends_the_whole_file_and_a_range(big: tuple[Path, str], on_loop: LoopRunner) -> None:
    path, digest = big
    data = path.read_bytes()

    async def scenario() -> None:
        async with serving(path) as (port, sender), aiohttp.ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{port}/f") as answer:
                assert answer.status == 200
                assert answer.headers["Accept-Ranges"] == "bytes"
                assert "Last-Modified" in answer.headers
                assert hashlib.sha256(await answer.read()).hexdigest() == digest
            # The handler counts what its thread sent once the thread is done, which
            # may come after the client (on this same loop) has read the last byte.
            await until(lambda: sender.busy == 0, "the sender thread done")
            assert (sender.bytes_sent, sender.handed_back) == (SIZE, 0)
            first, last = 5_000_000, 12_000_000
            async with client.get(
                f"http://127.0.0.1:{port}/f", headers={"Range": f"bytes={first}-{last}"}
            ) as answer:
                assert answer.status == 206
                assert answer.headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
                assert await answer.read() == data[first : last + 1]
            await until(lambda: sender.busy == 0, "the sender thread done")
            assert (sender.bytes_sent, sender.handed_back) == (SIZE + last + 1 - first, 0)

    on_loop(scenario())


def test_a_client_that_stops_reading_is_handed_to_the_loop_and_still_gets_every_byte(
    big: tuple[Path, str], on_loop: LoopRunner
) -> None:
    path, digest = big

    async def scenario() -> None:
        async with serving(path, send_timeout=0.2) as (port, sender):
            reader, writer, head = await stalled_request(port)
            try:
                await until(lambda: sender.handed_back == 1, "the stalled download handed back")
                # The thread is free again while the download is still under way.
                assert sender.busy == 0
                assert 0 < sender.bytes_sent < SIZE
                body = await reader.readexactly(SIZE)
            finally:
                writer.close()
                await writer.wait_closed()
            assert b"Content-Length: %d" % SIZE in head
            assert hashlib.sha256(body).hexdigest() == digest

    on_loop(scenario())


def test_a_client_gone_mid_download_frees_its_thread(big: tuple[Path, str], on_loop: LoopRunner) -> None:
    path, digest = big

    async def scenario() -> None:
        # A send timeout longer than the test: the thread is blocked in sendfile when the client goes.
        async with serving(path, send_timeout=30.0) as (port, sender):
            _reader, writer, _head = await stalled_request(port)
            await until(lambda: sender.busy == 1, "a thread sending")
            writer.transport.abort()  # a reset, as a killed client leaves
            await until(lambda: sender.busy == 0, "the thread free after the client went")
            async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{port}/f") as answer:
                assert hashlib.sha256(await answer.read()).hexdigest() == digest

    on_loop(scenario())


def test_a_tier_stopping_ends_a_blocked_send_at_once(big: tuple[Path, str], on_loop: LoopRunner) -> None:
    path, _digest = big

    async def scenario() -> None:
        async with serving(path, send_timeout=30.0) as (port, sender):
            _reader, writer, _head = await stalled_request(port)
            await until(lambda: sender.busy == 1, "a thread sending")
            started = time.monotonic()
        # Left the block: the runner is cleaned up, the sender closed (the
        # autouse fixture fails the test if its thread still runs).
        took = time.monotonic() - started
        writer.close()
        assert took < 5.0, f"stopping took {took:.1f}s with a send blocked for up to 30s"

    on_loop(scenario())
