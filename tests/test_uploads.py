"""The build protocol (StartBuild, build events, the Builds service's
uploads), spoken by a hand-made gRPC client.

An enrolled identity ("raw") opens a control stream by hand, the
controller gives it a real build of a queued package, and the test
uploads a real gpkg (written once per module by Portage's own gpkg code,
tools/gpkgs.py) for that build: chunk by chunk, corrupted, cut off and resumed,
twice, with a wrong digest, for another package, and from another
drone's identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import time
import urllib.request
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import prefix as pfx
import pytest

from swarm.v1 import build_pb2, build_pb2_grpc, fleet_pb2, gateway_pb2, gateway_pb2_grpc

from support.gpkgs import write as write_gpkgs
from support.procs import Controller, agent_credentials, enroll_here, http, wait_for

# A controller with its Portage worker per test.
pytestmark = pytest.mark.timeout(600)

CPV = "swarm-test/leaf-data-1"
OTHER_CPV = "swarm-test/leaf-script-1"
CHUNK = 1024
GRACE = 2.0
T = TypeVar("T")


# -- fixtures -------------------------------------------------------------------


@dataclass(frozen=True)
class Gpkg:
    cpv: str
    name: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Gpkgs:
    wanted: Gpkg  # the package the controller asks for
    other: Gpkg  # a real gpkg of another package


@pytest.fixture(scope="module")
def gpkgs(tmp_path_factory: pytest.TempPathFactory) -> Gpkgs:
    # Written by Portage's own gpkg code (tools/gpkgs.py), as a drone's emerge
    # would leave them: what the controller checks of an upload (the gpkg's
    # own metadata, its digest) is there, for a fraction of an emerge build's
    # CPU. The tests of builds (test_builds.py) upload what emerge built.
    root = tmp_path_factory.mktemp("uploads-drone")
    drone = pfx.create_prefix(pfx.PrefixConfig(root / "prefix", pfx.Role.DRONE))
    write_gpkgs(drone, drone.pkgdir, CPV, OTHER_CPV)

    def built(cpv: str) -> Gpkg:
        pf = cpv.partition("/")[2]
        found = sorted(drone.pkgdir.rglob(f"{pf}*.gpkg.tar"))
        assert len(found) == 1, found
        return Gpkg(cpv, found[0].name, found[0].read_bytes())

    wanted, other = built(CPV), built(OTHER_CPV)
    assert len(wanted.data) > 4 * CHUNK, "the test needs a package of several chunks"
    return Gpkgs(wanted, other)


@dataclass(frozen=True)
class Identity:
    """An enrolled drone identity driven by hand instead of by an agent."""

    name: str
    drone_id: str
    creds: grpc.ChannelCredentials


@dataclass(frozen=True)
class Bench:
    controller: Controller
    staging_pkgdir: Path
    raw: Identity
    other: Identity

    @property
    def target(self) -> str:
        return self.controller.grpc_target

    def queue(self, *atoms: str) -> dict[str, Any]:
        status, body = self.controller.admin(
            "POST", "/admin/api/queue", json.dumps({"atoms": list(atoms)}).encode()
        )
        assert status == 201, body
        assert isinstance(body, dict), body
        return body

    def staged_cpvs(self) -> list[str]:
        status, index = http("GET", self.controller.info["staging_url"] + "/Packages")
        if status == 404:
            return []  # no package accepted yet: no index either
        assert status == 200, index
        return [line.split(":", 1)[1].strip() for line in index.splitlines() if line.startswith("CPV:")]

    def staged_files(self) -> list[Path]:
        return sorted(self.staging_pkgdir.rglob("*.gpkg.tar"))

    def part(self, build_id: str, filename: str) -> Path:
        return self.controller.data_dir / "uploads" / build_id / (filename + ".part")

    def job(self, job_id: str) -> dict[str, Any]:
        jobs = self.controller.get("/api/v1/queue?limit=5000")["jobs"]
        return next(j for j in jobs if j["id"] == job_id)


def identity(controller: Controller, state_dir: Path, name: str) -> Identity:
    return Identity(name, enroll_here(controller, name, state_dir), agent_credentials(state_dir))


@contextlib.contextmanager
def make_bench(tmp_path: Path, *flags: str) -> Iterator[Bench]:
    ctl_prefix = pfx.create_prefix(pfx.PrefixConfig(tmp_path / "ctl-prefix", pfx.Role.CONTROLLER))
    controller = Controller(
        tmp_path, "--portage-eprefix", str(ctl_prefix.root), "--build-grace", str(GRACE), *flags
    )
    controller.start()
    try:
        yield Bench(
            controller,
            ctl_prefix.pkgdir,
            identity(controller, tmp_path / "raw", "raw"),
            identity(controller, tmp_path / "other", "other"),
        )
    finally:
        controller.kill()


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    with make_bench(tmp_path) as made:
        yield made


# -- a control stream by hand --------------------------------------------------------


class ControlStream:
    """Hello, heartbeats and build events out; StartBuilds in. One reader
    task and one writer task, as the real agent has."""

    def __init__(self, channel: grpc.aio.Channel, who: Identity) -> None:
        self._call = gateway_pb2_grpc.DroneGatewayStub(channel).Connect()
        self._who = who
        self._outbox: asyncio.Queue[gateway_pb2.AgentMessage] = asyncio.Queue()
        self.starts: asyncio.Queue[build_pb2.StartBuild] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        hello = fleet_pb2.Hello(
            drone_id=self._who.drone_id,
            name=self._who.name,
            cores=2,
            drone_type=fleet_pb2.DRONE_TYPE_LXC,
            heartbeat_interval_ms=500,
            agent_version="test",
        )
        await self._call.write(gateway_pb2.AgentMessage(hello=hello))
        self._tasks = [
            asyncio.create_task(self._read(), name="control-read"),
            asyncio.create_task(self._write(), name="control-write"),
        ]

    async def _read(self) -> None:
        while (message := await self._call.read()) is not grpc.aio.EOF:
            if message.WhichOneof("body") == "start_build":
                await self.starts.put(message.start_build)

    async def _write(self) -> None:
        seq = 0
        while True:
            try:
                message = await asyncio.wait_for(self._outbox.get(), 0.25)
            except TimeoutError:
                seq += 1
                message = gateway_pb2.AgentMessage(heartbeat=fleet_pb2.Heartbeat(seq=seq, load1=0.1))
            await self._call.write(message)

    def report(self, start: build_pb2.StartBuild, kind: build_pb2.BuildEvent.Kind, **fields: Any) -> None:
        event = build_pb2.BuildEvent(build_id=start.build_id, job_id=start.job_id, kind=kind, **fields)
        self._outbox.put_nowait(gateway_pb2.AgentMessage(build_event=event))

    async def close(self) -> None:
        self._call.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def control_stream(bench: Bench) -> AsyncIterator[ControlStream]:
    async with grpc.aio.secure_channel(bench.target, bench.raw.creds) as channel:
        stream = ControlStream(channel, bench.raw)
        await stream.open()
        try:
            await asyncio.to_thread(
                wait_for,
                lambda: (n := bench.controller.node(bench.raw.name)) and n["status"] == "online",
                what="the hand-driven drone online",
            )
            yield stream
        finally:
            await stream.close()


@contextlib.asynccontextmanager
async def assigned_build(
    bench: Bench, atom: str
) -> AsyncIterator[tuple[ControlStream, build_pb2.StartBuild]]:
    """A control stream for raw, and the build the controller gives it for the atom."""
    async with control_stream(bench) as stream:
        await asyncio.to_thread(bench.queue, atom)
        start = await asyncio.wait_for(stream.starts.get(), 60)
        assert start.cpv == CPV and start.build_id and start.job_id
        yield stream, start


# -- the upload client -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def builds_stub(bench: Bench, who: Identity | None = None) -> AsyncIterator[build_pb2_grpc.BuildsStub]:
    async with grpc.aio.secure_channel(bench.target, (who or bench.raw).creds) as channel:
        yield build_pb2_grpc.BuildsStub(channel)


def query(start: build_pb2.StartBuild, gpkg: Gpkg, **override: Any) -> build_pb2.UploadQuery:
    fields: dict[str, Any] = {
        "build_id": start.build_id,
        "cpv": start.cpv,
        "filename": gpkg.name,
        "size": len(gpkg.data),
        "sha256": gpkg.sha256,
        **override,
    }
    return build_pb2.UploadQuery(**fields)


def chunks(
    data: bytes, start: int, end: int, *, corrupt_at: int | None = None
) -> Iterator[build_pb2.ArtifactChunk]:
    for offset in range(start, end, CHUNK):
        piece = data[offset : min(offset + CHUNK, end)]
        crc = zlib.crc32(piece) ^ (0xFFFF if offset == corrupt_at else 0)
        yield build_pb2.ArtifactChunk(offset=offset, data=piece, crc32=crc)


async def upload(
    stub: build_pb2_grpc.BuildsStub,
    q: build_pb2.UploadQuery,
    data: bytes,
    *,
    start: int = 0,
    end: int | None = None,
    corrupt_at: int | None = None,
) -> build_pb2.UploadStatus:
    """One Upload stream: the query, then data[start:end] in chunks."""

    async def stream() -> AsyncIterator[build_pb2.ArtifactChunk]:
        yield build_pb2.ArtifactChunk(query=q, offset=start)
        for chunk in chunks(data, start, len(data) if end is None else end, corrupt_at=corrupt_at):
            yield chunk

    status: build_pb2.UploadStatus = await stub.Upload(stream(), timeout=120)
    return status


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def until_busy(stub: build_pb2_grpc.BuildsStub, q: build_pb2.UploadQuery) -> None:
    """Until QueryUpload says a stream is writing the file (UNAVAILABLE)."""
    while True:
        try:
            await stub.QueryUpload(q, timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                return
            raise
        await asyncio.sleep(0.02)


async def settled(call: Callable[[], Awaitable[T]], timeout: float = 15.0) -> T:
    """The call's answer once the controller no longer says UNAVAILABLE (a
    dropped stream still ending on its side)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


