"""Binhost files on the public tier: the staging binhost, the releases and
``current`` (web/releases.py) answer through ``BinhostFile``.

``BinhostFile`` is aiohttp's FileResponse (its conditional requests and
ranges unchanged: ETag and If-None-Match, If-Modified-Since and 304,
If-Range, Range and 206 with Content-Range, 416 for an unsatisfiable
range; Last-Modified and Accept-Ranges on every file) with another way to
send the body. FileResponse hands the socket to ``loop.sendfile``, which
sends what fits in the socket's buffer, waits on the event loop until it
drains, and sends again: a wake-up of the loop per socket buffer, and a
loop busy with downloads answers the API late (measured: 0.78x nginx for
one client, /api/v1/nodes up to 233 ms while 8 clients download; see
bench/binhosts_serving.py). Here a thread of the ``FileSender`` pool
sends the body with ``os.sendfile`` on the socket put in blocking mode,
so the kernel itself waits for the client, with neither the loop nor the
GIL in between, and the loop stays free for the API.

A slow client must not hold a thread: the socket gets a send timeout
(``SEND_TIMEOUT``), and a sendfile that waited that long, or a call of
SEND_CALL bytes that took longer than that (a client under 8 MB/s),
hands the rest of the file back to aiohttp's own way
(``loop.sendfile``). So does a response when every thread is busy. The thread sends a dup of the
socket's descriptor (a descriptor number closed by the loop meanwhile
could be reused by another connection); a cancelled response (the
client went, or the tier stops) shuts the socket down, which ends a
blocked sendfile at once, and waits for its thread before the transport
is touched again.

``served_file`` is the one rule for what is served: a regular file
inside the binhost's directory, reached without a hidden name, a ``..``
or a symlink out. No listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import IO, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_request import BaseRequest

from swarm.controller.errors import NotFound

log = logging.getLogger(__name__)

# Downloads sent by threads at once; more wait on the event loop instead.
SENDERS = 16
# A client that takes no byte for this long, or a call's bytes in more
# than this (under 8 MB/s), is handed to the event loop.
SEND_TIMEOUT = 1.0
# Bytes per sendfile call: between calls the thread sees a stop and times the client.
SEND_CALL = 8 << 20


def served_file(base: Path, tail: str, what: str) -> Path:
    """The regular file ``tail`` (a URL path's tail, '/'-separated) inside
    the directory ``base``, or NotFound. Runs in a thread: it stats and
    resolves. ``what`` names the binhost in the message."""
    parts = tail.split("/")
    # Hidden names too: a binhost has none worth serving (partial writes), and no directory is listed.
    if not tail or any(not p or p.startswith(".") for p in parts):
        raise NotFound(f"no file {tail[:200]!r} in {what}")
    root = base.resolve()
    target = root.joinpath(*parts).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise NotFound(f"no file {tail[:200]!r} in {what}")
    return target


class FileSender:
    """The threads that send binhost files (see the module doc): one per
    download, at most ``senders`` at once, gone when their download is;
    ``close`` stops them and waits for them (each ends within its send
    timeout, or at once when its response is cancelled)."""

    def __init__(self, senders: int = SENDERS, send_timeout: float = SEND_TIMEOUT) -> None:
        self.senders = senders
        self.send_timeout = send_timeout
        self._free = senders
        self._stopping = threading.Event()
        self._running: set[asyncio.Future[int]] = set()
        # What the threads did, for tests and curious admins: bytes they sent,
        # and responses they handed back to the event loop unfinished.
        self.bytes_sent = 0
        self.handed_back = 0

    @property
    def busy(self) -> int:
        return self.senders - self._free

    def take(self) -> bool:
        """A thread for one response, or False when every one is busy (or closing)."""
        if self._free <= 0 or self._stopping.is_set():
            return False
        self._free -= 1
        return True

    def give_back(self) -> None:
        self._free += 1

    async def send(self, sock_fd: int, file_fd: int, offset: int, count: int, cancel: threading.Event) -> int:
        """Bytes sent from ``file_fd`` at ``offset`` (up to ``count``) to the
        blocking socket ``sock_fd``, by a thread of its own (taken before)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        args = (sock_fd, file_fd, offset, count, cancel, self._stopping, self.send_timeout)

        def work() -> None:
            try:
                outcome: tuple[int, BaseException | None] = (_send_blocking(*args), None)
            except BaseException as exc:
                outcome = (0, exc)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, done, *outcome)

        self._running.add(done)
        done.add_done_callback(self._running.discard)
        threading.Thread(target=work, name="binhost-send", daemon=True).start()
        return await done

    async def close(self) -> None:
        self._stopping.set()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


