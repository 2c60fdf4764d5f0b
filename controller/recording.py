"""Terminal recordings: one asciinema v2 cast file per shell session, and the
directory that keeps them (listing, retention).

A cast is a JSON header line, then one ``[seconds, kind, text]`` line per
event: ``o`` output (UTF-8, decoded across message boundaries), ``r`` a
resize (``COLSxROWS``), ``m`` a marker (here: the size cap was reached).
The header's ``swarm`` object says whose session it was.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import json
import logging
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from swarm.controller.errors import NotFound
from swarm.tasks import wait_event

log = logging.getLogger(__name__)

SESSION_ID_RE = re.compile(r"^s-[0-9a-f]{16}\Z")
TERM = "xterm-256color"
PENDING = 1 << 20  # bytes of output waiting for the file at most
LINGER = 0.1  # seconds output gathers before it is written ...
BURST = 64 * 1024  # ... unless this much is waiting
LISTED = 200
MAX_TIMESTAMP = 253402300800  # 10000-01-01: a header's timestamp past it (or NaN) is not believed


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    id: str
    drone_id: str
    drone: str
    opened_by: str
    started_at: float
    size: int


@dataclass(frozen=True, slots=True)
class CastEnv:
    TERM: str


@dataclass(frozen=True, slots=True)
class CastOwner:
    """The header's ``swarm`` object: whose session the cast is."""

    session: str
    drone_id: str
    drone: str
    opened_by: str
    via: str


@dataclass(frozen=True, slots=True)
class CastHeader:
    """The first line of a cast: asciicast v2's header, and ours."""

    version: Literal[2]
    width: int
    height: int
    timestamp: int
    title: str
    env: CastEnv
    swarm: CastOwner

    def line(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self), ensure_ascii=False) + "\n").encode()


def cast_header(
    session_id: str, drone_id: str, drone: str, opened_by: str, via: str, rows: int, cols: int, at: float
) -> CastHeader:
    return CastHeader(
        version=2,
        width=cols,
        height=rows,
        timestamp=int(at),
        title=f"{drone} by {opened_by}",
        env=CastEnv(TERM),
        swarm=CastOwner(session_id, drone_id, drone, opened_by, via),
    )


class Recorder:
    """One cast file, written by a thread, size-capped.

    ``output`` only queues (bounded by PENDING: past it the caller waits for
    the file); the writer thread decodes UTF-8 incrementally and
    JSON-encodes, so the event loop does neither file I/O nor encoding.
    """

    def __init__(self, path: Path, header: CastHeader, max_bytes: int) -> None:
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
        self._file: IO[bytes] | None = None
        self.size = 0
        self.truncated = False
        self.failed = False

    async def run(self) -> None:
        """The writer: until close() and everything queued is in the file."""
        try:
            await asyncio.to_thread(self._open)
            while True:
                await self._wake.wait()
                if not self._closing and self._pending_bytes < BURST:
                    # Let output gather: one hop to the writer thread per burst, not per
                    # keystroke; a flood fills a burst at once and is written straight away.
                    self._burst.clear()
                    await wait_event(self._burst, LINGER)
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
        line = self._header.line()
        self._file.write(line)
        self._file.flush()
        self.size = len(line)

    def _write(self, batch: list[tuple[float, str, bytes]]) -> None:
        if self.truncated or self._file is None:
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
        self._file.write(b"".join(lines))
        self._file.flush()

    def _queue(self, kind: str, data: bytes) -> None:
        if self.truncated or self.failed or self._closing:
            return
        self._pending.append((time.monotonic() - self._started, kind, data))
        self._pending_bytes += len(data)
        self._wake.set()
        if self._pending_bytes >= BURST:
            self._burst.set()

    async def output(self, data: bytes) -> None:
        self._queue("o", data)
        if self._pending_bytes > PENDING:
            self._drained.clear()
            await self._drained.wait()

    def resize(self, rows: int, cols: int) -> None:
        self._queue("r", f"{cols}x{rows}".encode())

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._burst.set()


class Recordings:
    """The directory of cast files, named by session id. Its methods do file
    I/O: call them in a thread (``asyncio.to_thread``)."""

    def __init__(self, directory: Path, max_total_bytes: int, retention: float) -> None:
        self.directory = directory
        self._max_total = max_total_bytes
        self._retention = retention

    def path(self, session_id: str) -> Path:
        """Where a session's cast is (no I/O); NotFound for what is not a session id."""
        if not SESSION_ID_RE.match(session_id):
            raise NotFound(f"no shell session {session_id[:40]!r}")
        return self.directory / f"{session_id}.cast"

    def listing(self) -> list[RecordingInfo]:
        """The newest LISTED recordings, newest first, as their headers say."""
        found = []
        for path in self.directory.glob("s-*.cast"):
            try:
                stat = path.stat()
                with path.open("rb") as fh:
                    header = json.loads(fh.readline(65536))
            except (OSError, ValueError):
                continue
            if not isinstance(header, dict):
                continue  # not a cast of ours
            meta = header.get("swarm")
            meta = meta if isinstance(meta, dict) else {}
            timestamp = header.get("timestamp")
            started = stat.st_mtime
            if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
                started = float(timestamp) if 0 <= timestamp < MAX_TIMESTAMP else started
            found.append(
                RecordingInfo(
                    id=path.stem,
                    drone_id=str(meta.get("drone_id", "")),
                    drone=str(meta.get("drone", "")),
                    opened_by=str(meta.get("opened_by", "")),
                    started_at=started,
                    size=stat.st_size,
                )
            )
        found.sort(key=lambda r: r.started_at, reverse=True)
        return found[:LISTED]

    def prune(self, live: Collection[str]) -> None:
        """Retention: recordings older than the retention go, then the oldest
        until the total fits (never one of a ``live`` session)."""
        files = []
        for path in self.directory.glob("s-*.cast"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                files.append((stat.st_mtime, stat.st_size, path))
        files.sort()
        cutoff = time.time() - self._retention
        total = sum(size for _, size, _ in files)
        for mtime, size, path in files:
            if path.stem in live:
                continue
            if mtime < cutoff or total > self._max_total:
                with contextlib.suppress(OSError):
                    path.unlink()
                    total -= size
                    log.info("recording %s removed by retention", path.name)
