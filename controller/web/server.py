"""The web tiers' connection layer: caps, timeouts and accepting.

aiohttp's own site (``TCPSite``) holds any number of connections, each
idle for up to an hour, and asyncio's accept loop, out of file
descriptors, logs an ERROR with a traceback for every attempt and
schedules a retry per attempt, so that retries multiply (Python 3.11's
``_accept_connection`` goes on looping after EMFILE). An outside probe
took a controller down with 1,100 idle connections that way. Here each
tier has:

- ``GuardedSite``: its own listening sockets (deferred accept, a long
  backlog) and one accept task each. Out of descriptors (EMFILE, ENFILE,
  ENOBUFS, ENOMEM) it closes the longest-idle connections of any tier
  and accepts again; with none idle it pauses with a doubling backoff.
  One line per burst either way.
- ``Connections``: the open connections per tier and per client address.
  A new connection beyond a cap closes the longest-idle connection under
  that cap (as nginx reuses idle keep-alive connections when it runs
  out); when every one there is busy, the new one gets a canned 503 and
  is closed before aiohttp sees it. "Idle" is a connection without a
  request in progress: it has not sent one, waits for its next, or sends
  a head slowly. A websocket or a stream (events, log tails) is a
  request in progress for as long as it lasts, so it is never cut.
- ``GuardedHandler``: aiohttp's ``RequestHandler`` with a head timeout
  (from connecting, or from the first byte of a later request, until
  the head is complete: nginx's ``client_header_timeout``), a cap on
  requests per connection, and malformed HTTP (a NUL in a header,
  Content-Length with Transfer-Encoding, a bad chunk) answered as a JSON
  400 with one info line instead of an ERROR traceback.

aiohttp's own keep-alive timer closes connections idle between requests.
Every line a peer can cause here goes through ``BurstLog``. The handler
overrides aiohttp internals (``_handle_request``, ``_messages``,
``_request_in_progress``): tests/test_connections.py checks them against
the aiohttp in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from swarm.controller.bounds import BurstLog
from swarm.controller.config import ControllerConfig
from swarm.controller.web.common import error_response

log = logging.getLogger(__name__)

# Descriptors left for everything but the web tiers: the database, log
# files, gRPC streams, subprocesses and their pipes.
# A kind of line a peer causes is logged once per window, then counted.
NOTE_WINDOW = 10.0
FD_RESERVE = 128
# The soft open-files limit is raised to the hard one, up to this.
FD_WANTED = 65536
# Out of descriptors, close this many idle connections of the tier at once.
EVICT_ON_EXHAUSTION = 16
ACCEPT_BACKOFF_MIN = 0.05
ACCEPT_BACKOFF_MAX = 2.0
# Connections the kernel queues for accepting (aiohttp's 128 overflows in a
# flood of connections while the loop is busy; nginx uses 511).
BACKLOG = 1024
# Seconds the kernel keeps a connection that has sent nothing before accepting it.
DEFER_ACCEPT = 1
# Accepts in a row before the accept task waits on the listening socket again.
ACCEPT_BATCH = 64
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# Bytes of a refused connection's request read (and dropped) before its 503.
REFUSED_READ = 65536
_REFUSED_BODY = b'{"error":{"status":503,"message":"too many connections; try again"}}'
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_REFUSED_BODY)).encode() + b"\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n" + _REFUSED_BODY
)


@dataclass(frozen=True, slots=True)
class ConnSettings:
    """Caps and timeouts of one tier (options ``http_*`` in config.py)."""

    per_tier: int
    per_address: int
    header_timeout: float = 10.0
    keepalive_timeout: float = 60.0
    keepalive_requests: int = 1000


def open_files_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return FD_WANTED if soft == resource.RLIM_INFINITY else soft


def raise_open_files_limit() -> int:
    """Raise the soft open-files limit to the hard one (at most FD_WANTED), as
    Go's runtime does at start: the soft default of 1024 is for select(),
    which nothing here uses. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_WANTED if hard == resource.RLIM_INFINITY else min(hard, FD_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, wanted, exc)
        else:
            log.info("raised the open-files limit from %d to %d", soft, wanted)
    return open_files_limit()


