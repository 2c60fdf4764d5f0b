"""Functional checks behind proof of life: the agent can do its work, not
only keep a stream up.

Every Pong carries the latest result of each check (``HealthChecks.latest``
never waits). The checks run in the background, each at its own pace:

- ``event_loop``: a probe task measures how late the loop wakes it; the
  worst lag of the last few seconds is reported, not ok above a limit.
- ``cache_disk``: free space on the build cache's disk against
  ``min_free_disk_mb`` (the same figure the builder refuses builds below).
- ``builder``: a running build that neither prints nor uses CPU time (its
  whole process tree) for ``builder_stall_timeout`` is wedged.
- ``emerge``: the configured emerge command's program answers
  ``--version`` in the environment builds use; run at start and every few
  minutes, with a timeout. Not while a payload rewrites the Portage config
  it reads (``config_change``): a run that read a trial make.conf the
  payload then took back would stand, failing, for minutes. It runs again
  as soon as the change is over, on the files that were kept.

psutil and the disk run in a thread; emerge in a process group of its own,
killed whole when it does not answer in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from swarm.agent.builder import Builder
from swarm.agent.probes import existing
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)

EVENT_LOOP, CACHE_DISK, BUILDER, EMERGE = "event_loop", "cache_disk", "builder", "emerge"
LOOP_PROBE_EVERY = 0.25
LOOP_LAG_WINDOW = 5.0  # seconds of probes the reported (worst) lag covers
LOOP_LAG_LIMIT = 1.0
RESOURCES_EVERY = 1.0
EMERGE_EVERY_OK = 300.0
EMERGE_EVERY_FAILING = 60.0
EMERGE_TIMEOUT = 60.0
# emerge --info reads the whole configuration and every repository: slower than --version.
EMERGE_INFO_TIMEOUT = 120.0
# A build "uses CPU" when its tree's CPU time grew by more than this since the
# last sign of progress, plus this share of the time since: idle pollers and
# clock-tick rounding are not progress.
CPU_PROGRESS_SECONDS = 0.05
CPU_PROGRESS_SHARE = 0.01
DETAIL_LIMIT = 200


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def version_argv(command: Sequence[str]) -> list[str]:
    """How to ask the emerge command's program for its version: its leading
    words that are not options, then --version
    ("python /venv/bin/emerge --oneshot" -> python /venv/bin/emerge --version)."""
    program: list[str] = []
    for word in command:
        if word.startswith("-"):
            break
        program.append(word)
    return [*program, "--version"] if program else []


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:DETAIL_LIMIT]
    return ""


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, with reaped children) of a process and all its
    descendants; None once the process is gone. Blocking: call from a thread."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


@dataclass(slots=True)
class _Progress:
    """The builder check's memory of one build's last sign of progress."""

    build_id: str
    at: float  # monotonic
    cpu: float


class HealthChecks:
    def __init__(
        self,
        *,
        builder: Builder,
        cache_path: Path,
        min_free_bytes: int,
        stall_timeout: float,
        lag_limit: float = LOOP_LAG_LIMIT,
        lag_window: float = LOOP_LAG_WINDOW,
        emerge_timeout: float = EMERGE_TIMEOUT,
    ) -> None:
        self._builder = builder
        self._cache_path = cache_path
        self._min_free = min_free_bytes
        self._stall_timeout = stall_timeout
        self._lag_limit = lag_limit
        self._lags: deque[tuple[float, float]] = deque()  # (monotonic, lag)
        self._lag_window = lag_window
        self._emerge_timeout = emerge_timeout
        self._progress: _Progress | None = None
        self._results: dict[str, CheckResult] = {}
        self._config = asyncio.Lock()  # held while a payload changes the config emerge reads
        self._tasks = TaskSet("checks")

    async def start(self) -> None:
        self._tasks.spawn(self._loop_probe(), EVENT_LOOP)
        self._tasks.spawn(self._resources(), "resources")
        self._tasks.spawn(self._emerge(), EMERGE)

    async def stop(self) -> None:
        await self._tasks.close()

    def latest(self) -> tuple[CheckResult, ...]:
        """The latest result of every check that has run, in a stable order."""
        return tuple(self._results[name] for name in sorted(self._results))

    def _set(self, name: str, ok: bool, detail: str) -> None:
        previous = self._results.get(name)
        self._results[name] = CheckResult(name, ok, detail[:DETAIL_LIMIT])
        if not ok and (previous is None or previous.ok):
            log.warning("check %s failing: %s", name, detail)
        elif ok and previous is not None and not previous.ok:
            log.info("check %s ok again: %s", name, detail)

    # -- event_loop --------------------------------------------------------------

    async def _loop_probe(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LOOP_PROBE_EVERY)
            now = time.monotonic()
            self.record_lag(now, max(0.0, now - before - LOOP_PROBE_EVERY))

    def record_lag(self, now: float, lag: float) -> None:
        lags = self._lags
        lags.append((now, lag))
        while lags and lags[0][0] < now - self._lag_window:
            lags.popleft()
        worst = max(value for _, value in lags)
        self._set(EVENT_LOOP, worst <= self._lag_limit, f"lag {worst * 1000:.0f} ms")

    # -- cache_disk and builder --------------------------------------------------

    async def _resources(self) -> None:
        while True:
            try:
                free = await asyncio.to_thread(self._free_bytes)
            except OSError as exc:
                self._set(CACHE_DISK, False, f"cannot measure {self._cache_path}: {exc.strerror or exc}")
            else:
                self._set(
                    CACHE_DISK,
                    free >= self._min_free,
                    f"{free // 2**20} MiB free in {self._cache_path}, need {self._min_free // 2**20} MiB",
                )
            await self._check_builder()
            await asyncio.sleep(RESOURCES_EVERY)

    def _free_bytes(self) -> int:
        return psutil.disk_usage(str(existing(self._cache_path))).free

    async def _check_builder(self) -> None:
        build = self._builder.current
        process = build.process if build is not None else None
        if build is None or process is None or process.returncode is not None:
            self._progress = None
            self._set(BUILDER, True, "idle")
            return
        build_id = build.start.build_id
        cpu = await asyncio.to_thread(tree_cpu_seconds, process.pid)
        now = time.monotonic()
        if cpu is None:
            return  # ended while we looked; the next round says idle
        progress = self._progress
        if progress is None or progress.build_id != build_id:
            progress = self._progress = _Progress(build_id, now, cpu)
        elif cpu - progress.cpu > CPU_PROGRESS_SECONDS + CPU_PROGRESS_SHARE * (now - progress.at):
            progress.at, progress.cpu = now, cpu
        still = now - max(progress.at, build.last_output)
        what = f"build {build_id} (={build.start.cpv})"
        if still > self._stall_timeout:
            self._set(
                BUILDER,
                False,
                f"{what} wedged: no output and no CPU time for {still:.0f}s (limit {self._stall_timeout:g}s)",
            )
        else:
            self._set(BUILDER, True, f"{what} running, last progress {still:.0f}s ago")

    # -- emerge -------------------------------------------------------------------

    async def _emerge(self) -> None:
        while True:
            ok = await self.check_emerge()
            await asyncio.sleep(EMERGE_EVERY_OK if ok else EMERGE_EVERY_FAILING)

    @contextlib.asynccontextmanager
    async def config_change(self) -> AsyncIterator[None]:
        """Around a change of the files emerge reads (a portage-config payload,
        its own ``emerge_info`` check and its restore): the emerge check waits
        for it, then runs on what was kept before the change is reported."""
        try:
            async with self._config:
                yield
        except Exception:  # a failed change is restored: checked again all the same
            await self.check_emerge()
            raise
        await self.check_emerge()

    async def check_emerge(self) -> bool:
        async with self._config:
            return await self._check_emerge()

    async def _check_emerge(self) -> bool:
        try:
            ok, detail = await run_version(
                version_argv(self._builder.command), self._builder.env(), self._emerge_timeout
            )
        except (OSError, ValueError) as exc:  # e.g. an environment exec refuses
            ok, detail = False, f"cannot run the emerge command: {exc}"
        self._set(EMERGE, ok, detail)
        return ok

    async def emerge_info(self) -> tuple[bool, str]:
        """Whether ``emerge --info`` runs (a portage-config payload's check),
        and its first line or why not."""
        argv = version_argv(self._builder.command)[:-1]
        try:
            return await run_version(
                [*argv, "--info"] if argv else [], self._builder.env(), EMERGE_INFO_TIMEOUT
            )
        except (OSError, ValueError) as exc:
            return False, f"cannot run the emerge command: {exc}"


async def run_version(argv: list[str], env: dict[str, str], timeout: float) -> tuple[bool, str]:
    """Run ``argv`` (a --version call) and say whether it answered, with its
    first line or the first line of the error."""
    if not argv:
        return False, "the emerge command names no program"
    shown = " ".join(argv)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=env,
        )
    except OSError as exc:
        return False, f"cannot run {argv[0]}: {exc.strerror or exc}"
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        return False, f"{shown} did not answer in {timeout:g}s"
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if process.returncode != 0:
        why = first_line(stderr) or first_line(stdout) or "no output"
        return False, f"{shown} exited with {process.returncode}: {why}"
    return True, first_line(stdout) or first_line(stderr) or f"{shown}: ok"
