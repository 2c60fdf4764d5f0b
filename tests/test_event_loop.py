"""The controller's event loop (``--event-loop``): uvloop by default,
Python's own asyncio loop when asked, and a clear refusal of anything else.

Every other real-process test runs the controller on the default (uvloop)
and the in-process layer runs it in the test's asyncio loop; here one
controller process on each loop serves a real agent end to end: the
drone comes online, answers a ping, and the controller stops cleanly on
SIGTERM. And the children a controller starts on uvloop (by fork) live
to their exec while gRPC's threads are busy."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from swarm.controller.config import ControllerConfig

from support.fleet import start_fleet
from support.procs import wait_for


@pytest.mark.parametrize(
    ("args", "said"),
    [((), "event loop: uvloop "), (("--event-loop", "asyncio"), "event loop: asyncio (")],
    ids=["default-uvloop", "asyncio"],
)
def test_the_controller_serves_a_drone_on_the_loop_it_is_given(
    tmp_path: Path, args: tuple[str, ...], said: str
) -> None:
    with start_fleet(tmp_path, ["d1"], *args) as swarm:
        controller = swarm.controller
        assert said in controller.log()
        assert controller.info["event_loop"].startswith(said.removeprefix("event loop: "))
        # A ping's answer came back: the controller wrote to the drone's stream and read from it.
        node = wait_for(
            lambda: (n := controller.known_node("d1"))["ping_latency_ms"] is not None and n,
            what="d1's first pong",
        )
        assert node["status"] == "online"
        assert controller.terminate() == 0
        assert "stopped" in controller.log().splitlines()[-1]


def test_an_unknown_event_loop_is_refused() -> None:
    # On the command line: exit 2 with this one line (tests/test_config.py).
    with pytest.raises(ValueError, match="event_loop must be uvloop or asyncio, got 'tokio'"):
        ControllerConfig(event_loop="tokio")


# A controller on uvloop with gRPC busy (a server, a channel, calls in
# flight), running 300 short commands as the controller runs ssh and rsync.
CHILDREN_BESIDE_GRPC = """
import asyncio

import swarm.controller  # first, as in the controller: before grpc is imported

import grpc

from swarm.controller.eventloop import loop_runner
from swarm.controller.oobshell import run_command


async def main() -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary("/swarm.v1.Nothing/Here")

    async def busy() -> None:
        while True:
            try:
                await call(b"", timeout=0.05)
            except grpc.aio.AioRpcError:
                pass

    callers = [asyncio.create_task(busy()) for _ in range(4)]
    codes = []
    for _ in range(300):
        run = await run_command(["sh", "-c", "exit 5"], 10, 1024)
        codes.append(run.returncode)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    await channel.close()
    await server.stop(None)
    print(sorted(set(codes)), sum(code != 5 for code in codes))


loop_runner("uvloop")(main())
"""


def test_children_started_on_uvloop_beside_busy_grpc_threads_do_not_crash() -> None:
    # uvloop starts children with fork(), so gRPC's fork handlers would run in
    # them: about one in ten died by SIGSEGV or SIGABRT before its exec until the
    # controller turned them off (swarm/controller/__init__.py).
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILDREN_BESIDE_GRPC)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[5] 0", result.stdout
