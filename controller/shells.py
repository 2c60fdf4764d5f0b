"""Terminals and one-off commands on drones: the controller's side of shell.proto.

A shell is asked for over the drone's control stream (OpenChannel with a
fresh channel id) and arrives as the drone's own ``Channels.Shell`` call,
which must name a channel of that drone (the client certificate says who
is calling). The registry keeps every session: who opened it, when, on
which drone, its window size and state.

The PTY lives on the drone, so a websocket (a *viewer*) only watches a
session. A viewer that goes away detaches; another may attach within
``grace`` seconds and first gets a bounded replay of recent output. After
the grace, after ``idle_timeout`` without input or output, or after
``max_lifetime``, the controller closes the channel (the agent hangs up
the shell). Every session is recorded as an asciinema v2 cast file.

Backpressure, end to end: output is read from the gRPC call only after
the previous message reached the viewer's websocket (aiohttp awaits its
drain) and the recorder's bounded queue, so a slow reader stops us
reading the call, HTTP/2 flow control stops the agent, and the agent
stops reading the PTY. Input goes the other way through one bounded
queue per session. No queue here grows with the data.

A session's far end is the drone's Shell call, or, when the agent is down,
a process under a PTY on the controller (``ssh -tt``: oobshell.py) that
speaks the same frames (``FarEnd``); everything else is the same for both.

Protobuf stays in this module, its gRPC servicer and oobshell.py; the web
tier sees frozen dataclasses and the ``Viewer`` protocol.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import re
import secrets
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from swarm.controller.authz import AGENT, Identity, current_identity
from swarm.controller.bounds import BurstLog, StreamBounds, bound_key, noise_key
from swarm.controller.errors import FailedPrecondition, NotFound, PermissionDenied, SwarmError, Unavailable
from swarm.controller.events import EventLog
from swarm.controller.fleet import DroneState
from swarm.controller.gateway import grpc_status
from swarm.controller.oobshell import OutOfBand, PtyProcess, run_command
from swarm.controller.unparsable import Unparsable
from swarm.printable import printable
from swarm.protocol import CHANNELS_EXEC, CHANNELS_LOG, CHANNELS_SHELL, speaks
from swarm.tasks import TaskSet, wait_event
from swarm.v1 import gateway_pb2, shell_pb2, shell_pb2_grpc

log = logging.getLogger(__name__)

SESSION_ID_RE = re.compile(r"^s-[0-9a-f]{16}\Z")
OPENING, OPEN, CLOSING, CLOSED = "opening", "open", "closing", "closed"
INPUT_QUEUE = 16  # frames to the agent per session
ATTACH_TIMEOUT = 10.0  # for the first frame of a Shell call
KILL_WAIT = 5.0  # a closed channel's agent hangs up (2 s grace) and reports; then we cut the call
WRITE_GRACE = 1.0
RECORDER_PENDING = 1 << 20  # bytes of output waiting for the recording file at most
RECORDER_LINGER = 0.1  # seconds output gathers before it is written to the recording ...
RECORDER_BURST = 64 * 1024  # ... unless this much is waiting
RECENT_CLOSED = 100  # ended sessions kept in memory for the list
RECORDINGS_LISTED = 200
TERM = "xterm-256color"
MAX_SIZE = 1000  # rows or columns
Kind = shell_pb2.OpenChannel
CHANNEL_FEATURES = {Kind.SHELL: CHANNELS_SHELL, Kind.EXEC: CHANNELS_EXEC, Kind.LOG: CHANNELS_LOG}


@dataclass(frozen=True, slots=True)
class ShellSettings:
    grace: float = 300.0
    idle_timeout: float = 3600.0
    max_lifetime: float = 43200.0
    max_sessions: int = 32
    replay_bytes: int = 64 * 1024
    open_timeout: float = 10.0
    recording_max_bytes: int = 50 << 20
    recordings_max_bytes: int = 1 << 30
    recording_retention: float = 90 * 86400.0
    exec_max_output: int = 1 << 20
    exec_max_timeout: float = 3600.0


@dataclass(frozen=True, slots=True)
class ExitInfo:
    exited: bool
    exit_code: int | None
    signal: int | None
    reason: str
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class ShellInfo:
    """One session as the admin API shows it."""

    id: str
    via: str  # agent, ssh or local
    drone_id: str
    drone: str
    opened_by: str
    opened_at: float
    state: str  # opening, attached, detached, closing, closed
    rows: int
    cols: int
    last_activity_at: float
    detached_at: float | None
    closed_at: float | None
    close_reason: str | None
    closed_by: str | None
    exit: ExitInfo | None
    bytes_in: int
    bytes_out: int
    recording_bytes: int
    recording_truncated: bool


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    id: str
    drone_id: str
    drone: str
    opened_by: str
    started_at: float
    size: int


@dataclass(frozen=True, slots=True)
class ExecResult:
    drone: str
    exit: ExitInfo
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    duration: float


class FarEnd(Protocol):
    """Where a session's shell runs: the drone's Shell call (its servicer
    context) or a PtyProcess. ``read`` gives ShellFrames (output, then the
    Close) and finally ``grpc.aio.EOF``; ``write`` takes input, resize and
    close frames."""

    async def read(self) -> Any: ...

    async def write(self, message: Any) -> None: ...


class Viewer(Protocol):
    """A websocket watching a session (web/shells.py)."""

    async def send_output(self, data: bytes) -> None: ...

    async def send_control(self, message: dict[str, Any]) -> None: ...

    async def close(self, code: int, message: str) -> None:
        """Close the viewer's connection, within a bound of its own."""
        ...


