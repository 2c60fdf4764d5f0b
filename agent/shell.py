"""Terminals and one-off commands for the controller (shell.proto).

The controller asks on the control stream (OpenChannel); ``Channels``
opens a ``Channels.Shell`` stream on a channel of its own, sends Attach
with the channel id, and then:

- SHELL: a login shell under a PTY in a session of its own. The PTY is
  ``os.openpty`` and the shell a plain subprocess (setsid before exec, then
  a two-word sh helper opens the terminal, which makes it the session's
  controlling one). Not ptyprocess: it forks in Python, and gRPC core's
  fork handlers abort such a child in a process with live gRPC threads
  ("Check failed: next_worker->state == KICKED"); subprocess starts the
  child by vfork, which runs neither Python nor fork handlers in it.
  PTY output is read from the non-blocking master (``loop.add_reader``: the
  event loop, and with it the heartbeats, never waits on the terminal)
  into one buffer of at most ``OUTPUT_BUFFER`` bytes, and each write to
  the stream takes all of it: output gathers into big messages while a
  write is in flight and goes out at once when the stream is idle (an echo
  is never held back). A full buffer stops the reader until the stream
  drains, so a controller that stops reading stops us reading the PTY and
  the shell blocks on its terminal: nothing grows. Input is written to
  the PTY awaiting writability; resize sets the window (TIOCSWINSZ).
- EXEC: ``sh -c command`` without a PTY, stdout and stderr apart; its
  process group is killed at the timeout.
- LOG: a named log source of the drone, tailed and followed (logs.py).

A Close from the controller, or the stream ending, hangs up: SIGHUP and
SIGCONT to the process group, then SIGKILL to whatever is left of its
session after ``KILL_GRACE``. The agent's last frame is its own Close
with the exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import pwd
import shlex
import signal
import struct
import termios
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc

from swarm.agent import logs
from swarm.agent.logs import LogSources
from swarm.tasks import TaskSet
from swarm.v1 import shell_pb2, shell_pb2_grpc

log = logging.getLogger(__name__)

OUTPUT_BUFFER = 128 * 1024  # PTY output held at most; also the largest output message
READ_SIZE = 64 * 1024  # one os.read of the PTY at most
READ_BURST = 64 * 1024  # read per readable callback at most
EXEC_READ = 64 * 1024
MAX_CHANNELS = 16
KILL_GRACE = 2.0  # SIGHUP, then SIGKILL after this
DRAIN_AFTER_EXIT = 0.5  # a hung-up shell's last output may take this long to leave
CLOSE_WAIT = 5.0  # for the controller to end the call after our Close
# Runs as the new session's leader: opening the terminal makes it the
# controlling one; then it becomes the shell. $0 is the terminal's path.
CTTY_HELPER = ("/bin/sh", "-c", 'exec "$@" <>"$0" >&0 2>&0')
ENV_DROP = ("SWARM_AGENT_",)
Kind = shell_pb2.OpenChannel


@dataclass(frozen=True, slots=True)
class ExitStatus:
    exited: bool
    exit_code: int
    signal: int
    reason: str
    timed_out: bool = False
    error: str = ""  # why nothing ran, as Close.error names it

    def frame(self) -> shell_pb2.ShellFrame:
        return shell_pb2.ShellFrame(
            close=shell_pb2.Close(
                exited=self.exited,
                exit_code=self.exit_code,
                signal=self.signal,
                reason=self.reason[:500],
                timed_out=self.timed_out,
                error=self.error,
            )
        )


def status_of(returncode: int, *, reason: str = "", timed_out: bool = False) -> ExitStatus:
    """From a subprocess-style return code (negative: killed by that signal)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return ExitStatus(False, 0, -returncode, reason or f"killed by {name}", timed_out)
    return ExitStatus(True, returncode, 0, reason or f"exited with {returncode}", timed_out)


def login_shell(configured: str) -> list[str]:
    """The shell command line: as configured, else $SHELL or the user's shell as a login shell."""
    if configured.strip():
        return shlex.split(configured)
    shell = os.environ.get("SHELL", "")
    if not shell:
        with contextlib.suppress(KeyError):
            shell = pwd.getpwuid(os.getuid()).pw_shell
    return [shell or "/bin/sh", "-l"]


