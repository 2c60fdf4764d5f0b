"""One terminal session: a shell channel (channels.py) with at most one viewer,
a replay of recent output, and a recording (recording.py).

The PTY lives on the far end, so a websocket (a *viewer*) only watches a
session. A viewer that goes away detaches; another may attach later and
first gets the bounded ``Replay`` of recent output. When the session ends
(registry in shells.py: grace, idle, lifetime, kill), the viewer is told
how and closed.

Backpressure, end to end: output is read from the far end only after the
previous message reached the viewer's websocket (aiohttp awaits its
drain) and the recorder's bounded queue, so a slow reader stops us
reading the call, HTTP/2 flow control stops the agent, and the agent
stops reading the PTY. Input goes the other way through the channel's one
bounded outbox. No queue here grows with the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from swarm.controller.channel_frames import MAX_CLOSE_REASON, Close, Closed, ExitInfo, Input, OutFrame, Resize
from swarm.controller.channels import KILL_WAIT, Channel, FarEnd
from swarm.controller.errors import FailedPrecondition
from swarm.controller.fleet import DroneState
from swarm.controller.oobshell import OutOfBand
from swarm.controller.recording import Recorder, cast_header
from swarm.controller.shellmessages import DetachedMessage, ExitMessage, SessionMessage, ShellMessage

if TYPE_CHECKING:
    from swarm.controller.shells import ShellRegistry

log = logging.getLogger(__name__)

OPENING, OPEN, CLOSING, CLOSED = "opening", "open", "closing", "closed"
INPUT_QUEUE = 16  # frames to the far end per session
MAX_SIZE = 1000  # rows or columns
GOODBYE_TIMEOUT = 2.0  # for the exit message to a viewer


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


class Viewer(Protocol):
    """A websocket watching a session (web/shells.py)."""

    async def send_output(self, data: bytes) -> None: ...

    async def send_control(self, message: ShellMessage) -> None: ...

    async def close(self, code: int, message: str) -> None:
        """Close the viewer's connection, within a bound of its own."""
        ...


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
        super().__init__(channel_id, state, outbox=INPUT_QUEUE)
        settings = registry.settings
        self._registry = registry
        clock = self._clock = registry.clock
        self.id = session_id
        self.via = "agent" if oob is None else oob.via
        self.note = "" if oob is None else oob.label
        self.opened_by = opened_by
        self.opened_at = clock.time()
        self.rows = rows
        self.cols = cols
        self.phase = OPENING
        self.viewer: Viewer | None = None
        self.replay = Replay(settings.replay_bytes)
        self.last_activity = clock.monotonic()
        self.last_activity_at = self.opened_at
        self.started = self.last_activity
        self.detached_at: float | None = self.started  # no viewer yet
        self.detached_wall: float | None = self.opened_at
        self.closed_at: float | None = None
        self.close_reason: str | None = None
        self.closed_by: str | None = None
        self.close_deadline = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self._deliver = asyncio.Lock()  # output and a viewer's replay, in order
        header = cast_header(
            session_id, state.id, state.name, opened_by, self.via, rows, cols, self.opened_at
        )
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
        self.last_activity = self._clock.monotonic()
        self.last_activity_at = self._clock.time()

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
                SessionMessage(
                    session=self.id,
                    drone=self.drone,
                    drone_id=self.drone_id,
                    rows=self.rows,
                    cols=self.cols,
                    reattached=reattach,
                    grace_s=self._registry.settings.grace,
                    via=self.via,
                    note=self.note or None,
                )
            )
            replay = self.replay.snapshot()
            if replay:
                await viewer.send_output(replay)

    @staticmethod
    async def _kick(viewer: Viewer) -> None:
        with contextlib.suppress(Exception):
            await viewer.send_control(DetachedMessage(reason="attached elsewhere"))
        with contextlib.suppress(Exception):
            await viewer.close(4000, "attached elsewhere")

    def detach(self, viewer: Viewer) -> None:
        if self.viewer is viewer:
            self.viewer = None
            self.detached_at = self._clock.monotonic()
            self.detached_wall = self._clock.time()
            log.info(
                "shell %s on %s detached; open for a reattach for %gs",
                self.id,
                self.drone,
                self._registry.settings.grace,
            )

    # -- input from the viewer ---------------------------------------------------

    async def _send(self, frame: OutFrame) -> None:
        if self.phase != OPEN:
            return
        await self.send(frame)  # bounded: a drone not reading its input pushes back

    async def input(self, data: bytes) -> None:
        if not data:
            return
        self._touch()
        self.bytes_in += len(data)
        await self._send(Input(data))

    async def resize(self, rows: int, cols: int) -> None:
        if not (0 < rows <= MAX_SIZE and 0 < cols <= MAX_SIZE):
            raise ValueError(f"rows and cols must be 1-{MAX_SIZE}")
        if (rows, cols) == (self.rows, self.cols):
            return
        self.rows, self.cols = rows, cols
        self.recorder.resize(rows, cols)
        await self._send(Resize(rows, cols))

    def close(self, reason: str, by: str | None = None) -> None:
        """Ask the far end to end the shell (the agent: SIGHUP, then SIGKILL);
        the call is cut if it has not answered within KILL_WAIT."""
        if not self.live:
            return
        self.close_reason, self.closed_by = reason, by
        if self.phase == OPENING:
            self.abort()
            return
        self.phase = CLOSING
        self.close_deadline = self._clock.monotonic() + KILL_WAIT
        if not self.send_now(Close(reason[:MAX_CLOSE_REASON])):
            self.abort()

    # -- the far end ----------------------------------------------------------------

    async def serve(self, far: FarEnd) -> None:
        self.phase = OPEN
        await super().serve(far)

    async def on_output(self, data: bytes) -> None:
        self._touch()
        self.bytes_out += len(data)
        await self.recorder.output(data)
        async with self._deliver:
            self.replay.append(data)
            viewer = self.viewer
            if viewer is not None:
                await viewer.send_output(data)  # awaits the websocket's drain

    def _ended(self, closed: Closed | None, why: str, broken: str) -> None:
        self.finish(closed.exit if closed is not None else None, why)

    def finish(self, exit: ExitInfo | None, why: str) -> None:
        """The session is over (or never opened): the recording ends, the
        registry forgets it, the viewer is told and closed."""
        if self.phase == CLOSED:
            return
        self.phase = CLOSED
        self.exit = exit
        self.closed_at = self._clock.time()
        if self.close_reason is None:
            self.close_reason = exit.reason if exit is not None else why
        self._drop_outbox()
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
                    viewer.send_control(ExitMessage.of(self.exit, self.closed_by, self.close_reason)),
                    GOODBYE_TIMEOUT,
                )
        with contextlib.suppress(Exception):
            await viewer.close(1000, "shell ended")  # bounded by the viewer