def conn_settings(config: ControllerConfig, fd_limit: int) -> ConnSettings:
    """The tiers' caps: the configured ones, or shares of ``fd_limit``."""
    per_tier = config.http_connections or max(16, (fd_limit - FD_RESERVE) // 3)
    per_address = config.http_connections_per_address or max(1, per_tier // 2)
    if 2 * per_tier + FD_RESERVE > fd_limit:
        log.warning(
            "http_connections %d per tier is more than the open-files limit %d allows "
            "(2 tiers and %d in reserve): when descriptors run out, accepting pauses",
            per_tier,
            fd_limit,
            FD_RESERVE,
        )
    return ConnSettings(
        per_tier=per_tier,
        per_address=min(per_address, per_tier),
        header_timeout=config.http_header_timeout,
        keepalive_timeout=config.http_keepalive_timeout,
        keepalive_requests=config.http_keepalive_requests,
    )


class Connections:
    """One tier's open connections, per client address, and which are idle
    (in the order they became idle: the first is the one idle longest)."""

    def __init__(
        self, tier: str, settings: ConnSettings, notes: BurstLog, tiers: list[Connections] | None = None
    ) -> None:
        self.tier = tier
        # Every tier of the process (this one included): descriptors are shared.
        self.tiers = tiers if tiers is not None else []
        self.tiers.append(self)
        self.settings = settings
        self._burst_log = notes
        self.total = 0
        self._held: dict[str, int] = {}
        self._idle: dict[GuardedHandler, None] = {}
        self._idle_of: dict[str, dict[GuardedHandler, None]] = {}

    def held(self, address: str) -> int:
        return self._held.get(address, 0)

    def admit(self, address: str) -> bool:
        """Count a new connection from ``address``, closing an idle one to make
        room if a cap is reached; False (nothing counted) if none is idle."""
        if self.held(address) >= self.settings.per_address:
            victim = self._longest_idle(self._idle_of.get(address))
            cap = f"{self.settings.per_address} from {address}"
        elif self.total >= self.settings.per_tier:
            victim = self._longest_idle(self._idle)
            cap = f"{self.settings.per_tier} on the tier"
        else:
            victim, cap = None, ""
        if cap:
            if victim is None:
                self.note(
                    "refused",
                    logging.WARNING,
                    "refused a connection from %s with 503: %s, none idle",
                    address,
                    cap,
                )
                return False
            self.note(
                "evicted",
                logging.INFO,
                "closed the longest-idle connection for one from %s: %s open",
                address,
                cap,
            )
            victim.evict()
        self._held[address] = self.held(address) + 1
        self.total += 1
        return True

    def note(self, kind: str, level: int, msg: str, *args: object) -> None:
        self._burst_log.note((self.tier, kind), level, "%s tier: " + msg, self.tier, *args)

    def release(self, handler: GuardedHandler) -> None:
        """Uncount a connection admitted before (once; later calls do nothing)."""
        if not handler.counted:
            return
        handler.counted = False
        address = handler.address
        self.busy(handler)
        held = self._held.get(address, 0) - 1
        if held > 0:
            self._held[address] = held
        else:
            self._held.pop(address, None)
        self.total -= 1

    def idle(self, handler: GuardedHandler) -> None:
        if not handler.counted:
            return
        self.busy(handler)
        handler.idle_since = handler.loop_time()
        self._idle[handler] = None
        self._idle_of.setdefault(handler.address, {})[handler] = None

    def busy(self, handler: GuardedHandler) -> None:
        self._idle.pop(handler, None)
        of = self._idle_of.get(handler.address)
        if of is not None:
            of.pop(handler, None)
            if not of:
                del self._idle_of[handler.address]

    def _longest_idle(self, idle: dict[GuardedHandler, None] | None) -> GuardedHandler | None:
        while idle:
            handler = next(iter(idle))
            if handler.is_idle():
                return handler
            # A pipelined request queued since it became idle, or closing: not idle after all.
            self.busy(handler)
        return None

    def evict_idle(self, count: int) -> int:
        """Close up to ``count`` of the longest-idle connections of all tiers
        (descriptors are the process's); how many were closed."""
        closed = 0
        while closed < count:
            idle = [h for h in (t._longest_idle(t._idle) for t in self.tiers) if h is not None]
            if not idle:
                break
            min(idle, key=lambda h: h.idle_since).evict()
            closed += 1
        return closed


class GuardedHandler(RequestHandler):
    """aiohttp's request handler, counted by ``Connections``, with a head
    timeout, a cap on requests per connection and JSON for malformed HTTP."""

    __slots__ = ("_conns", "_head_timer", "address", "counted", "idle_since")

    def __init__(
        self, manager: Server, *, loop: asyncio.AbstractEventLoop, conns: Connections, address: str
    ) -> None:
        super().__init__(
            manager,
            loop=loop,
            keepalive_timeout=conns.settings.keepalive_timeout,
            access_log=None,  # type: ignore[arg-type]  # aiohttp's own runner passes None too
        )
        self._conns = conns
        self._head_timer: asyncio.TimerHandle | None = None
        self.address = address
        self.counted = True
        self.idle_since = 0.0

    def loop_time(self) -> float:
        return self._loop.time()

    def is_idle(self) -> bool:
        return self.transport is not None and not self._request_in_progress and not self._messages

    def evict(self) -> None:
        """Close at once (the connection is idle; its count is freed now)."""
        self._conns.release(self)
        self._disarm_head()
        self.force_close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._conns.idle(self)
        self._arm_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head()
        self._conns.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        between_requests = (
            not self._request_in_progress
            and not self._messages
            and self._payload_parser is None
            and not self._upgraded
        )
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._disarm_head()
        elif between_requests and data and self._head_timer is None:
            self._arm_head()

    def _arm_head(self) -> None:
        self._head_timer = self._loop.call_later(self._conns.settings.header_timeout, self._head_expired)

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if not self.is_idle():
            return
        conns = self._conns
        conns.note(
            "head timeout",
            logging.INFO,
            "closed a connection from %s that sent no complete request head within %gs",
            self.address,
            conns.settings.header_timeout,
        )
        self.force_close()

    async def _handle_request(
        self,
        request: BaseRequest,
        start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        # Busy for as long as the request runs: a websocket or a stream is never idle.
        self._conns.busy(self)
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            if self.transport is not None and not self._force_close:
                self._conns.idle(self)

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if self._request_count >= self._conns.settings.keepalive_requests and not resp.prepared:
            resp.force_close()
        return await super().finish_response(request, resp, start_time)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        # The parser's message goes on with the offending bytes and a caret: its first line says it.
        reason = (exc.message or "").split("\n", 1)[0].rstrip(": ")[:200] or HTTPStatus(status).phrase
        conns = self._conns
        conns.note("malformed", logging.INFO, "malformed HTTP from %s: %s", self.address, reason)
        if request.writer.output_size > 0:
            # Part of an answer is out already: the connection can only be dropped.
            raise ConnectionError("malformed HTTP after the answer started")
        response = error_response(status, f"malformed HTTP request: {reason}")
        response.force_close()
        return response


class GuardedSite(web.BaseSite):
    """A TCP listener of one tier with its own accept loop (see the module doc)."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, conns: Connections, backlog: int = BACKLOG
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._conns = conns
        self._sockets: list[socket.socket] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the asked one before start)."""
        return int(self._sockets[0].getsockname()[1]) if self._sockets else self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self._host or None, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        try:
            port = self._port
            for family, kind, proto, _name, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if hasattr(socket, "TCP_DEFER_ACCEPT"):
                    # Linux hands over a connection once its first bytes are in (or after
                    # DEFER_ACCEPT seconds): a silent one costs no descriptor meanwhile,
                    # and a refused one has sent its request, so that the 503 is read
                    # before the close instead of lost to a reset.
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT)
                sock.bind((address[0], port, *address[2:]))
                # With port 0, every further address gets the port the first one got.
                port = sock.getsockname()[1]
                sock.listen(self._backlog)
                sock.setblocking(False)
        except OSError:
            self._close_sockets()
            raise
        self._tasks = [
            asyncio.create_task(self._accept(sock), name=f"accept {self._conns.tier}")
            for sock in self._sockets
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._close_sockets()
        await super().stop()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    async def _accept(self, sock: socket.socket) -> None:
        # Not loop.sock_accept: it calls accept() before waiting, and without a
        # free descriptor Linux fails accept() with EMFILE even when nobody is
        # waiting; that would close idle connections (a newly accepted one
        # among them) for nothing. Here accept() runs only once one is queued.
        loop = asyncio.get_running_loop()
        backoff = 0.0
        while True:
            await _readable(loop, sock)
            for _ in range(ACCEPT_BATCH):
                try:
                    conn, peer = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    backoff = await self._accept_failed(exc, backoff)
                    break
                backoff = 0.0
                conn.setblocking(False)
                await self._take(loop, conn, peer)

    async def _accept_failed(self, exc: OSError, backoff: float) -> float:
        """Out of descriptors, close the longest-idle connections of any tier
        (else idle public connections starve the admin tier) and try again
        at once: their sockets close before this task runs again. With none
        idle, or for another error, pause with a doubling backoff. Returns
        the pause."""
        conns = self._conns
        closed = conns.evict_idle(EVICT_ON_EXHAUSTION) if exc.errno in RESOURCE_ERRNOS else 0
        pause = 0.0 if closed else min(max(2 * backoff, ACCEPT_BACKOFF_MIN), ACCEPT_BACKOFF_MAX)
        conns.note(
            f"accept {exc.errno}",
            logging.WARNING,
            "cannot accept a connection (%s) with %d open: closed %d idle ones, next try in %gs",
            exc.strerror or exc,
            conns.total,
            closed,
            pause,
        )
        await asyncio.sleep(pause)
        return pause

    async def _take(self, loop: asyncio.AbstractEventLoop, conn: socket.socket, peer: Any) -> None:
        address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if not self._conns.admit(address):
            _refuse(conn)
            return
        server = self._runner.server
        assert server is not None
        handler = GuardedHandler(server, loop=loop, conns=self._conns, address=address)
        try:
            await loop.connect_accepted_socket(lambda: handler, conn)
        except OSError:
            # Reset before the transport was made: no connection to count.
            self._conns.release(handler)
            conn.close()


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Wait until a connection is queued on the listening ``sock``."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock, wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock)


def _refuse(conn: socket.socket) -> None:
    """A canned 503, then close. What the client sent is read first: closing
    a socket with unread bytes resets the connection, and the client would
    lose the answer."""
    with contextlib.suppress(OSError):  # the peer is gone: nothing to tell it
        conn.recv(REFUSED_READ)
        conn.send(REFUSED)
    conn.close()
