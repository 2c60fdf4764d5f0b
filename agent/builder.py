"""Runs builds the controller asks for: one ``emerge`` at a time.

The build runs in its own process group (cancel and timeout kill all of
it: TERM, then KILL after a grace for whatever of it is left). Its output
goes to a log file in the state dir and, in batches (by size or time), to
the controller on a BuildLog stream of its own, never on the control
stream. After a successful emerge the binary package is uploaded
(resumable, sha256-checked) before the build is reported done.

An upload the controller cannot take now (UNAVAILABLE: its database down,
its disk full) is tried again with backoff, the package kept, for up to
UPLOAD_PATIENCE; then the build is reported CANCELLED, which the
controller requeues without counting it against the drone. What a build
leaves behind is deleted when the controller gives up on it
(leftovers.py).

A test build (``StartBuild.test_build``) never installs its package: it
runs as three emerge steps into one log (teststeps.py): which build-time
dependencies are missing (refused unless all are binary packages in
staging), installing those from staging as a regular build would, then
``--buildpkgonly``, which writes the binary package without merging it. So
the drone's installed packages stay as they were, but for dependencies
from staging. Cancel and timeout kill whichever step runs; a failed step
ends the build. Its packages go to a scratch PKGDIR of its own (``PKGDIR``
in emerge's environment), named by its build id under
``<state dir>/test-pkgdirs``; the package is uploaded from there and the
directory deleted when the build ends, so no later build ever takes a test
build's package (or a dependency it fetched) from the drone's PKGDIR.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import grpc
import psutil

from swarm.agent.leftovers import BuildJournal, BuildTrace, packages_of, remove_leftovers
from swarm.agent.logs import LogSources, build_log_name
from swarm.agent.probes import existing
from swarm.agent.teststeps import (
    REFUSED_EXIT,
    MergeList,
    Stage,
    Step,
    build_steps,
    merge_list,
    merge_row,
    refusal,
)
from swarm.backoff import Backoff
from swarm.files import sha256_file
from swarm.v1 import build_pb2, build_pb2_grpc, gateway_pb2

log = logging.getLogger(__name__)

CPV_RE = re.compile(r"^[A-Za-z0-9+_][A-Za-z0-9+_.-]*/[A-Za-z0-9+_][A-Za-z0-9+_.-]*-[0-9][0-9A-Za-z._-]*\Z")
LOG_BATCH_BYTES = 16 * 1024
LOG_BATCH_SECONDS = 0.2
LINE_MAX = 4096  # characters of output without a newline taken as a line of the tail
LOG_QUEUE = 64  # batches; a slow controller slows the reader, not memory
LOG_DELIVERY_WAIT = 30.0  # seconds a finished build waits for its log to be delivered
# A log stream that ended with one of these is opened again (the controller
# restarting, the connection lost); any other answer is final.
LOG_RETRY = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
UPLOAD_CHUNK = 256 * 1024
RECENT = 16
KILL_GRACE = 5.0
# Where Portage keeps its copies of remote binhost indexes, under EPREFIX.
BINHOST_CACHE = "var/cache/edb/binhost"
# An upload cut off by a dropped connection or a controller restart is tried
# again (resuming where the controller's copy ends) for this long before the
# build is reported failed: the package is built, only the controller is away.
UPLOAD_PATIENCE = 900.0
UPLOAD_BACKOFF = Backoff(initial=0.5, cap=15.0)
UPLOAD_RETRY_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
Kind = build_pb2.BuildEvent


class ControllerAway(Exception):
    """The controller did not take the package within UPLOAD_PATIENCE: its fault, not the build's."""


def forget_binhost_indexes(eprefix: str) -> None:
    """Drop Portage's cached copies of the binhosts' Packages indexes.

    emerge asks a binhost for its index with If-Modified-Since set to the
    cached copy's TIMESTAMP plus 5 s, so an index rewritten within those
    seconds (a dependency staged a moment ago) looks unchanged: the drone
    would build from source what staging already holds. Without the copy
    emerge fetches the current index, a few KB."""
    shutil.rmtree(Path(eprefix or "/") / BINHOST_CACHE, ignore_errors=True)


def cpn(cpv: str) -> str:
    """category/name of category/name-version."""
    category, _, pf = cpv.partition("/")
    match = re.match(r"^(.*?)-[0-9][^/]*$", pf)
    return f"{category}/{match.group(1) if match else pf}"


