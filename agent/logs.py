"""A drone's named log sources, served on LOG channels (shell.proto).

The controller names a source, never a path, and the name is checked here
again whatever the controller did: only these resolve, each to a file in a
directory the agent owns.

- ``agent``: the agent's own log file (``--log-file``).
- ``build/<id>``: the drone's log of one build, by job id (``j-...``: its
  newest build on this drone) or build id (``b-...``). The builder names
  them ``<job id>.<build id>.log``.
- ``portage/<category>/<package>``: Portage's log of the package's newest
  build here (the builder points ``PORT_LOGDIR`` at ``--portage-log-dir``;
  Portage writes ``<category>:<PF>:<time>.log`` there, or
  ``build/<category>/<PF>:<time>.log`` with FEATURES=split-log). It is
  written while emerge runs, so following it shows the build live.

Only the newest ``KEEP_LOGS`` build logs of each kind are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from swarm.logsources import DRONE_SOURCE_RE, DRONE_SOURCES, path_like
from swarm.logtail import MAX_LINES, follow
from swarm.tasks import race
from swarm.v1 import shell_pb2

log = logging.getLogger(__name__)

VERSION_START = re.compile(r"^\d")
KEEP_LOGS = 500
NOT_FOUND, INVALID = "not_found", "invalid_argument"


class SourceError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def build_log_name(job_id: str, build_id: str) -> str:
    return f"{job_id}.{build_id}.log"


def _newest(paths: list[Path]) -> Path | None:
    stamped = []
    for path in paths:
        with contextlib.suppress(OSError):
            stamped.append((path.stat().st_mtime, path.name, path))
    return max(stamped)[2] if stamped else None


def _portage_logs(directory: Path, category: str, package: str) -> list[Path]:
    """Portage's logs of any version of category/package (not of a package
    whose name merely starts with this one: a version follows the dash).
    The names come from DRONE_SOURCE_RE, which admits no glob character."""

    def of_package(pf: str) -> bool:
        return pf.startswith(package + "-") and bool(VERSION_START.match(pf[len(package) + 1 :]))

    found = [p for p in directory.glob(f"{category}:{package}-*.log") if of_package(p.name.split(":")[1])]
    split = directory / "build" / category
    found += [p for p in split.glob(f"{package}-*.log") if of_package(p.name.split(":")[0])]
    return found


@dataclass(frozen=True, slots=True)
class LogSources:
    agent_log: Path | None
    builds: Path
    portage: Path

    def resolve(self, source: str) -> Path:
        """The file of a source; SourceError if the name is not one, or it has no file here."""
        if path_like(source):
            raise SourceError(INVALID, f"not a log source name: {source[:80]!r} ({DRONE_SOURCES})")
        match = DRONE_SOURCE_RE.match(source)
        if match is None:
            raise SourceError(NOT_FOUND, f"no log source {source!r} on a drone ({DRONE_SOURCES})")
        if source == "agent":
            if self.agent_log is None:
                raise SourceError(NOT_FOUND, "this agent logs to stderr only (no --log-file)")
            if not self.agent_log.is_file():
                raise SourceError(NOT_FOUND, f"the agent's log {self.agent_log} does not exist")
            return self.agent_log
        if match["id"]:
            build = match["id"]
            pattern = f"{build}.*.log" if build.startswith("j-") else f"*.{build}.log"
            path = _newest(list(self.builds.glob(pattern)))
            if path is None:
                raise SourceError(NOT_FOUND, f"no log of build {build} on this drone")
            return path
        path = _newest(_portage_logs(self.portage, match["category"], match["package"]))
        if path is None:
            raise SourceError(NOT_FOUND, f"no Portage log of {match['category']}/{match['package']} here")
        return path

    def prune(self) -> None:
        """Keep the newest KEEP_LOGS logs of each kind (called before each build)."""
        for directory, pattern in (
            (self.builds, "*.log"),
            (self.portage, "*:*.log"),
            (self.portage / "build", "*/*:*.log"),
        ):
            logs = []
            for path in directory.glob(pattern):
                with contextlib.suppress(OSError):
                    logs.append((path.stat().st_mtime, path))
            logs.sort(reverse=True)
            for _, path in logs[KEEP_LOGS:]:
                with contextlib.suppress(OSError):
                    path.unlink()


async def send_log(
    request: shell_pb2.OpenChannel,
    sources: LogSources,
    write: Callable[[shell_pb2.ShellFrame], Awaitable[None]],
    hangup: asyncio.Event,
) -> str:
    """Send the source's tail (and, following, what is written) until done
    or hung up; returns why it ended. SourceError if there is nothing to send.
    Each write is awaited: a controller that stops reading stops the tail."""
    path = sources.resolve(request.source)
    lines = min(request.lines, MAX_LINES)

    async def pump() -> str:
        # First the file's name: the controller answers its client once something came.
        await write(shell_pb2.ShellFrame(stderr=f"{request.source}: {path}".encode()))
        pieces = follow(path, lines=lines, follow=request.follow)
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                if piece.notice:
                    await write(shell_pb2.ShellFrame(stderr=piece.notice.encode()))
                else:
                    await write(shell_pb2.ShellFrame(output=piece.data))
        return "end of the log"

    async def hung_up() -> str:
        await hangup.wait()
        return "hung up"

    log.info("log %s: sending %s (follow: %s)", request.source, path, request.follow)
    try:
        return str(await race(pump(), hung_up(), names=("log-pump", "log-hangup")))
    except FileNotFoundError:
        raise SourceError(NOT_FOUND, f"{request.source}: {path} is gone") from None
    except OSError as exc:
        raise SourceError(NOT_FOUND, f"{request.source}: cannot read {path}: {exc.strerror}") from None
