"""The web tiers' connection layer (controller/web/server.py) against a real
controller with 256 file descriptors: thousands of idle connections do not
starve it nor flood its log, slow heads and idle keep-alives are closed,
streams are not, a full address gets a JSON 503, running out of
descriptors pauses accepting with one line a burst, and malformed HTTP
gets a JSON 400 without a traceback."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import aiohttp
import pytest

from swarm.controller.config import ControllerConfig
from swarm.controller.web.server import conn_settings

from support.conns import close_all, closed_by_peer, connect_many, open_files, request, with_open_files_limit
from support.procs import Controller, http, wait_for

FD_LIMIT = 256
IDLE = 2000
HEADER_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 2.0
KEEPALIVE_REQUESTS = 3
# Lines this layer (and asyncio, and aiohttp's server) may write for a
# flood: a burst's first line and its summary, per kind.
FLOOD_LINES_MAX = 12


def limited_controller(root: Path, *extra: str) -> Controller:
    ctl = Controller(root, *extra)
    ctl.args = with_open_files_limit(ctl.args, FD_LIMIT)
    return ctl


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """Default caps (derived from the descriptor limit), short timeouts."""
    proc = limited_controller(
        tmp_path_factory.mktemp("conns"),
        "--http-header-timeout",
        str(HEADER_TIMEOUT),
        "--http-keepalive-timeout",
        str(KEEPALIVE_TIMEOUT),
        "--http-keepalive-requests",
        str(KEEPALIVE_REQUESTS),
    )
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def uncapped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """Caps far above the descriptor limit: accepting runs out of descriptors."""
    proc = limited_controller(
        tmp_path_factory.mktemp("uncapped"),
        "--http-connections",
        "5000",
        "--http-connections-per-address",
        "5000",
        "--http-header-timeout",
        "30",
    )
    proc.start()
    yield proc
    proc.kill()


def layer_lines(ctl: Controller) -> list[str]:
    """Log lines of the connection layer, asyncio and aiohttp's server, and tracebacks."""
    marks = ("swarm.controller.web.server", "asyncio", "aiohttp", "Traceback", "out of system resource")
    return [line for line in ctl.log().splitlines() if any(m in line for m in marks)]


def answers(ctl: Controller) -> None:
    status, body = http("GET", ctl.public_url + "/api/v1/health")
    assert status == 200, body
    status, body = ctl.admin("GET", "/admin/api/whoami")
    assert status == 200, body


def assert_answers_under_idle_flood(ctl: Controller, sources: tuple[str, ...], capped: bool) -> list[str]:
    before = len(layer_lines(ctl))
    with open_files(IDLE + 200):
        # A request line and no more: a silent connection would wait in the kernel (deferred accept).
        socks = connect_many(ctl.info["public_port"], IDLE, sources, send=b"GET / HTTP/1.1\r\n")
        try:
            answers(ctl)
            if capped:  # within its caps, the controller never runs out of descriptors
                open_fds = len(list(Path(f"/proc/{ctl.pid}/fd").iterdir()))
                assert open_fds < FD_LIMIT - 32, open_fds
        finally:
            close_all(socks)
    answers(ctl)
    new = layer_lines(ctl)[before:]
    assert len(new) <= FLOOD_LINES_MAX, "\n".join(new)
    assert not [line for line in new if "Traceback" in line or "ERROR" in line], "\n".join(new)
    return new


def test_idle_connections_neither_starve_the_tiers_nor_flood_the_log(ctl: Controller) -> None:
    # From 20 addresses: the tier's cap closes the longest idle, and each address's cap its own.
    sources = tuple(f"127.0.0.{i}" for i in range(10, 30))
    lines = assert_answers_under_idle_flood(ctl, sources, capped=True)
    assert any("closed the longest-idle connection" in line for line in lines), "\n".join(lines)


def test_out_of_descriptors_accepting_pauses_with_one_line_a_burst(uncapped: Controller) -> None:
    lines = assert_answers_under_idle_flood(uncapped, ("127.0.0.1",), capped=False)
    accept = [line for line in lines if "cannot accept a connection (Too many open files)" in line]
    assert 1 <= len(accept) <= 2, "\n".join(lines)
    assert "WARNING" in accept[0]


