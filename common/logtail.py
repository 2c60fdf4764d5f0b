"""Tail a log file and follow it by name, as ``tail -F`` does.

Used on drones (the agent's own log, build logs, Portage's build logs) and
on the controller (its control-plane log). Following is by name: when the
path names another file (logrotate moved the old one away and a new one
was created) the rest of the old file is read and the new one followed
from its start; when the file shrinks under the read position (truncated
in place, ``copytruncate``) it is read again from its start. Each of those
is reported as a notice between the pieces of data, so a reader knows why
lines may repeat or be missing.

Polling rather than inotify: the standard library has no inotify, a
quarter of a second is quick enough for a person watching, and the same
code then works on any file system (NFS included). Reads are bounded
(``chunk`` bytes at a time) and the caller awaits each piece, so a slow
reader stops the tail: nothing here holds more than one chunk.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAX_LINES = 10_000  # a tail of more is refused by the callers
SCAN_LIMIT = 8 << 20  # bytes from the end searched for the last N lines at most
CHUNK = 64 << 10
POLL = 0.25
BLOCK = 64 << 10


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes of the log, or (with ``notice``) a note about the file itself."""

    data: bytes = b""
    notice: str = ""


def tail_start(fh: BinaryIO, lines: int, limit: int = SCAN_LIMIT) -> int:
    """The offset where the last ``lines`` lines of the file begin (a last
    line without its newline counts as a line). Searches at most ``limit``
    bytes back; a longer tail starts there."""
    end = fh.seek(0, os.SEEK_END)
    if lines <= 0 or end == 0:
        return end
    floor = max(0, end - limit)
    pos = end
    newlines = 0
    # A final newline ends the last line rather than starting an empty one.
    fh.seek(end - 1)
    skip_last = fh.read(1) == b"\n"
    while pos > floor:
        step = min(BLOCK, pos - floor)
        pos -= step
        fh.seek(pos)
        block = fh.read(step)
        if skip_last and pos + step == end:
            block = block[:-1]
        index = len(block)
        while True:
            index = block.rfind(b"\n", 0, index)
            if index < 0:
                break
            newlines += 1
            if newlines == lines:
                return pos + index + 1
    return floor


def _identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


async def follow(
    path: Path, *, lines: int, follow: bool, poll: float = POLL, chunk: int = CHUNK
) -> AsyncGenerator[Piece, None]:
    """The last ``lines`` lines of ``path``, then (with ``follow``) what is
    written to it, for as long as the caller iterates. Raises
    FileNotFoundError (or another OSError) if the file cannot be opened at
    first; later, a missing file is waited for."""
    fh = path.open("rb")
    try:
        current = _identity(os.fstat(fh.fileno()))
        fh.seek(tail_start(fh, lines))
        while True:
            data = fh.read(chunk)
            if data:
                yield Piece(data)
                continue
            if not follow:
                return
            try:
                named = os.stat(path)
            except FileNotFoundError:
                named = None  # moved away and not created again yet: the old file may still grow
            if named is not None and _identity(named) != current:
                # Written between our last read and the rename: still ours to show.
                while data := fh.read(chunk):
                    yield Piece(data)
                try:
                    fresh = path.open("rb")
                except FileNotFoundError:
                    await asyncio.sleep(poll)
                    continue
                fh.close()
                fh = fresh
                current = _identity(os.fstat(fh.fileno()))
                yield Piece(notice=f"{path.name} was rotated: following the new file")
                continue
            if os.fstat(fh.fileno()).st_size < fh.tell():
                fh.seek(0)
                yield Piece(notice=f"{path.name} was truncated: reading it again from the start")
                continue
            await asyncio.sleep(poll)
    finally:
        fh.close()
