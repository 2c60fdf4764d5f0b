"""One-off commands on a drone (``POST /admin/api/drones/{name}/exec``):
through its agent on an EXEC channel (channels.py), or without the agent
over ssh (oobshell.run_command). Both give the same result, within the
same limits, and leave the same ``drone_exec`` audit event.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import time
from dataclasses import dataclass

from swarm.controller.channel_frames import ExecRequest, ExitInfo
from swarm.controller.channels import KILL_WAIT, Channel, Channels
from swarm.controller.events import EventLog
from swarm.controller.fleet import DroneState
from swarm.controller.oobshell import OutOfBand, run_command

log = logging.getLogger(__name__)

# The agent enforces a command's timeout; past it and this, the controller cuts the channel.
OVERRUN = KILL_WAIT + 5.0


@dataclass(frozen=True, slots=True)
class ExecResult:
    drone: str
    exit: ExitInfo
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    duration: float


class ExecRun(Channel):
    """One command on its channel: output collected (capped) until the agent's Closed."""

    def __init__(self, channel_id: str, state: DroneState, max_output: int) -> None:
        super().__init__(channel_id, state)
        self._max = max_output
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.stdout_truncated = False
        self.stderr_truncated = False

    def _keep(self, buf: bytearray, data: bytes) -> bool:
        # Past the cap the rest is read and dropped, so the command can finish.
        room = self._max - len(buf)
        buf += data[: max(0, room)]
        return len(data) > room

    async def on_output(self, data: bytes) -> None:
        self.stdout_truncated |= self._keep(self.stdout, data)

    async def on_stderr(self, data: bytes) -> None:
        self.stderr_truncated |= self._keep(self.stderr, data)


class Execs:
    def __init__(self, events: EventLog, channels: Channels, max_output: int, max_timeout: float) -> None:
        self._events = events
        self._channels = channels
        self.max_output = max_output
        self.max_timeout = max_timeout

    async def run(self, state: DroneState, command: str, timeout: float, by: str) -> ExecResult:
        """``command`` through the drone's agent."""
        run = ExecRun(secrets.token_hex(16), state, self.max_output)
        started = time.monotonic()
        try:
            await self._channels.open(state, run, ExecRequest(command, timeout))
            try:
                await asyncio.wait_for(run.ended.wait(), timeout + OVERRUN)
            except TimeoutError:
                run.abort()
                await run.ended.wait()
        finally:
            self._channels.release(run)
        exit = run.exit or ExitInfo(False, None, None, "the drone ended the channel without a status")
        result = ExecResult(
            drone=state.name,
            exit=exit,
            stdout=bytes(run.stdout),
            stderr=bytes(run.stderr),
            stdout_truncated=run.stdout_truncated,
            stderr_truncated=run.stderr_truncated,
            duration=time.monotonic() - started,
        )
        self._audit(state, command, result, by, "agent")
        return result

    async def run_oob(
        self, state: DroneState, oob: OutOfBand, command: str, timeout: float, by: str
    ) -> ExecResult:
        """``command`` over ssh (or here, for ``local``), with the same limits,
        result and audit event as one through the agent."""
        run = await run_command(oob.command_argv(command), timeout, self.max_output)
        if run.error:
            exit = ExitInfo(False, None, None, f"could not run {oob.via}: {run.error}")
        elif run.returncode is None:
            exit = ExitInfo(False, None, signal.SIGKILL, f"timed out after {timeout:g}s", timed_out=True)
        elif run.returncode < 0:
            exit = ExitInfo(False, None, -run.returncode, f"killed by signal {-run.returncode}")
        else:
            reason = oob.reason(run.returncode) or f"exited with {run.returncode}"
            exit = ExitInfo(True, run.returncode, None, reason)
        result = ExecResult(
            drone=state.name,
            exit=exit,
            stdout=run.stdout,
            stderr=run.stderr,
            stdout_truncated=run.stdout_truncated,
            stderr_truncated=run.stderr_truncated,
            duration=run.duration,
        )
        self._audit(state, command, result, by, oob.via)
        return result

    def _audit(self, state: DroneState, command: str, result: ExecResult, by: str, via: str) -> None:
        exit = result.exit
        self._events.emit(
            "drone_exec",
            f"{state.name}: command run by {by}"
            + ("" if via == "agent" else f" via {via}")
            + f": {exit.reason}",
            drone_id=state.id,
            drone_name=state.name,
            by=by,
            via=via,
            command=command[:500],
            exit_code=exit.exit_code,
            signal=exit.signal,
            timed_out=exit.timed_out,
            stdout_bytes=len(result.stdout),
            stderr_bytes=len(result.stderr),
            duration_s=round(result.duration, 3),
        )
