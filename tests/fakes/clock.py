"""Clocks for tests (swarm.clock.Clock): one that moves only when the test
says so (ManualClock), and one whose wall time the test moves days ahead
(ShiftedClock).

Components take one in place of the system clock. With ManualClock the
test calls ``advance`` and every sleep and wait that falls due on the way
wakes at its own deadline, in order, with the clock reading that deadline,
so a loop ticking every 0.1 s runs ten times in ``advance(1.0)`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from swarm.clock import SystemClock

if TYPE_CHECKING:
    from swarm.clock import Clock

# Passes of the event loop after a timer fires: enough for the woken task
# and what it wakes in turn (a scheduler pass, a watcher) to run and go
# back to sleep before time moves on.
SETTLE_PASSES = 10


class ManualClock:
    """swarm.clock.Clock for tests: wall time starts at ``start`` (now by
    default), monotonic time at 0, and both move with ``advance`` only."""

    def __init__(self, start: float | None = None) -> None:
        self._start_ns = time.time_ns() if start is None else round(start * 1e9)
        self._elapsed_ns = 0
        self._timers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    # -- swarm.clock.Clock -------------------------------------------------

    def time(self) -> float:
        return self.time_ns() / 1e9

    def time_ns(self) -> int:
        return self._start_ns + self._elapsed_ns

    def monotonic(self) -> float:
        return self._elapsed_ns / 1e9

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        timer = self._timer(seconds)
        try:
            await timer
        finally:
            timer.cancel()

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set() or timeout <= 0:
            await asyncio.sleep(0)
            return event.is_set()
        timer = self._timer(timeout)
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait((timer, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        return event.is_set()

    # -- for the test ------------------------------------------------------

    @property
    def pending(self) -> int:
        """Sleeps and waits not yet due."""
        return sum(not timer.done() for _, _, timer in self._timers)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking each sleep and wait at
        its own deadline on the way (earliest first), and let what woke run."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} s)")
        target = self._elapsed_ns + round(seconds * 1e9)
        await self._settle()
        while self._timers and self._timers[0][0] <= target:
            due, _, timer = heapq.heappop(self._timers)
            if timer.done():  # cancelled: its sleeper left
                continue
            self._elapsed_ns = max(self._elapsed_ns, due)
            timer.set_result(None)
            await self._settle()
        self._elapsed_ns = target
        await self._settle()

    def _timer(self, seconds: float) -> asyncio.Future[None]:
        timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        due = self._elapsed_ns + max(1, round(seconds * 1e9))
        if len(self._timers) > 1024:
            # Timers of waits whose event came first: dropped before they pile up.
            self._timers = [entry for entry in self._timers if not entry[2].done()]
            heapq.heapify(self._timers)
        heapq.heappush(self._timers, (due, next(self._order), timer))
        return timer

    @staticmethod
    async def _settle() -> None:
        for _ in range(SETTLE_PASSES):
            await asyncio.sleep(0)


class ShiftedClock(SystemClock):
    """swarm.clock.Clock for tests about days passing in a whole controller:
    the system clock with its wall time moved forward by ``shift`` (as a
    controller sees it after days), while monotonic time and every sleep and
    wait stay real. ManualClock would wake every loop of a controller at each
    of its ticks on the way, hundreds of thousands of times a day."""

    def __init__(self) -> None:
        self._shift_ns = 0

    def shift(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} s)")
        self._shift_ns += round(seconds * 1e9)

    def time(self) -> float:
        return self.time_ns() / 1e9

    def time_ns(self) -> int:
        return super().time_ns() + self._shift_ns


def counting(passes: list[float], take: Callable[[float], None]) -> Callable[[float], None]:
    """``take`` (a loop's pass at a time), noting each time it is called in ``passes``."""

    def counted(now: float) -> None:
        passes.append(now)
        take(now)

    return counted


if TYPE_CHECKING:
    _checked: Clock = ManualClock()  # mypy: the fake has the real interface
    _shifted: Clock = ShiftedClock()
