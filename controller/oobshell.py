"""Terminals and commands on a drone without its agent: over SSH from the
controller, for the moment an admin needs a shell most (the agent is dead).

A drone's ``ssh`` access setting (access.py, the one the healer uses)
says where: ``user@host:port`` runs the system OpenSSH client with the
healer's settings and command line builder (``oob.ssh_argv``: BatchMode,
strict host keys, the configured identity and known_hosts, the host after
``--``); ``local`` (drones on the controller's own machine, the demo) runs
the controller user's login shell or ``sh -c`` here, and is labelled so.

A terminal is ``ssh -tt`` under a PTY of the controller's (``os.openpty``
and a plain subprocess, as the agent runs its shells: agent/shell.py;
never a Python fork in a process with gRPC threads). ``PtyProcess`` is the
far end of a ``shells.ShellSession`` in place of the agent's Shell call:
it speaks the same frames (output, then a Close with the exit status; it
takes input, resize and close), so recording, audit, replay, reattach,
idle and lifetime limits and the viewer's flow control are the
registry's, unchanged. Backpressure: output is read from the PTY only as
the session asks for it (one bounded buffer), so a paused or slow viewer
stops us reading the PTY, ssh blocks writing it, and TCP stops the
remote side. A resize sets the PTY's window; ssh gets SIGWINCH and
forwards it.

A command (``run_command``) is ``ssh -T`` with stdout and stderr apart,
each capped, its process group killed at the timeout. As with any ssh
without a terminal, a remote command outlives a connection cut at the
timeout; the terminal's remote shell gets SIGHUP from its sshd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass

from swarm.agent.shell import (
    CTTY_HELPER,
    KILL_GRACE,
    PtyOutput,
    kill_session,
    login_shell,
    set_winsize,
    status_of,
    write_pty,
)
from swarm.controller.access import LOCAL
from swarm.controller.channel_frames import Close, Closed, ExitInfo, InFrame, Input, OutFrame, Output, Resize
from swarm.controller.errors import FailedPrecondition, Unavailable
from swarm.controller.oob import SSH_FAILED, SshSettings, SshTarget, ssh_argv

log = logging.getLogger(__name__)

SSH, LOCAL_VIA = "ssh", "local"
READ_CHUNK = 64 * 1024
ENV_DROP = ("SWARM_",)  # the controller's own settings are nobody else's business
DRAIN_AFTER_EXIT = 0.5
INPUT_HOLD = 3.0  # keystrokes wait at most this long for ssh's first output


@dataclass(frozen=True, slots=True)
class OutOfBand:
    """How to reach one drone without its agent."""

    drone: str
    via: str  # SSH or LOCAL_VIA
    target: SshTarget | None
    settings: SshSettings

    @classmethod
    def of(cls, drone: str, ssh: str, settings: SshSettings) -> OutOfBand:
        """From the drone's ``ssh`` access setting, or FailedPrecondition when it has none."""
        ssh = ssh.strip()
        if not ssh:
            raise FailedPrecondition(
                f"no ssh access configured for drone {drone}: set one with "
                f'PUT /admin/api/drones/{drone} {{"ssh": "root@host"}}'
            )
        if ssh == LOCAL:
            return cls(drone, LOCAL_VIA, None, settings)
        return cls(drone, SSH, SshTarget.parse(ssh), settings)

    @property
    def label(self) -> str:
        """What the admin is told the terminal or command runs through."""
        if self.target is None:
            return f"a local shell on the controller's machine ({self.drone} has ssh = local)"
        return f"ssh {self.target} (not through the agent)"

    def shell_argv(self) -> list[str]:
        if self.target is None:
            return login_shell("")
        return ssh_argv(self.target, self.settings, None, tty=True)

    def command_argv(self, command: str) -> list[str]:
        if self.target is None:
            return ["/bin/sh", "-c", command]
        return ssh_argv(self.target, self.settings, command)

    def reason(self, returncode: int) -> str:
        if self.target is not None and returncode == SSH_FAILED:
            return f"ssh exited with {SSH_FAILED} (ssh itself failed, or the remote command did)"
        return ""