def test_a_slow_head_is_closed_within_the_header_timeout(ctl: Controller) -> None:
    silent = socket.create_connection(("127.0.0.1", ctl.info["public_port"]))
    slow = socket.create_connection(("127.0.0.1", ctl.info["public_port"]))
    try:
        started = time.monotonic()
        slow.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        deadline = started + 10 * HEADER_TIMEOUT
        while not closed_by_peer(slow):
            assert time.monotonic() < deadline, "a head trickling in was not cut"
            slow.sendall(b"X: y\r\n")  # a header line every 0.1 s, never the end of the head
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        assert elapsed >= HEADER_TIMEOUT * 0.9
        wait_for(
            lambda: closed_by_peer(silent), timeout=5 * HEADER_TIMEOUT, what="a silent connection closed"
        )
    finally:
        slow.close()
        silent.close()


def test_an_idle_keepalive_is_closed_and_the_last_allowed_request_says_close(ctl: Controller) -> None:
    conn = HTTPConnection("127.0.0.1", ctl.info["public_port"], timeout=10)
    try:
        said = []
        for _ in range(KEEPALIVE_REQUESTS):
            conn.request("GET", "/api/v1/health")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            said.append(response.getheader("Connection", ""))
        assert said[-1].lower() == "close" and "close" not in said[0].lower(), said
    finally:
        conn.close()

    sock = socket.create_connection(("127.0.0.1", ctl.info["public_port"]))
    try:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        wait_for(
            lambda: closed_by_peer(sock), timeout=5 * KEEPALIVE_TIMEOUT, what="an idle keep-alive closed"
        )
        assert time.monotonic() - answered >= KEEPALIVE_TIMEOUT * 0.9
    finally:
        sock.close()


async def _streams_outlive_the_timeouts(ctl: Controller) -> None:
    async with aiohttp.ClientSession() as session:
        url = ctl.admin_url + "/ws/events"
        async with session.ws_connect(url, headers={"X-Admin-Key": ctl.admin_key}) as ws:
            # Longer than both the head and the keep-alive timeout, with nothing sent either way.
            await asyncio.sleep(KEEPALIVE_TIMEOUT + HEADER_TIMEOUT + 0.5)
            assert not ws.closed
            await asyncio.to_thread(ctl.create_token, 600, "still-open")
            while True:
                message = await asyncio.wait_for(ws.receive(), 10)
                assert message.type is aiohttp.WSMsgType.TEXT, message
                if json.loads(message.data)["type"] == "token_created":
                    break


def test_a_websocket_outlives_the_head_and_keepalive_timeouts(ctl: Controller) -> None:
    asyncio.run(_streams_outlive_the_timeouts(ctl))


async def _fill_an_address(ctl: Controller, address: str, streams: int) -> bytes:
    connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = ctl.admin_url + "/ws/events"
        sockets = [
            await session.ws_connect(url, headers={"X-Admin-Key": ctl.admin_key}) for _ in range(streams)
        ]
        try:
            # Every connection of this address is busy: the next one is refused.
            refused = await asyncio.to_thread(
                request,
                ctl.info["admin_port"],
                b"GET /admin/api/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                address,
            )
            await asyncio.to_thread(answers, ctl)  # other addresses are served meanwhile
        finally:
            for ws in sockets:
                await ws.close()
    return refused


def test_an_address_whose_connections_are_all_busy_gets_a_json_503(ctl: Controller) -> None:
    per_address = conn_settings(ControllerConfig(), FD_LIMIT).per_address
    reply = asyncio.run(_fill_an_address(ctl, "127.0.0.5", per_address))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), reply
    assert json.loads(body) == {"error": {"status": 503, "message": "too many connections; try again"}}
    assert any("refused a connection from 127.0.0.5 with 503" in line for line in layer_lines(ctl))


MALFORMED = {
    "a NUL in a header": b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX: a\x00b\r\n\r\n",
    "Content-Length with Transfer-Encoding": (
        b"POST /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "a bad chunk": (
        b"POST /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n"
    ),
}


def test_malformed_http_gets_a_json_400_and_no_traceback(ctl: Controller) -> None:
    before = len(ctl.log().splitlines())
    for tier in ("public_port", "admin_port"):
        for what, data in MALFORMED.items():
            head, _, body = request(ctl.info[tier], data).partition(b"\r\n\r\n")
            assert head.split(b" ", 2)[1] == b"400", (what, head)
            assert b"application/json" in head, (what, head)
            error = json.loads(body)["error"]
            assert error["status"] == 400 and error["message"].startswith("malformed HTTP request: "), error
    new = ctl.log().splitlines()[before:]
    assert not [line for line in new if "Traceback" in line or "ERROR" in line], "\n".join(new)
    # Six in one burst: one line for each tier now, the count when the burst ends.
    malformed = [line for line in new if "malformed HTTP from 127.0.0.1" in line]
    assert len(malformed) == 2 and all(" INFO " in line for line in malformed), "\n".join(new)
