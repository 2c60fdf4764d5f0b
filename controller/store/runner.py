"""Runs blocking store calls on one dedicated thread, and keeps the
connection alive across database outages.

One thread means one connection and no locking surprises in SQLite; the
event loop only awaits futures.

A call that fails because the database cannot serve it now raises
``StoreUnavailable`` (the store says which driver errors those are). When
the connection itself is gone (a PostgreSQL restart, kill -9), the runner
first reconnects and runs the call once more, so an outage that ended
before anybody noticed costs nothing. If that fails too, the connection is
marked lost: calls fail fast with ``StoreUnavailable`` while a reconnect
waits its turn (exponential backoff with full jitter, up to
``retry_max``), and the first call after that tries again. The health
probe (``probe``) is such a call, so the connection comes back without
anybody else asking.

``status()`` says, from memory, how the database has been doing: lost,
failing (the latest error, until a probe write succeeds again), or busy
with one call for how long (a frozen server answers nothing, and nothing
can interrupt a query on a blocking driver; the health check reports it
instead of waiting for it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from swarm.controller.store.base import Store, StoreUnavailable

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

RETRY_FIRST = 0.1
RETRY_MAX = 5.0
# Calls waiting for the database thread at most; beyond, callers get
# StoreUnavailable at once instead of queueing behind a frozen server.
MAX_WAITING = 1000


@dataclass(frozen=True, slots=True)
class StoreFailure:
    message: str
    lost: bool  # the connection is gone (else: the database answered with an error)
    at: float  # time.time() of the first failure of this run
    last_at: float  # time.time() of the latest one


@dataclass(frozen=True, slots=True)
class StoreStatus:
    failure: StoreFailure | None
    busy_for: float  # seconds the call on the database thread has been running (0: idle)
    waiting: int  # calls queued behind it


class DatabaseThread:
    """One thread running submitted calls in order.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit,
    so a call hanging on a frozen database server would keep the process
    alive after the staged shutdown gave up on it. This one is a daemon."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._closed = False
        self._started = False
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], R]) -> concurrent.futures.Future[R]:
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot run a database call after shutdown")
            if not self._started:
                self._started = True
                self._thread.start()
            self._calls.put((future, fn))
        return future

    def shutdown(self, wait: bool) -> None:
        """No new calls; the queued ones still run. ``wait``: until they have."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._calls.put(None)
        if wait and self._started:
            self._thread.join()

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up before it started
            try:
                result = fn()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            del item, future, fn


class StoreRunner:
    def __init__(
        self,
        store: Store,
        *,
        retry_max: float = RETRY_MAX,
        max_waiting: int = MAX_WAITING,
        timing: Callable[[str, float], None] | None = None,
    ) -> None:
        """``timing``: told (on the database thread) the name and duration of
        every call that completed, for metrics.py."""
        self.store = store
        self._timing = timing
        self._thread = DatabaseThread("swarm-db")
        self._retry_max = max(retry_max, RETRY_FIRST)
        self._max_waiting = max_waiting
        self._waiting = 0
        # Written on the database thread, read on the loop: whole values only.
        self._failure: StoreFailure | None = None
        self._busy_since: float | None = None
        self._retry_delay = RETRY_FIRST
        self._retry_at = 0.0

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        if self._waiting >= self._max_waiting:
            raise StoreUnavailable(f"the database is busy: {self._waiting} calls are waiting for it")
        name = getattr(fn, "__name__", "call")
        return await self._submit(functools.partial(fn, *args, **kwargs), probe=False, name=name)

    async def probe(self) -> None:
        """One small write: reconnects if need be, and a success ends a failure."""
        await self._submit(self.store.probe, probe=True, name="probe")

    async def _submit(self, fn: Callable[[], R], *, probe: bool, name: str) -> R:
        future = self._thread.submit(functools.partial(self._run, fn, probe, name))
        self._waiting += 1
        try:
            return await asyncio.wrap_future(future)
        finally:
            self._waiting -= 1

    def status(self) -> StoreStatus:
        busy = self._busy_since
        return StoreStatus(
            failure=self._failure,
            busy_for=0.0 if busy is None else max(0.0, time.monotonic() - busy),
            waiting=max(0, self._waiting - (busy is not None)),
        )

    async def open(self) -> None:
        await self.call(self.store.open)

    async def close(self) -> None:
        try:
            await self.call(self.store.close)
        except BaseException:
            # Cancelled (a call hangs on a frozen server) or failed: the
            # thread is a daemon and does not hold up the process.
            self._thread.shutdown(wait=False)
            raise
        self._thread.shutdown(wait=True)  # idle now: it ends at once

    # -- on the database thread -------------------------------------------

    def _run(self, fn: Callable[[], R], probe: bool, name: str) -> R:
        self._busy_since = started = time.monotonic()
        try:
            result = self._attempt(fn, probe)
        finally:
            self._busy_since = None
        if self._timing is not None:
            self._timing(name, time.monotonic() - started)
        return result

    def _attempt(self, fn: Callable[[], R], probe: bool) -> R:
        failure = self._failure
        if failure is not None and failure.lost:
            if time.monotonic() < self._retry_at:
                raise StoreUnavailable(failure.message, lost=True)
            self._reconnect()
        retried = False
        while True:
            try:
                result = fn()
            except Exception as exc:
                error = self.store.unavailable(exc)
                if error is None:
                    raise
                if error.lost and not retried:
                    # Most often a connection that died while idle (the server
                    # restarted): a new one, and the call once more.
                    retried = True
                    log.warning("database connection lost (%s); reconnecting", error.reason)
                    self._reconnect()
                    continue
                self._fail(error)
                raise error from exc
            if probe:
                self._recovered()
            return result

    def _reconnect(self) -> None:
        try:
            self.store.reconnect()
        except Exception as exc:
            error = self.store.unavailable(exc)
            if error is None:
                raise
            error = StoreUnavailable(error.reason, lost=True)
            self._fail(error)
            raise error from None
        failure = self._failure
        if failure is not None and failure.lost:
            log.info("database connection re-established after %.1fs", time.time() - failure.at)
            # Reachable again; whether it takes writes, the next probe says.
            self._failure = StoreFailure(
                "database reconnected; no write has succeeded yet", False, failure.at, time.time()
            )
        self._retry_delay = RETRY_FIRST

    def _fail(self, error: StoreUnavailable) -> None:
        now = time.time()
        old = self._failure
        if old is None:
            log.error("database unavailable: %s", error.reason)
        self._failure = StoreFailure(error.reason, error.lost, old.at if old else now, now)
        if error.lost:
            # Full jitter: many controllers (or restarts) never retry in step.
            self._retry_at = time.monotonic() + random.uniform(0, self._retry_delay)
            self._retry_delay = min(self._retry_delay * 2, self._retry_max)

    def _recovered(self) -> None:
        old = self._failure
        if old is not None:
            log.info("database available again after %.1fs", time.time() - old.at)
            self._failure = None
            self._retry_delay = RETRY_FIRST