def exit_info(close: shell_pb2.Close) -> ExitInfo:
    return ExitInfo(
        exited=close.exited,
        exit_code=close.exit_code if close.exited else None,
        signal=close.signal or None,
        reason=printable(close.reason, 500),
        timed_out=close.timed_out,
    )


def exit_json(info: ExitInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "exit_code": info.exit_code,
        "signal": info.signal,
        "reason": info.reason,
        "timed_out": info.timed_out,
    }


# -- pieces of a session ---------------------------------------------------------


class Replay:
    """The last ``limit`` bytes of output, for a viewer that attaches later."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._trimmed = False

    def append(self, data: bytes) -> None:
        if len(data) >= self._limit:
            self._chunks.clear()
            self._chunks.append(data[-self._limit :])
            self._size = self._limit
            self._trimmed = True
            return
        self._chunks.append(data)
        self._size += len(data)
        while self._size > self._limit:
            over = self._size - self._limit
            first = self._chunks[0]
            if len(first) <= over:
                self._chunks.popleft()
                self._size -= len(first)
            else:
                self._chunks[0] = first[over:]
                self._size -= over
            self._trimmed = True

    def snapshot(self) -> bytes:
        data = b"".join(self._chunks)
        if self._trimmed:
            # Start on a line of its own rather than in the middle of one.
            cut = data.find(b"\n", 0, 4096)
            if cut >= 0:
                data = data[cut + 1 :]
        return data


class Recorder:
    """One asciinema v2 cast file, written by a thread, size-capped.

    ``output`` only queues (bounded by RECORDER_PENDING: past it the caller
    waits for the file); the writer thread decodes UTF-8 incrementally and
    JSON-encodes, so the event loop does neither file I/O nor encoding.
    """

    def __init__(self, path: Path, header: dict[str, Any], max_bytes: int) -> None:
        self.path = path
        self._header = header
        self._max = max_bytes
        self._started = time.monotonic()
        self._pending: list[tuple[float, str, bytes]] = []
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._burst = asyncio.Event()  # a burst's worth is waiting: write it now
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._file: Any = None
        self.size = 0
        self.truncated = False
        self.failed = False

    async def run(self) -> None:
        """The writer: until close() and everything queued is in the file."""
        try:
            await asyncio.to_thread(self._open)
            while True:
                await self._wake.wait()
                if not self._closing and self._pending_bytes < RECORDER_BURST:
                    # Let output gather: one hop to the writer thread per burst, not per
                    # keystroke; a flood fills a burst at once and is written straight away.
                    self._burst.clear()
                    await wait_event(self._burst, RECORDER_LINGER)
                self._wake.clear()
                batch, self._pending = self._pending, []
                self._pending_bytes = 0
                if batch:
                    await asyncio.to_thread(self._write, batch)
                self._drained.set()
                if self._closing and not self._pending:
                    return
        except OSError as exc:
            log.error("recording %s failed: %s", self.path, exc)
            self.failed = True
        finally:
            self._drained.set()
            if self._file is not None:
                await asyncio.to_thread(self._file.close)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("wb")
        line = (json.dumps(self._header, ensure_ascii=False) + "\n").encode()
        self._file.write(line)
        self._file.flush()
        self.size = len(line)

    def _write(self, batch: list[tuple[float, str, bytes]]) -> None:
        if self.truncated:
            return
        lines = []
        for t, kind, data in batch:
            text = self._decoder.decode(data) if kind == "o" else data.decode()
            if not text:
                continue
            line = (json.dumps([round(t, 6), kind, text], ensure_ascii=False) + "\n").encode()
            if self.size + len(line) > self._max:
                marker = json.dumps(
                    [round(t, 6), "m", f"recording stopped at its size cap ({self._max} bytes)"]
                )
                lines.append((marker + "\n").encode())
                self.truncated = True
                break
            lines.append(line)
            self.size += len(line)
        data = b"".join(lines)
        self._file.write(data)
        self._file.flush()

    def _queue(self, kind: str, data: bytes) -> None:
        if self.truncated or self.failed or self._closing:
            return
        self._pending.append((time.monotonic() - self._started, kind, data))
        self._pending_bytes += len(data)
        self._wake.set()
        if self._pending_bytes >= RECORDER_BURST:
            self._burst.set()

    async def output(self, data: bytes) -> None:
        self._queue("o", data)
        if self._pending_bytes > RECORDER_PENDING:
            self._drained.clear()
            await self._drained.wait()

    def resize(self, rows: int, cols: int) -> None:
        self._queue("r", f"{cols}x{rows}".encode())

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._burst.set()


# -- channels ------------------------------------------------------------------------


class Channel:
    """A channel the controller opened on a drone, waiting for or served on its Shell call."""

    def __init__(self, channel_id: str, state: DroneState) -> None:
        self.channel_id = channel_id
        self.drone_id = state.id
        self.drone = state.name
        self.agent_attached = asyncio.Event()
        self.claimed = False
        self.ended = asyncio.Event()
        self._abort = asyncio.Event()
        self.exit: ExitInfo | None = None

    def abort(self) -> None:
        """End the call now (the agent sees its stream end and hangs up)."""
        self._abort.set()

    async def serve(self, context: grpc.aio.ServicerContext) -> None:
        raise NotImplementedError

    async def _abort_wait(self) -> None:
        await self._abort.wait()


class ShellSession(Channel):
    def __init__(
        self,
        registry: ShellRegistry,
        session_id: str,
        channel_id: str,
        state: DroneState,
        opened_by: str,
        rows: int,
        cols: int,
        oob: OutOfBand | None = None,
    ) -> None:
        super().__init__(channel_id, state)
        settings = registry.settings
        self._registry = registry
        self.id = session_id
        self.via = "agent" if oob is None else oob.via
        self.note = "" if oob is None else oob.label
        self.opened_by = opened_by
        self.opened_at = time.time()
        self.rows = rows
        self.cols = cols
        self.phase = OPENING
        self.viewer: Viewer | None = None
        self.replay = Replay(settings.replay_bytes)
        self.last_activity = time.monotonic()
        self.last_activity_at = self.opened_at
        self.started = time.monotonic()
        self.detached_at: float | None = time.monotonic()  # no viewer yet
        self.detached_wall: float | None = self.opened_at
        self.closed_at: float | None = None
        self.close_reason: str | None = None
        self.closed_by: str | None = None
        self.close_deadline = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self._outbox: asyncio.Queue[shell_pb2.ShellFrame] = asyncio.Queue(INPUT_QUEUE)
        self._writing = False
        self._deliver = asyncio.Lock()  # output and a viewer's replay, in order
        header = {
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": int(self.opened_at),
            "title": f"{state.name} by {opened_by}",
            "env": {"TERM": TERM},
            "swarm": {
                "session": session_id,
                "drone_id": state.id,
                "drone": state.name,
                "opened_by": opened_by,
                "via": self.via,
            },
        }
        self.recorder = Recorder(registry.recording_path(session_id), header, settings.recording_max_bytes)

    # -- views -----------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.phase == OPEN:
            return "attached" if self.viewer is not None else "detached"
        return self.phase

    @property
    def live(self) -> bool:
        return self.phase in (OPENING, OPEN)

    def info(self) -> ShellInfo:
        detached = self.detached_wall if self.viewer is None and self.phase == OPEN else None
        return ShellInfo(
            id=self.id,
            via=self.via,
            drone_id=self.drone_id,
            drone=self.drone,
            opened_by=self.opened_by,
            opened_at=self.opened_at,
            state=self.state,
            rows=self.rows,
            cols=self.cols,
            last_activity_at=self.last_activity_at,
            detached_at=detached,
            closed_at=self.closed_at,
            close_reason=self.close_reason,
            closed_by=self.closed_by,
            exit=self.exit,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            recording_bytes=self.recorder.size,
            recording_truncated=self.recorder.truncated,
        )

    def _touch(self) -> None:
        self.last_activity = time.monotonic()
        self.last_activity_at = time.time()

    # -- viewers ---------------------------------------------------------------

    async def attach(self, viewer: Viewer, *, reattach: bool) -> None:
        """Make ``viewer`` the session's one viewer: it gets the session
        message, then the replay, then live output. A previous viewer is
        told and closed (the newest attach wins)."""
        if not self.live:
            raise FailedPrecondition(f"shell session {self.id} has ended")
        old, self.viewer = self.viewer, None
        if old is not None:
            self._registry.spawn(self._kick(old), "kick-viewer")
        async with self._deliver:
            self.viewer = viewer
            self.detached_at = None
            self.detached_wall = None
            await viewer.send_control(
                {
                    "type": "session",
                    "session": self.id,
                    "drone": self.drone,
                    "drone_id": self.drone_id,
                    "rows": self.rows,
                    "cols": self.cols,
                    "reattached": reattach,
                    "grace_s": self._registry.settings.grace,
                    "via": self.via,
                    **({"note": self.note} if self.note else {}),
                }
            )
            replay = self.replay.snapshot()
            if replay:
                await viewer.send_output(replay)

    @staticmethod
    async def _kick(viewer: Viewer) -> None:
        with contextlib.suppress(Exception):
            await viewer.send_control({"type": "detached", "reason": "attached elsewhere"})
        with contextlib.suppress(Exception):
            await viewer.close(4000, "attached elsewhere")

    def detach(self, viewer: Viewer) -> None:
        if self.viewer is viewer:
            self.viewer = None
            self.detached_at = time.monotonic()
            self.detached_wall = time.time()
            log.info(
                "shell %s on %s detached; open for a reattach for %gs",
                self.id,
                self.drone,
                self._registry.settings.grace,
            )

    # -- input from the viewer ---------------------------------------------------

    async def _send(self, frame: shell_pb2.ShellFrame) -> None:
        if self.phase != OPEN:
            return
        await self._outbox.put(frame)  # bounded: a drone not reading its input pushes back

    async def input(self, data: bytes) -> None:
        if not data:
            return
        self._touch()
        self.bytes_in += len(data)
        await self._send(shell_pb2.ShellFrame(input=data))

    async def resize(self, rows: int, cols: int) -> None:
        if not (0 < rows <= MAX_SIZE and 0 < cols <= MAX_SIZE):
            raise ValueError(f"rows and cols must be 1-{MAX_SIZE}")
        if (rows, cols) == (self.rows, self.cols):
            return
        self.rows, self.cols = rows, cols
        self.recorder.resize(rows, cols)
        await self._send(shell_pb2.ShellFrame(resize=shell_pb2.Resize(rows=rows, cols=cols)))

    def close(self, reason: str, by: str | None = None) -> None:
        """Ask the agent to end the shell (SIGHUP, then SIGKILL); the call is
        cut if it has not answered within KILL_WAIT."""
        if not self.live:
            return
        self.close_reason, self.closed_by = reason, by
        if self.phase == OPENING:
            self.abort()
            return
        self.phase = CLOSING
        self.close_deadline = time.monotonic() + KILL_WAIT
        try:
            self._outbox.put_nowait(shell_pb2.ShellFrame(close=shell_pb2.Close(reason=reason[:200])))
        except asyncio.QueueFull:
            self.abort()

    # -- the agent's call ----------------------------------------------------------

    async def serve(self, context: FarEnd) -> None:
        self.phase = OPEN
        self.agent_attached.set()
        reader = asyncio.create_task(self._read(context), name=f"shell-read:{self.id}")
        writer = asyncio.create_task(self._write(context), name=f"shell-write:{self.id}")
        aborted = asyncio.create_task(self._abort_wait(), name=f"shell-abort:{self.id}")
        exit: ExitInfo | None = None
        why = "the drone ended the channel"
        try:
            await asyncio.wait({reader, writer, aborted}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and not reader.cancelled():
                if reader.exception() is None:
                    exit = reader.result()
                else:
                    why = f"channel stream failed: {reader.exception()}"
            elif aborted.done():
                why = "the drone did not end the channel in time"
        finally:
            reader.cancel()
            aborted.cancel()
            if self._writing:
                await asyncio.wait({writer}, timeout=WRITE_GRACE)
            writer.cancel()
            await asyncio.gather(reader, writer, aborted, return_exceptions=True)
            self._finish(exit, why)

    async def _read(self, context: FarEnd) -> ExitInfo | None:
        while True:
            frame = await context.read()
            if frame is grpc.aio.EOF:
                return None
            kind = frame.WhichOneof("body")
            if kind == "output":
                await self._output(frame.output)
            elif kind == "close":
                return exit_info(frame.close)

    async def _output(self, data: bytes) -> None:
        self._touch()
        self.bytes_out += len(data)
        await self.recorder.output(data)
        async with self._deliver:
            self.replay.append(data)
            viewer = self.viewer
            if viewer is not None:
                await viewer.send_output(data)  # awaits the websocket's drain

    async def _write(self, context: FarEnd) -> None:
        while True:
            frame = await self._outbox.get()
            self._writing = True
            try:
                await context.write(frame)
            finally:
                self._writing = False

    def _finish(self, exit: ExitInfo | None, why: str) -> None:
        if self.phase == CLOSED:
            return
        self.phase = CLOSED
        self.exit = exit
        self.closed_at = time.time()
        if self.close_reason is None:
            self.close_reason = exit.reason if exit is not None else why
        # Unblock an input waiting on a full queue; nothing more goes out.
        while not self._outbox.empty():
            self._outbox.get_nowait()
        self.recorder.close()
        self.ended.set()
        viewer, self.viewer = self.viewer, None
        self._registry.on_closed(self)
        if viewer is not None:
            self._registry.spawn(self._goodbye(viewer), "shell-goodbye")

    async def _goodbye(self, viewer: Viewer) -> None:
        async with self._deliver:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    viewer.send_control(
                        {
                            "type": "exit",
                            **(exit_json(self.exit) or {}),
                            "closed_by": self.closed_by,
                            "message": self.close_reason,
                        }
                    ),
                    2.0,
                )
        with contextlib.suppress(Exception):
            await viewer.close(1000, "shell ended")  # bounded by the viewer


class ReadingChannel(Channel):
    """A channel the controller only reads (a command, a log): its frames go
    to ``_read`` until the agent's Close, the end of the call, or abort()."""

    async def serve(self, context: grpc.aio.ServicerContext) -> None:
        self.agent_attached.set()
        name = f"{type(self).__name__}:{self.channel_id[:12]}"
        aborted = asyncio.create_task(self._abort_wait(), name=f"{name}:abort")
        reader = asyncio.create_task(self._read(context), name=f"{name}:read")
        try:
            await asyncio.wait({reader, aborted}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and not reader.cancelled():
                failure = reader.exception()
                if failure is None:
                    self.exit = reader.result()
                elif isinstance(failure, Unparsable):
                    # The call itself ends INVALID_ARGUMENT (unparsable.py); whoever waits hears why.
                    self.exit = ExitInfo(False, None, None, f"the drone sent {failure.reason}")
        finally:
            reader.cancel()
            aborted.cancel()
            await asyncio.gather(reader, aborted, return_exceptions=True)
            self.ended.set()

    async def _read(self, context: grpc.aio.ServicerContext) -> ExitInfo | None:
        """Frames until the agent's Close (its status) or the end of the call (None)."""
        raise NotImplementedError


class ExecRun(ReadingChannel):
    """One non-interactive command: output collected (capped) until the agent's Close."""

    def __init__(self, channel_id: str, state: DroneState, max_output: int) -> None:
        super().__init__(channel_id, state)
        self._max = max_output
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.stdout_truncated = False
        self.stderr_truncated = False

    def _keep(self, buf: bytearray, data: bytes) -> bool:
        room = self._max - len(buf)
        buf += data[: max(0, room)]
        return len(data) > room

    async def _read(self, context: grpc.aio.ServicerContext) -> ExitInfo | None:
        while True:
            frame = await context.read()
            if frame is grpc.aio.EOF:
                return None
            kind = frame.WhichOneof("body")
            # Past the cap the rest is read and dropped, so the command can finish.
            if kind == "output":
                self.stdout_truncated |= self._keep(self.stdout, frame.output)
            elif kind == "stderr":
                self.stderr_truncated |= self._keep(self.stderr, frame.stderr)
            elif kind == "close":
                return exit_info(frame.close)


# -- the registry -----------------------------------------------------------------


class ShellRegistry:
    def __init__(self, events: EventLog, settings: ShellSettings, recordings: Path) -> None:
        self.settings = settings
        self._events = events
        self._dir = recordings
        self._channels: dict[str, Channel] = {}  # live, by channel id
        self._sessions: dict[str, ShellSession] = {}  # live, by session id
        self._closed: deque[ShellSession] = deque(maxlen=RECENT_CLOSED)
        self._tasks = TaskSet("shells")
        self._janitor_task: asyncio.Task[None] | None = None
        self._busy = 0  # spawned tasks still running (the janitor aside)
        self._changed = asyncio.Event()  # a channel or a spawned task ended
        self._tick = max(
            0.05, min(1.0, settings.grace / 4, settings.idle_timeout / 4, settings.max_lifetime / 4)
        )

    async def start(self) -> None:
        await asyncio.to_thread(self._dir.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(self._prune)
        self._janitor_task = self._tasks.spawn(self._janitor(), "janitor")

    async def stop(self) -> None:
        """Close every session (the agents hang up their shells), tell and close
        every viewer, finish the recordings: within STOP_TIMEOUT."""
        if self._janitor_task is not None:
            self._janitor_task.cancel()
        for session in list(self._sessions.values()):
            session.close("the controller is stopping")
        await self._until(lambda: not self._channels, KILL_WAIT / 2)
        for channel in list(self._channels.values()):
            channel.abort()
        # Goodbyes to viewers and recorders end by themselves, each bounded.
        await self._until(lambda: self._busy == 0, 2.0)
        await self._tasks.close(timeout=1.0)

    async def _until(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            self._changed.clear()
            await wait_event(self._changed, max(0.0, deadline - time.monotonic()))

    def spawn(self, coro: Any, name: str) -> None:
        self._busy += 1
        self._tasks.spawn(coro, name).add_done_callback(self._spawned_done)

    def _spawned_done(self, _task: asyncio.Task[Any]) -> None:
        self._busy -= 1
        self._changed.set()

    def recording_path(self, session_id: str) -> Path:
        if not SESSION_ID_RE.match(session_id):
            raise NotFound(f"no shell session {session_id[:40]!r}")
        return self._dir / f"{session_id}.cast"

    # -- opening --------------------------------------------------------------------

    def _room(self) -> None:
        if len(self._channels) >= self.settings.max_sessions:
            raise Unavailable(
                f"{self.settings.max_sessions} shell sessions and commands are open already; try again later"
            )

    @staticmethod
    def _ask(state: DroneState, request: shell_pb2.OpenChannel) -> None:
        link = state.link
        if link is None:
            hint = (
                " (via=ssh goes without the agent, if the drone has an ssh access setting)"
                if request.kind in (Kind.SHELL, Kind.EXEC)
                else ""
            )
            raise FailedPrecondition(f"{state.name} is {state.status}: no control stream to ask over{hint}")
        feature = CHANNEL_FEATURES.get(request.kind)
        if feature is not None and not speaks(state.features, feature):
            # Never ask an agent for what it said it cannot do.
            raise FailedPrecondition(f"the agent on {state.name} does not speak {feature}")
        if not link.send(gateway_pb2.ControllerMessage(open_channel=request)):
            raise Unavailable(f"{state.name} is not reading its control stream (its queue is full)")

    async def _await_attach(self, channel: Channel) -> None:
        try:
            await asyncio.wait_for(channel.agent_attached.wait(), self.settings.open_timeout)
        except TimeoutError:
            channel.abort()
            self._channels.pop(channel.channel_id, None)
            raise Unavailable(
                f"{channel.drone} did not open the channel within {self.settings.open_timeout:g}s"
            ) from None

    async def open_shell(self, state: DroneState, by: str, rows: int, cols: int) -> ShellSession:
        self._room()
        session = ShellSession(
            self, f"s-{secrets.token_hex(8)}", secrets.token_hex(16), state, by, rows, cols
        )
        self._channels[session.channel_id] = session
        self._sessions[session.id] = session
        try:
            self._ask(
                state,
                shell_pb2.OpenChannel(channel_id=session.channel_id, kind=Kind.SHELL, rows=rows, cols=cols),
            )
            await self._await_attach(session)
        except BaseException:
            if session.phase == OPENING:
                session.abort()
                session._finish(None, "the drone did not open the channel")
            raise
        self._opened(session)
        return session

    async def open_oob_shell(
        self, state: DroneState, oob: OutOfBand, by: str, rows: int, cols: int
    ) -> ShellSession:
        """A terminal that does not need the agent: ssh (or, for ``local``, a
        login shell) under a PTY here, the session's far end in place of the
        drone's call. Or Unavailable when it cannot be started."""
        self._room()
        far = PtyProcess(oob, rows, cols, TERM)
        session = ShellSession(
            self, f"s-{secrets.token_hex(8)}", secrets.token_hex(16), state, by, rows, cols, oob
        )
        session.claimed = True  # no drone's call may attach to it
        self._channels[session.channel_id] = session
        self._sessions[session.id] = session
        try:
            await far.start()
        except BaseException:
            session._finish(None, "the terminal could not be started")
            raise
        self.spawn(self._serve_oob(session, far), f"oob-shell:{session.id}")
        await session.agent_attached.wait()  # serve() sets it at once
        self._opened(session)
        return session

    async def _serve_oob(self, session: ShellSession, far: PtyProcess) -> None:
        try:
            await session.serve(far)
        finally:
            await far.stop()

    def _opened(self, session: ShellSession) -> None:
        self.spawn(session.recorder.run(), f"recorder:{session.id}")
        self._events.emit(
            "shell_opened",
            f"{session.drone}: terminal {session.id} opened by {session.opened_by}"
            + ("" if session.via == "agent" else f" via {session.via}"),
            drone_id=session.drone_id,
            drone_name=session.drone,
            by=session.opened_by,
            session=session.id,
            rows=session.rows,
            cols=session.cols,
            via=session.via,
        )
        self.spawn(asyncio.to_thread(self._prune), "prune-recordings")

    def live_session(self, session_id: str, drone_key: str) -> ShellSession:
        """A session to reattach to: live, and on the drone the URL names."""
        session = self._sessions.get(session_id)
        if session is None:
            ended = next((s for s in self._closed if s.id == session_id), None)
            if ended is not None:
                raise FailedPrecondition(f"shell session {session_id} has ended: {ended.close_reason}")
            raise NotFound(f"no shell session {session_id[:40]!r}")
        if drone_key not in (session.drone, session.drone_id):
            raise NotFound(f"shell session {session_id} is not on {drone_key[:64]!r}")
        if not session.live:
            raise FailedPrecondition(f"shell session {session_id} is closing")
        return session

    def on_reattach(self, session: ShellSession, by: str) -> None:
        self._events.emit(
            "shell_reattached",
            f"{session.drone}: terminal {session.id} reattached by {by}",
            drone_id=session.drone_id,
            drone_name=session.drone,
            by=by,
            session=session.id,
        )

    def on_closed(self, session: ShellSession) -> None:
        self._channels.pop(session.channel_id, None)
        self._sessions.pop(session.id, None)
        self._changed.set()
        if not session.agent_attached.is_set():
            return  # never opened: the request that asked for it got the error
        self._closed.append(session)
        exit = session.exit
        self._events.emit(
            "shell_closed",
            f"{session.drone}: terminal {session.id} of {session.opened_by} closed: {session.close_reason}",
            drone_id=session.drone_id,
            drone_name=session.drone,
            by=session.closed_by or session.opened_by,
            opened_by=session.opened_by,
            session=session.id,
            via=session.via,
            reason=session.close_reason,
            exit_code=exit.exit_code if exit is not None else None,
            signal=exit.signal if exit is not None else None,
            duration_s=round(time.monotonic() - session.started, 3),
            bytes_in=session.bytes_in,
            bytes_out=session.bytes_out,
        )
        self.spawn(asyncio.to_thread(self._prune), "prune-recordings")

    # -- the admin's view -------------------------------------------------------------

    def sessions(self) -> list[ShellInfo]:
        live = sorted(self._sessions.values(), key=lambda s: s.opened_at)
        ended = sorted(self._closed, key=lambda s: s.closed_at or 0, reverse=True)
        return [s.info() for s in [*live, *ended]]

    async def kill(self, session_id: str, by: str) -> ShellInfo:
        session = self._sessions.get(session_id)
        if session is None:
            if any(s.id == session_id for s in self._closed):
                raise FailedPrecondition(f"shell session {session_id} has ended already")
            raise NotFound(f"no shell session {session_id[:40]!r}")
        session.close(f"killed by {by}", by=by)
        self._events.emit(
            "shell_killed",
            f"{session.drone}: terminal {session.id} of {session.opened_by} killed by {by}",
            drone_id=session.drone_id,
            drone_name=session.drone,
            by=by,
            session=session.id,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.ended.wait(), KILL_WAIT + 1.0)
        return session.info()

    async def recordings(self) -> list[RecordingInfo]:
        return await asyncio.to_thread(self._list_recordings)

    def _list_recordings(self) -> list[RecordingInfo]:
        found = []
        for path in self._dir.glob("s-*.cast"):
            try:
                stat = path.stat()
                with path.open("rb") as fh:
                    header = json.loads(fh.readline(65536))
            except (OSError, ValueError):
                continue
            meta = header.get("swarm", {}) if isinstance(header, dict) else {}
            found.append(
                RecordingInfo(
                    id=path.stem,
                    drone_id=str(meta.get("drone_id", "")),
                    drone=str(meta.get("drone", "")),
                    opened_by=str(meta.get("opened_by", "")),
                    started_at=float(header.get("timestamp", stat.st_mtime)),
                    size=stat.st_size,
                )
            )
        found.sort(key=lambda r: r.started_at, reverse=True)
        return found[:RECORDINGS_LISTED]

    def _prune(self) -> None:
        """Retention: recordings older than the retention go, then the oldest
        until the total fits (never one of a live session)."""
        live = {s.id for s in self._sessions.values()}
        files = []
        for path in self._dir.glob("s-*.cast"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                files.append((stat.st_mtime, stat.st_size, path))
        files.sort()
        cutoff = time.time() - self.settings.recording_retention
        total = sum(size for _, size, _ in files)
        for mtime, size, path in files:
            if path.stem in live:
                continue
            if mtime < cutoff or total > self.settings.recordings_max_bytes:
                with contextlib.suppress(OSError):
                    path.unlink()
                    total -= size
                    log.info("recording %s removed by retention", path.name)

    # -- exec ---------------------------------------------------------------------------

    async def exec(self, state: DroneState, command: str, timeout: float, by: str) -> ExecResult:
        run = ExecRun(secrets.token_hex(16), state, self.settings.exec_max_output)
        started = time.monotonic()
        try:
            await self.open_channel(
                state, run, shell_pb2.OpenChannel(kind=Kind.EXEC, command=command, timeout_s=timeout)
            )
            try:
                # The agent enforces the timeout; this only guards against an agent that does not.
                await asyncio.wait_for(run.ended.wait(), timeout + KILL_WAIT + 5.0)
            except TimeoutError:
                run.abort()
                await run.ended.wait()
        finally:
            self.release(run)
        exit = run.exit or ExitInfo(False, None, None, "the drone ended the channel without a status")
        result = ExecResult(
            drone=state.name,
            exit=exit,
            stdout=bytes(run.stdout),
            stderr=bytes(run.stderr),
            stdout_truncated=run.stdout_truncated,
            stderr_truncated=run.stderr_truncated,
            duration=time.monotonic() - started,
        )
        self._audit_exec(state, command, result, by, "agent")
        return result

    async def exec_oob(
        self, state: DroneState, oob: OutOfBand, command: str, timeout: float, by: str
    ) -> ExecResult:
        """A command over ssh (or here, for ``local``), with the same limits,
        result and audit event as one through the agent."""
        run = await run_command(oob.command_argv(command), timeout, self.settings.exec_max_output)
        if run.error:
            exit = ExitInfo(False, None, None, f"could not run {oob.via}: {run.error}")
        elif run.returncode is None:
            exit = ExitInfo(False, None, signal.SIGKILL, f"timed out after {timeout:g}s", timed_out=True)
        elif run.returncode < 0:
            exit = ExitInfo(False, None, -run.returncode, f"killed by signal {-run.returncode}")
        else:
            reason = oob.reason(run.returncode) or f"exited with {run.returncode}"
            exit = ExitInfo(True, run.returncode, None, reason)
        result = ExecResult(
            drone=state.name,
            exit=exit,
            stdout=run.stdout,
            stderr=run.stderr,
            stdout_truncated=run.stdout_truncated,
            stderr_truncated=run.stderr_truncated,
            duration=run.duration,
        )
        self._audit_exec(state, command, result, by, oob.via)
        return result

    def _audit_exec(self, state: DroneState, command: str, result: ExecResult, by: str, via: str) -> None:
        exit = result.exit
        self._events.emit(
            "drone_exec",
            f"{state.name}: command run by {by}"
            + ("" if via == "agent" else f" via {via}")
            + f": {exit.reason}",
            drone_id=state.id,
            drone_name=state.name,
            by=by,
            via=via,
            command=command[:500],
            exit_code=exit.exit_code,
            signal=exit.signal,
            timed_out=exit.timed_out,
            stdout_bytes=len(result.stdout),
            stderr_bytes=len(result.stderr),
            duration_s=round(result.duration, 3),
        )

    async def open_channel(self, state: DroneState, channel: Channel, request: shell_pb2.OpenChannel) -> None:
        """Ask the drone for a channel of another kind than a shell and wait
        until it attaches; ``release`` it when done (also after an error)."""
        self._room()
        self._channels[channel.channel_id] = channel
        request.channel_id = channel.channel_id
        self._ask(state, request)
        await self._await_attach(channel)

    def release(self, channel: Channel) -> None:
        """End a channel opened with ``open_channel`` (its call, if still up) and forget it."""
        channel.abort()
        if self._channels.pop(channel.channel_id, None) is not None:
            self._changed.set()

    # -- the gRPC side ------------------------------------------------------------------

    def claim(self, channel_id: str, identity: Identity) -> Channel:
        """The channel a drone's Shell call attaches to: it must be this drone's."""
        channel = self._channels.get(channel_id)
        if channel is None:
            raise NotFound(f"no channel {channel_id[:40]!r} is waiting")
        if identity.kind == AGENT and identity.drone_id != channel.drone_id:
            # Logged by the caller (ChannelsService), a few per drone per window.
            raise PermissionDenied("that channel belongs to another drone")
        if channel.claimed:
            raise FailedPrecondition("that channel is attached already")
        channel.claimed = True
        return channel

    async def _janitor(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(self._tick)
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if session.phase == CLOSING:
                    if now > session.close_deadline:
                        session.abort()
                elif session.phase != OPEN:
                    continue
                elif session.detached_at is not None and now - session.detached_at > s.grace:
                    session.close(f"detached for more than {s.grace:g}s")
                elif now - session.last_activity > s.idle_timeout:
                    session.close(f"idle for more than {s.idle_timeout:g}s")
                elif now - session.started > s.max_lifetime:
                    session.close(f"open for more than {s.max_lifetime:g}s (the maximum lifetime)")


class ChannelsService(shell_pb2_grpc.ChannelsServicer):
    """The drones' side of channels: each Shell call attaches to a channel the controller opened."""

    def __init__(self, registry: ShellRegistry, bounds: StreamBounds, events: EventLog) -> None:
        self._registry = registry
        self._bounds = bounds
        self._events = events
        self._refusals = BurstLog(log, bounds.noise)

    async def Shell(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        """A drone's channel stream. It counts against the drone's channel
        streams from its start to its end, and against the streams waiting
        to speak until its Attach (bounds.py): beyond either cap it is
        RESOURCE_EXHAUSTED. Only a channel the controller asked this drone
        for can be attached, once (``ShellRegistry.claim``)."""
        peer = context.peer()
        identity = current_identity()
        bounds = self._bounds
        key = bound_key(identity, peer)
        full = bounds.channels.take(key)
        if full is not None:
            bounds.refusals.note("channels", key, identity.drone_id, peer, full)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{full}: end some first")
            return
        try:
            await self._attach(context, identity, peer, key)
        finally:
            bounds.channels.give(key)

    async def _attach(
        self, context: grpc.aio.ServicerContext, identity: Identity, peer: str, key: str
    ) -> None:
        bounds = self._bounds
        full = bounds.pending.take(key)
        if full is not None:
            bounds.refusals.note("pending", key, identity.drone_id, peer, full)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{full}: attach the open ones first")
            return
        try:
            first = await asyncio.wait_for(context.read(), ATTACH_TIMEOUT)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no attach received in time")
            return
        finally:
            bounds.pending.give(key)
        if first is grpc.aio.EOF:
            return
        kind = first.WhichOneof("body")
        if kind != "attach":
            bounds.peer_events.emit(
                "protocol_error",
                "attach first",
                noise_key(identity, peer),
                f"channel stream began with {kind or 'an empty frame'}, not attach",
                drone_id=identity.drone_id,
                peer=peer,
                method="/swarm.v1.Channels/Shell",
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first frame must be attach")
            return
        try:
            channel = self._registry.claim(first.attach.channel_id, identity)
        except SwarmError as exc:
            if isinstance(exc, PermissionDenied):
                self._refusals.warning(
                    "other drone's channel",
                    key,
                    "drone %s tried to attach to channel %s of another drone",
                    identity.drone_id,
                    first.attach.channel_id[:12],
                )
            await context.abort(*grpc_status(exc))
            return
        await channel.serve(context)
