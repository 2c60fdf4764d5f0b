"""Many raw TCP connections to a web tier, and processes with few file
descriptors: what tests/test_connections.py and bench/idle_connections.py
throw at a controller."""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import sys
import time
from collections.abc import Iterator, Sequence

# Runs before the controller: lowers its open-files limit, then becomes it.
_LIMITED = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])"
)


def with_open_files_limit(args: Sequence[str], limit: int) -> list[str]:
    """``args`` run with RLIMIT_NOFILE ``limit`` (soft and hard)."""
    return [sys.executable, "-c", _LIMITED, str(limit), *args]


@contextlib.contextmanager
def open_files(wanted: int) -> Iterator[None]:
    """This process's soft open-files limit raised to ``wanted`` (at most the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(wanted, hard)), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect_many(
    port: int,
    count: int,
    sources: Sequence[str] = ("127.0.0.1",),
    send: bytes = b"",
    timeout: float = 20.0,
) -> list[socket.socket]:
    """``count`` connections to 127.0.0.1:``port`` from the loopback
    ``sources`` in turn, each sending ``send`` once connected and then
    nothing; returns once every connect has finished (made, or refused or
    reset by the server), or fails after ``timeout``."""
    socks: list[socket.socket] = []
    poller = select.poll()
    try:
        for i in range(count):
            sock = socket.socket()
            socks.append(sock)
            sock.setblocking(False)
            source = sources[i % len(sources)]
            if source != "127.0.0.1":
                sock.bind((source, 0))
            sock.connect_ex(("127.0.0.1", port))
            poller.register(sock, select.POLLOUT)
        pending = len(socks)
        by_fd = {sock.fileno(): sock for sock in socks}
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pending} of {count} connections still connecting after {timeout}s")
            for fd, _event in poller.poll(left * 1000):
                poller.unregister(fd)
                pending -= 1
                if send:
                    with contextlib.suppress(OSError):  # refused or reset: fine, it is done
                        by_fd[fd].send(send)
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks: Sequence[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the other end closed (EOF or reset); False while it is open."""
    try:
        return sock.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def request(port: int, data: bytes, source: str = "127.0.0.1", timeout: float = 10.0) -> bytes:
    """Send raw bytes to 127.0.0.1:``port`` from ``source`` and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
