"""When each drone is next due for a look, in one of two shapes.

The health monitor and the pinger take from here only the drones whose
deadline has come: scanning every drone on each pass cost more than all
the heartbeats' own handling at a few hundred drones.

``Schedule`` is a heap of deadlines by drone id, for deadlines that are
set once and then come (a ping each interval): a drone has one deadline at
a time, and setting a new one leaves the old heap entry behind, skipped
when it comes up, so moving a deadline costs a push and never a search.

``Deadlines`` is a table, for deadlines that move on every message and
rarely come (silence: every heartbeat puts it off): setting one is a store
into an array, and the earliest is a ``min`` over it in C (30 us at 2,000
drones). With the heap, heartbeats left their old deadlines behind and
the monitor looked at every drone every two seconds or so, to find it
beating and push the next: 600 us of the event loop ten times a second at
2,000 drones, where the table's look finds nothing due.

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
from array import array

from swarm.clock import Clock

# Rebuild the heap when skipped entries outnumber live ones by this much.
COMPACT_FACTOR = 2
COMPACT_MIN = 64
INF = math.inf


class _Waits:
    """What both shapes share: moving a deadline earlier, and the loop's
    wait for the earliest deadline."""

    def __init__(self) -> None:
        # When the loop waiting in wait_due looks next, and what wakes it for
        # a deadline set before that. Minus infinity while it is not waiting:
        # it reads next_due() before it waits again, so a deadline set
        # meanwhile (by its own pass, by a heartbeat) wakes nothing.
        self._wakes_at = -INF
        self._sooner = asyncio.Event()

    def at(self, key: str) -> float:
        raise NotImplementedError

    def set(self, key: str, when: float) -> None:
        raise NotImplementedError

    def next_due(self) -> float:
        raise NotImplementedError

    def earlier(self, key: str, when: float) -> None:
        """Due at ``when`` if that is before its deadline (or it has none)."""
        if when < self.at(key):
            self.set(key, when)

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
                self._wakes_at = -INF
            if woken:
                return clock.time()
            if wake - now <= most:
                # A timer may fire a hair before its time (asyncio runs those
                # within the clock's resolution): the pass is for the deadline.
                return max(clock.time(), wake)


class Schedule(_Waits):
    """Deadlines in a heap: for those set once that then come."""

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[float, str]] = []
        self._at: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._at)

    def at(self, key: str) -> float:
        """The deadline of ``key``; infinity when it has none."""
        return self._at.get(key, INF)

    def set(self, key: str, when: float) -> None:
        """``key`` is due at ``when`` (instead of any deadline it had)."""
        self._at[key] = when
        heapq.heappush(self._heap, (when, key))
        if len(self._heap) > COMPACT_FACTOR * len(self._at) + COMPACT_MIN:
            self._heap = [(when, key) for key, when in self._at.items()]
            heapq.heapify(self._heap)
        if when < self._wakes_at:
            self._sooner.set()

    def next_due(self) -> float:
        """The earliest deadline, or one before it (an entry left behind by a
        move: a wait for it ends early, and finds nothing due); infinity when
        there is none."""
        return self._heap[0][0] if self._heap else INF

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


class Deadlines(_Waits):
    """Deadlines in a table (an array of floats, a slot per key): for those
    that move on nearly every message and rarely come. Setting one is a
    store; the earliest is the array's ``min``. A slot freed by ``discard``
    is taken by the next key, so the table is as large as the most keys
    it held at once."""

    def __init__(self) -> None:
        super().__init__()
        self._slots: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._at = array("d")
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._at) - self._at.count(INF)

    def at(self, key: str) -> float:
        """The deadline of ``key``; infinity when it has none."""
        slot = self._slots.get(key)
        return INF if slot is None else self._at[slot]

    def set(self, key: str, when: float) -> None:
        """``key`` is due at ``when`` (instead of any deadline it had)."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slot(key)
        self._at[slot] = when
        if when < self._wakes_at:
            self._sooner.set()

    def _slot(self, key: str) -> int:
        if self._free:
            slot = self._free.pop()
            self._keys[slot] = key
        else:
            slot = len(self._keys)
            self._keys.append(key)
            self._at.append(INF)
        self._slots[key] = slot
        return slot

    def next_due(self) -> float:
        """The earliest deadline; infinity when there is none."""
        return min(self._at) if self._at else INF

    def discard(self, key: str) -> None:
        slot = self._slots.pop(key, None)
        if slot is not None:
            self._at[slot] = INF
            self._keys[slot] = None
            self._free.append(slot)

    def take_due(self, now: float) -> list[str]:
        """The keys due at or before ``now``, earliest first; they have no
        deadline any more until one is set again."""
        at = self._at
        if not at or min(at) > now:
            return []
        due = sorted((when, slot) for slot, when in enumerate(at) if when <= now)
        keys = self._keys
        taken: list[str] = []
        for _when, slot in due:
            at[slot] = INF
            key = keys[slot]
            assert key is not None  # a free slot's deadline is infinity
            taken.append(key)
        return taken
