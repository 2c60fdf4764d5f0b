"""The staging binhost: uploads of binary packages, checked, then
published in a PKGDIR whose ``Packages`` index Portage itself rewrites
(atomically, under its lock) through the portage worker.

An upload is resumable (the partial file is kept per build id and file
name), checked chunk by chunk (CRC-32) and as a whole (SHA-256), and
idempotent: uploading a file that build already stored is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

from swarm.controller.errors import FailedPrecondition, InvalidArgument, Unavailable
from swarm.controller.events import EventLog
from swarm.controller.portage import PortageWorker
from swarm.controller.store.records import ArtifactRecord
from swarm.controller.store.runner import StoreRunner
from swarm.files import sha256_file

log = logging.getLogger(__name__)

STAGING_PATH = "/binhost/staging"
FILENAME_RE = re.compile(r"^[A-Za-z0-9+_][A-Za-z0-9+_.-]*\.gpkg\.tar\Z")
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
MAX_SIZE = 8 * 2**30


def _remove_if_empty(folder: Path) -> None:
    if folder.exists() and not any(folder.iterdir()):
        folder.rmdir()


class StagingBinhost:
    def __init__(
        self,
        pkgdir: Path,
        uploads: Path,
        url: str,
        worker: PortageWorker,
        runner: StoreRunner,
        events: EventLog,
    ) -> None:
        self.pkgdir = pkgdir
        self._uploads = uploads
        self.url = url
        self._worker = worker
        self._runner = runner
        self._events = events
        self._cpvs: set[str] = set()
        self._busy: set[tuple[str, str]] = set()

    async def start(self) -> None:
        self.pkgdir.mkdir(parents=True, exist_ok=True)
        self._uploads.mkdir(parents=True, exist_ok=True)
        for artifact in await self._runner.call(self._runner.store.list_artifacts):
            self._cpvs.add(artifact.cpv)
        # A package published just before a crash, before its record was
        # written, is in the index all the same: it counts as staged, so it
        # is neither built nor published a second time.
        unrecorded = set(await self._worker.staged()) - self._cpvs
        if unrecorded:
            log.warning(
                "staging holds %d package(s) with no upload record, kept as staged: %s",
                len(unrecorded),
                ", ".join(sorted(unrecorded)[:20]),
            )
            self._cpvs |= unrecorded

    def has(self, cpv: str) -> bool:
        return cpv in self._cpvs

    def _part(self, build_id: str, filename: str) -> Path:
        if not FILENAME_RE.match(filename):
            raise InvalidArgument(f"not a gpkg file name: {filename[:100]!r}")
        return self._uploads / build_id / (filename + ".part")

    @staticmethod
    def _check_query(cpv: str, size: int, sha256: str) -> None:
        if "/" not in cpv:
            raise InvalidArgument(f"not a package version: {cpv[:100]!r}")
        if not 0 < size <= MAX_SIZE:
            raise InvalidArgument(f"size must be between 1 and {MAX_SIZE} bytes")
        if not SHA256_RE.match(sha256):
            raise InvalidArgument("sha256 must be 64 lowercase hex digits")

    async def status(
        self, build_id: str, cpv: str, filename: str, size: int, sha256: str
    ) -> tuple[int, bool]:
        """(bytes held, complete)."""
        self._check_query(cpv, size, sha256)
        part = self._part(build_id, filename)
        stored = await self._stored(build_id, filename)
        if stored is not None:
            return stored, True
        self._not_busy(build_id, filename)
        return (part.stat().st_size if part.exists() else 0), False

    async def _stored(self, build_id: str, filename: str) -> int | None:
        """The size of the file as the build stored it, None if it has not."""
        stored = await self._runner.call(self._runner.store.get_artifact, build_id, filename)
        return stored.size if stored is not None else None

    def _not_busy(self, build_id: str, filename: str) -> None:
        # A stream is still writing this file (often one its client already
        # dropped, not yet ended here): the size on disk is not final, and a
        # second writer must wait. Transient, so UNAVAILABLE: ask again.
        if (build_id, filename) in self._busy:
            raise Unavailable(f"{filename} of build {build_id} is being uploaded already; ask again shortly")

    async def receive(
        self,
        build_id: str,
        cpv: str,
        filename: str,
        size: int,
        sha256: str,
        chunks: AsyncIterator[tuple[int, bytes, int]],
    ) -> tuple[int, bool]:
        received, complete = await self.status(build_id, cpv, filename, size, sha256)
        if complete:
            async for _ in chunks:
                pass  # a duplicate upload: nothing to do
            return received, True
        key = (build_id, filename)
        self._not_busy(build_id, filename)
        self._busy.add(key)
        try:
            part = self._part(build_id, filename)
            part.parent.mkdir(parents=True, exist_ok=True)
            with part.open("ab") as sink:
                async for offset, data, crc in chunks:
                    if offset != received:
                        raise FailedPrecondition(
                            f"chunk at offset {offset}, expected {received}: resume from {received}"
                        )
                    if zlib.crc32(data) != crc:
                        raise InvalidArgument(
                            f"chunk at offset {offset} is corrupt (CRC-32 mismatch); resume from {received}"
                        )
                    if received + len(data) > size:
                        raise InvalidArgument(f"more data than the announced {size} bytes")
                    await asyncio.to_thread(sink.write, data)
                    received += len(data)
            if received < size:
                return received, False
            if (await asyncio.to_thread(sha256_file, part))[0] != sha256:
                part.unlink(missing_ok=True)
                raise InvalidArgument(f"{filename}: sha256 mismatch; the partial upload was discarded")
            await self._publish(build_id, cpv, filename, size, sha256, part)
            return size, True
        finally:
            self._busy.discard(key)

    async def _publish(
        self, build_id: str, cpv: str, filename: str, size: int, sha256: str, part: Path
    ) -> None:
        # The worker checks the package's own metadata against the cpv,
        # moves it into the PKGDIR and rewrites the index.
        record = ArtifactRecord(build_id, filename, cpv, sha256, size, time.time())
        if cpv in self._cpvs:
            # Staging has it already (published before a crash cut off the
            # record): one instance per package version, so this one goes.
            await asyncio.to_thread(part.unlink, True)
            await self._runner.call(self._runner.store.add_artifact, record)
            log.info("%s of build %s: %s is in staging already; upload dropped", filename, build_id, cpv)
            return
        staged_as = part.with_name(filename)
        await asyncio.to_thread(part.rename, staged_as)
        try:
            final = await self._worker.inject(cpv, staged_as)
        except InvalidArgument:
            await asyncio.to_thread(staged_as.unlink, True)
            raise
        # Staged from here on, whatever happens to the record: if the database
        # refuses it now, the drone is told to retry, and its retry finds the
        # package staged and only records it (the branch above).
        self._cpvs.add(cpv)
        self._events.emit(
            "package_staged",
            f"{cpv} in staging ({size} bytes)",
            cpv=cpv,
            build_id=build_id,
            path=str(final.relative_to(self.pkgdir)) if final.is_relative_to(self.pkgdir) else final.name,
        )
        log.info("staged %s as %s", cpv, final)
        await asyncio.to_thread(_remove_if_empty, staged_as.parent)
        await self._runner.call(self._runner.store.add_artifact, record)
