"""``swarm-cli shell``: a drone's terminal in the admin's own terminal.

It speaks the websocket ``/ws/ssh/{drone}`` (message format at the top of
controller/web/shells.py): what is typed goes out as binary frames, binary
frames come back to stdout, the window size goes out as resize messages
(at the start and on every SIGWINCH).

With stdin a terminal, the terminal is in raw mode for the session, so
Ctrl-C, Ctrl-Z and Ctrl-D reach the remote shell as they would over ssh;
it is restored on every way out (exit, error, signal). After Enter, ``~.``
detaches without ending the shell and ``~~`` sends one ``~`` (ssh's
escapes). With stdin a pipe or a file, its end is the remote terminal's
end of file (Ctrl-D, see ``Terminal._end_of_input``), so ``printf
'make\\nexit 3\\n' | swarm-cli shell d`` runs both lines and exits 3, and
input without an exit ends the shell once it has run. (``{"type":
"close"}`` would hang the shell up at once, before it read what was sent.)

Exit code: the remote shell's own; 255 when it ended without one (killed,
timed out, the connection lost); 0 after ``~.``; 128+N after signal N
(SIGTERM, SIGHUP, SIGINT when stdin is not a terminal), which detaches.
A detached shell lives on for the controller's grace period:
``swarm-cli shell DRONE --session ID`` reattaches and replays recent output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import termios
import tty
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swarm.cli import live
from swarm.cli.errors import CliError
from swarm.tasks import race

if TYPE_CHECKING:
    import aiohttp

    from swarm.cli.main import Client

CHUNK = 64 * 1024  # bytes read from stdin at a time; one chunk is in flight at most
EXIT_NO_STATUS = 255  # like ssh: the remote end gave no exit status
OPEN_TIMEOUT = 30.0  # for the session message after the upgrade
DEFAULT_SIZE = (24, 80)
DETACH_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
EOF = b"\x04"  # the remote terminal's VEOF: at the start of a line, end of file
QUIET = 0.2  # seconds without output after which piped input's end of file is typed again


def shell(client: Client, ns: argparse.Namespace) -> None:
    """The ``shell`` subcommand (run by swarm.cli.main)."""
    live.require("swarm-cli shell")
    code = live.run(open_shell(client.url, client.key, ns.name, ns.session, ns.via), stop_signals=())
    sys.exit(EXIT_NO_STATUS if code is None else code)


@dataclass(frozen=True, slots=True)
class Outcome:
    code: int
    message: str = ""


class Escapes:
    """ssh's escapes in what is typed: after Enter (or first thing), ``~.``
    detaches and ``~~`` sends one ``~``; a ``~`` before anything else goes
    out with it."""

    def __init__(self) -> None:
        self._line_start = True
        self._tilde = False

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """What of ``data`` to send, and whether ``~.`` asked to detach
        (then what followed it is dropped)."""
        if not self._tilde and b"~" not in data:
            if data:
                self._line_start = data[-1:] in (b"\r", b"\n")
            return data, False
        out = bytearray()
        for byte in data:
            char = bytes((byte,))
            if self._tilde:
                self._tilde = False
                if char == b".":
                    return bytes(out), True
                if char != b"~":
                    out += b"~"
            elif char == b"~" and self._line_start:
                self._tilde = True
                continue
            out += char
            self._line_start = char in (b"\r", b"\n")
        return bytes(out), False


def window_size(fd: int | None) -> tuple[int, int]:
    """(rows, cols) of the terminal on ``fd``, or 24x80."""
    if fd is not None:
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            if size.lines > 0 and size.columns > 0:
                return size.lines, size.columns
    return DEFAULT_SIZE


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The terminal on ``fd`` raw (no echo, no line editing, no signal
    keys) until the block ends, however it ends."""
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSADRAIN)  # TCSADRAIN, not FLUSH: keys typed ahead are kept
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def open_shell(url: str, key: str, drone: str, session_id: str | None, via: str = "agent") -> int:
    interactive = os.isatty(sys.stdin.fileno())
    size_fd = sys.stdin.fileno() if interactive else sys.stdout.fileno() if os.isatty(1) else None
    rows, cols = window_size(size_fd)
    query = {"rows": str(rows), "cols": str(cols)}
    if session_id:
        query["session"] = session_id
    if via != "agent":
        query["via"] = via
    async with live.Live(url, key) as admin:
        ws = await admin.connect(f"/ws/ssh/{urllib.parse.quote(drone, safe='')}", query)
        async with ws:
            session = await _session_message(ws, drone)
            term = Terminal(ws, session, interactive=interactive, size_fd=size_fd)
            with term.signals():
                hint = " (Enter ~. detaches)" if interactive else ""
                if note := session.get("note"):
                    live.say(f"through {note}")
                live.say(f"session {term.session_id} on {term.drone}{hint}")  # a signal now detaches
                with raw_mode(sys.stdin.fileno()) if interactive else contextlib.nullcontext():
                    outcome = await term.run()
    if outcome.message:
        live.say(outcome.message)
    return outcome.code


async def _session_message(ws: aiohttp.ClientWebSocketResponse, drone: str) -> dict[str, Any]:
    """The first message: the session, or why there is none."""
    import aiohttp

    try:
        msg = await ws.receive(timeout=OPEN_TIMEOUT)
    except TimeoutError:
        raise CliError(f"{drone}: no terminal session within {OPEN_TIMEOUT:g}s") from None
    message = None
    if msg.type == aiohttp.WSMsgType.TEXT:
        with contextlib.suppress(ValueError):
            message = json.loads(msg.data)
    if not isinstance(message, dict) or message.get("type") != "session":
        why = message.get("message") if isinstance(message, dict) else None
        raise CliError(f"{drone}: {why or 'the controller closed the terminal before it opened'}")
    return message


