"""Log sources and tail/follow in process, on real files: which file a source
name resolves to (and which names are refused), and following a file across
rotation and truncation. The same sources through a controller and a real
agent are in test_logs.py."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from swarm.agent.logs import INVALID, NOT_FOUND, LogSources, SourceError, build_log_name
from swarm.logsources import path_like
from swarm.logtail import Piece, follow

pytestmark = pytest.mark.timeout(30)


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["../etc/passwd", "/var/log/messages", "agent/../../x", "build/..", "a//b", "portage/x/y/z", "", "a b"],
)
def test_path_like_names_are_refused(tmp_path: Path, source: str) -> None:
    assert path_like(source)
    with pytest.raises(SourceError) as refused:
        LogSources(tmp_path / "agent.log", tmp_path, tmp_path).resolve(source)
    assert refused.value.code == INVALID


def test_sources_resolve_to_the_newest_file_of_their_kind(tmp_path: Path) -> None:
    agent_log, builds, portage = tmp_path / "agent.log", tmp_path / "builds", tmp_path / "portage"
    builds.mkdir()
    (portage / "build" / "dev-libs").mkdir(parents=True)
    sources = LogSources(agent_log, builds, portage)

    with pytest.raises(SourceError) as missing:
        sources.resolve("agent")
    assert missing.value.code == NOT_FOUND
    agent_log.write_text("hello\n")
    assert sources.resolve("agent") == agent_log

    old = builds / build_log_name("j-00000000000a", "b-000000000001")
    new = builds / build_log_name("j-00000000000a", "b-000000000002")
    for mtime, path in enumerate((old, new)):
        path.write_text("emerge\n")
        os.utime(path, (1000 + mtime, 1000 + mtime))
    assert sources.resolve("build/j-00000000000a") == new  # a job's newest build
    assert sources.resolve("build/b-000000000001") == old
    for unknown in ("build/j-00000000000b", "foo", "control-plane"):
        with pytest.raises(SourceError) as refused:
            sources.resolve(unknown)
        assert refused.value.code == NOT_FOUND, unknown

    # Portage's names: a version follows the package name, so foo is not foo-extra.
    (portage / "dev-libs:foo-extra-2:20260101-000000.log").write_text("x")
    with pytest.raises(SourceError):
        sources.resolve("portage/dev-libs/foo")
    first = portage / "dev-libs:foo-1.0:20260101-000000.log"
    first.write_text("x")
    os.utime(first, (1000, 1000))
    assert sources.resolve("portage/dev-libs/foo") == first
    split = portage / "build" / "dev-libs" / "foo-1.1-r1:20260102-000000.log"  # FEATURES=split-log
    split.write_text("x")
    assert sources.resolve("portage/dev-libs/foo") == split


# -- tail and follow ---------------------------------------------------------------------


class Reader:
    """Follows a file in the background, gathering text and notices."""

    def __init__(self, pieces: AsyncGenerator[Piece, None]) -> None:
        self.text = ""
        self.notices: list[str] = []
        self._pieces = pieces
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for piece in self._pieces:
            if piece.notice:
                self.notices.append(piece.notice)
            self.text += piece.data.decode()
            self._changed.set()

    async def until(self, needle: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), max(0.01, deadline - time.monotonic()))

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self._pieces.aclose()


def test_follow_survives_rotation_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("".join(f"old {i}\n" for i in range(10)))

    async def scenario() -> Reader:
        reader = Reader(follow(path, lines=3, follow=True, poll=0.02))
        try:
            await reader.until("old 9\n")
            assert reader.text == "old 7\nold 8\nold 9\n"  # the last 3 lines, no more
            with path.open("a") as fh:
                fh.write("appended\n")
            await reader.until("appended\n")

            # logrotate: the file is moved away (a last line still lands in it), a new one is created.
            rotated = path.with_suffix(".log.1")
            path.rename(rotated)
            with rotated.open("a") as fh:
                fh.write("late in the old file\n")
            path.write_text("first of the new file\n")
            await reader.until("first of the new file\n")
            assert reader.text.index("late in the old file") < reader.text.index("first of the new file")
            assert any("rotated" in n for n in reader.notices), reader.notices

            # copytruncate: the same file emptied in place, then written again.
            path.write_text("")
            with path.open("a") as fh:
                fh.write("after truncation\n")
            await reader.until("after truncation\n")
            assert any("truncated" in n for n in reader.notices), reader.notices
        finally:
            await reader.close()
        return reader

    reader = asyncio.run(scenario())
    assert reader.text.count("first of the new file") == 1


def test_a_tail_without_follow_ends_and_a_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"a\nb\nc")  # no final newline: c is a line

    async def read_all() -> bytes:
        return b"".join([p.data async for p in follow(path, lines=2, follow=False)])

    assert asyncio.run(read_all()) == b"b\nc"
    path.unlink()
    with pytest.raises(FileNotFoundError):
        asyncio.run(read_all())
