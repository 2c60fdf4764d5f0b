"""When each drone is next due for a look: a heap of deadlines by drone id.

The health monitor and the pinger tick often (10 and 20 Hz); scanning
every drone on each tick cost more than all the heartbeats' own handling
at a few hundred drones. They take from here only the drones whose
deadline has come. A drone has one deadline at a time: setting a new one
leaves the old heap entry behind, skipped when it comes up, so moving a
deadline costs a push and never a search.
"""

from __future__ import annotations

import heapq
import math

# Rebuild the heap when skipped entries outnumber live ones by this much.
COMPACT_FACTOR = 2
COMPACT_MIN = 64


class Schedule:
    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._at: dict[str, float] = {}

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

    def earlier(self, key: str, when: float) -> None:
        """Due at ``when`` if that is before its deadline (or it has none)."""
        if when < self._at.get(key, math.inf):
            self.set(key, when)

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
