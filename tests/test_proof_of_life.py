"""Proof of life beyond "the TCP stream is up": the agent's functional checks
(event loop, build cache disk, builder, emerge) travel in every Pong, a drone
failing one is ``unhealthy`` while its heartbeats keep arriving, gets no new
job, and comes back ``online`` when the check passes again. And the agent
half of the healer's first step: RestartService replaces the agent process
with a fresh one (same pid, new instance id).

Every failure is real: a build cache that cannot have the free space asked
for, an emerge command that does not exist, a build that sleeps without
output or CPU time longer than the stall timeout, a blocked event loop.
The fleet's status rules, and the health monitor's and pinger's timers,
are tested in process with a clock the test moves: tests/test_detection.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import prefix as pfx
import psutil
import pytest

from swarm.agent.builder import Builder
from swarm.agent.checks import EVENT_LOOP, HealthChecks, run_version, version_argv
from swarm.agent.logs import LogSources
from swarm.clock import parse_iso
from swarm.controller.fleet import OFFLINE, ONLINE, SUSPECT, UNHEALTHY
from swarm.tasks import race
from swarm.v1 import build_pb2, fleet_pb2, gateway_pb2, gateway_pb2_grpc

from support.procs import EMERGE_COMMAND, FAST_HEARTBEAT, Agent, Controller, wait_for

HEX32 = re.compile(r"^[0-9a-f]{32}$")
CHECKS = ["builder", "cache_disk", "emerge", "event_loop"]
Launch = Callable[..., Agent]


@pytest.fixture
def launch(launch: Launch) -> Launch:
    """The module's agents beat four times a second: its tests wait for
    silence (suspect), for newer heartbeats, and for a drone's checks to come
    back with the next pong (held until the next heartbeat)."""
    return functools.partial(launch, heartbeat_interval=FAST_HEARTBEAT)


def checks(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in node["checks"]}


def with_status(controller: Controller, name: str, status: str) -> dict[str, Any] | None:
    node = controller.node(name)
    return node if node is not None and node["status"] == status else None


def all_checks_pass(controller: Controller, name: str) -> dict[str, Any] | None:
    node = with_status(controller, name, ONLINE)
    if node is None or sorted(checks(node)) != CHECKS:
        return None
    return node if all(c["ok"] for c in node["checks"]) else None


# -- the real controller and real agents -------------------------------------------


def test_low_disk_makes_a_beating_drone_unhealthy_silence_still_wins_and_a_new_process_is_known(
    tmp_path: Path, launch: Launch
) -> None:
    # Offline only after a long silence: the drone is frozen long enough to be suspect, never offline.
    controller = Controller(tmp_path, "--ping-interval", "0.5", "--offline-after-intervals", "1000")
    controller.start()
    try:
        # No disk anywhere has 100 TiB free: the cache_disk check fails for real.
        agent = launch(controller, "drone-disk", "--min-free-disk-mb", str(100 * 2**20))
        node = wait_for(lambda: with_status(controller, "drone-disk", UNHEALTHY), what="drone-disk unhealthy")
        disk = checks(node)["cache_disk"]
        assert disk["ok"] is False
        assert "MiB free in" in disk["detail"] and f"need {100 * 2**20} MiB" in disk["detail"]
        assert node["connected"] is True

        # Its heartbeats keep arriving while it is unhealthy (the first may
        # come after the pong that made it so).
        first = wait_for(
            lambda: (n := controller.node("drone-disk")) and n["last_heartbeat_at"], what="a heartbeat"
        )
        later = wait_for(
            lambda: (n := controller.node("drone-disk")) and (n["last_heartbeat_at"] or "") > first and n,
            what="a newer heartbeat",
        )
        assert later["status"] == UNHEALTHY

        # Which agent process this is.
        assert HEX32.match(node["instance_id"])
        started = psutil.Process(agent.pid).create_time()
        assert abs(parse_iso(node["process_started_at"]) - started) < 1.0

        unhealthy = [e for e in controller.events(drone=agent.drone_id) if e["type"] == "drone_unhealthy"]
        assert len(unhealthy) == 1
        assert unhealthy[0]["data"]["failing"] == [{"name": "cache_disk", "detail": disk["detail"]}]
        assert (unhealthy[0]["data"]["old_status"], unhealthy[0]["data"]["new_status"]) == (ONLINE, UNHEALTHY)
        assert "cache_disk: " in unhealthy[0]["message"]

        # A drone that stops beating is suspect, whatever its checks said; once
        # its heartbeats resume its checks decide again.
        agent.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: with_status(controller, "drone-disk", SUSPECT), what="suspect")
        finally:
            agent.signal(signal.SIGCONT)
        wait_for(lambda: with_status(controller, "drone-disk", UNHEALTHY), what="unhealthy again")
        types = [e["type"] for e in controller.events(drone=agent.drone_id)]
        assert types[1:] == ["drone_connected", "drone_unhealthy", "drone_suspect", "drone_unhealthy"]
        resumed = controller.events(drone=agent.drone_id)[-1]
        assert resumed["data"]["old_status"] == SUSPECT and "heartbeats resumed" in resumed["message"]

        # Fixed (restarted with a threshold the disk meets): online, as a new process.
        assert agent.terminate(timeout=10) == 0
        wait_for(lambda: with_status(controller, "drone-disk", OFFLINE), what="offline")
        # Portage's own emerge answers its emerge check (not a drone without a prefix's stand-in).
        again = launch(
            controller,
            "drone-disk",
            "--min-free-disk-mb",
            "1",
            "--emerge-command",
            EMERGE_COMMAND,
            state_dir=agent.state_dir,
        )
        fresh = wait_for(lambda: all_checks_pass(controller, "drone-disk"), what="online with passing checks")
        assert fresh["id"] == again.drone_id == agent.drone_id
        assert HEX32.match(fresh["instance_id"]) and fresh["instance_id"] != node["instance_id"]
        assert parse_iso(fresh["process_started_at"]) > parse_iso(node["process_started_at"])
        assert checks(fresh)["emerge"]["detail"].startswith("Portage ")
        assert checks(fresh)["event_loop"]["detail"].startswith("lag ")
        assert checks(fresh)["builder"]["detail"] == "idle"
    finally:
        controller.kill()


# Real builds in Gentoo prefixes: longer than the default per-test timeout.
SLEEP = 8  # seconds the sleeper sleeps, silent and idle: a wedged build for a 2 s stall timeout


@pytest.mark.timeout(300)
def test_a_wedged_build_and_a_drone_without_emerge_are_unhealthy_and_get_no_job(
    tmp_path: Path, launch: Launch
) -> None:
    ctl_prefix = pfx.create_prefix(pfx.PrefixConfig(tmp_path / "ctl-prefix", pfx.Role.CONTROLLER))
    controller = Controller(tmp_path, "--portage-eprefix", str(ctl_prefix.root), "--ping-interval", "0.5")
    controller.start()
    try:
        drone_prefix = pfx.create_prefix(
            pfx.PrefixConfig(
                tmp_path / "stuck-prefix",
                pfx.Role.DRONE,
                binhost=controller.info["staging_url"],
                package_env={"swarm-test/sleeper": {"SWARM_TEST_SLEEP": str(SLEEP)}},
            )
        )
        stuck = launch(
            controller,
            "stuck",
            "--portage-eprefix",
            str(drone_prefix.root),
            "--pkgdir",
            str(drone_prefix.pkgdir),
            "--min-free-disk-mb",
            "1",
            "--builder-stall-timeout",
            "2",
        )
        launch(
            controller,
            "no-emerge",
            "--emerge-command",
            "/nonexistent/emerge --oneshot",
            "--min-free-disk-mb",
            "1",
        )
        wait_for(lambda: all_checks_pass(controller, "stuck"), what="stuck online, every check passing")
        node = wait_for(lambda: with_status(controller, "no-emerge", UNHEALTHY), what="no-emerge unhealthy")
        assert checks(node)["emerge"] == {
            "name": "emerge",
            "ok": False,
            "detail": "cannot run /nonexistent/emerge: No such file or directory",
        }

        status, reply = controller.admin(
            "POST",
            "/admin/api/queue",
            json.dumps({"atoms": ["swarm-test/sleeper", "swarm-test/leaf-data"]}).encode(),
        )
        assert status == 201, reply
        session_id = reply["session"]["id"]

        def jobs() -> dict[str, dict[str, Any]]:
            return {j["cpv"]: j for j in controller.get("/api/v1/queue")["jobs"]}

        # The sleeper sleeps with no output and no CPU time: after 2 s the
        # builder is wedged as far as the agent can tell.
        wedged = wait_for(
            lambda: (
                (n := with_status(controller, "stuck", UNHEALTHY)) and not checks(n)["builder"]["ok"] and n
            ),
            timeout=120,
            what="stuck unhealthy with a wedged builder",
        )
        sleeper = jobs()["swarm-test/sleeper-1"]
        assert sleeper["state"] == "building" and sleeper["drone"] == "stuck"
        detail = checks(wedged)["builder"]["detail"]
        assert f"build {sleeper['build_id']} (=swarm-test/sleeper-1) wedged" in detail, detail
        assert "no output and no CPU time" in detail
        assert [c["name"] for c in wedged["checks"] if not c["ok"]] == ["builder"]

        # The build moves on after its sleep: healthy again, and the session completes.
        def session_state() -> str:
            sessions = controller.get("/api/v1/sessions")["sessions"]
            return str(next(x for x in sessions if x["id"] == session_id)["state"])

        wait_for(
            lambda: session_state() == "complete", timeout=180, interval=0.25, what="the session to complete"
        )
        wait_for(lambda: all_checks_pass(controller, "stuck"), what="stuck online again")
        done = jobs()
        assert {cpv: (j["state"], j["drone"]) for cpv, j in done.items()} == {
            "swarm-test/sleeper-1": ("done", "stuck"),
            "swarm-test/leaf-data-1": ("done", "stuck"),
        }, "a job went to the drone that cannot run emerge"
        stuck_events = [e for e in controller.events(drone=stuck.drone_id) if e["type"].startswith("drone_")]
        assert [e["type"] for e in stuck_events][-2:] == ["drone_unhealthy", "drone_healthy"]
        assert stuck_events[-2]["data"]["failing"][0]["name"] == "builder"
        # Every attempt ran on the healthy drone: the one without emerge was never
        # offered a job (it would have refused it: an attempt of its own in the history).
        history = controller.get("/api/v1/history")["history"]
        assert sorted((h["cpv"], h["drone"], h["state"]) for h in history) == [
            ("swarm-test/leaf-data-1", "stuck", "done"),
            ("swarm-test/sleeper-1", "stuck", "done"),
        ]
    finally:
        controller.kill()


# -- the checks in process -----------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("emerge --oneshot --buildpkg", ["emerge", "--version"]),
        ("python /venv/bin/emerge --oneshot --usepkg", ["python", "/venv/bin/emerge", "--version"]),
        ("/usr/bin/emerge", ["/usr/bin/emerge", "--version"]),
        ("--oneshot", []),
    ],
)
def test_the_emerge_check_asks_the_program_for_its_version(command: str, argv: list[str]) -> None:
    assert version_argv(command.split()) == argv


def test_the_emerge_check_says_why_it_failed(tmp_path: Path) -> None:
    env = dict(os.environ)
    failing = [sys.executable, "-c", "import sys; print('portage is broken', file=sys.stderr); sys.exit(3)"]
    hanging = [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(60)"]

    async def scenario() -> list[tuple[bool, str]]:
        return [
            await run_version(failing, env, 30),
            await run_version(hanging, env, 0.5),
            await run_version([str(tmp_path / "no-emerge"), "--version"], env, 30),
            await run_version(version_argv(EMERGE_COMMAND.split()), env, 30),
        ]

    failed, hung, missing, real = asyncio.run(scenario())
    assert failed == (False, f"{' '.join(failing)} exited with 3: portage is broken")
    assert hung == (False, f"{' '.join(hanging)} did not answer in 0.5s")
    assert missing == (False, f"cannot run {tmp_path / 'no-emerge'}: No such file or directory")
    assert real[0] and real[1].startswith("Portage "), real


def test_a_blocked_event_loop_fails_its_check_and_recovers(tmp_path: Path) -> None:
    async def scenario() -> tuple[str, str]:
        builder = Builder(
            emerge_command=EMERGE_COMMAND,
            pkgdir=tmp_path,
            eprefix="",
            logs=LogSources(None, tmp_path, tmp_path),
            cache_path=tmp_path,
            min_free_bytes=0,
            send=lambda message: False,
            channel=lambda: grpc.aio.insecure_channel("127.0.0.1:1"),
        )
        checks = HealthChecks(
            builder=builder,
            cache_path=tmp_path,
            min_free_bytes=0,
            stall_timeout=60,
            lag_limit=0.5,
            lag_window=1.0,
        )

        async def until(ok: bool) -> str:
            while True:
                found = {c.name: c for c in checks.latest()}.get(EVENT_LOOP)
                if found is not None and found.ok is ok:
                    return found.detail
                await asyncio.sleep(0.05)

        await checks.start()
        try:
            await asyncio.wait_for(until(True), 10)
            time.sleep(1.5)  # noqa: ASYNC251 - the point: the whole loop stuck in one blocking call
            stuck = await asyncio.wait_for(until(False), 10)
            return stuck, await asyncio.wait_for(until(True), 10)
        finally:
            await checks.stop()

    stuck, recovered = asyncio.run(scenario())
    lag_ms = int(stuck.removeprefix("lag ").removesuffix(" ms"))
    assert 1000 <= lag_ms < 5000, stuck
    assert recovered.startswith("lag ") and int(recovered[4:-3]) < 500


# -- RestartService: a real agent against a scripted controller ----------------------


class ScriptedGateway(gateway_pb2_grpc.DroneGatewayServicer):
    """Welcomes every stream, reports what arrives, sends what the test queues."""

    def __init__(self) -> None:
        self.hellos: asyncio.Queue[fleet_pb2.Hello] = asyncio.Queue()
        self.build_events: asyncio.Queue[build_pb2.BuildEvent] = asyncio.Queue()
        self.outgoing: asyncio.Queue[gateway_pb2.ControllerMessage] = asyncio.Queue()

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        first = await context.read()
        assert first.WhichOneof("body") == "hello"
        await context.write(
            gateway_pb2.ControllerMessage(welcome=fleet_pb2.Welcome(drone_id=first.hello.drone_id))
        )
        self.hellos.put_nowait(first.hello)

        async def read() -> None:
            while (message := await context.read()) is not grpc.aio.EOF:
                if message.WhichOneof("body") == "build_event":
                    self.build_events.put_nowait(message.build_event)

        async def write() -> None:
            while True:
                await context.write(await self.outgoing.get())

        await race(read(), write())


def fds(pid: int) -> set[str]:
    """What a process's sockets and pipes are (socket:[inode], pipe:[inode])."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith(("socket:", "pipe:")):
            found.add(target)
    return found