def staged_events(bench: Bench) -> list[dict[str, Any]]:
    return bench.controller.events(type="package_staged")


# -- tests ------------------------------------------------------------------------------


def test_a_corrupted_chunk_is_refused_and_the_bytes_before_it_are_kept(bench: Bench, gpkgs: Gpkgs) -> None:
    gpkg = gpkgs.wanted
    bad = 3 * CHUNK

    async def scenario() -> None:
        async with assigned_build(bench, "swarm-test/leaf-data") as (_, start), builds_stub(bench) as stub:
            q = query(start, gpkg)
            # Nothing after the bad chunk: a write after the refusal can end the call INTERNAL.
            error = await rpc_error(upload(stub, q, gpkg.data, end=bad + CHUNK, corrupt_at=bad))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"chunk at offset {bad} is corrupt (CRC-32 mismatch); resume from {bad}" in (
                error.details() or ""
            )
            held = await stub.QueryUpload(q, timeout=30)
            assert (held.received, held.complete) == (bad, False)
            assert bench.part(start.build_id, gpkg.name).read_bytes() == gpkg.data[:bad]
            assert not await asyncio.to_thread(bench.staged_cpvs)

            # Resumed from the reported offset, the upload completes.
            done = await upload(stub, q, gpkg.data, start=held.received)
            assert (done.received, done.complete) == (len(gpkg.data), True)
            assert await asyncio.to_thread(bench.staged_cpvs) == [CPV]

    asyncio.run(scenario())


