"""Log sources through the whole path (HTTP or websocket -> the
controller -> a LOG channel of a real agent -> its files), and the
controller's own control-plane log. Which file a source names, and
following across rotation, in process: test_logtail.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from support.cli import cli_args, following, run_here
from support.procs import Agent, Controller, enroll, http, wait_for

pytestmark = pytest.mark.timeout(90)


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
        assert isinstance(body, dict), body
        return body


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
    return run_here(site.controller.admin_url, site.controller.info["admin_key_file"], *args)


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
