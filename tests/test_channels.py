"""Channels, commands and terminals in process: the wire conversion, the one
frame reader, the channel table's rules, a command and a log on a channel,
a shell session's life (viewers, input, replay, close) with the registry's
limits swept at a time the test chooses, replay bounds and the recording
format.

A drone's control stream is fakes/links.py's FakeLink; a channel's far
end is a script of frames (``ScriptedEnd``, a channels.FarEnd). The same
behaviour with real agents, PTYs and sshd is proved by test_terminal.py,
test_terminal_ssh.py, test_logs.py and test_unparsable.py.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

import swarm.controller
from swarm.clock import SYSTEM, Clock
from swarm.controller import channel_serde
from swarm.controller.authz import AGENT, INSECURE, Identity
from swarm.controller.channel_frames import (
    Close,
    Closed,
    ExecRequest,
    ExitInfo,
    InFrame,
    Input,
    LogRequest,
    OutFrame,
    Output,
    Resize,
    ShellRequest,
    Stderr,
)
from swarm.controller.channels import KILL_WAIT, BrokenChannel, Channels, FarEnd
from swarm.controller.errors import FailedPrecondition, NotFound, PermissionDenied, Unavailable
from swarm.controller.events import EventLog
from swarm.controller.execs import ExecRun, Execs
from swarm.controller.fleet import DroneState
from swarm.controller.logs import PIECES, LogStream, drone_log
from swarm.controller.recording import Recorder, Recordings, cast_header
from swarm.controller.shellmessages import ShellMessage
from swarm.controller.shells import ShellRegistry, ShellSettings
from swarm.controller.shellsession import Replay, ShellSession
from swarm.controller.store.records import NodeRecord
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore
from swarm.controller.web.views.base import dumps
from swarm.logtail import Piece
from swarm.protocol import CHANNELS_EXEC, CHANNELS_LOG, CHANNELS_SHELL
from swarm.v1 import shell_pb2

from fakes.clock import ManualClock
from fakes.links import FakeLink

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")
WAIT = 5.0
ALL_CHANNELS = (CHANNELS_SHELL, CHANNELS_EXEC, CHANNELS_LOG)
GARBAGE = "a message that does not parse as swarm.v1.ShellFrame"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def until(condition: Callable[[], Any], what: str) -> None:
    """Let the loop run until ``condition()`` holds, within WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


class ScriptedEnd:
    """A channel's far end (channels.FarEnd) that gives the frames a test puts
    in (None ends its stream, an exception is raised by the read) and keeps
    what the channel writes."""

    def __init__(self) -> None:
        self.script: asyncio.Queue[InFrame | Exception | None] = asyncio.Queue()
        self.written: list[OutFrame] = []

    def give(self, *frames: InFrame | Exception | None) -> None:
        for frame in frames:
            self.script.put_nowait(frame)

    async def read(self) -> InFrame | None:
        frame = await self.script.get()
        if isinstance(frame, Exception):
            raise frame
        return frame

    async def write(self, frame: OutFrame) -> None:
        self.written.append(frame)


def far_end() -> ScriptedEnd:
    end = ScriptedEnd()
    _typed: FarEnd = end  # mypy holds the script to the interface channels use
    return end


def drone(name: str = "d1", features: tuple[str, ...] = ALL_CHANNELS) -> tuple[DroneState, FakeLink]:
    state = DroneState(NodeRecord(id=name.ljust(32, "0"), name=name, first_seen_at=0.0))
    link = FakeLink(state.id)
    state.link = link
    state.status = "online"
    state.features = features
    return state, link


def agent_of(state: DroneState) -> Identity:
    return Identity(AGENT, state.id)


def event_log(tmp_path: Path) -> EventLog:
    """A real event log; nothing here starts it, so it keeps its events in memory."""
    return EventLog(StoreRunner(SqlStore(f"sqlite:///{tmp_path}/events.db")), buffer=1000, retention=1000)


def events_of(events: EventLog, kind: str) -> list[dict[str, Any]]:
    found = events.recent(after_id=None, since_ts=None, limit=1000, drone_id=None, types=(kind,))
    assert found is not None
    return [{"message": e.message, **e.data} for e in found]


def dial_in(channels: Channels, link: FakeLink, state: DroneState, end: ScriptedEnd) -> asyncio.Task[None]:
    """What the drone's Shell call does (channelsvc.py): attach to the newest
    channel the controller asked it for, and serve it (the task ends with it)."""
    channel_id, _ = link.channels[-1]
    channel = channels.claim(channel_id, agent_of(state))
    return asyncio.create_task(channel.serve(end))