def test_an_upload_cut_off_resumes_from_what_the_controller_holds(bench: Bench, gpkgs: Gpkgs) -> None:
    gpkg = gpkgs.wanted
    size = len(gpkg.data)
    third = size // 3 // CHUNK * CHUNK

    async def scenario() -> build_pb2.StartBuild:
        async with (
            assigned_build(bench, "swarm-test/leaf-data") as (stream, start),
            builds_stub(bench) as stub,
        ):
            q = query(start, gpkg)
            stream.report(start, build_pb2.BuildEvent.STARTED)

            # 1. The connection drops in the middle of a stream: whatever the
            #    controller took in is kept, on a chunk boundary.
            call = stub.Upload(timeout=120)
            await call.write(build_pb2.ArtifactChunk(query=q, offset=0))
            for chunk in chunks(gpkg.data, 0, third):
                await call.write(chunk)
            # While a stream writes the file, the controller will not say how
            # much it holds (the number is not final): that shows it took the stream.
            await asyncio.wait_for(until_busy(stub, q), 30)
            call.cancel()
            held = await settled(lambda: stub.QueryUpload(q, timeout=30))
            assert not held.complete and held.received <= third and held.received % CHUNK == 0

            # 2. A stream that ends early (the agent stopped, say) keeps all it sent.
            status = await settled(lambda: upload(stub, q, gpkg.data, start=held.received, end=2 * third))
            assert (status.received, status.complete) == (2 * third, False)
            held = await stub.QueryUpload(q, timeout=30)
            assert (held.received, held.complete) == (2 * third, False)

            # 3. The rest, from the offset the controller reports: verified and staged.
            done = await upload(stub, q, gpkg.data, start=held.received)
            assert (done.received, done.complete) == (size, True)
            assert not bench.part(start.build_id, gpkg.name).exists()

            # The build reports success; the job is done, its package served by the binhost.
            stream.report(start, build_pb2.BuildEvent.SUCCEEDED, duration_s=1.0, artifacts=[gpkg.name])
            await asyncio.to_thread(
                wait_for, lambda: bench.job(start.job_id)["state"] == "done", what="the job done"
            )
            return start

    start = asyncio.run(scenario())
    assert bench.staged_cpvs() == [CPV]
    files = bench.staged_files()
    assert len(files) == 1 and files[0].read_bytes() == gpkg.data
    # Served by the binhost byte for byte as uploaded.
    url = f"{bench.controller.info['staging_url']}/{files[0].relative_to(bench.staging_pkgdir)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == gpkg.data
    events = staged_events(bench)
    assert [(e["data"]["cpv"], e["data"]["build_id"]) for e in events] == [(CPV, start.build_id)]


