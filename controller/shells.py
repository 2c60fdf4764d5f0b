"""Terminals on drones: the registry of shell sessions (shellsession.py).

A shell is a SHELL channel (channels.py): asked for over the drone's
control stream, served on the drone's own Shell call. The registry keeps
every session: who opened it, when, on which drone, its window size and
state, and the ended ones for the list. After ``grace`` seconds without a
viewer, ``idle_timeout`` without input or output, or ``max_lifetime``, it
closes the session (the agent hangs up the shell). Every session is
recorded as an asciinema v2 cast file (recording.py).

A session's far end is the drone's Shell call, or, when the agent is down,
a process under a PTY on the controller (``ssh -tt``: oobshell.py) that
speaks the same frames; everything else is the same for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm.clock import SYSTEM, Clock
from swarm.controller.channel_frames import ShellRequest
from swarm.controller.channels import KILL_WAIT, Channels
from swarm.controller.errors import FailedPrecondition, NotFound
from swarm.controller.events import EventLog
from swarm.controller.fleet import DroneState
from swarm.controller.oobshell import OutOfBand, PtyProcess
from swarm.controller.recording import TERM, RecordingInfo, Recordings
from swarm.controller.shellsession import CLOSING, OPEN, OPENING, ShellInfo, ShellSession
from swarm.tasks import TaskSet, wait_event

log = logging.getLogger(__name__)

RECENT_CLOSED = 100  # ended sessions kept in memory for the list
GOODBYES = 2.0  # seconds for the viewers' goodbyes and the recordings at stop


@dataclass(frozen=True, slots=True)
class ShellSettings:
    """Terminals, and the channels and commands that share their cap."""

    grace: float = 300.0
    idle_timeout: float = 3600.0
    max_lifetime: float = 43200.0
    max_sessions: int = 32
    replay_bytes: int = 64 * 1024
    open_timeout: float = 10.0
    recording_max_bytes: int = 50 << 20
    recordings_max_bytes: int = 1 << 30
    recording_retention: float = 90 * 86400.0
    exec_max_output: int = 1 << 20
    exec_max_timeout: float = 3600.0


class ShellRegistry:
    def __init__(
        self,
        events: EventLog,
        settings: ShellSettings,
        channels: Channels,
        recordings: Path,
        clock: Clock = SYSTEM,
    ) -> None:
        self.settings = settings
        self.clock = clock  # the janitor's, and its sessions' stamps
        self._events = events
        self._channels = channels
        self._recordings = Recordings(recordings, settings.recordings_max_bytes, settings.recording_retention)
        self._sessions: dict[str, ShellSession] = {}  # live, by session id
        self._closed: deque[ShellSession] = deque(maxlen=RECENT_CLOSED)
        self._tasks = TaskSet("shells")
        self._janitor_task: asyncio.Task[None] | None = None
        self._busy = 0  # spawned tasks still running (the janitor aside)
        self._idle = asyncio.Event()  # no spawned task is running
        self._idle.set()
        self._tick = max(
            0.05, min(1.0, settings.grace / 4, settings.idle_timeout / 4, settings.max_lifetime / 4)
        )

    async def start(self) -> None:
        await asyncio.to_thread(self._recordings.directory.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(self._recordings.prune, ())
        self._janitor_task = self._tasks.spawn(self._janitor(), "janitor")

    def close_all(self, reason: str) -> None:
        """Close every session: the far ends hang up their shells."""
        for session in list(self._sessions.values()):
            session.close(reason)

    async def stop(self) -> None:
        """After ``close_all`` and once the channels have ended (Channels.stop):
        the viewers are told and closed and the recordings finished, within
        GOODBYES + 1 s."""
        if self._janitor_task is not None:
            self._janitor_task.cancel()
        # Goodbyes to viewers and recorders end by themselves, each bounded.
        await wait_event(self._idle, GOODBYES)
        await self._tasks.close(timeout=1.0)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self._busy += 1
        self._idle.clear()
        self._tasks.spawn(coro, name).add_done_callback(self._spawned_done)

    def _spawned_done(self, _task: asyncio.Task[Any]) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    def recording_path(self, session_id: str) -> Path:
        return self._recordings.path(session_id)

    # -- opening --------------------------------------------------------------------

    def _new_session(
        self, state: DroneState, by: str, rows: int, cols: int, oob: OutOfBand | None = None
    ) -> ShellSession:
        session = ShellSession(
            self, f"s-{secrets.token_hex(8)}", secrets.token_hex(16), state, by, rows, cols, oob
        )
        self._channels.add(session)  # or Unavailable: too many open
        self._sessions[session.id] = session
        return session

    async def open_shell(self, state: DroneState, by: str, rows: int, cols: int) -> ShellSession:
        session = self._new_session(state, by, rows, cols)
        try:
            self._channels.ask(state, session.channel_id, ShellRequest(rows, cols))
            await self._channels.attached(session)
        except BaseException:
            if session.phase == OPENING:
                session.abort()
                session.finish(None, "the drone did not open the channel")
            raise
        self._opened(session)
        return session

    async def open_oob_shell(
        self, state: DroneState, oob: OutOfBand, by: str, rows: int, cols: int
    ) -> ShellSession:
        """A terminal that does not need the agent: ssh (or, for ``local``, a
        login shell) under a PTY here, the session's far end in place of the
        drone's call. Or Unavailable when it cannot be started."""
        far = PtyProcess(oob, rows, cols, TERM)
        session = self._new_session(state, by, rows, cols, oob)
        session.claimed = True  # no drone's call may attach to it
        try:
            await far.start()
        except BaseException:
            session.finish(None, "the terminal could not be started")
            raise
        self.spawn(self._serve_oob(session, far), f"oob-shell:{session.id}")
        await session.agent_attached.wait()  # serve() sets it at once
        self._opened(session)
        return session

    async def _serve_oob(self, session: ShellSession, far: PtyProcess) -> None:
        try:
            await session.serve(far)
        finally:
            await far.stop()

    def _opened(self, session: ShellSession) -> None:
        self.spawn(session.recorder.run(), f"recorder:{session.id}")
        self._events.emit(
            "shell_opened",
            f"{session.drone}: terminal {session.id} opened by {session.opened_by}"
            + ("" if session.via == "agent" else f" via {session.via}"),
            drone_id=session.drone_id,
            drone_name=session.drone,
            by=session.opened_by,
            session=session.id,
            rows=session.rows,
            cols=session.cols,
            via=session.via,
        )
        self._prune_soon()

    def live_session(self, session_id: str, drone_key: str) -> ShellSession:
        """A session to reattach to: live, and on the drone the URL names."""
        session = self._sessions.get(session_id)
        if session is None:
            ended = next((s for s in self._closed if s.id == session_id), None)
            if ended is not None:
                raise FailedPrecondition(f"shell session {session_id} has ended: {ended.close_reason}")
            raise NotFound(f"no shell session {session_id[:40]!r}")
        if drone_key not in (session.drone, session.drone_id):
            raise NotFound(f"shell session {session_id} is not on {drone_key[:64]!r}")
        if not session.live:
            raise FailedPrecondition(f"shell session {session_id} is closing")
        return session

    def on_reattach(self, session: ShellSession, by: str) -> None:
        self._events.emit(
            "shell_reattached",
            f"{session.drone}: terminal {session.id} reattached by {by}",
            drone_id=session.drone_id,
            drone_name=session.drone,
            by=by,
            session=session.id,
        )

    def on_closed(self, session: ShellSession) -> None:
        self._channels.forget(session)
        self._sessions.pop(session.id, None)
        if not session.agent_attached.is_set():
            return  # never opened: the request that asked for it got the error
        self._closed.append(session)
        exit = session.exit
        self._events.emit(
            "shell_closed",
            f"{session.drone}: terminal {session.id} of {session.opened_by} closed: {session.close_reason}",
            drone_id=session.drone_id,
            drone_name=session.drone,
            by=session.closed_by or session.opened_by,
            opened_by=session.opened_by,
            session=session.id,
            via=session.via,
            reason=session.close_reason,
            exit_code=exit.exit_code if exit is not None else None,
            signal=exit.signal if exit is not None else None,
            duration_s=round(self.clock.monotonic() - session.started, 3),
            bytes_in=session.bytes_in,
            bytes_out=session.bytes_out,
        )
        self._prune_soon()

    # -- the admin's view -------------------------------------------------------------

    def sessions(self) -> list[ShellInfo]:
        live = sorted(self._sessions.values(), key=lambda s: s.opened_at)
        ended = sorted(self._closed, key=lambda s: s.closed_at or 0, reverse=True)
        return [s.info() for s in [*live, *ended]]

    async def kill(self, session_id: str, by: str) -> ShellInfo:
        session = self._sessions.get(session_id)
        if session is None:
            if any(s.id == session_id for s in self._closed):
                raise FailedPrecondition(f"shell session {session_id} has ended already")
            raise NotFound(f"no shell session {session_id[:40]!r}")
        session.close(f"killed by {by}", by=by)
        self._events.emit(
            "shell_killed",
            f"{session.drone}: terminal {session.id} of {session.opened_by} killed by {by}",
            drone_id=session.drone_id,
            drone_name=session.drone,
            by=by,
            session=session.id,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.ended.wait(), KILL_WAIT + 1.0)
        return session.info()

    async def recordings(self) -> list[RecordingInfo]:
        return await asyncio.to_thread(self._recordings.listing)

    def _prune_soon(self) -> None:
        """Retention, in a thread, sparing the recordings of live sessions."""
        self.spawn(asyncio.to_thread(self._recordings.prune, set(self._sessions)), "prune-recordings")

    async def _janitor(self) -> None:
        while True:
            await self.clock.sleep(self._tick)
            self.sweep(self.clock.monotonic())

    def sweep(self, now: float) -> None:
        """Close what has outlived a limit at ``now`` (the clock's monotonic time), and cut
        the calls of sessions closing for longer than KILL_WAIT."""
        s = self.settings
        for session in list(self._sessions.values()):
            if session.phase == CLOSING:
                if now > session.close_deadline:
                    session.abort()
            elif session.phase != OPEN:
                continue
            elif session.detached_at is not None and now - session.detached_at > s.grace:
                session.close(f"detached for more than {s.grace:g}s")
            elif now - session.last_activity > s.idle_timeout:
                session.close(f"idle for more than {s.idle_timeout:g}s")
            elif now - session.started > s.max_lifetime:
                session.close(f"open for more than {s.max_lifetime:g}s (the maximum lifetime)")