async def asked(link: FakeLink, count: int = 1) -> None:
    await until(lambda: len(link.channels) >= count, "an OpenChannel")


# -- the wire ------------------------------------------------------------------------------------


def test_requests_become_the_open_channel_of_their_kind() -> None:
    Kind = shell_pb2.OpenChannel
    shell = channel_serde.open_channel("c1", ShellRequest(rows=30, cols=100)).open_channel
    assert (shell.channel_id, shell.kind, shell.rows, shell.cols) == ("c1", Kind.SHELL, 30, 100)
    run_ = channel_serde.open_channel("c2", ExecRequest("uname -a", 2.5)).open_channel
    assert (run_.kind, run_.command, run_.timeout_s, run_.rows) == (Kind.EXEC, "uname -a", 2.5, 0)
    tail = channel_serde.open_channel("c3", LogRequest("agent", 50, True)).open_channel
    assert (tail.kind, tail.source, tail.lines, tail.follow, tail.command) == (
        Kind.LOG,
        "agent",
        50,
        True,
        "",
    )
    assert (ShellRequest.feature, ExecRequest.feature, LogRequest.feature) == ALL_CHANNELS


def test_frames_from_the_far_end_are_read_and_the_others_skipped() -> None:
    Frame = shell_pb2.ShellFrame
    read = channel_serde.read_frame
    assert read(Frame(output=b"out")) == Output(b"out")
    assert read(Frame(stderr=b"err")) == Stderr(b"err")
    exited = read(Frame(close=shell_pb2.Close(exited=True, exit_code=3, reason="exited with 3")))
    assert exited == Closed(ExitInfo(True, 3, None, "exited with 3"))
    killed = shell_pb2.Close(exit_code=7, signal=9, reason="\x1b[31mkilled\x07 " + "x" * 600, timed_out=True)
    closed = read(Frame(close=killed))
    assert isinstance(closed, Closed)
    # No code without a normal exit; the reason without escapes or control characters, cut.
    assert (closed.exit.exited, closed.exit.exit_code, closed.exit.signal, closed.exit.timed_out) == (
        False,
        None,
        9,
        True,
    )
    assert closed.exit.reason.startswith("killed x") and len(closed.exit.reason) == 500
    assert read(Frame(close=shell_pb2.Close(error="not_found"))) == Closed(
        ExitInfo(False, None, None, ""), "not_found"
    )
    skipped = [Frame(), Frame(attach=shell_pb2.Attach(channel_id="c")), Frame(input=b"x")]
    skipped.append(Frame(resize=shell_pb2.Resize(rows=1, cols=1)))
    assert [read(frame) for frame in skipped] == [None] * 4


def test_frames_to_the_far_end_are_written_as_shell_frames() -> None:
    write = channel_serde.write_frame
    assert write(Input(b"ls\r")) == shell_pb2.ShellFrame(input=b"ls\r")
    assert write(Resize(40, 120)) == shell_pb2.ShellFrame(resize=shell_pb2.Resize(rows=40, cols=120))
    assert write(Close("bye")) == shell_pb2.ShellFrame(close=shell_pb2.Close(reason="bye"))


def test_the_channel_core_builds_no_protobuf() -> None:
    """Only channel_serde.py and the servicer (channelsvc.py) see shell.proto's messages."""
    root = Path(swarm.controller.__file__).parent
    core = ("channels", "channel_frames", "execs", "logs", "oobshell", "recording", "shells", "shellsession")
    for name in core:
        tree = ast.parse((root / f"{name}.py").read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in imported if m == "grpc" or m.startswith(("swarm.v1", "grpc."))}, name


# -- the frame reader --------------------------------------------------------------------------


def test_the_reader_hands_output_and_stderr_over_in_order_until_the_close() -> None:
    async def scenario() -> None:
        state, _ = drone()
        command = ExecRun("c" * 32, state, max_output=5)
        end = far_end()
        exit = ExitInfo(True, 0, None, "exited with 0")
        # Past the cap the rest is read and dropped; a frame after the Close is not read.
        end.give(
            Output(b"abc"), Stderr(b"e1"), Output(b"defgh"), Stderr(b"e2"), Closed(exit), Output(b"late")
        )
        await asyncio.wait_for(command.serve(end), WAIT)
        assert (bytes(command.stdout), command.stdout_truncated) == (b"abcde", True)
        assert (bytes(command.stderr), command.stderr_truncated) == (b"e1e2", False)
        assert command.exit == exit and command.ended.is_set()
        assert end.script.qsize() == 1

    run(scenario())