def test_uploading_a_complete_package_again_is_a_no_op(bench: Bench, gpkgs: Gpkgs) -> None:
    gpkg = gpkgs.wanted

    async def scenario() -> None:
        async with assigned_build(bench, "swarm-test/leaf-data") as (_, start), builds_stub(bench) as stub:
            q = query(start, gpkg)
            first = await upload(stub, q, gpkg.data)
            assert first.complete
            staged = await asyncio.to_thread(bench.staged_files)
            mtime = staged[0].stat().st_mtime_ns

            again = await upload(stub, q, gpkg.data)
            assert (again.received, again.complete) == (len(gpkg.data), True)
            held = await stub.QueryUpload(q, timeout=30)
            assert (held.received, held.complete) == (len(gpkg.data), True)

            assert await asyncio.to_thread(bench.staged_files) == staged
            assert staged[0].stat().st_mtime_ns == mtime, "the package was injected again"
            assert await asyncio.to_thread(bench.staged_cpvs) == [CPV]
            assert len(await asyncio.to_thread(staged_events, bench)) == 1

    asyncio.run(scenario())


def test_a_wrong_sha256_is_refused_and_the_partial_discarded(bench: Bench, gpkgs: Gpkgs) -> None:
    gpkg = gpkgs.wanted

    async def scenario() -> None:
        async with assigned_build(bench, "swarm-test/leaf-data") as (_, start), builds_stub(bench) as stub:
            lying = query(start, gpkg, sha256=hashlib.sha256(b"something else").hexdigest())
            error = await rpc_error(upload(stub, lying, gpkg.data))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "sha256 mismatch; the partial upload was discarded" in (error.details() or "")
            held = await stub.QueryUpload(lying, timeout=30)
            assert (held.received, held.complete) == (0, False)
            assert not bench.part(start.build_id, gpkg.name).exists()
            assert not await asyncio.to_thread(bench.staged_cpvs)

            # With the right digest the same file goes through from the start.
            done = await upload(stub, query(start, gpkg), gpkg.data)
            assert done.complete
            assert await asyncio.to_thread(bench.staged_cpvs) == [CPV]

    asyncio.run(scenario())