def child_env(term: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_DROP)}
    env["TERM"] = term
    if "HOME" not in env:
        with contextlib.suppress(KeyError):
            env["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
    return env


def _home(env: dict[str, str]) -> str:
    home = env.get("HOME", "")
    return home if home and os.path.isdir(home) else "/"


def set_winsize(fd: int, rows: int, cols: int) -> None:
    """The terminal's window size (TIOCSWINSZ); its foreground process group gets SIGWINCH."""
    if 0 < rows <= 1000 and 0 < cols <= 1000:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_session(sid: int) -> int:
    """SIGKILL every process of a session (jobs of an interactive shell have groups of their own)."""
    # Here, not at the top: the controller imports this module for its own
    # shells, and psutil is some 20 ms of every controller start otherwise.
    import psutil

    killed = 0
    for pid in psutil.pids():
        try:
            if os.getsid(pid) == sid:
                os.kill(pid, signal.SIGKILL)
                killed += 1
        except (ProcessLookupError, PermissionError):
            continue
    return killed


async def write_pty(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a non-blocking PTY master, awaiting its writability."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            writable = loop.create_future()
            loop.add_writer(fd, writable.set_result, None)
            try:
                await writable
            finally:
                loop.remove_writer(fd)
            continue
        except OSError:
            return  # the shell is gone; the exit is reported elsewhere
        view = view[written:]


class PtyOutput:
    """The PTY master read without blocking the loop, into one bounded buffer."""

    def __init__(self, fd: int, limit: int = OUTPUT_BUFFER) -> None:
        self._fd = fd
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._buf = bytearray()
        self._reading = False
        self.eof = False
        self.ready = asyncio.Event()  # data to take, or the end
        self._resume()

    def _resume(self) -> None:
        if not self._reading and not self.eof:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _on_readable(self) -> None:
        # A PTY read returns at most what the line discipline holds (about
        # 4 KB): take a few at once, fewer trips round the loop per message.
        self.drain_now(READ_BURST)

    def read_now(self, size: int) -> None:
        try:
            chunk = os.read(self._fd, min(size, self._limit - len(self._buf)))
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO: every holder of the terminal's other side closed it.
            if exc.errno not in (errno.EIO, errno.EBADF):
                log.warning("reading the PTY failed: %s", exc)
            chunk = b""
        if not chunk:
            self.eof = True
            self._pause()
            self.ready.set()
            return
        self._buf += chunk
        self.ready.set()
        if len(self._buf) >= self._limit:
            self._pause()  # the stream is not draining: stop reading the shell

    def drain_now(self, most: int | None = None) -> None:
        """What the terminal holds right now (up to ``most`` bytes more), without waiting."""
        end = min(self._limit, len(self._buf) + (most if most is not None else self._limit))
        while not self.eof and len(self._buf) < end:
            before = len(self._buf)
            self.read_now(min(READ_SIZE, end - before))
            if len(self._buf) == before:
                break  # nothing more for now

    def take(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        if not self.eof:
            self.ready.clear()
            self._resume()
        return data

    async def next_output(self, exited: asyncio.Task[int]) -> tuple[bytes, bool]:
        """The next output of the process on this terminal, and whether it is
        the last: once the process exited, what it left in the terminal is
        taken at once and is the last (a job it left behind may write on;
        that is not waited for). Empty output comes only with the end."""
        while True:
            ready = asyncio.ensure_future(self.ready.wait())
            try:
                await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
            if exited.done():
                self.drain_now()
                return self.take(), True
            if data := self.take():
                return data, False
            if self.eof:
                await exited  # the terminal is closed; the process follows
                return b"", True

    def close(self) -> None:
        self._pause()
        self.eof = True


class Channel:
    """One open channel: a shell or an exec, from Attach to Close.

    grpc.aio cancels the whole call when a pending read or write is
    cancelled, so the controller's frames are read by one task for the
    life of the call (it ends at the controller's end of the call), and a
    write is cancelled only to give the call up."""

    def __init__(self, request: shell_pb2.OpenChannel, call: grpc.aio.StreamStreamCall) -> None:
        self.request = request
        self.call = call
        self.id = request.channel_id
        self.hangup = asyncio.Event()  # the controller, or the agent stopping, wants it ended
        self.hangup_reason = ""
        # Set while a process runs that takes them.
        self.on_input: Callable[[bytes], Coroutine[Any, Any, None]] | None = None
        self.on_resize: Callable[[int, int], None] | None = None

    def end(self, reason: str) -> None:
        if not self.hangup.is_set():
            self.hangup_reason = reason
            self.hangup.set()

    async def read_controller(self) -> None:
        """Frames from the controller until the end of the call; a Close, or
        the end, hangs up."""
        try:
            while True:
                frame = await self.call.read()
                if frame is grpc.aio.EOF:
                    self.end("the controller ended the channel")
                    return
                kind = frame.WhichOneof("body")
                if self.hangup.is_set():
                    continue  # ending: input is no longer for anyone
                if kind == "input" and self.on_input is not None:
                    await self.on_input(frame.input)
                elif kind == "resize" and self.on_resize is not None:
                    self.on_resize(frame.resize.rows, frame.resize.cols)
                elif kind == "close":
                    self.end(frame.close.reason or "closed by the controller")
        except grpc.aio.AioRpcError as exc:
            self.end(f"channel stream ended: {exc.code().name}")


class Channels:
    """Runs the channels the controller opens; at most MAX_CHANNELS at once."""

    def __init__(
        self, channel: Callable[[], grpc.aio.Channel], shell: str = "", logs: LogSources | None = None
    ) -> None:
        self._channel = channel
        self._shell_command = shell
        self._logs = logs
        self._tasks = TaskSet("channels")
        self._open: dict[str, Channel] = {}
        self._none_open = asyncio.Event()
        self._none_open.set()

    def __len__(self) -> int:
        return len(self._open)

    def open(self, request: shell_pb2.OpenChannel) -> None:
        """Called from the control stream's reader: never blocks it."""
        self._tasks.spawn(self._serve(request), name=f"channel:{request.channel_id[:12]}")

    async def stop(self, reason: str = "the agent is stopping") -> None:
        """Hang up every channel (each reports its Close), then end what is left."""
        for channel in list(self._open.values()):
            channel.end(reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none_open.wait(), KILL_GRACE + 1.0)
        await self._tasks.close(timeout=2.0)

    async def _serve(self, request: shell_pb2.OpenChannel) -> None:
        kind = Kind.Kind.Name(request.kind)
        async with self._channel() as grpc_channel:
            call = shell_pb2_grpc.ChannelsStub(grpc_channel).Shell()
            channel = Channel(request, call)
            reader: asyncio.Task[None] | None = None
            try:
                await call.write(shell_pb2.ShellFrame(attach=shell_pb2.Attach(channel_id=request.channel_id)))
                reader = asyncio.create_task(channel.read_controller(), name=f"channel-read:{kind}")
                if len(self._open) >= MAX_CHANNELS:
                    status = ExitStatus(False, 0, 0, f"this drone runs {MAX_CHANNELS} channels already")
                elif request.kind == Kind.SHELL:
                    self._register(channel)
                    status = await self._shell(channel)
                elif request.kind == Kind.EXEC:
                    self._register(channel)
                    status = await self._exec(channel)
                elif request.kind == Kind.LOG:
                    self._register(channel)
                    status = await self._log(channel)
                else:
                    status = ExitStatus(False, 0, 0, f"unknown channel kind {request.kind}")
                log.info("channel %s (%s) ended: %s", channel.id[:12], kind, status.reason)
                if not call.done():
                    # Bounded: a controller that stopped reading gets the call cancelled instead.
                    await asyncio.wait_for(call.write(status.frame()), CLOSE_WAIT)
                    await call.done_writing()
                    # The controller ends the call once it has our Close; the reader sees that.
                    await asyncio.wait_for(asyncio.shield(reader), CLOSE_WAIT)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "channel %s (%s): stream ended: %s %s",
                    channel.id[:12],
                    kind,
                    exc.code().name,
                    exc.details(),
                )
            except (asyncio.InvalidStateError, TimeoutError):
                log.warning(
                    "channel %s (%s): could not report the end to the controller", channel.id[:12], kind
                )
            finally:
                self._open.pop(channel.id, None)
                if not self._open:
                    self._none_open.set()
                call.cancel()
                if reader is not None:
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)

    def _register(self, channel: Channel) -> None:
        self._open[channel.id] = channel
        self._none_open.clear()

    # -- LOG ---------------------------------------------------------------------

    async def _log(self, channel: Channel) -> ExitStatus:
        if self._logs is None:
            return ExitStatus(False, 0, 0, "this agent serves no logs", error=logs.NOT_FOUND)
        try:
            reason = await logs.send_log(channel.request, self._logs, channel.call.write, channel.hangup)
        except logs.SourceError as exc:
            return ExitStatus(False, 0, 0, str(exc), error=exc.code)
        return ExitStatus(True, 0, 0, reason)

    # -- SHELL -------------------------------------------------------------------

    async def _shell(self, channel: Channel) -> ExitStatus:
        request = channel.request
        argv = login_shell(self._shell_command)
        env = child_env("xterm-256color")
        rows, cols = max(1, min(request.rows or 24, 1000)), max(1, min(request.cols or 80, 1000))
        master, slave = os.openpty()  # both close-on-exec; the slave is opened without becoming ours
        try:
            set_winsize(master, rows, cols)
            # A new session (setsid before exec), then the helper opens the
            # terminal, which makes it the session's controlling terminal, and
            # becomes the shell: Ctrl-C, job control and SIGHUP work as on a console.
            proc = await asyncio.create_subprocess_exec(
                *CTTY_HELPER,
                os.ttyname(slave),
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                cwd=_home(env),
                env=env,
            )
        except OSError as exc:
            os.close(master)
            return ExitStatus(False, 0, 0, f"cannot start {argv[0]}: {exc.strerror}")
        finally:
            os.close(slave)
        log.info("channel %s: shell %s (pid %d) %dx%d", channel.id[:12], " ".join(argv), proc.pid, cols, rows)
        os.set_blocking(master, False)
        output = PtyOutput(master)
        exited = asyncio.create_task(proc.wait(), name="shell-exit")
        sender = asyncio.create_task(self._send_output(channel, output, exited), name="shell-output")
        channel.on_input = lambda data: write_pty(master, data)
        channel.on_resize = lambda rows, cols: set_winsize(master, rows, cols)
        hung_up = asyncio.create_task(channel.hangup.wait(), name="shell-hangup")
        try:
            await asyncio.wait({sender, hung_up}, return_when=asyncio.FIRST_COMPLETED)
            if not sender.done() or sender.exception() is not None:
                # Asked to end, or the stream broke: hang up, then kill.
                reason = channel.hangup_reason or "the channel stream failed"
                _killpg(proc.pid, signal.SIGHUP)
                _killpg(proc.pid, signal.SIGCONT)
                try:
                    await asyncio.wait_for(asyncio.shield(exited), KILL_GRACE)
                except TimeoutError:
                    await asyncio.to_thread(kill_session, proc.pid)
                    _killpg(proc.pid, signal.SIGKILL)
                    await exited
                with contextlib.suppress(Exception):  # too slow, or the stream is broken
                    await asyncio.wait_for(asyncio.shield(sender), DRAIN_AFTER_EXIT)
                return status_of(await exited, reason=reason)
            return status_of(await exited)
        finally:
            channel.on_input = channel.on_resize = None
            for task in (sender, hung_up):
                task.cancel()
            await asyncio.gather(sender, hung_up, return_exceptions=True)
            output.close()
            os.close(master)  # what is left of the session gets SIGHUP from the kernel
            if proc.returncode is None:
                await asyncio.to_thread(kill_session, proc.pid)
                _killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exited), KILL_GRACE)
            exited.cancel()
            await asyncio.gather(exited, return_exceptions=True)

    @staticmethod
    async def _send_output(channel: Channel, output: PtyOutput, exited: asyncio.Task[int]) -> None:
        """PTY output to the stream until the shell exited and its last output is sent."""
        last = False
        while not last:
            data, last = await output.next_output(exited)
            if data:
                await channel.call.write(shell_pb2.ShellFrame(output=data))  # awaits flow control

    # -- EXEC --------------------------------------------------------------------

    async def _exec(self, channel: Channel) -> ExitStatus:
        request = channel.request
        env = child_env("dumb")
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                request.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                cwd=_home(env),
                env=env,
            )
        except OSError as exc:
            return ExitStatus(False, 0, 0, f"cannot run /bin/sh: {exc.strerror}")
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None
        timeout = request.timeout_s if request.timeout_s > 0 else None
        log.info("channel %s: exec (pid %d, timeout %s)", channel.id[:12], proc.pid, timeout)
        lock = asyncio.Lock()

        async def pump(stream: asyncio.StreamReader, stderr: bool) -> None:
            while chunk := await stream.read(EXEC_READ):
                frame = shell_pb2.ShellFrame(stderr=chunk) if stderr else shell_pb2.ShellFrame(output=chunk)
                async with lock:
                    await channel.call.write(frame)

        async def finish() -> None:
            await asyncio.gather(pump(stdout, False), pump(stderr, True), proc.wait())

        work = asyncio.create_task(finish(), name="exec")
        hung_up = asyncio.create_task(channel.hangup.wait(), name="exec-hangup")
        reason, timed_out = "", False
        try:
            done, _ = await asyncio.wait(
                {work, hung_up}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if work not in done or work.exception() is not None:
                if hung_up in done:
                    reason = channel.hangup_reason
                    _killpg(proc.pid, signal.SIGHUP)
                    _killpg(proc.pid, signal.SIGCONT)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE)
                elif work not in done:
                    timed_out = True
                    reason = f"timed out after {timeout:g}s"
                _killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                # Pipes end with the group; a child that left it may hold them.
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(work), DRAIN_AFTER_EXIT)
            returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
            return status_of(returncode, reason=reason, timed_out=timed_out)
        finally:
            for task in (work, hung_up):
                task.cancel()
            await asyncio.gather(work, hung_up, return_exceptions=True)
            if proc.returncode is None:
                _killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