def test_a_stream_that_ends_without_a_close_or_breaks_or_hangs() -> None:
    async def serve(*frames: InFrame | Exception | None) -> ExecRun:
        state, _ = drone()
        command = ExecRun("c" * 32, state, max_output=100)
        end = far_end()
        end.give(*frames)
        await asyncio.wait_for(command.serve(end), WAIT)
        return command

    async def scenario() -> None:
        ended = await serve(Output(b"half"), None)
        assert ended.exit is None and bytes(ended.stdout) == b"half"
        broken = await serve(BrokenChannel(GARBAGE))
        assert broken.exit == ExitInfo(False, None, None, f"the drone sent {GARBAGE}")
        # A far end that says nothing ends when the channel is aborted (released, timed out).
        state, _ = drone()
        silent = ExecRun("c" * 32, state, max_output=100)
        serving = asyncio.create_task(silent.serve(far_end()))
        await asyncio.sleep(0)
        assert not serving.done()
        silent.abort()
        await asyncio.wait_for(serving, WAIT)
        assert silent.exit is None and silent.ended.is_set()

    run(scenario())


def test_a_log_that_is_not_read_stops_the_reading_of_its_channel() -> None:
    async def scenario() -> None:
        state, _ = drone()
        stream = LogStream("c" * 32, state)
        end = far_end()
        end.give(Stderr(b"agent: /var/log/swarm-agent.log"))
        end.give(*(Output(b"line %d\n" % i) for i in range(20)))
        end.give(Closed(ExitInfo(True, 0, None, "end of log")), None)
        given = end.script.qsize()
        serving = asyncio.create_task(stream.serve(end))
        # The reader fills the few pieces the log keeps, holds one more and waits:
        # the rest stays unread until someone reads the log.
        unread = given - PIECES - 1
        await until(lambda: end.script.qsize() == unread, "the reader to stop")
        for _ in range(20):
            await asyncio.sleep(0)
        assert end.script.qsize() == unread
        pieces = []
        while (piece := await stream.next()) is not None:
            pieces.append(piece)
        await asyncio.wait_for(serving, WAIT)
        assert pieces[0] == Piece(notice="agent: /var/log/swarm-agent.log")
        assert b"".join(p.data for p in pieces[1:]) == b"".join(b"line %d\n" % i for i in range(20))
        assert stream.exit is not None and stream.exit.reason == "end of log"

    run(scenario())


def test_a_log_source_the_drone_refuses_is_an_error_of_its_own() -> None:
    async def scenario() -> None:
        state, link = drone()
        channels = Channels(max_open=4, open_timeout=WAIT)
        pieces = drone_log(channels, state, "build/nope", lines=10, follow=False)
        first = asyncio.ensure_future(anext(pieces))
        end = far_end()
        await asked(link)
        serving = dial_in(channels, link, state, end)
        assert link.channels[-1][1] == LogRequest("build/nope", 10, False)
        end.give(Closed(ExitInfo(False, None, None, "no build nope on d1"), "not_found"))
        with pytest.raises(NotFound, match="d1: no build nope on d1"):
            await asyncio.wait_for(first, WAIT)
        await asyncio.wait_for(serving, WAIT)
        assert len(channels) == 0  # released

    run(scenario())


# -- the table of channels ---------------------------------------------------------------------