def test_a_package_that_is_not_the_builds_is_refused(bench: Bench, gpkgs: Gpkgs) -> None:
    gpkg, other = gpkgs.wanted, gpkgs.other

    async def scenario() -> None:
        async with assigned_build(bench, "swarm-test/leaf-data") as (_, start), builds_stub(bench) as stub:
            # Announced as another package than the build's: refused on the query alone, so
            # only the query is sent (data written after the refusal can end the call
            # INTERNAL on the client's side instead: grpc-python, seen under load).
            error = await rpc_error(upload(stub, query(start, other, cpv=OTHER_CPV), other.data, end=0))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert f"is not for {OTHER_CPV}" in (error.details() or "")

            # Announced as the build's package, but the gpkg's own metadata says otherwise.
            disguised = query(start, other, filename=gpkg.name)
            error = await rpc_error(upload(stub, disguised, other.data))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"the package is {OTHER_CPV}, not {CPV}" in (error.details() or "")
            held = await stub.QueryUpload(disguised, timeout=30)
            assert (held.received, held.complete) == (0, False)

            # Not a gpkg at all.
            junk = Gpkg(CPV, gpkg.name, b"\0" * (3 * CHUNK))
            error = await rpc_error(upload(stub, query(start, junk), junk.data))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid binary package" in (error.details() or "")

            assert not await asyncio.to_thread(bench.staged_cpvs)
            assert not await asyncio.to_thread(bench.staged_files)
            assert not await asyncio.to_thread(staged_events, bench)
            # The real package still goes through afterwards.
            assert (await upload(stub, query(start, gpkg), gpkg.data)).complete
            assert await asyncio.to_thread(bench.staged_cpvs) == [CPV]

    asyncio.run(scenario())


def test_another_drone_cannot_touch_the_build(bench: Bench, gpkgs: Gpkgs) -> None:
    gpkg = gpkgs.wanted

    async def scenario() -> None:
        async with assigned_build(bench, "swarm-test/leaf-data") as (_, start):
            q = query(start, gpkg)
            async with builds_stub(bench, bench.other) as intruder:
                forged = build_pb2.LogChunk(build_id=start.build_id, offset=0, data=b"forged")
                attempts: list[Callable[[], Awaitable[Any]]] = [
                    lambda: intruder.QueryUpload(q, timeout=30),
                    lambda: upload(intruder, q, gpkg.data, end=0),  # refused on the query
                    lambda: intruder.BuildLog(iter([forged]), timeout=30),
                ]
                for attempt in attempts:
                    error = await rpc_error(attempt())
                    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
                    assert "belongs to another drone" in (error.details() or "")
            async with builds_stub(bench) as stub:
                held = await stub.QueryUpload(q, timeout=30)
                assert (held.received, held.complete) == (0, False)
            assert not bench.part(start.build_id, gpkg.name).exists()
            assert not await asyncio.to_thread(bench.staged_cpvs)
            log_path = bench.controller.data_dir / "buildlogs" / f"{start.build_id}.log"
            assert not log_path.exists()

    asyncio.run(scenario())