def child_env(term: str) -> dict[str, str]:
    """The controller's environment (ssh wants HOME, SSH_AUTH_SOCK) less its own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_DROP)}
    env["TERM"] = term
    return env


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class PtyProcess:
    """A process under a PTY here, as a shell session's far end
    (channels.FarEnd): ``read`` gives Output and finally Closed with the
    exit status (then None); ``write`` takes Input, Resize and Close. ``stop`` ends
    whatever is left; call it once the session is done with it."""

    def __init__(self, oob: OutOfBand, rows: int, cols: int, term: str) -> None:
        self.oob = oob
        self._argv = oob.shell_argv()
        self._rows, self._cols = rows, cols
        self._term = term
        home = os.environ.get("HOME", "")
        self._cwd = home if home and os.path.isdir(home) else "/"
        self._master = -1
        self._proc: asyncio.subprocess.Process | None = None
        self._output: PtyOutput | None = None
        self._exited: asyncio.Task[int] | None = None
        self._hangup_reason = ""
        self._killer: asyncio.Task[None] | None = None
        self._done = False
        self._last = False  # the process exited and its last output was taken
        # Keystrokes wait for the first output (at most INPUT_HOLD): until ssh
        # has put our side of the PTY in raw mode, its line discipline would
        # echo them as well as the remote one (ssh copies the modes to the
        # remote terminal, so they cannot simply be switched off). A local
        # shell needs no wait.
        self._ready_for_input = asyncio.Event()
        self._hold: asyncio.TimerHandle | None = None
        if oob.target is None:
            self._ready_for_input.set()

    async def start(self) -> None:
        """Start the process, or Unavailable with why."""
        master, slave = os.openpty()
        try:
            set_winsize(master, self._rows, self._cols)
            env = child_env(self._term)
            self._proc = await asyncio.create_subprocess_exec(
                *CTTY_HELPER,
                os.ttyname(slave),
                *self._argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                cwd=self._cwd,
                env=env,
            )
        except OSError as exc:
            os.close(master)
            raise Unavailable(f"cannot start {self._argv[0]}: {exc.strerror or exc}") from None
        finally:
            os.close(slave)
        log.info("terminal on %s via %s: pid %d", self.oob.drone, self.oob.via, self._proc.pid)
        self._master = master
        os.set_blocking(master, False)
        self._output = PtyOutput(master)
        self._exited = asyncio.create_task(self._proc.wait(), name=f"pty-exit:{self.oob.drone}")
        if not self._ready_for_input.is_set():
            # A remote shell may print nothing at all (an empty prompt): then wait no longer.
            self._hold = asyncio.get_running_loop().call_later(INPUT_HOLD, self._ready_for_input.set)

    async def read(self) -> InFrame | None:
        """The next frame for the session: output, the Closed, then None."""
        output, exited, proc = self._output, self._exited, self._proc
        assert output is not None and exited is not None and proc is not None
        if self._done:
            return None
        if not self._last:
            data, self._last = await output.next_output(exited)
            if data:
                self._ready_for_input.set()
                return Output(data)
        self._ready_for_input.set()
        self._done = True
        code = exited.result()
        status = status_of(code, reason=self._hangup_reason or self.oob.reason(code))
        return Closed(
            ExitInfo.of(status.exited, status.exit_code, status.signal, status.reason, status.timed_out)
        )

    async def write(self, frame: OutFrame) -> None:
        match frame:
            case Input(data) if not self._hangup_reason:
                await self._ready_for_input.wait()  # the session's input queue is bounded: it pushes back
                await write_pty(self._master, data)
            case Resize(rows, cols):
                set_winsize(self._master, rows, cols)
            case Close(reason):
                self.hang_up(reason or "closed")

    def hang_up(self, reason: str) -> None:
        """SIGHUP (and SIGCONT) to the process group, SIGKILL to its session after KILL_GRACE."""
        proc = self._proc
        if self._hangup_reason or proc is None or proc.returncode is not None:
            return
        self._hangup_reason = reason
        _killpg(proc.pid, signal.SIGHUP)
        _killpg(proc.pid, signal.SIGCONT)
        self._killer = asyncio.create_task(self._kill_later(proc), name=f"pty-kill:{self.oob.drone}")

    async def _kill_later(self, proc: asyncio.subprocess.Process) -> None:
        await asyncio.sleep(KILL_GRACE)
        if proc.returncode is None:
            await asyncio.to_thread(kill_session, proc.pid)
            _killpg(proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """End the process and its session if still running, and free the PTY."""
        proc, exited = self._proc, self._exited
        if proc is None or exited is None:
            return
        if self._hold is not None:
            self._hold.cancel()
        if proc.returncode is None:
            await asyncio.to_thread(kill_session, proc.pid)
            _killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), KILL_GRACE)
        for task in (self._killer, exited):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._killer, exited) if t is not None), return_exceptions=True)
        if self._output is not None:
            self._output.close()
        if self._master >= 0:
            os.close(self._master)
            self._master = -1


@dataclass(frozen=True, slots=True)
class CommandRun:
    returncode: int | None  # None: killed at the timeout
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    duration: float
    error: str = ""  # the program could not be started


async def run_command(argv: list[str], timeout: float, max_output: int) -> CommandRun:
    """Run to completion or ``timeout``; stdout and stderr apart, the first
    ``max_output`` bytes of each (the rest is read and dropped, so the
    command can finish). The process group is killed at the timeout or when
    the caller is cancelled."""
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=child_env("dumb"),
        )
    except OSError as exc:
        return CommandRun(None, b"", b"", False, False, time.monotonic() - started, str(exc.strerror or exc))
    kept = {1: bytearray(), 2: bytearray()}
    cut = {1: False, 2: False}

    async def pump(stream: asyncio.StreamReader | None, fd: int) -> None:
        assert stream is not None
        while chunk := await stream.read(READ_CHUNK):
            room = max(0, max_output - len(kept[fd]))
            kept[fd] += chunk[:room]
            cut[fd] |= len(chunk) > room

    work = asyncio.gather(pump(proc.stdout, 1), pump(proc.stderr, 2), proc.wait())
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(work), timeout)
    except TimeoutError:
        timed_out = True
    finally:
        if proc.returncode is None:
            _killpg(proc.pid, signal.SIGKILL)
        # Pipes end with the group; a child that left it may hold them.
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(work), DRAIN_AFTER_EXIT)
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        if proc.returncode is None:
            await proc.wait()
    return CommandRun(
        None if timed_out else proc.returncode,
        bytes(kept[1]),
        bytes(kept[2]),
        cut[1],
        cut[2],
        time.monotonic() - started,
    )
