"""The protocol log: every message in and out of the gateway, summarised.

Entries are plain tuples in a bounded ring so that recording a heartbeat
costs one append; they become dicts only when someone reads them.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass

IN = "in"
OUT = "out"


@dataclass(frozen=True, slots=True)
class ProtocolEntry:
    seq: int
    ts: float
    direction: str
    drone_id: str
    type: str
    size: int


class ProtocolLog:
    def __init__(self, size: int) -> None:
        self._ring: deque[tuple[int, float, str, str, str, int]] = deque(maxlen=size)
        self._seq = 0
        self.counts: Counter[tuple[str, str]] = Counter()
        self.bytes: Counter[str] = Counter()

    def record(self, direction: str, drone_id: str, kind: str, size: int) -> None:
        self._seq += 1
        self._ring.append((self._seq, time.time(), direction, drone_id, kind, size))
        self.counts[direction, kind] += 1
        self.bytes[direction] += size

    @property
    def last_seq(self) -> int:
        return self._seq

    def entries(
        self,
        *,
        after_seq: int = 0,
        limit: int = 200,
        drone_id: str | None = None,
        kinds: frozenset[str] = frozenset(),
    ) -> list[ProtocolEntry]:
        """The newest ``limit`` matching entries after ``after_seq``, oldest first."""
        picked: list[ProtocolEntry] = []
        for seq, ts, direction, drone, kind, size in reversed(self._ring):
            if seq <= after_seq or len(picked) >= limit:
                break
            if (drone_id is None or drone == drone_id) and (not kinds or kind in kinds):
                picked.append(ProtocolEntry(seq, ts, direction, drone, kind, size))
        picked.reverse()
        return picked