class Terminal:
    """One attached session: stdin to the websocket, the websocket to
    stdout, window sizes and signals, until the first way out."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        session: dict[str, Any],
        *,
        interactive: bool,
        size_fd: int | None,
    ) -> None:
        self.ws = ws
        self.session_id = str(session["session"])
        self.drone = str(session.get("drone"))
        self.grace = session.get("grace_s")
        self.size = (session.get("rows"), session.get("cols"))
        self.interactive = interactive
        self.size_fd = size_fd
        self.end = "\r\n" if interactive else "\n"  # raw mode has no newline translation
        self._resized = asyncio.Event()
        self._output = asyncio.Event()  # set by output from the remote terminal
        self._signalled: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """Handlers in place before the terminal goes raw: no signal may
        end the process with the terminal left raw."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGWINCH, self._resized.set)
        for sig in DETACH_SIGNALS:
            loop.add_signal_handler(sig, self._signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGWINCH, *DETACH_SIGNALS):
                loop.remove_signal_handler(sig)

    def _signal(self, sig: int) -> None:
        if not self._signalled.done():
            self._signalled.set_result(sig)

    def reattach_hint(self) -> str:
        grace = f" for {self.grace:g}s" if isinstance(self.grace, int | float) else ""
        return f"the shell lives on{grace}: swarm-cli shell {self.drone} --session {self.session_id}"

    async def run(self) -> Outcome:
        output = live.Output(sys.stdout.fileno())
        try:
            outcome: Outcome = await race(
                self._receive(output),
                self._keyboard(),
                self._window(),
                self._until_signalled(),
                names=("shell:receive", "shell:keyboard", "shell:window", "shell:signal"),
            )
            return outcome
        finally:
            output.close()

    async def _receive(self, output: live.Output) -> Outcome:
        import aiohttp

        while True:
            msg = await self.ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                await output.write(msg.data)  # one chunk at a time: a slow terminal slows the drone
                self._output.set()
            elif msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    message = json.loads(msg.data)
                except ValueError:
                    continue
                kind = message.get("type") if isinstance(message, dict) else None
                if kind == "exit":
                    return self._exited(message)
                if kind == "detached":
                    why = message.get("reason") or "attached elsewhere"
                    return Outcome(EXIT_NO_STATUS, f"session {self.session_id} was taken over ({why})")
                if kind == "error":
                    live.say(str(message.get("message")), end=self.end)
            else:
                why = msg.extra if msg.type == aiohttp.WSMsgType.CLOSE and msg.extra else "connection lost"
                hint = self.reattach_hint()
                return Outcome(EXIT_NO_STATUS, f"the controller ended the terminal ({why}); {hint}")

    def _exited(self, message: dict[str, Any]) -> Outcome:
        code = message.get("exit_code")
        if isinstance(code, int) and not isinstance(code, bool):
            return Outcome(code)
        why = message.get("reason") or message.get("message") or "no reason given"
        sig = message.get("signal")
        how = f"was killed by signal {sig}" if sig else "ended without an exit status"
        return Outcome(EXIT_NO_STATUS, f"the shell on {self.drone} {how}: {why}")

    async def _keyboard(self) -> Outcome:
        fd = sys.stdin.fileno()
        escapes = Escapes() if self.interactive else None
        last = b"\n"
        while True:
            data = await _read(fd)
            if not data:
                if self.interactive:
                    return Outcome(EXIT_NO_STATUS, f"the terminal closed; {self.reattach_hint()}")
                await self._end_of_input(b"" if last in (b"\r", b"\n") else b"\r")
            detach = False
            if escapes is not None:
                data, detach = escapes.feed(data)
            if data:
                await self.ws.send_bytes(data)
                last = data[-1:]
            if detach:
                return Outcome(0, f"detached from session {self.session_id}; {self.reattach_hint()}")

    async def _end_of_input(self, unfinished_line: bytes) -> None:
        """Piped input has ended: type the remote terminal's end of file,
        as often as it takes. Only a reader waiting for input takes it as
        end of file: typed while a command runs (the terminal in line mode),
        bash's readline later reads it as a NUL, which does nothing. So it
        goes again each time the output stops after new output (a prompt,
        a program waiting for input), until the exit message ends this."""
        await self.ws.send_bytes(unfinished_line + EOF)
        while True:
            self._output.clear()
            await self._output.wait()
            while True:  # until the output pauses
                self._output.clear()
                try:
                    await asyncio.wait_for(self._output.wait(), QUIET)
                except TimeoutError:
                    break
            await self.ws.send_bytes(EOF)

    async def _window(self) -> None:
        while True:
            await self._resized.wait()
            self._resized.clear()
            size = window_size(self.size_fd)
            if size != self.size:
                self.size = size
                await self.ws.send_str(json.dumps({"type": "resize", "rows": size[0], "cols": size[1]}))

    async def _until_signalled(self) -> Outcome:
        sig = await self._signalled
        name = signal.Signals(sig).name
        hint = self.reattach_hint()
        return Outcome(128 + sig, f"detached from session {self.session_id} on {name}; {hint}")


async def _read(fd: int) -> bytes:
    """What stdin has, up to CHUNK, once it has something: the event loop
    watches the descriptor (which stays blocking: it is the admin's
    terminal too), so the read that follows returns at once. A regular
    file (or /dev/null) cannot be watched and never blocks: read it."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(fd, wake)
    except PermissionError:
        await asyncio.sleep(0)  # the others' turn: this read never waits
        return os.read(fd, CHUNK)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    return os.read(fd, CHUNK)
