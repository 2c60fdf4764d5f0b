"""The controller's side of the Portage worker (portage_worker.py): a child
process, one request at a time, restarted if it dies."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm.batching import Batcher
from swarm.controller.builds import Resolved
from swarm.controller.errors import InvalidArgument, NotFound, SwarmError, Unavailable

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 300.0
INJECT_TIMEOUT = 120.0
MATCH_TIMEOUT = 60.0
# Atoms one match call asks at most: a burst's first answers need not wait for its last.
MATCH_BATCH = 32
# Signing every package of a large staging binhost at once (staged before the key existed).
SIGN_TIMEOUT = 3600.0
LINE_LIMIT = 64 * 2**20  # a resolved @world is a long line


@dataclass(frozen=True, slots=True)
class Signing:
    """The release key: packages are signed with it as they enter staging."""

    home: Path  # its GnuPG home
    key: str  # its fingerprint


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """A package of a binhost's Packages index."""

    cpv: str
    path: str  # relative to the PKGDIR
    slot: str
    use: str
    size: int


@dataclass(frozen=True, slots=True)
class PrefixInfo:
    profile: str  # relative to the main repository's profiles/ when it is inside
    repository: str
    revision: str
    snapshot_time: float | None


class PortageWorker:
    def __init__(self, eprefix: Path, pkgdir: Path | None = None) -> None:
        """``pkgdir``: another PKGDIR than the prefix's (the test binhost's)."""
        self._eprefix = eprefix
        self._pkgdir = pkgdir
        # Set once a release key exists (releases.Releases.start).
        self.signing: Signing | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._matches: Batcher[str, str] = Batcher(
            self._match_all,
            lambda: Unavailable("the portage worker's answer was abandoned"),
            limit=MATCH_BATCH,
        )

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = {**os.environ, "PORTAGE_OVERRIDE_EPREFIX": str(self._eprefix)}
        if self._pkgdir is not None:
            env["PKGDIR"] = str(self._pkgdir)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "swarm.controller.portage_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
            limit=LINE_LIMIT,
        )
        log.info("portage worker started (pid %d, prefix %s)", proc.pid, self._eprefix)
        return proc

    async def call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        async with self._lock:
            if self._proc is None or self._proc.returncode is not None:
                self._proc = await self._spawn()
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None
            request = {**request, "id": next(self._ids)}
            if self.signing is not None:
                request["signing"] = {"home": str(self.signing.home), "key": self.signing.key}
            try:
                proc.stdin.write((json.dumps(request) + "\n").encode())
                await proc.stdin.drain()
                line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            except (TimeoutError, ConnectionError, BrokenPipeError) as exc:
                await self._kill()
                raise Unavailable(f"the portage worker did not answer ({type(exc).__name__})") from None
            if not line:
                await self._kill()
                raise Unavailable("the portage worker exited")
            reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise _error(reply)
        return reply

    async def warm(self) -> None:
        """Start the worker and have it read Portage's configuration and open
        the tree now, not at the first question that waits for it. Nothing to
        do once it runs (it has answered something then, or is answering)."""
        if self._proc is not None and self._proc.returncode is None:
            return
        await self.call({"op": "warm"}, RESOLVE_TIMEOUT)

    async def resolve(self, atoms: Sequence[str]) -> list[Resolved]:
        reply = await self.call({"op": "resolve", "atoms": list(atoms)}, RESOLVE_TIMEOUT)
        return [Resolved(p["cpv"], tuple(p["deps"])) for p in reply["packages"]]

    async def match(self, atom: str) -> str:
        """The best visible version of a plain package atom: "cat/name-1.0";
        NotFound if the tree has none, InvalidArgument if masked or not an atom.
        Atoms asked while the worker is busy go to it together, in one call."""
        return await self._matches(atom)

    async def _match_all(self, atoms: list[str]) -> list[str | Exception]:
        reply = await self.call({"op": "match", "atoms": atoms}, MATCH_TIMEOUT)
        return [_matched(answer) for answer in reply["answers"]]

    async def pkgdir(self) -> Path:
        reply = await self.call({"op": "info"}, RESOLVE_TIMEOUT)
        return Path(reply["pkgdir"])

    async def reindex(self) -> None:
        """Rewrite the PKGDIR's index after packages were deleted from it."""
        await self.call({"op": "reindex"}, RESOLVE_TIMEOUT)

    async def staged(self) -> list[str]:
        """The package versions in the PKGDIR's index."""
        reply = await self.call({"op": "staged"}, RESOLVE_TIMEOUT)
        return [str(cpv) for cpv in reply["cpvs"]]

    async def inject(self, cpv: str, path: Path) -> Path:
        reply = await self.call({"op": "inject", "cpv": cpv, "path": str(path)}, INJECT_TIMEOUT)
        return Path(reply["path"])

    async def sign_staged(self, *, resign: bool = False) -> list[str]:
        """Sign what staging holds unsigned (staged before the key existed),
        or everything with ``resign`` (signed with another key before), and
        re-index it; the package versions signed."""
        if self.signing is None:
            raise Unavailable("there is no release key to sign with")
        reply = await self.call({"op": "sign", "resign": resign}, SIGN_TIMEOUT)
        return [str(cpv) for cpv in reply["signed"]]

    async def snapshot(self, dest: Path) -> list[IndexEntry]:
        """Write ``dest``/Packages with staging's newest package of each slot; those packages."""
        reply = await self.call({"op": "snapshot", "dest": str(dest)}, RESOLVE_TIMEOUT)
        return [
            IndexEntry(str(p["cpv"]), str(p["path"]), str(p["slot"]), str(p["use"]), int(p["size"]))
            for p in reply["packages"]
        ]

    async def prefix_info(self) -> PrefixInfo:
        reply = await self.call({"op": "prefix_info"}, RESOLVE_TIMEOUT)
        repo = reply["repository"]
        snapshot = repo.get("snapshot_time")
        return PrefixInfo(
            str(reply["profile"]),
            str(repo["name"]),
            str(repo["revision"]),
            float(snapshot) if snapshot is not None else None,
        )

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        async with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                self._proc = proc
                await self._kill()


def _matched(answer: dict[str, Any]) -> str | Exception:
    return str(answer["cpv"]) if "cpv" in answer else _error(answer)


def _error(reply: dict[str, Any]) -> SwarmError:
    """The worker's refusal as the error the caller raises."""
    kind, error = reply.get("kind"), str(reply.get("error", "portage failed"))
    if kind == "notfound":
        return NotFound(error)
    if kind == "invalid":
        return InvalidArgument(error)
    return Unavailable(f"portage worker: {error}")