def test_a_channel_is_asked_for_only_where_it_can_be_served() -> None:
    async def scenario() -> None:
        channels = Channels(max_open=2, open_timeout=0.05)
        state, link = drone()
        channels.ask(state, "c1", ExecRequest("true", 1.0))
        assert link.channels == [("c1", ExecRequest("true", 1.0))]

        gone, _ = drone("gone")
        gone.link, gone.status = None, "offline"
        with pytest.raises(FailedPrecondition, match=r"gone is offline: .* \(via=ssh goes without the agent"):
            channels.ask(gone, "c2", ShellRequest(24, 80))
        with pytest.raises(FailedPrecondition) as refused:
            channels.ask(gone, "c2", LogRequest("agent", 1, False))
        assert "via=ssh" not in refused.value.message

        older, older_link = drone("older", features=(CHANNELS_SHELL,))
        with pytest.raises(FailedPrecondition, match=r"the agent on older does not speak channels\.log"):
            channels.ask(older, "c3", LogRequest("agent", 1, False))
        assert older_link.channels == []

        class FullLink(FakeLink):
            def open_channel(self, channel_id: str, request: Any) -> bool:
                return False

        busy, _ = drone("busy")
        busy.link = FullLink(busy.id)
        with pytest.raises(Unavailable, match="busy is not reading its control stream"):
            channels.ask(busy, "c4", ShellRequest(24, 80))

        # Shells, commands and logs share one cap.
        command = ExecRun("a" * 32, state, 10)
        channels.add(command)
        channels.add(LogStream("b" * 32, state))
        with pytest.raises(Unavailable, match="2 shell sessions and commands are open already"):
            channels.add(ExecRun("c" * 32, state, 10))

        # A drone that does not dial in: Unavailable, and the channel is forgotten.
        channels.release(command)
        waiting = ExecRun("d" * 32, state, 10)
        with pytest.raises(Unavailable, match=r"d1 did not open the channel within 0\.05s"):
            await channels.open(state, waiting, ExecRequest("true", 1.0))
        assert len(channels) == 1
        with pytest.raises(NotFound):
            channels.claim("d" * 32, agent_of(state))

    run(scenario())


def test_a_drone_attaches_only_to_a_waiting_channel_of_its_own_once() -> None:
    async def scenario() -> None:
        channels = Channels(max_open=4, open_timeout=WAIT)
        mine, _ = drone("mine")
        other, _ = drone("other")
        channel = ExecRun("e" * 32, mine, 10)
        channels.add(channel)
        with pytest.raises(NotFound, match="no channel 'ffff"):
            channels.claim("f" * 32, agent_of(mine))
        with pytest.raises(PermissionDenied):
            channels.claim("e" * 32, agent_of(other))
        assert channels.claim("e" * 32, agent_of(mine)) is channel
        with pytest.raises(FailedPrecondition, match="attached already"):
            channels.claim("e" * 32, agent_of(mine))
        # Without certificates (--insecure) there is no drone to check against.
        loose = ExecRun("9" * 32, mine, 10)
        channels.add(loose)
        assert channels.claim("9" * 32, Identity(INSECURE)) is loose

    run(scenario())


def test_stop_gives_channels_a_grace_then_cuts_them() -> None:
    async def scenario() -> None:
        channels = Channels(max_open=4, open_timeout=WAIT)
        state, _ = drone()
        quick, slow = ExecRun("1" * 32, state, 10), ExecRun("2" * 32, state, 10)
        for channel in (quick, slow):
            channels.add(channel)
        quick_end, slow_end = far_end(), far_end()
        served = [asyncio.create_task(quick.serve(quick_end)), asyncio.create_task(slow.serve(slow_end))]
        served[0].add_done_callback(lambda _: channels.forget(quick))
        quick_end.give(Closed(ExitInfo(True, 0, None, "exited with 0")))
        started = time.monotonic()
        await channels.stop(0.1)
        waited = time.monotonic() - started
        await asyncio.wait_for(asyncio.gather(*served), WAIT)
        assert quick.exit is not None and slow.exit is None
        assert 0.09 < waited < 0.1 + WAIT / 2, waited

    run(scenario())


# -- commands -------------------------------------------------------------------------------------


def test_a_command_through_the_agent_is_run_collected_released_and_audited(tmp_path: Path) -> None:
    async def scenario() -> None:
        events = event_log(tmp_path)
        channels = Channels(max_open=4, open_timeout=WAIT)
        execs = Execs(events, channels, max_output=1 << 20, max_timeout=60.0)
        state, link = drone()
        result = asyncio.ensure_future(execs.run(state, "echo hi; echo oops >&2; exit 3", 10.0, "alice"))
        end = far_end()
        await asked(link)
        serving = dial_in(channels, link, state, end)
        assert link.channels[-1][1] == ExecRequest("echo hi; echo oops >&2; exit 3", 10.0)
        end.give(Output(b"hi\n"), Stderr(b"oops\n"), Closed(ExitInfo(True, 3, None, "exited with 3")))
        done = await asyncio.wait_for(result, WAIT)
        await asyncio.wait_for(serving, WAIT)
        assert (done.stdout, done.stderr, done.exit.exit_code) == (b"hi\n", b"oops\n", 3)
        assert len(channels) == 0
        [audit] = events_of(events, "drone_exec")
        assert (audit["by"], audit["via"], audit["exit_code"], audit["stdout_bytes"]) == (
            "alice",
            "agent",
            3,
            3,
        )

    run(scenario())


