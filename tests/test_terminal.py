"""Terminals and one-off commands through the whole path: an aiohttp
websocket client -> the controller's admin tier -> the drone's own
Channels.Shell stream (mutual TLS on 127.0.0.1) -> a real PTY with a real
bash on the agent, and back.

One controller and one agent serve most tests (processes start once per
module); the timeouts have a controller of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import psutil
import pytest

from swarm.clock import parse_iso
from swarm.v1 import fleet_pb2, gateway_pb2, gateway_pb2_grpc, shell_pb2, shell_pb2_grpc

from support.procs import Controller, agent_credentials, enroll_here, wait_for
from support.shells import ShellDrone, start_shell_drone
from support.terminal import Term, open_terminal

pytestmark = pytest.mark.timeout(120)

HEARTBEAT = 0.25


class Drone(ShellDrone):
    @property
    def ws_url(self) -> str:
        return self.controller.admin_url.replace("http://", "ws://") + f"/ws/ssh/{self.agent.name}"

    def shells(self) -> dict[str, Any]:
        status, body = self.controller.admin("GET", "/admin/api/shells")
        assert status == 200, body
        assert isinstance(body, dict), body
        return body

    def shell(self, session_id: str) -> dict[str, Any]:
        return next(s for s in self.shells()["shells"] if s["id"] == session_id)


def start_drone(root: Path, *flags: str, name: str = "tty") -> Drone:
    made = start_shell_drone(root, name, *flags, heartbeat_interval=HEARTBEAT)
    return Drone(made.controller, made.agent, made.home)


@pytest.fixture(scope="module")
def drone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drone]:
    made = start_drone(tmp_path_factory.mktemp("terminal"))
    try:
        yield made
    finally:
        made.stop()


@contextlib.asynccontextmanager
async def terminal(drone: Drone, query: str = "rows=24&cols=80") -> AsyncIterator[Term]:
    async with open_terminal(f"{drone.ws_url}?{query}", drone.controller.admin_key) as term:
        yield term


def events(drone: Drone, kind: str) -> list[dict[str, Any]]:
    return drone.controller.events(type=kind)


# -- the terminal ------------------------------------------------------------------------


def test_echo_resize_ctrl_c_exit_status_and_recording(drone: Drone) -> None:
    async def scenario() -> tuple[str, dict[str, Any]]:
        async with terminal(drone) as term:
            session = term.session
            assert session["drone"] == "tty" and session["rows"] == 24 and session["cols"] == 80
            assert not session["reattached"]
            # The terminal echoes what is typed; the shell runs it.
            await term.type("echo typed-$((6*7))")
            await term.until(r"echo typed-\$\(\(6\*7\)\)")
            await term.run("", "typed-42")
            # A resize is what stty sees.
            await term.ws.send_str(json.dumps({"type": "resize", "rows": 33, "cols": 111}))
            await term.run("stty size", r"\b33 111\r\n")
            # Ctrl-C interrupts the foreground job; the shell stays.
            await term.type("sleep 100\r")
            wait_for(lambda: drone.processes("sleep"), what="sleep running under the shell")
            await term.type("\x03")
            wait_for(lambda: not drone.processes("sleep"), what="sleep interrupted")
            await term.run("echo still-$((1+1))", "still-2")
            # A bad control message is answered, not fatal.
            await term.ws.send_str('{"type": "dance"}')
            assert "unknown message type" in (await term.message("error"))["message"]
            await term.type("exit 3\r")
            exit = await term.message("exit")
            await term.closed()
            return str(session["session"]), exit

    session_id, exit = asyncio.run(scenario())
    assert exit["exit_code"] == 3 and exit["signal"] is None
    shell = wait_for(lambda: (s := drone.shell(session_id))["state"] == "closed" and s, what="closed")
    assert shell["exit"]["exit_code"] == 3 and shell["opened_by"] == "admin"
    assert shell["bytes_in"] > 0 and shell["bytes_out"] > 0
    opened = [e for e in events(drone, "shell_opened") if e["data"]["session"] == session_id]
    closed = [e for e in events(drone, "shell_closed") if e["data"]["session"] == session_id]
    assert opened and opened[0]["data"]["by"] == "admin" and opened[0]["drone_name"] == "tty"
    assert closed and closed[0]["data"]["exit_code"] == 3

    # The recording: an asciinema v2 cast with what the terminal showed.
    def cast() -> list[Any] | None:
        status, text = drone.controller.admin("GET", f"/admin/api/shells/{session_id}/recording")
        assert status == 200, text
        lines = [json.loads(line) for line in text.splitlines()]
        return lines if any(line[1] == "o" and "exit" in line[2] for line in lines[1:]) else None

    lines = wait_for(cast, what="the recording written to its end")
    header, frames = lines[0], lines[1:]
    assert header["version"] == 2 and header["width"] == 80 and header["height"] == 24
    assert isinstance(header["timestamp"], int) and header["swarm"]["opened_by"] == "admin"
    assert all(isinstance(f[0], float | int) and f[1] in ("o", "r", "m") for f in frames)
    assert [f[0] for f in frames] == sorted(f[0] for f in frames)
    output = "".join(f[2] for f in frames if f[1] == "o")
    assert "echo typed-$((6*7))" in output and "typed-42" in output and "33 111" in output
    assert ["r", "111x33"] in [f[1:] for f in frames]
    listed = [r for r in drone.shells()["recordings"] if r["id"] == session_id]
    assert listed and listed[0]["drone"] == "tty" and listed[0]["opened_by"] == "admin"
    assert listed[0]["bytes"] > 100


def test_detach_reattach_replays_and_keeps_the_shell_then_kill(drone: Drone) -> None:
    async def first() -> str:
        async with terminal(drone) as term:
            await term.run("KEPT=kept-$((40+2)); echo marker-$KEPT", "marker-kept-42")
            await term.run("echo shell-pid-$$", r"shell-pid-\d+")
            return str(term.session["session"])

    session_id = asyncio.run(first())
    # The websocket is gone; the shell is not.
    wait_for(lambda: drone.shell(session_id)["state"] == "detached", what="detached")
    assert drone.processes("bash")

    async def again() -> bytes:
        async with terminal(drone, f"session={session_id}&rows=30&cols=100") as term:
            assert term.session["session"] == session_id and term.session["reattached"]
            replay_end = await term.until("marker-kept-42")  # the replay has the earlier output
            await term.run("echo again-$KEPT", "again-kept-42")  # the variable: the same shell
            await term.run("stty size", r"\b30 100\r\n")
            return bytes(term.out[:replay_end])

    replay = asyncio.run(again())
    assert b"echo marker-$KEPT" in replay  # the replay starts before the reattach: earlier output

    async def refused(url: str, origin: str | None = None) -> int:
        async with aiohttp.ClientSession(headers={"X-Admin-Key": drone.controller.admin_key}) as client:
            try:
                async with client.ws_connect(url, origin=origin):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    # Reattaching names the drone the session is on; a plain GET is not an upgrade.
    base = drone.controller.admin_url.replace("http://", "ws://")
    assert asyncio.run(refused(f"{base}/ws/ssh/nope?session={session_id}")) == 404
    assert asyncio.run(refused(f"{base}/ws/ssh/tty?session=s-0000000000000000")) == 404
    # A page of another origin cannot open a terminal, not even with the key.
    assert asyncio.run(refused(f"{base}/ws/ssh/tty", origin="http://evil.example")) == 403
    status, body = drone.controller.admin("GET", "/ws/ssh/tty")
    assert status == 400 and "websocket" in body["error"]["message"], body
    assert [e for e in events(drone, "shell_reattached") if e["data"]["session"] == session_id]

    wait_for(lambda: drone.shell(session_id)["state"] == "detached", what="detached again")
    status, body = drone.controller.admin("DELETE", f"/admin/api/shells/{session_id}")
    assert status == 200, body
    assert body["shell"]["state"] == "closed" and body["shell"]["closed_by"] == "admin"
    assert body["shell"]["exit"]["signal"] is not None  # hung up
    wait_for(lambda: not drone.processes("bash"), what="the shell gone")
    killed = [e for e in events(drone, "shell_killed") if e["data"]["session"] == session_id]
    assert killed and killed[0]["data"]["by"] == "admin" and killed[0]["drone_name"] == "tty"
    status, body = drone.controller.admin("DELETE", f"/admin/api/shells/{session_id}")
    assert status == 409, body
    status, body = drone.controller.admin("DELETE", "/admin/api/shells/s-0000000000000000")
    assert status == 404, body


# -- exec --------------------------------------------------------------------------------


def test_exec_returns_output_and_status_and_its_timeout_kills(drone: Drone) -> None:
    def run(body: dict[str, Any]) -> tuple[int, Any]:
        return drone.controller.admin("POST", "/admin/api/drones/tty/exec", json.dumps(body).encode())

    status, result = run({"command": "echo out-$((2*3)); echo err >&2; exit 7", "timeout": 10})
    assert status == 200, result
    assert result["stdout"] == "out-6\n" and result["stderr"] == "err\n"
    assert result["exit_code"] == 7 and result["signal"] is None and not result["timed_out"]

    started = time.monotonic()
    status, result = run({"command": "sleep 60 & sleep 61; echo never", "timeout": 1})
    assert status == 200, result
    assert result["timed_out"] and result["exit_code"] is None and result["signal"] == 9
    assert "never" not in result["stdout"]
    assert time.monotonic() - started < 6
    wait_for(lambda: not drone.processes("sleep"), what="the whole process group killed")

    audit = events(drone, "drone_exec")[-2:]
    assert [e["data"]["by"] for e in audit] == ["admin", "admin"]
    assert audit[0]["data"]["exit_code"] == 7 and audit[0]["data"]["stdout_bytes"] == 6
    assert "out-6" not in json.dumps(audit)  # a summary, never the output

    refused: list[tuple[dict[str, Any], str]] = [
        ({}, "command must be"),
        ({"command": "true", "timeout": 0}, "timeout must be"),
        ({"command": "true", "timeout": "5"}, "timeout must be"),
    ]
    for bad, needle in refused:
        status, body = run(bad)
        assert status == 400 and needle in body["error"]["message"], body
    status, body = drone.controller.admin("POST", "/admin/api/drones/ghost/exec", b'{"command": "true"}')
    assert status == 404, body


# -- backpressure and figures -----------------------------------------------------------------


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def heartbeat_age(drone: Drone) -> float:
    node = drone.controller.node(drone.agent.name)
    assert node is not None and node["status"] == "online", node
    return time.time() - parse_iso(node["last_heartbeat_at"])


def test_flood_with_a_stalled_reader_stays_bounded_and_heartbeats_flow(drone: Drone) -> None:
    figures: dict[str, float] = {}

    async def scenario() -> None:
        async with terminal(drone) as term:
            session_id = term.session["session"]
            await term.run("echo ready-$((3*3))", "ready-9")
            base = {"controller": rss(drone.controller.pid), "agent": rss(drone.agent.pid)}
            await term.type("yes flood-line-flood-line-flood-line\r")
            await term.until("flood-line\r\nflood-line", timeout=10)
            # Stop reading: nothing below reads the websocket for a while.
            peak = dict(base)
            ages: list[float] = []
            sent: list[int] = []
            stalled_at = time.monotonic()
            while time.monotonic() - stalled_at < 4.0:
                await asyncio.sleep(0.2)
                ages.append(await asyncio.to_thread(heartbeat_age, drone))
                for name, pid in (("controller", drone.controller.pid), ("agent", drone.agent.pid)):
                    peak[name] = max(peak[name], rss(pid))
                sent.append((await asyncio.to_thread(drone.shell, session_id))["bytes_out"])
            figures["controller_growth_mb"] = (peak["controller"] - base["controller"]) / 2**20
            figures["agent_growth_mb"] = (peak["agent"] - base["agent"]) / 2**20
            figures["worst_heartbeat_age_s"] = max(ages)
            figures["bytes_out_last_2s"] = sent[-1] - sent[len(sent) // 2]
            # Reading again: the flood ends with Ctrl-C and the shell answers.
            await term.type("\x03")
            await term.run("echo done-$((2+3))", "done-5", timeout=30)

    asyncio.run(scenario())
    print(f"\nflood with a stalled reader: {figures}")
    assert figures["controller_growth_mb"] < 50 and figures["agent_growth_mb"] < 50
    # A control stream held up behind the flood would age through the whole
    # 4 s stall; a loaded machine delays a beat or two, not that.
    assert figures["worst_heartbeat_age_s"] < 8 * HEARTBEAT
    # Stalled means stalled: the controller stopped taking output from the drone.
    assert figures["bytes_out_last_2s"] < 2 * 2**20


def test_a_paused_viewer_gets_no_output_until_it_resumes(drone: Drone) -> None:
    """Flow control as ttyd does it (the console's xterm.js pauses while its
    parser is behind): output waits on the controller, resume delivers it."""
    flag = drone.home / "held.flag"

    async def scenario() -> None:
        async with terminal(drone) as term:
            await term.run("echo before-$((2*4))", r"(?s)before-8\r\n.*# ")
            await term.ws.send_str('{"type": "pause"}')
            await term.ws.send_str('{"type": "pause"}')  # pausing twice is pausing
            held_from = len(term.out)
            await term.type(f"echo held-$((7*7)); touch {flag}\r")
            # The shell has run it, so its output is out of the PTY (the agent has it, or the
            # controller, which stops reading the drone at the first message it cannot deliver) ...
            await asyncio.to_thread(wait_for, flag.exists, what="the command run on the drone")
            # ... the controller answers a later message at once, and sends none of that output.
            await term.ws.send_str('{"type": "dance"}')
            assert "unknown message type" in (await term.message("error"))["message"]
            assert bytes(term.out[held_from:]) == b""
            await term.ws.send_str('{"type": "resume"}')
            end = await term.until(r"held-49\r\n", since=held_from)
            await term.run("echo after-$((3*3))", "after-9")
            assert bytes(term.out[held_from:end]).count(b"held-49") == 1  # nothing lost, nothing twice

    asyncio.run(scenario())


def test_keystrokes_echo_and_bulk_output_arrives_whole(drone: Drone) -> None:
    """Each key comes back, and a large output arrives to the byte. How fast
    (keystroke round trip, MB/s) is bench/terminal.py's to say: on a loaded
    machine a figure here would measure the load."""
    big = drone.home / "big.txt"
    with big.open("wb") as fh:
        for i in range(8 * 2**20 // 76):
            fh.write(b"%08d bulk output, as a build log would have it, seventy-six bytes long.\n" % i)
    size = big.stat().st_size
    seen: dict[str, int] = {}

    async def scenario() -> None:
        async with terminal(drone) as term:
            await term.run("echo rt-$((2+2))", "rt-4")
            await term.type("cat > /dev/null\r")  # the terminal echoes each key cat is given
            wait_for(lambda: drone.processes("cat"), what="cat reading")
            for i in range(50):
                key = "abcdefghij"[i % 10]
                before = len(term.out)
                await term.type(key)
                await term.until(key, since=before)
            await term.type("\r\x04")  # end the line, then end cat's input
            wait_for(lambda: not drone.processes("cat"), what="cat done")
            await term.run("echo bulk-$((3+3))", "bulk-6")
            start = len(term.out)
            await term.run(f"cat {big}; echo bulk-end-$((5*5))", "bulk-end-25", timeout=60)
            seen["bulk"] = len(term.out) - start
            seen["lines"] = bytes(term.out[start:]).count(b"seventy-six bytes long.\r\n")

    asyncio.run(scenario())
    assert seen["bulk"] >= size  # every byte (plus the tty's CR before each LF)
    assert seen["lines"] == size // 76, seen


# -- authorization of channels -----------------------------------------------------------------


async def hand_drone(controller: Controller, who: Path, name: str) -> tuple[grpc.aio.Channel, Any]:
    """A control stream by hand for an enrolled identity: Hello, then heartbeats."""
    drone_id = (who / "drone-id").read_text().strip()
    channel = grpc.aio.secure_channel(controller.grpc_target, agent_credentials(who))
    call = gateway_pb2_grpc.DroneGatewayStub(channel).Connect()
    await call.write(
        gateway_pb2.AgentMessage(
            hello=fleet_pb2.Hello(drone_id=drone_id, name=name, cores=1, heartbeat_interval_ms=500)
        )
    )
    welcome = await call.read()
    assert welcome.WhichOneof("body") == "welcome"
    return channel, call


async def shell_call(controller: Controller, who: Path, channel_id: str) -> tuple[grpc.aio.Channel, Any]:
    channel = grpc.aio.secure_channel(controller.grpc_target, agent_credentials(who))
    call = shell_pb2_grpc.ChannelsStub(channel).Shell()
    await call.write(shell_pb2.ShellFrame(attach=shell_pb2.Attach(channel_id=channel_id)))
    return channel, call


def test_a_drone_attaches_only_to_its_own_channels(drone: Drone, tmp_path: Path) -> None:
    controller = drone.controller
    for name in ("raw", "other"):
        enroll_here(controller, name, tmp_path / name)

    async def scenario() -> None:
        control, stream = await hand_drone(controller, tmp_path / "raw", "raw")
        opened: list[asyncio.Task[Any]] = []
        try:
            wait_for(lambda: (n := controller.node("raw")) and n["connected"], what="raw connected")
            raw_url = controller.admin_url.replace("http://", "ws://") + "/ws/ssh/raw"
            async with aiohttp.ClientSession(headers={"X-Admin-Key": controller.admin_key}) as http_session:
                opened.append(asyncio.create_task(http_session.ws_connect(raw_url)))
                while True:  # heartbeats are not needed for this; the OpenChannel is
                    message = await asyncio.wait_for(stream.read(), 10)
                    if message.WhichOneof("body") == "open_channel":
                        break
                request = message.open_channel
                assert request.kind == shell_pb2.OpenChannel.SHELL and request.rows == 24
                channel_id = request.channel_id

                async def status_of(who: str, cid: str) -> grpc.StatusCode:
                    channel, call = await shell_call(controller, tmp_path / who, cid)
                    async with channel:
                        try:
                            await asyncio.wait_for(call.read(), 10)
                        except grpc.aio.AioRpcError as exc:
                            return exc.code()
                        return grpc.StatusCode.OK

                # Another drone's certificate cannot take the channel, nor can anyone take an unknown one.
                assert await status_of("other", channel_id) == grpc.StatusCode.PERMISSION_DENIED
                assert await status_of("raw", "0" * 32) == grpc.StatusCode.NOT_FOUND
                # Its own drone can; the admin's websocket is then served by it.
                channel, call = await shell_call(controller, tmp_path / "raw", channel_id)
                async with channel:
                    ws = await asyncio.wait_for(opened.pop(), 10)
                    term = Term(ws)
                    await term.message("session")
                    await call.write(shell_pb2.ShellFrame(output=b"hand-made output\r\n"))
                    await term.until("hand-made output")
                    await ws.send_bytes(b"keys")
                    frame = await asyncio.wait_for(call.read(), 10)
                    assert frame.input == b"keys"
                    await call.write(
                        shell_pb2.ShellFrame(close=shell_pb2.Close(exited=True, exit_code=0, reason="done"))
                    )
                    exit = await term.message("exit")
                    assert exit["exit_code"] == 0 and exit["reason"] == "done"
                    await ws.close()
                    assert await asyncio.wait_for(call.read(), 10) is grpc.aio.EOF
        finally:
            for task in opened:
                task.cancel()
            stream.cancel()
            await control.close()

    asyncio.run(scenario())


# -- timeouts ------------------------------------------------------------------------------------


def test_idle_timeout_and_grace_close_sessions(tmp_path: Path) -> None:
    drone = start_drone(tmp_path, "--shell-idle-timeout", "1.5", "--shell-grace", "1", name="short")
    try:

        async def idle() -> dict[str, Any]:
            async with terminal(drone) as term:
                await term.run("echo idle-$((4+4))", "idle-8")
                t0 = time.monotonic()
                exit = await term.message("exit", timeout=10)
                exit["after_s"] = time.monotonic() - t0
                await term.closed()
                return exit

        exit = asyncio.run(idle())
        assert "idle for more than 1.5s" in exit["message"], exit
        assert 1.0 < exit["after_s"] < 5, exit

        async def detach() -> str:
            async with terminal(drone) as term:
                await term.run("echo bye-$((1+6))", "bye-7")
                return str(term.session["session"])

        session_id = asyncio.run(detach())
        shell = wait_for(lambda: (s := drone.shell(session_id))["state"] == "closed" and s, what="closed")
        assert "detached for more than 1s" in shell["close_reason"]
        wait_for(lambda: not drone.processes("bash"), what="the shell hung up")
    finally:
        drone.agent.kill()
        drone.controller.kill()