async def poll(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return value


def children_running(pid: int, argument: str) -> list[psutil.Process]:
    """The children of ``pid`` whose command line has ``argument``."""
    found = []
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if argument in child.cmdline():
                found.append(child)
    return found


def test_restart_service_replaces_the_agent_process_with_a_fresh_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway = ScriptedGateway()
        server = grpc.aio.server()
        gateway_pb2_grpc.add_DroneGatewayServicer_to_server(gateway, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        # "emerge" that sleeps a minute: a build the restart has to end.
        agent = Agent(
            tmp_path,
            "restarter",
            f"127.0.0.1:{port}",
            "--insecure",
            "--emerge-command",
            f"{sys.executable} -c 'import time; time.sleep(60)'",
        )
        # Its command line is compared before and after: started by it, not forked (support/zygote.py).
        agent.exec_start = True
        agent.start()
        try:
            first = await asyncio.wait_for(gateway.hellos.get(), 15)
            assert HEX32.match(first.instance_id)
            started = psutil.Process(agent.pid).create_time()
            assert abs(first.process_started_at_unix_ns / 1e9 - started) < 1.0

            start = build_pb2.StartBuild(job_id="j-1", build_id="b-1", cpv="swarm-test/sleeper-1")
            gateway.outgoing.put_nowait(gateway_pb2.ControllerMessage(start_build=start))
            event = await asyncio.wait_for(gateway.build_events.get(), 15)
            assert (event.build_id, event.kind) == ("b-1", build_pb2.BuildEvent.STARTED)
            # The build's process, by its target: the agent's emerge check may be running beside it.
            [build] = await poll(lambda: children_running(agent.pid, "=swarm-test/sleeper-1"))
            before = fds(agent.pid)
            cmdline = psutil.Process(agent.pid).cmdline()

            reason = "the healer says so"
            gateway.outgoing.put_nowait(
                gateway_pb2.ControllerMessage(restart_service=fleet_pb2.RestartService(reason=reason))
            )
            # The build is cancelled (its outcome sent before the stream closes) and its process group killed.
            event = await asyncio.wait_for(gateway.build_events.get(), 15)
            assert (event.build_id, event.kind) == ("b-1", build_pb2.BuildEvent.CANCELLED)
            assert event.reason == f"the agent is restarting: {reason}"
            second = await asyncio.wait_for(gateway.hellos.get(), 15)
            assert not psutil.pid_exists(build.pid)

            # The same process (pid, command line), a fresh program in it.
            assert agent.alive() and psutil.Process(agent.pid).cmdline() == cmdline
            assert second.drone_id == first.drone_id and second.name == "restarter"
            assert HEX32.match(second.instance_id) and second.instance_id != first.instance_id
            assert second.process_started_at_unix_ns > first.process_started_at_unix_ns
            assert second.current_job_id == "" and not second.recent_builds
            # Nothing of the old program's sockets and pipes lives on in the new one.
            assert not before & fds(agent.pid)
            log = agent.log()
            assert f"the controller asked for a restart of this agent: {reason}" in log
            assert log.count("swarm-agent ") >= 2 and first.instance_id in log and second.instance_id in log
        finally:
            agent.kill()
            await server.stop(None)

    asyncio.run(scenario())