@dataclass
class Build:
    start: build_pb2.StartBuild
    started: float = field(default_factory=time.monotonic)
    wall_started: float = field(default_factory=time.time)
    process: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    cancel_reason: str = ""
    log_bytes: int = 0
    # When emerge last printed something (monotonic): one half of the
    # builder check's "is it moving" (checks.py measures the CPU half).
    last_output: float = field(default_factory=time.monotonic)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=60))
    # Set when the build is to stop (its process group was sent a signal).
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # A test build's check: the merge list's rows while it runs, then what it says.
    rows: list[tuple[str, str]] | None = None
    merge: MergeList = field(default_factory=MergeList)


class _LogSink:
    """The build's one log, whatever its steps: the file, and batches of it
    (by size or time) for the controller, each saying where it starts."""

    def __init__(self, file: BinaryIO, batches: asyncio.Queue[tuple[int, bytes] | None]) -> None:
        self._file = file
        self._batches = batches
        self._written = 0  # bytes in the file
        self._pending = bytearray()  # the end of them, not in a batch yet
        self.due = time.monotonic() + LOG_BATCH_SECONDS  # when the pending bytes go anyway

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._written += len(data)
        self._pending += data

    async def ship(self, *, force: bool = False) -> None:
        """Queue the pending bytes as a batch if they are enough, due, or forced;
        waits while the queue is full (a slow controller slows the reader)."""
        now = time.monotonic()
        if self._pending and (force or len(self._pending) >= LOG_BATCH_BYTES or now >= self.due):
            await self._batches.put((self._written - len(self._pending), bytes(self._pending)))
            self._pending.clear()
        if now >= self.due:
            self.due = now + LOG_BATCH_SECONDS


