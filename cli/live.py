"""The admin tier's websockets for swarm-cli: connect with the admin key,
turn a refused upgrade or an unreachable controller into a one-line
CliError, follow a stream of JSON messages (reconnecting after a dropped
connection), and write output without blocking the event loop.

aiohttp is imported only when a live command runs (``require``): the other
commands need nothing beyond the standard library, and ``pip install
'build-swarm[cli]'`` brings it.

A command on top of this module (``events --follow``, ``protocol
--follow``, later ``logs --follow``) is an ``async`` function given a
:class:`Live` and run by :func:`run`, which makes Ctrl-C an ordinary end:
exit 0, no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from swarm.backoff import Backoff
from swarm.cli.errors import EXIT_UNREACHABLE, EXIT_USAGE, CliError
from swarm.tasks import race

if TYPE_CHECKING:
    import aiohttp

T = TypeVar("T")
Handler = Callable[[dict[str, Any]], Awaitable[None]]

CONNECT_TIMEOUT = 10.0  # seconds to open the TCP connection
HEARTBEAT = 30.0  # websocket pings of ours: a vanished controller is noticed, not waited for forever
CLOSE_POLICY = 1008  # the controller ended the stream: its key or session is gone
RECONNECT = Backoff(initial=0.5, cap=10.0)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def require(what: str) -> None:
    """Fail with the one line that says what to install, before anything starts."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise CliError(f"install build-swarm[cli] for {what} (it needs aiohttp)", EXIT_USAGE) from None


def say(message: str, end: str = "\n") -> None:
    """One line on stderr (``end="\r\n"`` while the terminal is in raw mode)."""
    sys.stderr.write(f"swarm-cli: {message}{end}")
    sys.stderr.flush()


class Refused(CliError):
    """The controller answered with an HTTP error (the upgrade refused, or a GET)."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status


def _error_message(raw: bytes, fallback: str) -> str:
    try:
        return str(json.loads(raw)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace").strip()[:200] or fallback


async def _refuse(response: aiohttp.ClientResponse) -> None:
    """The session's raise_for_status: reads the JSON message of a refusal
    (aiohttp's handshake error does not carry the body)."""
    if response.status >= 400:
        raw = await response.read()
        raise Refused(
            response.method, response.url.path, response.status, _error_message(raw, response.reason or "")
        )


class Live:
    """One aiohttp session against the admin tier, for a command's
    websockets and its few GETs; ``async with`` it."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self._key = key
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Live:
        import aiohttp

        self._session = aiohttp.ClientSession(
            headers={"X-Admin-Key": self._key},
            raise_for_status=_refuse,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use Live in async with")
        return self._session

    def _target(self, path: str, query: Mapping[str, str], websocket: bool) -> str:
        base = self.url
        if websocket:
            base = "ws" + base.removeprefix("http") if base.startswith("http") else base
        return base + path + (f"?{urllib.parse.urlencode(query)}" if query else "")

    async def connect(
        self, path: str, query: Mapping[str, str] | None = None
    ) -> aiohttp.ClientWebSocketResponse:
        """Open the websocket ``path`` (no Origin header: a key needs none)."""
        import aiohttp

        try:
            return await self.session.ws_connect(
                self._target(path, query or {}, websocket=True), heartbeat=HEARTBEAT, autoping=True
            )
        except aiohttp.WSServerHandshakeError as exc:
            why = await self._refusal(path, query or {}) if 400 <= exc.status < 500 else None
            if why:
                raise CliError(f"{path}: {why}") from None
            raise CliError(f"GET {path}: {exc.status} {exc.message} (not a websocket?)") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from None

    async def _refusal(self, path: str, query: Mapping[str, str]) -> str | None:
        """Why an upgrade was refused: the handshake error has no body, so
        ask again without the upgrade (checks that need none answer first)."""
        import aiohttp

        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
            async with self.session.get(self._target(path, query, websocket=False)) as response:
                body = await response.json()
                message = body.get("error", {}).get("message") if isinstance(body, dict) else None
                if isinstance(message, str) and "websocket upgrade" not in message:
                    return message
        return None

    async def get_json(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        import aiohttp

        try:
            async with self.session.get(self._target(path, query or {}, websocket=False)) as response:
                return await response.json()
        except (aiohttp.ContentTypeError, ValueError) as exc:
            raise CliError(f"GET {path}: the answer is not JSON ({exc})") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: BaseException) -> CliError:
        reason = getattr(getattr(exc, "os_error", None), "strerror", None) or str(exc) or type(exc).__name__
        return CliError(f"cannot reach the controller at {self.url}: {reason}", EXIT_UNREACHABLE)


class Output:
    """Writes to a file descriptor from a thread of its own, one chunk at a
    time: a slow terminal or pipe holds back this client (and so, through
    the websocket, the controller) instead of freezing the event loop."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="swarm-cli-output")

    async def write(self, data: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, _write_all, self._fd, data)

    async def line(self, text: str) -> None:
        await self.write(text.encode() + b"\n")

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def report_dropped(message: dict[str, Any]) -> None:
    """The default for a ``{"dropped": N, ...}`` message: a line on stderr."""
    after = {k: v for k, v in message.items() if k != "dropped"}
    where = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in after.items())
    say(f"{message['dropped']} message(s) dropped{' ' + where if where else ''}: this client was too slow")


