"""The Builds service: build logs and artifact uploads from drones.

Each call is checked against the build's owner: a drone may stream the
log of, and upload packages for, only the builds given to it.

A test build's (controller/testrunner.py) log lands beside the others; its
package goes to the test binhost, never staging.

A call that fails because of the controller itself (its database down,
its data disk full, a bug) is answered UNAVAILABLE: the drone keeps its
package and tries again later, and nothing counts against it
(``faults.own_fault``). Only the caller's mistakes get a final status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc

from swarm.controller.authz import AGENT, current_identity
from swarm.controller.bounds import BurstLog, Bursts
from swarm.controller.builds import BuildQueue
from swarm.controller.errors import SwarmError, Unavailable
from swarm.controller.faults import own_fault
from swarm.controller.gateway import grpc_status
from swarm.controller.staging import StagingBinhost
from swarm.controller.testrunner import TestRunner
from swarm.controller.unparsable import Unparsable
from swarm.v1 import build_pb2, build_pb2_grpc

log = logging.getLogger(__name__)

LOG_LIMIT = 256 * 2**20  # bytes of log kept per build


@contextlib.contextmanager
def _own_faults(what: str) -> Iterator[None]:
    """Turn the controller's own failures inside a call into Unavailable,
    which the drone retries (gateway.grpc_status answers it UNAVAILABLE)."""
    try:
        yield
    except (grpc.aio.AbortError, Unparsable):
        raise  # an Unparsable message is the drone's: ParseGuard answers INVALID_ARGUMENT
    except Exception as exc:
        why = own_fault(exc)
        if why is None and isinstance(exc, SwarmError) and type(exc) is not SwarmError:
            raise  # the caller's mistake, or a wait it is told about (Unavailable)
        if why is None:
            log.exception("taking %s failed in the controller", what)
            why = "the controller hit an internal error"
        else:
            log.warning("taking %s: %s (%s); the drone will retry", what, why, exc)
        raise Unavailable(f"{why}; try again later") from None


class BuildsService(build_pb2_grpc.BuildsServicer):
    def __init__(
        self,
        queue: BuildQueue | None,
        staging: StagingBinhost | None,
        logs: Path,
        noise: Bursts,
    ) -> None:
        # queue and staging are None when the controller runs without builds.
        self._queue = queue
        self._staging = staging
        self._logs = logs
        # What a drone reaching for another's build makes us log, bounded.
        self._refusals = BurstLog(log, noise)
        # The test builds' runner, once the controller runs one (test builds on).
        self.tests: TestRunner | None = None

    def log_path(self, build_id: str) -> Path:
        return self._logs / f"{build_id}.log"

    async def _own(self, build_id: str, context: grpc.aio.ServicerContext) -> None:
        if self._queue is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "builds are off on this controller")
            return
        owner = self._owner(build_id)
        if owner is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no active build {build_id[:64]!r}")
        identity = current_identity()
        if identity.kind == AGENT and identity.drone_id != owner:
            self._refusals.warning(
                "other drone's build",
                identity.drone_id or "",
                "drone %s tried to act on build %s of drone %s",
                identity.drone_id,
                build_id,
                owner,
            )
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "that build belongs to another drone")

    def _owner(self, build_id: str) -> str | None:
        if self.tests is not None and self.tests.owns(build_id):
            return self.tests.owner(build_id)
        return self._queue.owner(build_id) if self._queue is not None else None

    def _binhost(self, build_id: str) -> StagingBinhost | None:
        """Where the build's packages go: the test binhost for a test build, else staging."""
        if self.tests is not None and self.tests.owns(build_id):
            return self.tests.binhost
        return self._staging

    async def BuildLog(
        self,
        request_iterator: AsyncIterator[build_pb2.LogChunk],
        context: grpc.aio.ServicerContext,
    ) -> build_pb2.LogAck:
        size = 0
        try:
            with _own_faults("a build log"):
                size = await self._take_log(request_iterator, context)
        except SwarmError as exc:
            await context.abort(*grpc_status(exc))
        return build_pb2.LogAck(received=size)

    async def _take_log(
        self, request_iterator: AsyncIterator[build_pb2.LogChunk], context: grpc.aio.ServicerContext
    ) -> int:
        build_id: str | None = None
        size = 0
        path: Path | None = None
        async for chunk in request_iterator:
            if build_id is None:
                build_id = chunk.build_id
                await self._own(build_id, context)
                path = self.log_path(build_id)
                await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
                size = path.stat().st_size if path.exists() else 0
            elif chunk.build_id != build_id:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "one log stream carries one build")
            assert path is not None
            end = chunk.offset + len(chunk.data)
            if chunk.offset > size:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"log chunk at {chunk.offset}, expected {size}: resend from {size}",
                )
            if end <= size or size >= LOG_LIMIT:
                continue  # already held (a resend), or past the cap
            data = chunk.data[size - chunk.offset :]
            await asyncio.to_thread(_append, path, data)
            size += len(data)
        return size

    async def _current(self, build_id: str, context: grpc.aio.ServicerContext) -> None:
        # An attempt whose job was requeued must not put a second copy of the
        # package into staging next to the one the new attempt builds.
        why = self._queue.superseded(build_id) if self._queue is not None else None
        if why is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)

    async def QueryUpload(
        self,
        request: build_pb2.UploadQuery,
        context: grpc.aio.ServicerContext,
    ) -> build_pb2.UploadStatus:
        await self._own(request.build_id, context)
        await self._current(request.build_id, context)
        binhost = self._binhost(request.build_id)
        assert binhost is not None  # _own refused otherwise
        assert self._queue is not None
        self._queue.uploading(request.build_id)
        received, complete = 0, False
        try:
            with _own_faults(f"the upload query of build {request.build_id}"):
                received, complete = await binhost.status(
                    request.build_id, request.cpv, request.filename, request.size, request.sha256
                )
        except SwarmError as exc:
            await context.abort(*grpc_status(exc))
        return build_pb2.UploadStatus(received=received, complete=complete)

    async def Upload(
        self,
        request_iterator: AsyncIterator[build_pb2.ArtifactChunk],
        context: grpc.aio.ServicerContext,
    ) -> build_pb2.UploadStatus:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("query"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first chunk must carry the upload query"
            )
            raise AssertionError("abort raises")
        head = first
        query = head.query
        await self._own(query.build_id, context)
        await self._current(query.build_id, context)
        if query.cpv != self._queue_cpv(query.build_id):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"build {query.build_id} is not for {query.cpv}"
            )

        async def chunks() -> AsyncIterator[tuple[int, bytes, int]]:
            if head.data:
                yield head.offset, head.data, head.crc32
            async for chunk in request_iterator:
                yield chunk.offset, chunk.data, chunk.crc32

        binhost = self._binhost(query.build_id)
        assert binhost is not None  # _own refused otherwise
        assert self._queue is not None
        self._queue.uploading(query.build_id)
        received, complete = 0, False
        try:
            with _own_faults(f"the upload of build {query.build_id}"):
                received, complete = await binhost.receive(
                    query.build_id, query.cpv, query.filename, query.size, query.sha256, chunks()
                )
        except SwarmError as exc:
            await context.abort(*grpc_status(exc))
        return build_pb2.UploadStatus(received=received, complete=complete)

    def _queue_cpv(self, build_id: str) -> Any:
        if self.tests is not None and self.tests.owns(build_id):
            return self.tests.cpv_of(build_id)
        build = self._queue.builds.get(build_id) if self._queue is not None else None
        return build.cpv if build is not None else None


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)
