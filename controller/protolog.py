"""The protocol log: every message in and out of the gateway, summarised.

Entries are plain tuples in a bounded ring so that recording a heartbeat
costs one append; they become dicts only when someone reads them. Each
keeps its message as bytes (serialized, about a sixth of what the parsed
message holds in memory), so an admin can decode one while it is in the
ring (``message``, then ``serde.logged_message``); this module knows no
protobuf.
Live listeners (the admin tier's /ws/protocol) ``subscribe`` a callback;
with nobody subscribed recording costs one more check, and only with
listeners does an entry become a ProtocolEntry at once.
A message that carried fields this controller does not know (a newer
peer's) is marked ``unknown_fields`` and counted per kind: they are
ignored, and this is where an admin sees that they came.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

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
    latency_ms: float | None = None  # a pong: the round trip of its ping
    unknown_fields: bool = False  # it carried fields this controller does not know


ProtocolListener = Callable[[ProtocolEntry], None]


class ProtocolLog:
    def __init__(self, size: int) -> None:
        self._ring: deque[tuple[int, float, str, str, str, int, float | None, bytes | None, bool]] = deque(
            maxlen=size
        )
        self._seq = 0
        self.counts: Counter[tuple[str, str]] = Counter()
        self.bytes: Counter[str] = Counter()
        self.unknown_fields: Counter[str] = Counter()  # messages with unknown fields, per kind
        self._listeners: tuple[ProtocolListener, ...] = ()

    def record(
        self,
        direction: str,
        drone_id: str,
        kind: str,
        size: int,
        message: bytes | None = None,
        latency_ms: float | None = None,
        unknown_fields: bool = False,
    ) -> None:
        self._seq += 1
        ts = time.time()
        self._ring.append(
            (self._seq, ts, direction, drone_id, kind, size, latency_ms, message, unknown_fields)
        )
        self.counts[direction, kind] += 1
        self.bytes[direction] += size
        if unknown_fields:
            self.unknown_fields[kind] += 1
        if self._listeners:
            entry = ProtocolEntry(self._seq, ts, direction, drone_id, kind, size, latency_ms, unknown_fields)
            for listener in self._listeners:
                try:
                    listener(entry)
                except Exception:
                    log.exception("protocol listener failed")

    def subscribe(self, listener: ProtocolListener) -> Callable[[], None]:
        """Call ``listener`` with every entry recorded from now on; returns the unsubscribe function.
        It runs on the gateway's hot path: it must only filter and enqueue."""
        self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unsubscribe

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
        for seq, ts, direction, drone, kind, size, latency, _message, unknown in reversed(self._ring):
            if seq <= after_seq or len(picked) >= limit:
                break
            if (drone_id is None or drone == drone_id) and (not kinds or kind in kinds):
                picked.append(ProtocolEntry(seq, ts, direction, drone, kind, size, latency, unknown))
        picked.reverse()
        return picked

    def message(self, seq: int) -> tuple[ProtocolEntry, bytes | None] | None:
        """An entry still in the ring, with its message (serialized); None once it has left."""
        if not self._ring:
            return None
        first = self._ring[0][0]
        # Sequence numbers are consecutive in the ring: the index is the distance from the first.
        index = seq - first
        if not 0 <= index < len(self._ring):
            return None
        seq_, ts, direction, drone, kind, size, latency, message, unknown = self._ring[index]
        return ProtocolEntry(seq_, ts, direction, drone, kind, size, latency, unknown), message