async def follow_json(
    live: Live,
    path: str,
    on_item: Handler,
    *,
    query: Callable[[], Mapping[str, str]] = dict,
    on_dropped: Handler = report_dropped,
    resumes: bool = False,
) -> None:
    """Hand each JSON message of the websocket ``path`` to ``on_item`` (a
    ``{"dropped": ...}`` message to ``on_dropped``) until cancelled.

    ``query`` is called for every connection, so a stream that can resume
    (``resumes``: /ws/events with ``since=`` the last id handled) picks up
    where it left off after a dropped connection. A reconnect follows a
    drop, the controller stopping or restarting, with backoff; a refusal
    (the key removed, the controller ending the stream: 1008) ends the
    follow with a CliError. The first connection is not retried: an
    unreachable controller or a refused upgrade fails at once.
    """
    attempt = 0
    lost: str | None = None
    while True:
        try:
            ws = await live.connect(path, query())
        except CliError as exc:
            retry = exc.code == EXIT_UNREACHABLE or (isinstance(exc, Refused) and exc.status >= 500)
            if lost is None or not retry:
                raise
            await asyncio.sleep(RECONNECT.delay(attempt))
            attempt += 1
            continue
        if lost is not None:
            say(f"reconnected to {path}" + ("" if resumes else "; messages in between are not shown"))
        attempt = 0
        async with ws:
            reason = await _read_json(ws, on_item, on_dropped)
        if ws.close_code == CLOSE_POLICY:
            raise CliError(f"{path}: the controller ended the stream: {reason}")
        lost = reason
        say(f"lost {path} ({reason}); reconnecting")


async def _read_json(ws: aiohttp.ClientWebSocketResponse, on_item: Handler, on_dropped: Handler) -> str:
    """Messages until the websocket closes; returns why it closed."""
    import aiohttp

    while True:
        msg = await ws.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            try:
                item = json.loads(msg.data)
            except ValueError:
                say(f"not a JSON message: {str(msg.data)[:80]!r}")
                continue
            if not isinstance(item, dict):
                say(f"not a JSON object: {str(msg.data)[:80]!r}")
            elif "dropped" in item:
                await on_dropped(item)
            else:
                await on_item(item)
        elif msg.type == aiohttp.WSMsgType.CLOSE:
            return f"closed by the controller: {msg.extra or ws.close_code}"
        elif msg.type == aiohttp.WSMsgType.ERROR:
            return f"connection failed: {ws.exception() or msg.data}"
        elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return "connection closed"


def run(main: Coroutine[Any, Any, T], stop_signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> T | None:
    """Run a live command; SIGINT (Ctrl-C) or SIGTERM ends it as an
    ordinary end (returns None: exit 0, no traceback). An output pipe
    closed by its reader (``| head``) ends it the same way."""

    async def until_stopped() -> tuple[bool, T | None]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in stop_signals:
            loop.add_signal_handler(sig, stop.set)
        try:

            async def work() -> tuple[bool, T | None]:
                return False, await main

            async def stopped() -> tuple[bool, T | None]:
                await stop.wait()
                return True, None

            result: tuple[bool, T | None] = await race(work(), stopped(), names=("command", "stop"))
            return result
        finally:
            for sig in stop_signals:
                loop.remove_signal_handler(sig)

    try:
        _stopped, value = asyncio.run(until_stopped())
    except BrokenPipeError:
        _quiet_stdout()
        return None
    return value


def _quiet_stdout() -> None:
    """stdout's reader is gone: nothing left to flush at exit may complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
