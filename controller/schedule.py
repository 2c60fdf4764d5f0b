"""When each drone is next due for a look: a heap of deadlines by drone id.

The health monitor and the pinger take from here only the drones whose
deadline has come: scanning every drone on each pass cost more than all
the heartbeats' own handling at a few hundred drones. A drone has one
deadline at a time: setting a new one leaves the old heap entry behind,
skipped when it comes up, so moving a deadline costs a push and never a
search.

Their loops sleep until the earliest deadline (``wait_due``) instead of
polling at a fixed rate (20 and 10 Hz): a deadline set sooner than the
loop's wake-up wakes it, and a pass is at least ``least`` seconds after
the one before, so that deadlines close together are taken in one pass,
as the fixed tick did. A controller without drones used 1-1.2 % of a
core polling (with the healer's 4 Hz), 0.2-0.4 % now.
"""

from __future__ import annotations

import asyncio
import heapq
import math

from swarm.clock import Clock

# Rebuild the heap when skipped entries outnumber live ones by this much.
COMPACT_FACTOR = 2
COMPACT_MIN = 64


class Schedule:
    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._at: dict[str, float] = {}
        # When the loop waiting in wait_due looks next, and what wakes it for
        # a deadline set before that. Minus infinity while it is not waiting:
        # it reads next_due() before it waits again, so a deadline set
        # meanwhile (by its own pass, by a heartbeat) wakes nothing.
        self._wakes_at = -math.inf
        self._sooner = asyncio.Event()

    def __len__(self) -> int:
        return len(self._at)

    def at(self, key: str) -> float:
        """The deadline of ``key``; infinity when it has none."""
        return self._at.get(key, math.inf)

    def set(self, key: str, when: float) -> None:
        """``key`` is due at ``when`` (instead of any deadline it had)."""
        self._at[key] = when
        heapq.heappush(self._heap, (when, key))
        if len(self._heap) > COMPACT_FACTOR * len(self._at) + COMPACT_MIN:
            self._heap = [(when, key) for key, when in self._at.items()]
            heapq.heapify(self._heap)
        if when < self._wakes_at:
            self._sooner.set()

    def earlier(self, key: str, when: float) -> None:
        """Due at ``when`` if that is before its deadline (or it has none)."""
        if when < self._at.get(key, math.inf):
            self.set(key, when)

    def next_due(self) -> float:
        """The earliest deadline, or one before it (an entry left behind by a
        move: a wait for it ends early, and finds nothing due); infinity when
        there is none."""
        return self._heap[0][0] if self._heap else math.inf

    def discard(self, key: str) -> None:
        self._at.pop(key, None)

    def take_due(self, now: float) -> list[str]:
        """The keys due at or before ``now``, earliest first; they have no
        deadline any more until one is set again."""
        heap, at = self._heap, self._at
        due: list[str] = []
        while heap and heap[0][0] <= now:
            when, key = heapq.heappop(heap)
            if at.get(key) == when:
                del at[key]
                due.append(key)
        return due

    async def wait_due(self, clock: Clock, least: float, most: float) -> float:
        """Sleep until the earliest deadline, but ``least`` seconds at the
        fewest, or until a deadline is set before the wake-up; the time for
        the pass that follows (``take_due``). Looks again every ``most``
        seconds meanwhile, whatever it was told."""
        earliest = clock.time() + least
        while True:
            now = clock.time()
            wake = max(self.next_due(), earliest)
            if wake <= now:
                return now
            self._sooner.clear()
            self._wakes_at = wake
            try:
                woken = await clock.wait(self._sooner, min(wake - now, most))
            finally:
                self._wakes_at = -math.inf
            if woken:
                return clock.time()
            if wake - now <= most:
                # A timer may fire a hair before its time (asyncio runs those
                # within the clock's resolution): the pass is for the deadline.
                return max(clock.time(), wake)
