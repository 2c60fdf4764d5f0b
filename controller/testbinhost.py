"""The test binhost: where test builds' packages land, apart from staging.

Uploads of a test build (controller/testrunner.py says which build ids
are test builds) are taken as staging takes its own (resumable, CRC-32 per
chunk, SHA-256 whole: staging.StagingBinhost), then filed in a PKGDIR of
their own, ``DATA_DIR/binhost/test``, whose ``Packages`` index Portage
rewrites through a portage worker of its own (the controller's prefix,
PKGDIR pointed here). Nothing here is ever staging: a package filed here
does not count as built for a session, is never in a release, and a
drone's dependencies never come from here. The public tier serves it
under ``/binhost/test/`` with a warning (``WARNING``).

The files of each build are kept in memory while its test build runs;
their paths go into the test build's record when it ends, and retention
(TestRunner) deletes them with the record.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from swarm.controller.errors import InvalidArgument
from swarm.controller.events import EventLog
from swarm.controller.portage import PortageWorker
from swarm.controller.staging import StagingBinhost
from swarm.controller.store.runner import StoreRunner

log = logging.getLogger(__name__)

TEST_PATH = "/binhost/test"
WARNING_HEADER = "X-Build-Swarm-Warning"
WARNING = (
    "test build: built on request, untested and never released; do not install it on a system you care about"
)


class TestBinhost(StagingBinhost):
    __test__ = False  # not a pytest class, whatever its name

    def __init__(
        self,
        pkgdir: Path,
        uploads: Path,
        url: str,
        worker: PortageWorker,
        runner: StoreRunner,
        events: EventLog,
    ) -> None:
        super().__init__(pkgdir, uploads, url, worker, runner, events)
        self._filed: dict[tuple[str, str], int] = {}  # (build id, file name) -> size
        self._files: dict[str, list[str]] = {}  # build id -> paths under the PKGDIR

    async def start(self) -> None:
        await asyncio.to_thread(self.pkgdir.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(self._uploads.mkdir, parents=True, exist_ok=True)

    async def stop(self) -> None:
        await self._worker.stop()

    def has(self, cpv: str) -> bool:
        return False  # never staged, whatever it holds

    def files_of(self, build_id: str) -> tuple[str, ...]:
        """What the build filed here, as paths under the PKGDIR."""
        return tuple(self._files.get(build_id, ()))

    def forget(self, build_id: str) -> None:
        """The build is over: its files are in its record now."""
        self._files.pop(build_id, None)
        for key in [k for k in self._filed if k[0] == build_id]:
            del self._filed[key]

    async def remove(self, paths: list[str]) -> int:
        """Delete these packages (paths under the PKGDIR) and re-index; how many went."""

        def unlink() -> int:
            gone = 0
            root = self.pkgdir.resolve()
            for relative in paths:
                target = (root / relative).resolve()
                if target.is_relative_to(root) and target.is_file():
                    target.unlink()
                    gone += 1
                    _remove_empty_parents(target.parent, root)
            return gone

        gone = await asyncio.to_thread(unlink)
        if gone:
            await self._worker.reindex()
        return gone

    async def _stored(self, build_id: str, filename: str) -> int | None:
        return self._filed.get((build_id, filename))

    async def _publish(
        self, build_id: str, cpv: str, filename: str, size: int, sha256: str, part: Path
    ) -> None:
        filed_as = part.with_name(filename)
        await asyncio.to_thread(part.rename, filed_as)
        try:
            final = await self._worker.inject(cpv, filed_as)
        except InvalidArgument:
            await asyncio.to_thread(filed_as.unlink, True)
            raise
        relative = str(final.relative_to(self.pkgdir)) if final.is_relative_to(self.pkgdir) else final.name
        self._filed[(build_id, filename)] = size
        self._files.setdefault(build_id, []).append(relative)
        self._events.emit(
            "test_package_filed",
            f"{cpv} in the test binhost ({size} bytes)",
            cpv=cpv,
            build_id=build_id,
            path=relative,
        )
        log.info("test build %s: filed %s as %s", build_id, cpv, final)
        await asyncio.to_thread(_remove_empty_parents, filed_as.parent, self._uploads)


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
