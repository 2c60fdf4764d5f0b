"""The protocol log: every message in and out of the gateway, summarised.

Entries are kept in a bounded ring of columns (arrays of numbers, lists
of shared strings) so that recording a heartbeat makes no object but its
bytes; they become entries only when someone reads them. Each
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
import math
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

IN = "in"
OUT = "out"
NAN = float("nan")
# A slot of the ring: how many numbers and references, and its flags.
NUMBERS = 3
REFS = 3
OUT_FLAG = 1
UNKNOWN_FLAG = 2


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
        # The ring in columns, slot ``seq % size``, kept so that recording
        # touches three places, not eight: a message's numbers (when, size,
        # round trip) side by side in one array of doubles, its references
        # (drone id, kind, bytes) side by side in one list, and a byte of
        # flags. The slot written is the one written ``size`` messages ago,
        # long out of the caches at 2,000 drones (ten seconds); each column
        # of its own cost a cache miss there, and the heartbeat's hot path
        # is mostly such misses (bench/README.md). A number costs 8 bytes
        # and a shared string a pointer, where a tuple per entry with its
        # own float and int objects cost 260 bytes. The message bytes are
        # the only objects made per entry.
        self._size = size
        self._numbers = array("d", bytes(8 * NUMBERS * size))  # ts, size, latency (NaN: none)
        self._refs: list[str | bytes | None] = [None] * (REFS * size)  # drone id, kind, message
        self._flags = bytearray(size)  # OUT_FLAG, UNKNOWN_FLAG
        self._seq = 0
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
        seq = self._seq = self._seq + 1
        ts = time.time()
        i = seq % self._size
        n = NUMBERS * i
        numbers = self._numbers
        numbers[n] = ts
        numbers[n + 1] = size
        numbers[n + 2] = NAN if latency_ms is None else latency_ms
        r = REFS * i
        self._refs[r : r + REFS] = (drone_id, kind, message)
        self._flags[i] = (OUT_FLAG if direction == OUT else 0) | (UNKNOWN_FLAG if unknown_fields else 0)
        if unknown_fields:
            self.unknown_fields[kind] += 1
        if self._listeners:
            entry = ProtocolEntry(seq, ts, direction, drone_id, kind, size, latency_ms, unknown_fields)
            for listener in self._listeners:
                try:
                    listener(entry)
                except Exception:
                    log.exception("protocol listener failed")

    def _first_seq(self) -> int:
        """The oldest sequence number still in the ring (last_seq + 1 when empty)."""
        return max(1, self._seq - self._size + 1)

    def _entry(self, seq: int) -> ProtocolEntry:
        i = seq % self._size
        n, r = NUMBERS * i, REFS * i
        ts, size, latency = self._numbers[n : n + NUMBERS]
        drone_id, kind, _message = self._refs[r : r + REFS]
        flags = self._flags[i]
        return ProtocolEntry(
            seq,
            ts,
            OUT if flags & OUT_FLAG else IN,
            str(drone_id),
            str(kind),
            int(size),
            None if math.isnan(latency) else latency,
            bool(flags & UNKNOWN_FLAG),
        )

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
        size, refs = self._size, self._refs
        for seq in range(self._seq, max(after_seq, self._first_seq() - 1), -1):
            if len(picked) >= limit:
                break
            r = REFS * (seq % size)
            if (drone_id is None or refs[r] == drone_id) and (not kinds or refs[r + 1] in kinds):
                picked.append(self._entry(seq))
        picked.reverse()
        return picked

    def message(self, seq: int) -> tuple[ProtocolEntry, bytes | None] | None:
        """An entry still in the ring, with its message (serialized); None once it has left."""
        if not self._first_seq() <= seq <= self._seq:
            return None
        message = self._refs[REFS * (seq % self._size) + 2]
        assert message is None or isinstance(message, bytes)
        return self._entry(seq), message
