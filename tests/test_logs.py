"""Log sources: tail and follow across rotation and truncation (real files),
the drone's sources through the whole path (HTTP or websocket -> the
controller -> a LOG channel of a real agent -> its files), and the
controller's own control-plane log."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from swarm.agent.logs import INVALID, NOT_FOUND, LogSources, SourceError, build_log_name
from swarm.logsources import path_like
from swarm.logtail import Piece, follow

from support.cli import CLI_ENV, cli_args, following
from support.procs import Agent, Controller, enroll, http, wait_for

pytestmark = pytest.mark.timeout(90)


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


# -- through the controller --------------------------------------------------------------


@dataclass
class Site:
    controller: Controller
    agent: Agent
    agent_log: Path
    controller_log: Path

    def ws_url(self, path: str) -> str:
        return self.controller.admin_url.replace("http://", "ws://") + path

    def exec(self, command: str) -> dict[str, Any]:
        status, body = self.controller.admin(
            "POST",
            f"/admin/api/drones/{self.agent.name}/exec",
            json.dumps({"command": command, "timeout": 10}).encode(),
        )
        assert status == 200, body
        return body  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("logs")
    controller_log = root / "controller-own.log"
    controller = Controller(root, "--log-file", str(controller_log))
    controller.start()
    agent_log = root / "drone-own.log"
    agent = Agent(root, "logger", controller.grpc_target, "--log-file", str(agent_log))
    assert enroll(controller, "logger", agent.state_dir).returncode == 0
    agent.start()
    try:
        wait_for(lambda: (n := controller.node("logger")) and n["status"] == "online", what="logger online")
        yield Site(controller, agent, agent_log, controller_log)
    finally:
        agent.kill()
        controller.kill()


def test_the_http_api_tails_a_drone_log_and_refuses_bad_sources(site: Site) -> None:
    status, body = site.controller.admin("GET", "/admin/api/drones/logger/logs?source=agent&lines=2")
    assert status == 200, body
    assert body["drone"] == "logger" and body["source"] == "agent" and not body["truncated"]
    assert body["notices"] == [f"agent: {site.agent_log}"]
    lines = site.agent_log.read_text().splitlines()
    assert len(body["lines"]) == 2
    # Two lines of the file, the last ones when it was read (the agent logs on).
    at = lines.index(body["lines"][0])
    assert lines[at : at + 2] == body["lines"]

    for query, code, needle in (
        ("source=build/j-000000000000", 404, "no log of build j-000000000000"),
        ("source=nonsense", 404, "no log source 'nonsense'"),
        ("source=../../etc/passwd", 400, "not a log source name"),
        ("source=/etc/passwd", 400, "not a log source name"),
        ("source=agent&lines=-1", 400, "lines"),
        ("source=agent&lines=99999", 400, "lines"),
        ("", 400, "source is required"),
    ):
        status, body = site.controller.admin("GET", f"/admin/api/drones/logger/logs?{query}")
        assert status == code and needle in body["error"]["message"], (query, body)
    status, body = site.controller.admin("GET", "/admin/api/drones/nobody/logs?source=agent")
    assert status == 404, body
    status, body = site.controller.admin("GET", "/admin/api/drones/logger/logs?source=agent&lines=5")
    assert status == 200  # the refusals left nothing open behind them
    status, body = site.controller.admin("GET", "/admin/api/shells")
    assert status == 200


def test_the_control_plane_log_is_served_by_name(site: Site) -> None:
    status, body = site.controller.admin("GET", "/admin/api/logs/control-plane?lines=20")
    assert status == 200, body
    assert body["source"] == "control-plane" and 0 < len(body["lines"]) <= 20
    assert (
        body["lines"] == site.controller_log.read_text().splitlines()[-len(body["lines"]) :] or body["lines"]
    )
    # No key, no log.
    status, _ = http("GET", site.controller.admin_url + "/admin/api/logs/control-plane")
    assert status == 401


async def _follow(site: Site, path: str) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    session = aiohttp.ClientSession(headers={"X-Admin-Key": site.controller.admin_key})
    try:
        ws = await session.ws_connect(site.ws_url(path))
    except BaseException:
        await session.close()
        raise
    return session, ws


async def _until(
    ws: aiohttp.ClientWebSocketResponse, needle: str, timeout: float = 15.0
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    text = ""
    deadline = time.monotonic() + timeout
    while needle not in text:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg, text[-500:])
        message = json.loads(msg.data)
        seen.append(message)
        if message["type"] == "data":
            text += message["text"]
    return seen


def test_a_drone_log_is_followed_live_across_rotation(site: Site) -> None:
    async def scenario() -> list[dict[str, Any]]:
        session, ws = await _follow(site, "/ws/logs/drones/logger?source=agent&lines=0")
        try:
            first = json.loads((await ws.receive(timeout=10)).data)
            assert first == {"type": "notice", "text": f"agent: {site.agent_log}"}
            # The agent logs each command it runs (at debug level, the tests' setting).
            await asyncio.to_thread(site.exec, "echo marker-one")
            seen = await _until(ws, "(EXEC) ended")
            # logrotate moves the file away; the agent's WatchedFileHandler makes a new one at its next line.
            site.agent_log.rename(site.agent_log.with_suffix(".log.1"))
            await asyncio.to_thread(site.exec, "echo marker-two")
            seen += await _until(ws, "(EXEC) ended")
            return seen
        finally:
            await ws.close()
            await session.close()

    seen = asyncio.run(scenario())
    assert any(m["type"] == "notice" and "rotated" in m["text"] for m in seen), seen
    # The channel ended with the websocket: no log channel is left open on the drone.
    wait_for(
        lambda: "channel" in site.agent_log.read_text() and _no_channels(site), what="the log channel closed"
    )


def _no_channels(site: Site) -> bool:
    text = site.agent_log.read_text()
    return text.rfind("(LOG) ended") > text.rfind("log agent: sending")


def test_a_websocket_for_a_bad_source_is_refused_before_the_upgrade(site: Site) -> None:
    async def scenario() -> list[int]:
        codes = []
        async with aiohttp.ClientSession(headers={"X-Admin-Key": site.controller.admin_key}) as session:
            for path in (
                "/ws/logs/drones/logger?source=build/b-000000000000",
                "/ws/logs/drones/logger?source=..%2Fsecret",
                "/ws/logs/control-plane?lines=abc",
            ):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(site.ws_url(path))
                codes.append(refused.value.status)
        return codes

    assert asyncio.run(scenario()) == [404, 400, 400]


def test_the_control_plane_log_is_followed_without_follow_it_ends(site: Site) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        session, ws = await _follow(site, "/ws/logs/control-plane?lines=0")
        try:
            # A ping is logged by the controller (debug level in the tests).
            status, body = await asyncio.to_thread(
                site.controller.admin, "POST", "/admin/api/drones/logger/ping"
            )
            assert status == 200, body
            live = await _until(ws, "logger")
        finally:
            await ws.close()
        ended = []
        async with session:
            ws = await session.ws_connect(site.ws_url("/ws/logs/control-plane?lines=3&follow=0"))
            async for msg in ws:
                ended.append(json.loads(msg.data))
        return live, ended

    live, ended = asyncio.run(scenario())
    assert live[0]["type"] == "notice" and str(site.controller_log) in live[0]["text"]
    assert ended[-1] == {"type": "end"}
    text = "".join(m["text"] for m in ended if m["type"] == "data")
    assert len(text.splitlines()) == 3


# -- swarm-cli logs ----------------------------------------------------------------------


def run_cli(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_args(site.controller, *args),
        capture_output=True,
        text=True,
        timeout=60,
        env=CLI_ENV,
        stdin=subprocess.DEVNULL,
    )


def test_swarm_cli_logs_tails_follows_and_refuses(site: Site) -> None:
    tail = run_cli(site, "logs", "logger", "-n", "3")
    assert tail.returncode == 0, tail.stderr
    assert len(tail.stdout.splitlines()) == 3
    assert set(tail.stdout.splitlines()) <= set(site.agent_log.read_text().splitlines())
    assert tail.stderr == f"swarm-cli: agent: {site.agent_log}\n"

    plane = run_cli(site, "--json", "logs", "control-plane", "-n", "2")
    assert plane.returncode == 0 and len(json.loads(plane.stdout)["lines"]) == 2, plane.stderr

    for args, needle in (
        (("logs", "logger", "--source", "build/j-000000000000"), "404 logger: no log of build"),
        (("logs", "logger", "--source", "../../etc/shadow"), "400 not a log source name"),
        (("logs", "nobody"), "404 no drone named 'nobody'"),
    ):
        refused = run_cli(site, *args)
        assert refused.returncode == 1 and needle in refused.stderr, (args, refused.stderr)
        assert len(refused.stderr.splitlines()) == 1

    attached = site.agent_log.read_text().count("log agent: sending")
    with following(cli_args(site.controller, "logs", "logger", "-n", "0", "--follow")) as follow:
        # Once the follow is attached (the agent logs its LOG channel), a command's lines follow it.
        wait_for(
            lambda: site.agent_log.read_text().count("log agent: sending") > attached,
            what="the follow attached",
        )
        site.exec("echo cli-follow")
        follow.until(lambda line: "(EXEC) ended" in line, "the command's line in the agent log")
        assert follow.interrupt() == 0
