"""Channels: bulk streams to a drone by reverse tunnel (shell.proto), for
terminals (shells.py), one-off commands (execs.py) and drone logs (logs.py).

The controller never dials a drone. It picks a random channel id, asks over
the drone's control stream (``fleet.Link.open_channel``), and waits for the
drone's own ``Channels.Shell`` call naming that id (channelsvc.py, which
checks that the id is waiting *for that drone*: ``Channels.claim``). The
call is then the channel's far end, and ``Channel.serve`` runs it to its
end: one reader hands the frames to the channel (``on_output``,
``on_stderr``) until the agent's ``Closed``; a channel that sends (a
terminal) has one writer draining a bounded outbox.

Backpressure: the reader awaits each hook before it reads the next frame,
so whoever a channel hands its output to (a websocket, a queue of a few
log pieces) stops the reading of the call, HTTP/2 flow control stops the
agent, and the agent stops reading its process.

Every open channel counts against one cap (``max_open``): shells,
commands and log tails together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from swarm.controller.authz import AGENT, Identity
from swarm.controller.channel_frames import (
    ChannelRequest,
    Closed,
    ExecRequest,
    ExitInfo,
    InFrame,
    OutFrame,
    Output,
    ShellRequest,
    Stderr,
)
from swarm.controller.errors import FailedPrecondition, NotFound, PermissionDenied, Unavailable
from swarm.controller.fleet import DroneState
from swarm.protocol import speaks
from swarm.tasks import wait_event

log = logging.getLogger(__name__)

WRITE_GRACE = 1.0  # a write in progress may finish after the channel ended, within this
# A closed channel's agent hangs up (a 2 s grace) and reports; then the call is cut.
KILL_WAIT = 5.0


class FarEnd(Protocol):
    """Where a channel's process runs: a drone's Shell call (channelsvc.CallEnd)
    or a process under a PTY here (oobshell.PtyProcess)."""

    async def read(self) -> InFrame | None:
        """The next frame; None once the far end has ended the stream.
        Raises BrokenChannel for what does not parse."""
        ...

    async def write(self, frame: OutFrame) -> None: ...


class BrokenChannel(Exception):
    """The far end sent what is not a frame (the call itself ends INVALID_ARGUMENT)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def read_frames(far: FarEnd, channel: Channel) -> Closed | None:
    """The one frame reader: frames to ``channel`` until the far end's Closed
    (returned) or the end of its stream (None)."""
    while (frame := await far.read()) is not None:
        match frame:
            case Output(data):
                await channel.on_output(data)
            case Stderr(data):
                await channel.on_stderr(data)
            case Closed():
                return frame
    return None


class Channel:
    """A channel the controller opened on a drone, waiting for or served on its far end.

    Subclasses take the frames (``on_output``, ``on_stderr``) and learn how
    it ended (``_ended``); one with ``outbox`` > 0 also sends, with ``send``.
    """

    def __init__(self, channel_id: str, state: DroneState, outbox: int = 0) -> None:
        self.channel_id = channel_id
        self.drone_id = state.id
        self.drone = state.name
        self.agent_attached = asyncio.Event()
        self.claimed = False
        self.ended = asyncio.Event()
        self.exit: ExitInfo | None = None
        self._abort = asyncio.Event()
        self._outbox: asyncio.Queue[OutFrame] | None = asyncio.Queue(outbox) if outbox > 0 else None
        self._writing = False

    def abort(self) -> None:
        """End the far end's stream now (the agent sees it end and hangs up)."""
        self._abort.set()

    async def on_output(self, data: bytes) -> None:
        """Output; awaited before the next frame is read."""

    async def on_stderr(self, data: bytes) -> None:
        """Stderr (a log's notice); awaited before the next frame is read."""

    def _ended(self, closed: Closed | None, why: str, broken: str) -> None:
        """The far end is done: ``closed`` is its Closed, if it sent one;
        ``why`` says why it ended otherwise; ``broken`` is set if it sent
        what does not parse."""
        if closed is not None:
            self.exit = closed.exit
        elif broken:
            self.exit = ExitInfo(False, None, None, f"the drone sent {broken}")
        self.ended.set()

    async def send(self, frame: OutFrame) -> None:
        """Queue a frame for the far end; waits while the outbox is full (a
        drone not reading its input pushes back)."""
        assert self._outbox is not None, "this channel only reads"
        await self._outbox.put(frame)

    def send_now(self, frame: OutFrame) -> bool:
        """Queue a frame without waiting; False if the outbox is full."""
        assert self._outbox is not None, "this channel only reads"
        try:
            self._outbox.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    def _drop_outbox(self) -> None:
        """Nothing more goes out; a send waiting on a full outbox returns."""
        while self._outbox is not None and not self._outbox.empty():
            self._outbox.get_nowait()

    async def serve(self, far: FarEnd) -> None:
        """Run the channel on ``far`` until the far end's Closed, the end of
        its stream, or ``abort``."""
        self.agent_attached.set()
        name = f"{type(self).__name__}:{self.channel_id[:12]}"
        reader = asyncio.create_task(read_frames(far, self), name=f"{name}:read")
        aborted = asyncio.create_task(self._abort.wait(), name=f"{name}:abort")
        writer = None
        if self._outbox is not None:
            writer = asyncio.create_task(self._write(far, self._outbox), name=f"{name}:write")
        closed: Closed | None = None
        why, broken = "the drone ended the channel", ""
        try:
            tasks = {reader, aborted} if writer is None else {reader, aborted, writer}
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and not reader.cancelled():
                failure = reader.exception()
                if failure is None:
                    closed = reader.result()
                else:
                    why = f"channel stream failed: {failure}"
                    if isinstance(failure, BrokenChannel):
                        broken = failure.reason
                    else:
                        log.info("channel %s on %s failed: %r", name, self.drone, failure)
            elif aborted.done():
                why = "the drone did not end the channel in time"
        finally:
            reader.cancel()
            aborted.cancel()
            if writer is not None:
                if self._writing:
                    await asyncio.wait({writer}, timeout=WRITE_GRACE)
                writer.cancel()
            await asyncio.gather(
                *(t for t in (reader, aborted, writer) if t is not None), return_exceptions=True
            )
            self._ended(closed, why, broken)

    async def _write(self, far: FarEnd, outbox: asyncio.Queue[OutFrame]) -> None:
        while True:
            frame = await outbox.get()
            self._writing = True
            try:
                await far.write(frame)
            finally:
                self._writing = False