# -- terminals ------------------------------------------------------------------------------------


class ViewerLog:
    """A viewer (shellsession.Viewer) that keeps what it is sent."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.control: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    async def send_output(self, data: bytes) -> None:
        self.output += data

    async def send_control(self, message: ShellMessage) -> None:
        self.control.append(json.loads(dumps(message)))  # as the websocket's client reads it

    async def close(self, code: int, message: str) -> None:
        self.closed = (code, message)


@dataclass
class Terminals:
    registry: ShellRegistry
    channels: Channels
    events: EventLog
    state: DroneState
    link: FakeLink
    serving: list[asyncio.Task[None]] = field(default_factory=list)

    async def open(self, rows: int = 24, cols: int = 80) -> tuple[ShellSession, ScriptedEnd]:
        opening = asyncio.ensure_future(self.registry.open_shell(self.state, "alice", rows, cols))
        end = far_end()
        await asked(self.link, len(self.link.channels) + 1)
        self.serving.append(dial_in(self.channels, self.link, self.state, end))
        return await asyncio.wait_for(opening, WAIT), end


@asynccontextmanager
async def terminals(tmp_path: Path, *, clock: Clock = SYSTEM, **settings: Any) -> AsyncIterator[Terminals]:
    shell_settings = ShellSettings(**settings)
    events = event_log(tmp_path)
    channels = Channels(shell_settings.max_sessions, WAIT)
    registry = ShellRegistry(events, shell_settings, channels, tmp_path / "recordings", clock=clock)
    await registry.start()
    state, link = drone()
    made = Terminals(registry, channels, events, state, link)
    try:
        yield made
    finally:
        registry.close_all("the test is over")
        await channels.stop(0.1)
        await asyncio.wait_for(asyncio.gather(*made.serving), WAIT)
        await registry.stop()


def test_a_terminal_takes_input_shows_output_replays_it_and_closes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with terminals(tmp_path, replay_bytes=1024) as t:
            session, end = await t.open()
            assert t.link.channels[-1][1] == ShellRequest(24, 80)
            first = ViewerLog()
            await session.attach(first, reattach=False)
            assert first.control[0]["type"] == "session" and first.control[0]["session"] == session.id
            await session.input(b"echo hi\r")
            await session.resize(40, 120)
            await session.resize(40, 120)  # the same size again: nothing to send
            end.give(Output(b"hi\r\n"), Stderr(b"a shell's stderr is not shown"))
            await until(lambda: first.output == b"hi\r\n", "the output")
            assert end.written == [Input(b"echo hi\r"), Resize(40, 120)]
            assert (session.bytes_in, session.bytes_out, session.state) == (8, 4, "attached")

            # A second viewer takes over: the first is told; the second gets the replay.
            second = ViewerLog()
            await session.attach(second, reattach=True)
            await until(lambda: first.closed is not None, "the first viewer closed")
            assert first.control[-1] == {"type": "detached", "reason": "attached elsewhere"}
            assert second.control[0]["reattached"] is True and bytes(second.output) == b"hi\r\n"

            # Close: the far end is asked to hang up; its Closed ends the session.
            session.close("closed by alice", by="alice")
            await until(lambda: len(end.written) == 3, "the close frame")
            assert end.written[-1] == Close("closed by alice") and session.state == "closing"
            end.give(Closed(ExitInfo(False, None, 1, "killed by SIGHUP")))
            await until(lambda: second.closed is not None, "the viewer closed")
            assert second.control[-1] == {
                "type": "exit",
                "exit_code": None,
                "signal": 1,
                "reason": "killed by SIGHUP",
                "timed_out": False,
                "closed_by": "alice",
                "message": "closed by alice",
            }
            [info] = t.registry.sessions()
            assert (info.state, info.close_reason, info.exit) == ("closed", "closed by alice", session.exit)
            assert len(t.channels) == 0
            [closed] = events_of(t.events, "shell_closed")
            assert (closed["session"], closed["bytes_out"]) == (session.id, 4)
        lines = (tmp_path / "recordings" / f"{session.id}.cast").read_text().splitlines()
        header = json.loads(lines[0])
        assert header["swarm"]["session"] == session.id and (header["width"], header["height"]) == (80, 24)
        assert [json.loads(line)[1:] for line in lines[1:]] == [["r", "120x40"], ["o", "hi\r\n"]]

    run(scenario())


def test_the_registry_closes_what_outlives_its_limits_at_the_time_given(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with terminals(tmp_path, grace=30.0, idle_timeout=100.0, max_lifetime=1000.0) as t:
            detached, detached_end = await t.open()
            idle, idle_end = await t.open()
            busy, busy_end = await t.open()
            for session in (idle, busy):
                await session.attach(ViewerLog(), reattach=False)
            now = time.monotonic()
            t.registry.sweep(now + 29)
            assert [s.state for s in (detached, idle, busy)] == ["detached", "attached", "attached"]

            # Without a viewer for longer than the grace: closed (the far end is asked to hang up) ...
            t.registry.sweep(now + 31)
            assert detached.close_reason == "detached for more than 30s" and detached.state == "closing"
            await until(lambda: detached_end.written == [Close("detached for more than 30s")], "the close")
            # ... and cut if it has not answered within KILL_WAIT.
            assert detached.close_deadline == pytest.approx(time.monotonic() + KILL_WAIT, abs=1.0)
            t.registry.sweep(detached.close_deadline - 0.01)
            for _ in range(20):
                await asyncio.sleep(0)
            assert not detached.ended.is_set()
            t.registry.sweep(detached.close_deadline + 0.01)
            await until(detached.ended.is_set, "the cut")
            assert detached.exit is None and detached.state == "closed"
            assert detached.close_reason == "detached for more than 30s"

            # Activity keeps a session past the idle limit ...
            busy.last_activity = now + 90
            t.registry.sweep(now + 101)
            assert idle.close_reason == "idle for more than 100s" and busy.live
            idle_end.give(Closed(ExitInfo(False, None, 1, "killed by SIGHUP")))
            await until(idle.ended.is_set, "the idle session's end")
            assert idle.exit == ExitInfo(False, None, 1, "killed by SIGHUP")
            # ... but not past the lifetime.
            busy.last_activity = now + 995
            t.registry.sweep(now + 1001)
            assert busy.close_reason == "open for more than 1000s (the maximum lifetime)"
            busy_end.give(None)  # its stream ends without a status
            await until(busy.ended.is_set, "the busy session's end")
            assert busy.exit is None
            assert [info.state for info in t.registry.sessions()] == ["closed"] * 3

    run(scenario())


def test_the_janitor_closes_sessions_on_the_registry_clock(tmp_path: Path) -> None:
    """The registry's own loop, on a clock the test moves: no waiting for a grace to pass."""
    clock = ManualClock()

    async def scenario() -> None:
        async with terminals(tmp_path, clock=clock, grace=30.0) as t:
            session, end = await t.open()
            await clock.advance(29.0)
            assert session.state == "detached" and not end.written
            await clock.advance(2.0)
            assert session.close_reason == "detached for more than 30s"
            await until(lambda: end.written == [Close("detached for more than 30s")], "the close")
            end.give(Closed(ExitInfo(False, None, 1, "killed by SIGHUP")))
            await until(session.ended.is_set, "the session's end")
            [closed] = events_of(t.events, "shell_closed")
            assert closed["duration_s"] == pytest.approx(31.0, abs=1.0)  # the clock's time, not the wall's

    run(scenario())


