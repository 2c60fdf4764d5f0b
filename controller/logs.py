"""Logs for admins: a drone's named sources, asked for over a LOG channel
(shell.proto; the drone resolves and tails the file, see agent/logs.py),
and the controller's own ``control-plane`` log, tailed here.

Both read as pieces (``swarm.logtail.Piece``: bytes of the log, or a
notice that it was rotated or truncated). A drone's pieces arrive on its
Channels.Shell call and pass through a queue of ``PIECES`` items (each at
most the agent's 64 KiB chunk) to the one reader: a reader that stops
stops us reading the call, and HTTP/2 flow control stops the drone.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

from swarm import logtail
from swarm.controller.channel_frames import Closed, LogRequest
from swarm.controller.channels import Channel, Channels
from swarm.controller.errors import InvalidArgument, NotFound, Unavailable
from swarm.controller.fleet import DroneState
from swarm.logsources import CONTROL_PLANE, DRONE_SOURCES, path_like
from swarm.logtail import Piece

PIECES = 4
MAX_TEXT = 4 << 20  # bytes of a tail returned by the HTTP API at most


class LogStream(Channel):
    """One drone log on its channel; read with ``next()`` until it returns None."""

    def __init__(self, channel_id: str, state: DroneState) -> None:
        super().__init__(channel_id, state)
        self._pieces: asyncio.Queue[Piece] = asyncio.Queue(PIECES)
        self.error = ""

    async def on_output(self, data: bytes) -> None:
        await self._pieces.put(Piece(data))

    async def on_stderr(self, data: bytes) -> None:
        await self._pieces.put(Piece(notice=data.decode(errors="replace")))

    def _ended(self, closed: Closed | None, why: str, broken: str) -> None:
        if closed is not None:
            self.error = closed.error
        super()._ended(closed, why, broken)

    async def next(self) -> Piece | None:
        """The next piece, or None once the drone has sent all there is."""
        if not self._pieces.empty():
            return self._pieces.get_nowait()
        getter = asyncio.ensure_future(self._pieces.get())
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait({getter, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            getter.cancel()
            await asyncio.gather(getter, ended, return_exceptions=True)
        if getter.done() and not getter.cancelled():
            return getter.result()
        return self._pieces.get_nowait() if not self._pieces.empty() else None

    def check(self) -> None:
        """Raise what the drone said was wrong, if it sent nothing."""
        reason = self.exit.reason if self.exit is not None else "the drone ended the channel"
        if self.error == "not_found":
            raise NotFound(f"{self.drone}: {reason}")
        if self.error == "invalid_argument":
            raise InvalidArgument(f"{self.drone}: {reason}")
        if self.exit is None:
            raise Unavailable(f"{self.drone}: the log channel ended without a status")


async def drone_log(
    channels: Channels, state: DroneState, source: str, *, lines: int, follow: bool
) -> AsyncGenerator[Piece, None]:
    """A drone's log source as pieces, the first a notice naming its file.
    Errors the drone reports for the source (not found, invalid) are
    raised instead of the first piece."""
    if path_like(source):
        raise InvalidArgument(f"not a log source name: {source[:80]!r} (on a drone: {DRONE_SOURCES})")
    stream = LogStream(secrets.token_hex(16), state)
    try:
        await channels.open(state, stream, LogRequest(source, lines, follow))
        # The drone's first piece is a notice naming the file, or nothing and an error.
        piece = await stream.next()
        if piece is None:
            stream.check()
        while piece is not None:
            yield piece
            piece = await stream.next()
    finally:
        channels.release(stream)


@dataclass(frozen=True, slots=True)
class LocalLogs:
    """The controller's own sources."""

    control_plane: Path | None

    def path(self, source: str) -> Path:
        if source != CONTROL_PLANE:
            raise NotFound(f"no controller log source {source[:80]!r} (there is {CONTROL_PLANE})")
        if self.control_plane is None:
            raise NotFound("the controller logs to stderr only (no --log-file)")
        return self.control_plane

    async def pieces(self, source: str, *, lines: int, follow: bool) -> AsyncGenerator[Piece, None]:
        """Like a drone's: a first notice naming the file, then its tail."""
        path = self.path(source)
        if not path.is_file():
            raise NotFound(f"the controller's log {path} does not exist")
        yield Piece(notice=f"{CONTROL_PLANE}: {path}")
        tail = logtail.follow(path, lines=lines, follow=follow)
        async with contextlib.aclosing(tail):
            async for piece in tail:
                yield piece


@dataclass(slots=True)
class LogText:
    lines: list[str]
    notices: list[str]
    truncated: bool


async def collect(pieces: AsyncGenerator[Piece, None], limit: int = MAX_TEXT) -> LogText:
    """A whole (non-following) tail as lines; past ``limit`` bytes the rest is cut."""
    data = bytearray()
    notices = []
    truncated = False
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            if piece.notice:
                notices.append(piece.notice)
                continue
            data += piece.data
            if len(data) > limit:
                truncated = True
                del data[limit:]
                break
    return LogText(data.decode(errors="replace").splitlines(), notices, truncated)