def test_an_attempt_whose_job_was_requeued_cannot_upload(bench: Bench, gpkgs: Gpkgs) -> None:
    gpkg = gpkgs.wanted
    build_ids: list[str] = []

    async def scenario() -> None:
        async with assigned_build(bench, "swarm-test/leaf-data") as (stream, first):
            build_ids.append(first.build_id)
            stream.report(first, build_pb2.BuildEvent.STARTED)
            await asyncio.to_thread(
                wait_for, lambda: bench.job(first.job_id)["state"] == "building", what="the job building"
            )
        # The drone is gone past the grace period: the job is requeued...
        await asyncio.to_thread(
            wait_for,
            lambda: bench.job(first.job_id)["state"] == "queued",
            timeout=GRACE + 30,
            what="the job requeued",
        )
        async with control_stream(bench) as stream:
            # ...and given again, as a new attempt, once a drone is back.
            second = await asyncio.wait_for(stream.starts.get(), 60)
            assert second.job_id == first.job_id and second.build_id != first.build_id
            async with builds_stub(bench) as stub:
                stale = query(first, gpkg)
                attempts: list[Callable[[], Awaitable[Any]]] = [
                    lambda: stub.QueryUpload(stale, timeout=30),
                    # Only the query: the refusal comes after it, and with nothing
                    # left to send, the client cannot race the server's abort
                    # (grpc then reports its own INTERNAL instead of the status).
                    lambda: upload(stub, stale, gpkg.data, end=0),
                ]
                for attempt in attempts:
                    error = await rpc_error(attempt())
                    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
                    assert "no longer the current attempt" in (error.details() or "")
                assert (await upload(stub, query(second, gpkg), gpkg.data)).complete

    asyncio.run(scenario())
    assert bench.staged_cpvs() == [CPV]
    assert len(bench.staged_files()) == 1
    # The abandoned attempt ended in history when the job went back to the queue.
    history = {b["build_id"]: b for b in bench.controller.get("/api/v1/history")["history"]}
    assert history[build_ids[0]]["state"] == "lost", history
    assert "went away during the build" in history[build_ids[0]]["reason"]


def test_a_build_the_drone_never_starts_goes_back_to_the_queue(tmp_path: Path) -> None:
    history: list[dict[str, Any]] = []

    async def scenario(bench: Bench) -> None:
        async with assigned_build(bench, "swarm-test/leaf-data") as (stream, first):
            # No STARTED: the controller gives up on the attempt and offers the job again.
            second = await asyncio.wait_for(stream.starts.get(), 60)
            assert second.job_id == first.job_id and second.build_id != first.build_id
            job = await asyncio.to_thread(bench.job, first.job_id)
            assert job["state"] == "assigned" and job["build_id"] == second.build_id
            found = await asyncio.to_thread(bench.controller.get, "/api/v1/history")
            history.extend(found["history"])

    with make_bench(tmp_path, "--build-start-timeout", "2") as bench:
        asyncio.run(scenario(bench))
    first_attempt = [b for b in history if b["job_id"] and b["state"] == "cancelled"]
    assert len(first_attempt) == 1, history
    assert "did not start the build within 2s" in first_attempt[0]["reason"]
    assert first_attempt[0]["finished_at"] is not None


def test_a_package_published_just_before_a_crash_is_not_published_twice(tmp_path: Path, gpkgs: Gpkgs) -> None:
    gpkg = gpkgs.wanted
    with make_bench(tmp_path, "--build-grace", "120") as bench:

        async def first_upload() -> build_pb2.StartBuild:
            async with assigned_build(bench, "swarm-test/leaf-data") as (_, start):
                async with builds_stub(bench) as stub:
                    assert (await upload(stub, query(start, gpkg), gpkg.data)).complete
                return start

        start = asyncio.run(first_upload())
        staged = bench.staged_files()
        assert len(staged) == 1
        # The controller dies after publishing but before recording the upload.
        bench.controller.kill()
        with contextlib.closing(sqlite3.connect(bench.controller.data_dir / "swarm.db")) as db, db:
            assert db.execute("DELETE FROM artifact").rowcount == 1
        bench.controller.restart()
        assert "staging holds 1 package(s) with no upload record" in bench.controller.log()

        async def upload_again() -> build_pb2.UploadStatus:
            async with builds_stub(bench) as stub:
                return await upload(stub, query(start, gpkg), gpkg.data)

        assert asyncio.run(upload_again()).complete
        assert bench.staged_files() == staged
        assert bench.staged_cpvs() == [CPV]