def test_a_terminal_whose_drone_does_not_dial_in_is_never_listed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with terminals(tmp_path) as t:
            t.channels.open_timeout = 0.05
            with pytest.raises(Unavailable, match="did not open the channel"):
                await t.registry.open_shell(t.state, "alice", 24, 80)
            assert t.registry.sessions() == [] and len(t.channels) == 0
            assert events_of(t.events, "shell_opened") == events_of(t.events, "shell_closed") == []

    run(scenario())


def test_a_far_end_that_sends_garbage_ends_the_terminal_with_why(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with terminals(tmp_path) as t:
            session, end = await t.open()
            end.give(BrokenChannel(GARBAGE))
            await until(lambda: session.ended.is_set(), "the end")
            assert session.exit is None and session.close_reason == f"channel stream failed: {GARBAGE}"

    run(scenario())


# -- replay and recordings ------------------------------------------------------------------------


def test_replay_keeps_the_last_bytes_from_a_line_start() -> None:
    replay = Replay(100)
    for i in range(50):
        replay.append(b"line %02d\r\n" % i)
    data = replay.snapshot()
    assert len(data) <= 100 and data.endswith(b"line 49\r\n") and data.startswith(b"line ")
    replay.append(b"x" * 500)
    assert replay.snapshot() == b"x" * 100
    short = Replay(100)
    short.append(b"no newline yet")
    assert short.snapshot() == b"no newline yet"  # nothing was cut: nothing to skip


def test_recording_stops_at_its_cap_and_retention_prunes(tmp_path: Path) -> None:
    async def record() -> Recorder:
        header = cast_header("s-00000000000000aa", "d-1", "alpha", "alice", "agent", 24, 80, 1_000_000.5)
        recorder = Recorder(tmp_path / "s-00000000000000aa.cast", header, 2000)
        writer = asyncio.create_task(recorder.run())
        await recorder.output("é".encode()[:1])  # a character cut between two messages
        await recorder.output("é".encode()[1:] + b" ok\r\n")
        recorder.resize(30, 100)
        for _ in range(100):
            await recorder.output(b"0123456789" * 5)
        recorder.close()
        await writer
        return recorder

    recorder = run(record())
    lines = [json.loads(line) for line in recorder.path.read_text().splitlines()]
    assert lines[0] == {
        "version": 2,
        "width": 80,
        "height": 24,
        "timestamp": 1_000_000,
        "title": "alpha by alice",
        "env": {"TERM": "xterm-256color"},
        "swarm": {
            "session": "s-00000000000000aa",
            "drone_id": "d-1",
            "drone": "alpha",
            "opened_by": "alice",
            "via": "agent",
        },
    }
    [listed] = Recordings(tmp_path, max_total_bytes=1 << 30, retention=1e12).listing()
    assert (listed.drone, listed.opened_by, listed.started_at) == ("alpha", "alice", 1_000_000.0)
    assert lines[1][1:] == ["o", "é ok\r\n"] and lines[2][1:] == ["r", "100x30"]
    assert lines[-1][1] == "m" and "size cap" in lines[-1][2]
    assert recorder.truncated and recorder.path.stat().st_size <= 2000 + 200

    # Retention: beyond the total the oldest go, never a live session's.
    for i in range(5):
        path = tmp_path / f"s-{i:016x}.cast"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    Recordings(tmp_path, max_total_bytes=3500, retention=1e12).prune(live={"s-0000000000000000"})
    left = sorted(p.name for p in tmp_path.glob("s-*.cast"))
    # A live session's counts towards the total, so one more goes in its place.
    assert left == ["s-0000000000000000.cast", "s-00000000000000aa.cast"]
    # Past the retention, whatever the total.
    Recordings(tmp_path, max_total_bytes=1 << 30, retention=60.0).prune(live=())
    assert sorted(p.name for p in tmp_path.glob("s-*.cast")) == ["s-00000000000000aa.cast"]


def test_recordings_are_listed_from_their_headers_and_foreign_files_skipped(tmp_path: Path) -> None:
    recordings = Recordings(tmp_path, max_total_bytes=1 << 30, retention=1e12)
    good = {
        "version": 2,
        "timestamp": 1_700_000_000,
        "swarm": {"drone": "d1", "drone_id": "i", "opened_by": "a"},
    }
    (tmp_path / "s-0000000000000001.cast").write_text(json.dumps(good) + "\n")
    (tmp_path / "s-0000000000000002.cast").write_text('[1, "o", "not a header"]\n')
    (tmp_path / "s-0000000000000003.cast").write_text('{"timestamp": NaN, "swarm": "odd"}\n')
    (tmp_path / "s-0000000000000004.cast").write_bytes(b"\xff\xfe not json\n")
    listed = {r.id: r for r in recordings.listing()}
    assert sorted(listed) == ["s-0000000000000001", "s-0000000000000003"]
    first = listed["s-0000000000000001"]
    assert (first.drone, first.opened_by, first.started_at) == ("d1", "a", 1_700_000_000.0)
    odd = listed["s-0000000000000003"]
    assert odd.drone == "" and odd.started_at == (tmp_path / "s-0000000000000003.cast").stat().st_mtime
    with pytest.raises(NotFound):
        recordings.path("../etc/passwd")
    assert recordings.path("s-0000000000000001") == tmp_path / "s-0000000000000001.cast"
