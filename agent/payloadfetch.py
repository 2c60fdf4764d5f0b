"""Fetching a payload's bytes over Payloads.Fetch, into a file of the state dir.

The file grows chunk by chunk; a fetch cut off (the controller restarting,
the connection lost) asks again from the file's size, so what arrived is
never fetched twice. It stops at the signed size: the bytes are then
checked against the signed sha256 (payloadsig.check_bytes) by the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from swarm.backoff import Backoff
from swarm.payloadsig import PayloadRefused
from swarm.v1 import payload_pb2, payload_pb2_grpc

log = logging.getLogger(__name__)

# Ended with one of these, a fetch is resumed; any other answer is final.
RETRY = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
PATIENCE = 300.0
BACKOFF = Backoff(initial=0.5, cap=10.0)


class FetchFailed(Exception):
    """The bytes could not be had; one line saying why."""


def _held(path: Path, size: int) -> int:
    """How much of the payload ``path`` holds (more than ``size``: none of it)."""
    held = path.stat().st_size if path.exists() else 0
    if held > size:
        path.unlink()
        return 0
    return held


def _append(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b" if path.exists() else "wb") as out:
        out.truncate(offset)
        out.seek(offset)
        out.write(data)


async def fetch(
    channel: Callable[[], grpc.aio.Channel],
    kind: str,
    version: int,
    size: int,
    into: Path,
    *,
    patience: float = PATIENCE,
    backoff: Backoff = BACKOFF,
) -> None:
    """Fetch ``size`` bytes of ``kind`` ``version`` into ``into``, resuming
    from what it already holds. PayloadRefused if the controller sends more
    than was signed; FetchFailed if it refuses or stays away past ``patience``."""
    await asyncio.to_thread(into.parent.mkdir, parents=True, exist_ok=True)
    given_up_at = time.monotonic() + patience
    attempt = 0
    while True:
        offset = await asyncio.to_thread(_held, into, size)
        if offset == size:
            return
        try:
            async with channel() as ch:
                call = payload_pb2_grpc.PayloadsStub(ch).Fetch(
                    payload_pb2.PayloadRequest(kind=kind, version=version, offset=offset)
                )
                async for chunk in call:
                    if chunk.offset != offset:
                        raise FetchFailed(f"a chunk at {chunk.offset} where {offset} was asked for")
                    if offset + len(chunk.data) > size:
                        raise PayloadRefused(f"more bytes than the signed size {size}")
                    await asyncio.to_thread(_append, into, offset, chunk.data)
                    offset += len(chunk.data)
                    attempt = 0
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRY:
                raise FetchFailed(
                    f"the controller refused the fetch: {exc.code().name} {exc.details()}"
                ) from None
            if time.monotonic() >= given_up_at:
                raise FetchFailed(
                    f"fetch cut off for {patience:.0f}s: {exc.code().name} {exc.details()}"
                ) from None
            delay = backoff.delay(attempt)
            attempt += 1
            log.info(
                "fetch of %s v%d cut off at %d of %d bytes (%s); resuming in %.1fs",
                kind,
                version,
                offset,
                size,
                exc.code().name,
                delay,
            )
            await asyncio.sleep(delay)
            continue
        if offset < size:
            raise FetchFailed(f"the controller ended the fetch at {offset} of {size} bytes")