class Builder:
    def __init__(
        self,
        *,
        emerge_command: str,
        pkgdir: Path,
        eprefix: str,
        logs: LogSources,
        cache_path: Path,
        min_free_bytes: int,
        nice: int = 0,
        send: Callable[[gateway_pb2.AgentMessage], object],
        channel: Callable[[], grpc.aio.Channel],
        journal: Path | None = None,
        scratch: Path | None = None,
    ) -> None:
        self._command = shlex.split(emerge_command)
        self._pkgdir = pkgdir
        self._eprefix = eprefix
        self._logs = logs
        self._cache_path = cache_path
        self._min_free = min_free_bytes
        self._nice = nice
        self._send = send
        self._channel = channel
        self.current: Build | None = None
        # Why new builds are refused for now (a payload being applied), or "".
        self.held = ""
        self.recent: deque[build_pb2.BuildEvent] = deque(maxlen=RECENT)
        # Builds noted with what they leave behind (journal: the file, kept across restarts).
        self._journal = BuildJournal(journal)
        self._cleanups: set[asyncio.Task[None]] = set()  # builds and clean-ups still running
        # Test builds' scratch PKGDIRs, one per build (None: test builds refused).
        self._scratch = scratch

    # -- control ----------------------------------------------------------

    @property
    def command(self) -> tuple[str, ...]:
        """The emerge command, before the per-build arguments."""
        return tuple(self._command)

    @property
    def current_build_id(self) -> str:
        return self.current.start.build_id if self.current is not None else ""

    def _event(
        self,
        start: build_pb2.StartBuild,
        kind: build_pb2.BuildEvent.Kind,
        *,
        exit_code: int = 0,
        reason: str = "",
        duration: float = 0.0,
        artifacts: list[str] | None = None,
    ) -> None:
        event = build_pb2.BuildEvent(
            build_id=start.build_id,
            job_id=start.job_id,
            kind=kind,
            exit_code=exit_code,
            reason=reason[:2000],
            duration_s=duration,
            artifacts=artifacts or [],
        )
        if kind != Kind.STARTED:
            self.recent.append(event)
            if self.current is not None and self.current.start.build_id == start.build_id:
                # Free the moment the end is told: the controller may send the next
                # build right away, before this one's bookkeeping is done.
                self.current = None
        self._send(gateway_pb2.AgentMessage(build_event=event))

    def start(self, start: build_pb2.StartBuild) -> None:
        if self.current is not None:
            if self.current.start.build_id == start.build_id:
                return  # the controller asked again after a reconnect: already on it
            self._event(start, Kind.REFUSED, reason=f"busy with build {self.current.start.build_id}")
            return
        if self.held:
            self._event(start, Kind.REFUSED, reason=self.held)
            return
        if any(e.build_id == start.build_id for e in self.recent):
            # Finished while the controller was not listening: say so again.
            for event in self.recent:
                if event.build_id == start.build_id:
                    self._send(gateway_pb2.AgentMessage(build_event=event))
            return
        if not CPV_RE.match(start.cpv):
            self._event(start, Kind.REFUSED, reason=f"not a package version: {start.cpv[:200]!r}")
            return
        free = psutil.disk_usage(str(existing(self._cache_path))).free
        if free < self._min_free:
            self._event(
                start,
                Kind.REFUSED,
                reason=f"low disk: {free // 2**20} MiB free in {self._cache_path}, "
                f"need {self._min_free // 2**20} MiB",
            )
            return
        if start.test_build and self._scratch is None:
            self._event(start, Kind.REFUSED, reason="this agent has no scratch PKGDIR for test builds")
            return
        build = Build(start)
        self.current = build
        build.task = asyncio.create_task(self._run(build), name=f"build:{start.build_id}")
        # Tracked until done: a build reported ended may still be tidying its journal.
        self._cleanups.add(build.task)
        build.task.add_done_callback(self._cleanups.discard)

    def cancel(self, build_id: str, reason: str) -> None:
        build = self.current
        if build is None or build.start.build_id != build_id:
            # Not running it (any more): the controller gave it up; delete what it left.
            task = asyncio.create_task(self._clean(build_id, reason), name=f"clean:{build_id}")
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)
            return
        build.cancel_reason = reason or "cancelled by the controller"
        self._kill(build)

    async def _clean(self, build_id: str, reason: str, busy: str | None = None) -> None:
        """Delete what the build left; ``busy``: the package being built now
        (default: the current build's), whose temporary directory stays."""
        trace = await asyncio.to_thread(self._journal.get, build_id)
        if trace is None:
            return  # not one of ours, or cleaned already
        if busy is None:
            busy = self.current.start.cpv if self.current is not None else ""
        try:
            removed = await asyncio.to_thread(remove_leftovers, trace, self._pkgdir, self._cache_path, busy)
            await asyncio.to_thread(self._journal.forget, build_id)
        except OSError as exc:
            log.warning("build %s: could not delete what it left: %s", build_id, exc)
            return
        log.info(
            "build %s (%s) given up (%s): deleted %s",
            build_id,
            trace.cpv,
            reason or "no reason given",
            ", ".join(str(p) for p in removed) or "nothing (it left nothing)",
        )

    async def stop(self, reason: str = "the agent is stopping") -> None:
        """Cancel the running build, if any: its whole process group is killed
        and a CANCELLED event with the reason is sent."""
        build = self.current
        if build is not None and build.task is not None:
            build.cancel_reason = reason
            self._kill(build)
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(build.task), KILL_GRACE + 1)
            build.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await build.task
        if self._cleanups:
            # What is left is bookkeeping (the build itself was killed above): short.
            await asyncio.wait(set(self._cleanups), timeout=KILL_GRACE)

    @staticmethod
    def _kill(build: Build, sig: int = signal.SIGTERM) -> None:
        build.stopping.set()
        process = build.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)

    # -- one build -----------------------------------------------------------

    def env(self, start: build_pb2.StartBuild | None = None) -> dict[str, str]:
        """The environment emerge runs in (for a build, or for a check without one)."""
        env = dict(os.environ)
        # Logs are read by people in a browser and by failure_summary(), not a tty.
        env.setdefault("NOCOLOR", "true")
        if self._eprefix:
            env["PORTAGE_OVERRIDE_EPREFIX"] = self._eprefix
        # Portage's own build log, kept where `portage/<cat>/<pkg>` finds it (logs.py).
        env["PORT_LOGDIR"] = str(self._logs.portage)
        if start is not None:
            if start.binhost_url:
                env["PORTAGE_BINHOST"] = start.binhost_url
            env.update(start.env)
            if start.test_build:
                env["PKGDIR"] = str(self.pkgdir_of(start))
        return env

    def pkgdir_of(self, start: build_pb2.StartBuild) -> Path:
        """Where the build's packages go: a test build's scratch PKGDIR, else the drone's."""
        if start.test_build and self._scratch is not None:
            return self._scratch / start.build_id
        return self._pkgdir

    def _prepare_logs(self) -> None:
        self._logs.builds.mkdir(parents=True, exist_ok=True)
        self._logs.portage.mkdir(parents=True, exist_ok=True)
        self._logs.prune()

    async def _run(self, build: Build) -> None:
        start = build.start
        log_path = self._logs.builds / build_log_name(start.job_id, start.build_id)
        await asyncio.to_thread(self._prepare_logs)
        await asyncio.to_thread(forget_binhost_indexes, self._eprefix)
        if start.test_build:
            try:
                await asyncio.to_thread(self._fresh_scratch, start)
            except OSError as exc:
                self.current = None
                self._event(start, Kind.REFUSED, reason=f"cannot make the scratch PKGDIR: {exc}")
                return
        env = self.env(start)
        if shutil.which(self._command[0], path=env.get("PATH")) is None:
            # Under nice a missing command would be nice's failure, a failed build: refuse instead.
            self.current = None
            self._event(start, Kind.REFUSED, reason=f"cannot run {self._command[0]}: not found")
            return
        steps = build_steps(start.cpv, cpn(start.cpv), test_build=start.test_build)
        try:
            await self._spawn(build, steps[0], env)
        except OSError as exc:
            self.current = None
            reason = f"cannot run {self._argv(steps[0])[0]}: {exc.strerror}"
            self._event(start, Kind.REFUSED, reason=reason)
            return
        self._event(start, Kind.STARTED)
        # A cancelled build is reported once what it left is deleted: the
        # controller requeues it, and may give this drone the same package next.
        cancelled: tuple[int, str, float] | None = None  # exit code, reason, duration
        try:
            try:
                exit_code = await self._supervise(build, log_path, steps, env)
                duration = time.monotonic() - build.started
                if build.cancel_reason:
                    cancelled = (exit_code, build.cancel_reason, duration)
                elif exit_code != 0:
                    reason = "\n".join(build.tail) or f"emerge exited with {exit_code}"
                    self._event(start, Kind.FAILED, exit_code=exit_code, reason=reason, duration=duration)
                else:
                    await self._finish(build, duration)
            except Exception as exc:  # any failure is reported, not raised into the loop
                duration = time.monotonic() - build.started
                if build.cancel_reason or isinstance(exc, ControllerAway):
                    # Cancelled during the upload, or the controller never took the
                    # package: requeued by the controller, not the drone's failure.
                    log.warning("build %s cancelled after its emerge: %s", start.build_id, exc)
                    cancelled = (0, build.cancel_reason or str(exc), duration)
                else:
                    log.exception("build %s failed in the agent", start.build_id)
                    self._event(
                        start, Kind.FAILED, exit_code=-1, reason=f"agent error: {exc}", duration=duration
                    )
            finally:
                self._kill(build, signal.SIGKILL)
            if cancelled is not None:
                exit_code, reason, duration = cancelled
                await asyncio.to_thread(self._journal.ended, start.build_id, time.time())
                await self._clean(start.build_id, reason, busy="")
                self._event(start, Kind.CANCELLED, exit_code=exit_code, reason=reason, duration=duration)
            else:
                # Kept: the package (reused by --usepkg) and a failed build's temporary
                # directory (read by people finding out why).
                await asyncio.to_thread(self._journal.forget, start.build_id)
        finally:
            if self.current is build:  # not a build started since this one ended
                self.current = None
            if start.test_build:
                await asyncio.to_thread(shutil.rmtree, self.pkgdir_of(start), True)

    def _fresh_scratch(self, start: build_pb2.StartBuild) -> None:
        """An empty scratch PKGDIR for the test build; what earlier ones left
        (an agent killed during one) goes: one build runs at a time."""
        assert self._scratch is not None
        shutil.rmtree(self._scratch, ignore_errors=True)
        self.pkgdir_of(start).mkdir(parents=True)

    @staticmethod
    def _trace(build: Build) -> BuildTrace:
        assert build.process is not None
        try:
            created = psutil.Process(build.process.pid).create_time()
        except psutil.Error:
            created = 0.0
        return BuildTrace(
            build.start.build_id, build.start.cpv, build.wall_started, build.process.pid, created
        )

    def _argv(self, step: Step) -> list[str]:
        # Niced by nice(1), not in the child: a preexec_fn would run Python between fork and
        # exec in a process with gRPC threads, and a renice after the start misses what
        # emerge forks first.
        nice = ["nice", "-n", str(self._nice)] if self._nice else []
        return [*nice, *self._command, *step.args]

    async def _spawn(self, build: Build, step: Step, env: dict[str, str]) -> None:
        """Start the step's emerge in a process group of its own: the build's
        process from now on (cancel and timeout kill it), noted in the journal."""
        build.process = await asyncio.create_subprocess_exec(
            *self._argv(step),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        what = f"emerge ({step.stage.value})" if build.start.test_build else "emerge"
        log.info("build %s: %s =%s (pid %d)", build.start.build_id, what, build.start.cpv, build.process.pid)
        await asyncio.to_thread(self._journal.note, self._trace(build))

    async def _supervise(
        self, build: Build, log_path: Path, steps: tuple[Step, ...], env: dict[str, str]
    ) -> int:
        """Run the build's steps (the first one started) one after another into
        one log; the exit code of the last one run."""
        batches: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(LOG_QUEUE)
        shipper = asyncio.create_task(
            self._ship_log(build.start.build_id, log_path, batches), name="build-log"
        )
        timeout = build.start.timeout_s or None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            # Unbuffered: the shipper reads back from the file what a dropped stream missed.
            with log_path.open("wb", buffering=0) as file:
                sink = _LogSink(file, batches)
                exit_code = 0
                for index, step in enumerate(steps):
                    if index:
                        if step.stage is Stage.DEPS and not build.merge.binary:
                            continue  # nothing to install first
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            build.cancel_reason = f"timed out after {timeout}s"
                        if build.cancel_reason:
                            return exit_code
                        await self._spawn(build, step, env)
                    if step.note:
                        self._note(build, sink, step.note)
                    build.rows = [] if step.stage is Stage.CHECK else None
                    exit_code = await self._step(build, sink, deadline, timeout)
                    if exit_code != 0 or build.cancel_reason:
                        return exit_code
                    if build.rows is not None:
                        build.merge = merge_list(build.rows)
                        if build.merge.source:
                            self._note(build, sink, refusal(build.merge.source))
                            await sink.ship(force=True)
                            return REFUSED_EXIT
                return exit_code
        finally:
            await batches.put(None)
            # A build that ends normally waits a while for its log to reach a controller
            # that is restarting; a cancelled one (the agent may be stopping) hardly.
            try:
                await asyncio.wait_for(shipper, 2.0 if build.cancel_reason else LOG_DELIVERY_WAIT)
            except (TimeoutError, grpc.aio.AioRpcError) as exc:
                log.warning("build %s: log not fully delivered: %s", build.start.build_id, exc)

    async def _step(self, build: Build, sink: _LogSink, deadline: float | None, timeout: int | None) -> int:
        """Pump the running step's output into the log until it ends; the step's exit code.

        The output ends when every process of the step has gone (or closed it).
        Asked to stop (a cancel, the agent stopping, the deadline), the step's
        process group gets TERM; what still holds the output after KILL_GRACE
        (a process ignoring TERM, or one stopped: ebuild.sh defers its TERM
        trap until the phase's command ends) gets KILL, emerge itself gone or
        not, so a stop never waits on the step."""
        process = build.process
        assert process is not None and process.stdout is not None
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        reader = asyncio.create_task(self._pump(build, process.stdout, sink), name="build-output")
        stopping = asyncio.create_task(build.stopping.wait(), name="build-stopping")
        try:
            await asyncio.wait((reader, stopping), timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():
                if not build.stopping.is_set():
                    build.cancel_reason = f"timed out after {timeout}s"
                    self._kill(build)
                await asyncio.wait((reader,), timeout=KILL_GRACE)
            if not reader.done():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # the group, whether its leader is gone or not
                await asyncio.wait((reader,), timeout=KILL_GRACE)
        finally:
            for task in (reader, stopping):
                task.cancel()  # the reader only if its output is still held after KILL: given up
            await asyncio.wait((reader, stopping))
        if not reader.cancelled() and (error := reader.exception()) is not None:
            raise error
        try:
            return await asyncio.wait_for(process.wait(), KILL_GRACE)
        except TimeoutError:
            self._kill(build, signal.SIGKILL)
            return await process.wait()

    def _note(self, build: Build, sink: _LogSink, text: str) -> None:
        """A line of the agent's own in the build log, between emerge's."""
        sink.write(f"{text}\n".encode())
        self._line(build, text)

    async def _pump(self, build: Build, stream: asyncio.StreamReader, sink: _LogSink) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        partial = ""  # the start of a line the next read ends
        while True:
            try:
                chunk = await asyncio.wait_for(
                    stream.read(LOG_BATCH_BYTES), max(0.01, sink.due - time.monotonic())
                )
            except TimeoutError:
                chunk = None
            if chunk == b"":
                break
            if chunk:
                build.last_output = time.monotonic()
                sink.write(chunk)
                *lines, partial = (partial + decoder.decode(chunk)).split("\n")
                if len(partial) > LINE_MAX:  # a progress bar redrawn with \r, say: a line all the same
                    lines.append(partial)
                    partial = ""
                for line in lines:
                    self._line(build, line)
            # Blocks when the controller is slow.
            await sink.ship()
        rest = partial + decoder.decode(b"", final=True)
        if rest:
            self._line(build, rest)
        await sink.ship(force=True)

    @staticmethod
    def _line(build: Build, line: str) -> None:
        for part in line.splitlines():
            if part.strip():
                build.tail.append(part.rstrip())
            if build.rows is not None and (row := merge_row(part)) is not None:
                build.rows.append(row)

    async def _ship_log(
        self, build_id: str, log_path: Path, batches: asyncio.Queue[tuple[int, bytes] | None]
    ) -> None:
        """Stream the build log to the controller as it is written. A stream
        cut off (the controller restarting) is opened again with backoff: the
        controller says how much it holds, and the call sends from there,
        reading back from the drone's log file what the batches no longer
        have. Meanwhile the batches are drained (they are in the file), so
        the build never waits for its log.

        Each call reads the batches with a generation of its own: grpc may
        still be pulling on the request iterator of a call that failed, and
        whatever such a stale reader takes is read back from the file by the
        live one (a batch that starts past where the live call is means a gap)."""
        ended = asyncio.Event()  # the end mark (None) was taken from the queue
        generation = 0

        def read_back(start: int, end: int | None = None) -> Iterator[build_pb2.LogChunk]:
            """The log file from ``start`` (to ``end``), one chunk at a time."""
            with log_path.open("rb") as fh:
                fh.seek(start)
                while end is None or start < end:
                    size = LOG_BATCH_BYTES if end is None else min(LOG_BATCH_BYTES, end - start)
                    data = fh.read(size)
                    if not data:
                        return
                    yield build_pb2.LogChunk(build_id=build_id, offset=start, data=data)
                    start += len(data)

        async def chunks(mine: int, position: int, from_file: bool) -> AsyncIterator[build_pb2.LogChunk]:
            if from_file:
                for chunk in read_back(position):
                    yield chunk
                    position = chunk.offset + len(chunk.data)
            while not ended.is_set():
                item = await batches.get()
                if mine != generation:
                    # A stale call's reader: the live call reads this from the file.
                    if item is None:
                        batches.put_nowait(None)  # for the live call's reader to see the end
                    return
                if item is None:
                    ended.set()
                    break
                offset, data = item
                if offset > position:  # taken by a stale reader: read the gap back
                    for chunk in read_back(position, offset):
                        yield chunk
                        position = chunk.offset + len(chunk.data)
                if offset + len(data) <= position:
                    continue
                data = data[position - offset :]
                yield build_pb2.LogChunk(build_id=build_id, offset=position, data=data)
                position += len(data)
            # The end: whatever a stale reader took last is still in the file.
            for chunk in read_back(position):
                yield chunk

        async def drain() -> None:
            while await batches.get() is not None:
                pass
            ended.set()

        attempt = 0
        resume: int | None = None
        while True:
            generation += 1
            try:
                async with self._channel() as channel:
                    stub = build_pb2_grpc.BuildsStub(channel)
                    if resume is not None:
                        # An empty chunk asks how much the controller holds.
                        probe = build_pb2.LogChunk(build_id=build_id, offset=0, data=b"")
                        resume = (await stub.BuildLog(iter([probe]))).received
                    await stub.BuildLog(chunks(generation, resume or 0, resume is not None))
                    return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in LOG_RETRY:
                    log.warning(
                        "build %s: the controller takes no more of its log: %s", build_id, exc.details()
                    )
                    generation += 1
                    if not ended.is_set():
                        await drain()
                    return
                log.warning("build %s: log stream ended (%s); resuming", build_id, exc.code().name)
            generation += 1  # the failed call's reader, if grpc still runs it, stands down
            resume = 0
            delay = UPLOAD_BACKOFF.delay(attempt)
            attempt += 1
            if not ended.is_set():
                # The build goes on meanwhile; its output is in the file.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(drain(), delay)
            else:
                await asyncio.sleep(delay)

    async def _finish(self, build: Build, duration: float) -> None:
        start = build.start
        pkgdir = self.pkgdir_of(start)
        files = packages_of(pkgdir, start.cpv, build.wall_started)[-1:]
        if not files:
            self._event(
                start,
                Kind.FAILED,
                reason=f"emerge succeeded but no binary package for {start.cpv} appeared in {pkgdir}",
                duration=duration,
            )
            return
        uploaded = []
        for path in files:
            await self._upload_patiently(build, path)
            uploaded.append(path.name)
        self._event(start, Kind.SUCCEEDED, duration=duration, artifacts=uploaded)

    async def _upload_patiently(self, build: Build, path: Path) -> None:
        """Upload, resuming after each interruption with backoff. A burst of
        failures is logged when it starts and when it ends, not at every try."""
        started = time.monotonic()
        deadline = started + UPLOAD_PATIENCE
        attempt = 0
        while True:
            try:
                await self._upload(build.start, path)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in UPLOAD_RETRY_CODES or build.cancel_reason:
                    raise
                if time.monotonic() >= deadline:
                    raise ControllerAway(
                        f"the controller did not take {path.name} within {UPLOAD_PATIENCE:.0f}s "
                        f"({exc.code().name}: {exc.details()})"
                    ) from None
                delay = UPLOAD_BACKOFF.delay(attempt)
                attempt += 1
                if attempt == 1:
                    log.warning(
                        "build %s: upload of %s interrupted (%s: %s); the package is kept, retrying "
                        "with backoff for up to %.0fs",
                        build.start.build_id,
                        path.name,
                        exc.code().name,
                        exc.details(),
                        UPLOAD_PATIENCE,
                    )
                else:
                    log.debug(
                        "build %s: upload retry %d failed (%s); next in %.1fs",
                        build.start.build_id,
                        attempt,
                        exc.code().name,
                        delay,
                    )
                await asyncio.sleep(delay)
                continue
            if attempt:
                log.info(
                    "build %s: upload of %s went through after %d retries in %.1fs",
                    build.start.build_id,
                    path.name,
                    attempt,
                    time.monotonic() - started,
                )
            return

    async def _upload(self, start: build_pb2.StartBuild, path: Path) -> None:
        digest, size = await asyncio.to_thread(sha256_file, path)
        query = build_pb2.UploadQuery(
            build_id=start.build_id, cpv=start.cpv, filename=path.name, size=size, sha256=digest
        )
        async with self._channel() as channel:
            stub = build_pb2_grpc.BuildsStub(channel)
            status = await stub.QueryUpload(query, timeout=60)
            if status.complete:
                return

            async def chunks() -> AsyncIterator[build_pb2.ArtifactChunk]:
                yield build_pb2.ArtifactChunk(query=query, offset=status.received)
                with path.open("rb") as fh:
                    fh.seek(status.received)
                    offset = status.received
                    while data := await asyncio.to_thread(fh.read, UPLOAD_CHUNK):
                        yield build_pb2.ArtifactChunk(offset=offset, data=data, crc32=zlib.crc32(data))
                        offset += len(data)

            final = await stub.Upload(chunks(), timeout=600)
            if not final.complete:
                raise RuntimeError(f"upload of {path.name} incomplete at {final.received} of {size} bytes")
        log.info("build %s: uploaded %s (%d bytes)", start.build_id, path.name, size)