class Channels:
    """Every open channel by its id, from the ask until it ends or is released."""

    def __init__(self, max_open: int, open_timeout: float) -> None:
        self.max_open = max_open
        self.open_timeout = open_timeout
        self._open: dict[str, Channel] = {}
        self._changed = asyncio.Event()  # a channel went

    def __len__(self) -> int:
        return len(self._open)

    def add(self, channel: Channel) -> None:
        """Count ``channel`` as open, or Unavailable when the cap is reached."""
        if len(self._open) >= self.max_open:
            raise Unavailable(
                f"{self.max_open} shell sessions and commands are open already; try again later"
            )
        self._open[channel.channel_id] = channel

    async def open(self, state: DroneState, channel: Channel, request: ChannelRequest) -> None:
        """Ask the drone for ``channel`` and wait until it attaches; ``release``
        it when done (also after an error)."""
        self.add(channel)
        self.ask(state, channel.channel_id, request)
        await self.attached(channel)

    @staticmethod
    def ask(state: DroneState, channel_id: str, request: ChannelRequest) -> None:
        """Send the drone the request, or say why it cannot be asked."""
        link = state.link
        if link is None:
            hint = (
                " (via=ssh goes without the agent, if the drone has an ssh access setting)"
                if isinstance(request, ShellRequest | ExecRequest)
                else ""
            )
            raise FailedPrecondition(f"{state.name} is {state.status}: no control stream to ask over{hint}")
        if not speaks(state.features, request.feature):
            # Never ask an agent for what it said it cannot do.
            raise FailedPrecondition(f"the agent on {state.name} does not speak {request.feature}")
        if not link.open_channel(channel_id, request):
            raise Unavailable(f"{state.name} is not reading its control stream (its queue is full)")

    async def attached(self, channel: Channel) -> None:
        """Wait for the drone's call to attach, or Unavailable after ``open_timeout``."""
        try:
            await asyncio.wait_for(channel.agent_attached.wait(), self.open_timeout)
        except TimeoutError:
            channel.abort()
            self.forget(channel)
            raise Unavailable(
                f"{channel.drone} did not open the channel within {self.open_timeout:g}s"
            ) from None

    def forget(self, channel: Channel) -> None:
        if self._open.pop(channel.channel_id, None) is not None:
            self._changed.set()

    def release(self, channel: Channel) -> None:
        """End a channel (its call, if still up) and forget it."""
        channel.abort()
        self.forget(channel)

    def claim(self, channel_id: str, identity: Identity) -> Channel:
        """The channel a drone's Shell call attaches to: it must be this drone's, and waiting."""
        channel = self._open.get(channel_id)
        if channel is None:
            raise NotFound(f"no channel {channel_id[:40]!r} is waiting")
        if identity.kind == AGENT and identity.drone_id != channel.drone_id:
            # Logged by the caller (ChannelsService), a few per drone per window.
            raise PermissionDenied("that channel belongs to another drone")
        if channel.claimed:
            raise FailedPrecondition("that channel is attached already")
        channel.claimed = True
        return channel

    async def stop(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the open channels to end, then cut the rest."""
        await self._until(lambda: not self._open, grace)
        for channel in list(self._open.values()):
            channel.abort()

    async def _until(self, done: Callable[[], bool], timeout: float) -> None:
        """Wait until ``done()`` holds, checked each time a channel goes, for at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            self._changed.clear()
            await wait_event(self._changed, max(0.0, deadline - time.monotonic()))
