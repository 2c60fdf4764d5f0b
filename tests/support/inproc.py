"""A real controller (controller/app.py) inside the test process: its web
tiers and gRPC ports on 127.0.0.1 port 0, its event loop in a thread of its
own, so that tests talk to it over real sockets and can also reach its
parts (the fleet, the healer) to set up what HTTP cannot."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from swarm.clock import SYSTEM, Clock
from swarm.controller.app import Controller
from swarm.controller.config import ControllerConfig

from support.procs import ControllerApi

T = TypeVar("T")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def local_config(root: Path, **options: Any) -> ControllerConfig:
    """A controller's configuration for tests: data in ``root``, every port 0 on
    127.0.0.1, no log file, no healing under the test (as support/procs.py's)."""
    defaults: dict[str, Any] = {
        "data_dir": root / "controller",
        "bind": "127.0.0.1",
        "admin_bind": "127.0.0.1",
        "grpc_port": 0,
        "public_port": 0,
        "admin_port": 0,
        "enroll_port": 0,
        "log_file": Path(""),
        "heal_grace": 3600.0,
    }
    return ControllerConfig(**{**defaults, **options})


class LogLines(logging.Handler):
    """Every line the swarm's loggers write while it is installed: a
    controller in this process logs here what a process writes to its log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def swarm_log() -> Iterator[LogLines]:
    """The swarm's log lines, debug included, while the block runs."""
    handler = LogLines()
    logger = logging.getLogger("swarm")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class InProcessController(ControllerApi):
    def __init__(self, config: ControllerConfig, clock: Clock = SYSTEM) -> None:
        """``clock``: a fakes.clock.ManualClock for tests that move time (advance
        it on the controller's loop: ``run(lambda: clock.advance(s))``)."""
        self.config = config
        self.controller = Controller(config, clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="in-process-controller", daemon=True)

    def start(self) -> InProcessController:
        self._thread.start()
        self._started.result(timeout=START_TIMEOUT)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STOP_TIMEOUT)
        assert not self._thread.is_alive(), "the in-process controller did not stop"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.controller.start()
        except BaseException as exc:
            self._started.set_exception(exc)
            await self.controller.stop()
            return
        self._started.set_result(None)
        try:
            await self._stop.wait()
        finally:
            await self.controller.stop()

    def run(self, work: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
        """Await ``work()`` on the controller's loop and return its result."""
        assert self._loop is not None

        async def call() -> T:
            return await work()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` on the controller's loop (its parts are not thread-safe)."""

        async def work() -> T:
            return fn(*args)

        return self.run(work)

    @property
    def public_url(self) -> str:
        assert self.controller.ports is not None
        return f"http://127.0.0.1:{self.controller.ports.public}"

    @property
    def admin_url(self) -> str:
        assert self.controller.ports is not None
        return f"http://127.0.0.1:{self.controller.ports.admin}"

    @property
    def admin_key(self) -> str:
        return self.config.admin_key_path.read_text().strip()


def fill_executor(api: InProcessController) -> None:
    """Uploads and fetches read and write files in the controller loop's
    default executor, which makes a thread whenever none is idle at the
    instant work comes (one that has just finished may not have said so
    yet): all of them are made here, at the module's start, as threads of
    the module's controller rather than of whichever test needs one more."""
    workers = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default
    barrier = threading.Barrier(workers)

    async def fill() -> None:
        await asyncio.gather(*(asyncio.to_thread(barrier.wait, 10) for _ in range(workers)))

    api.run(fill)


def run_cli(api: InProcessController, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """swarm-cli in this process against ``api``'s admin tier: its exit code, stdout and stderr."""
    from swarm.cli.main import main as swarm_cli

    argv = ["--url", api.admin_url, "--key-file", str(api.config.admin_key_path), *args]
    try:
        swarm_cli(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
