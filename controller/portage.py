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
from pathlib import Path
from typing import Any

from swarm.controller.builds import Resolved
from swarm.controller.errors import InvalidArgument, NotFound, Unavailable

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 300.0
INJECT_TIMEOUT = 120.0
LINE_LIMIT = 64 * 2**20  # a resolved @world is a long line


class PortageWorker:
    def __init__(self, eprefix: Path) -> None:
        self._eprefix = eprefix
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = {**os.environ, "PORTAGE_OVERRIDE_EPREFIX": str(self._eprefix)}
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
            kind, error = reply.get("kind"), str(reply.get("error", "portage failed"))
            if kind == "notfound":
                raise NotFound(error)
            if kind == "invalid":
                raise InvalidArgument(error)
            raise Unavailable(f"portage worker: {error}")
        return reply

    async def resolve(self, atoms: Sequence[str]) -> list[Resolved]:
        reply = await self.call({"op": "resolve", "atoms": list(atoms)}, RESOLVE_TIMEOUT)
        return [Resolved(p["cpv"], tuple(p["deps"])) for p in reply["packages"]]

    async def pkgdir(self) -> Path:
        reply = await self.call({"op": "info"}, RESOLVE_TIMEOUT)
        return Path(reply["pkgdir"])

    async def staged(self) -> list[str]:
        """The package versions in the PKGDIR's index."""
        reply = await self.call({"op": "staged"}, RESOLVE_TIMEOUT)
        return [str(cpv) for cpv in reply["cpvs"]]

    async def inject(self, cpv: str, path: Path) -> Path:
        reply = await self.call({"op": "inject", "cpv": cpv, "path": str(path)}, INJECT_TIMEOUT)
        return Path(reply["path"])

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