def _settle(done: asyncio.Future[int], sent: int, exc: BaseException | None) -> None:
    if done.done():
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(sent)


def _send_blocking(
    sock_fd: int,
    file_fd: int,
    offset: int,
    count: int,
    cancel: threading.Event,
    stopping: threading.Event,
    slow_after: float,
) -> int:
    """Runs in a sender thread. Returns early (with what was sent) when the
    client is slow, on a cancel or on a stop: a slow client took nothing
    for the socket's send timeout, or took a whole call's SEND_CALL bytes
    more slowly than that (under SEND_CALL / ``slow_after`` bytes a second)."""
    sent = 0
    while sent < count and not cancel.is_set() and not stopping.is_set():
        asked = min(count - sent, SEND_CALL)
        started = time.monotonic()
        try:
            done = os.sendfile(sock_fd, file_fd, offset + sent, asked)
        except BlockingIOError:
            break  # the send timeout passed with no byte taken
        except InterruptedError:
            continue
        if done == 0:
            break  # the file is shorter than it was: aiohttp's path ends it the same way
        sent += done
        if done < asked or time.monotonic() - started > slow_after:
            break
    return sent


def _send_timeout(sock: socket.socket, seconds: float) -> None:
    whole = int(seconds)
    timeval = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


SENDER = web.AppKey("binhost_sender", FileSender)


def install(app: web.Application, senders: int = SENDERS, send_timeout: float = SEND_TIMEOUT) -> None:
    """Give the tier its sender threads (none: every file is sent by the
    event loop), stopped when the tier is cleaned up."""
    if senders < 1:
        return
    sender = FileSender(senders, send_timeout)
    app[SENDER] = sender

    async def _close(_app: web.Application) -> None:
        await sender.close()

    app.on_cleanup.append(_close)


class BinhostFile(web.FileResponse):
    """FileResponse that sends its body from a sender thread (module doc)."""

    async def _sendfile(
        self, request: BaseRequest, fobj: IO[Any], offset: int, count: int
    ) -> AbstractStreamWriter:
        writer = await web.StreamResponse.prepare(self, request)  # the head, into the transport
        assert writer is not None
        transport = request.transport
        sender = request.app.get(SENDER) if isinstance(request, web.Request) else None
        raw = transport.get_extra_info("socket") if transport is not None else None
        if (
            sender is None
            or raw is None
            or transport is None
            or self.compression
            # sendfile on the socket itself would go around TLS.
            or transport.get_extra_info("sslcontext") is not None
            # The head is still queued (the client reads nothing): the loop sends that first.
            or transport.get_write_buffer_size() > 0
            or transport.is_closing()
            or not sender.take()
        ):
            return await super()._sendfile(request, fobj, offset, count)
        try:
            sent = await self._threaded(sender, transport, raw.fileno(), fobj, offset, count)
        finally:
            sender.give_back()
        sender.bytes_sent += sent
        if sent < count:
            # A slow client, or the tier stops: the rest as aiohttp sends it.
            sender.handed_back += 1
            return await super()._sendfile(request, fobj, offset + sent, count - sent)
        await web.StreamResponse.write_eof(self)
        return writer

    async def _threaded(
        self,
        sender: FileSender,
        transport: asyncio.Transport,
        fd: int,
        fobj: IO[Any],
        offset: int,
        count: int,
    ) -> int:
        reading = transport.is_reading()
        transport.pause_reading()
        sock = socket.socket(fileno=os.dup(fd))
        cancel = threading.Event()
        try:
            # The dup shares the original's blocking flag: the loop has neither a reader nor a
            # writer on this socket until it is non-blocking again (reading paused, nothing queued).
            sock.setblocking(True)
            _send_timeout(sock, sender.send_timeout)
            job = asyncio.ensure_future(sender.send(sock.fileno(), fobj.fileno(), offset, count, cancel))
            try:
                return await asyncio.shield(job)
            except asyncio.CancelledError:
                # The response is given up: end a blocked sendfile now, and wait for the thread.
                cancel.set()
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(Exception):
                    await job
                raise
        finally:
            with contextlib.suppress(OSError):
                _send_timeout(sock, 0.0)
                sock.setblocking(False)
            sock.close()
            if reading and not transport.is_closing():
                transport.resume_reading()
