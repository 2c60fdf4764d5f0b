"""The latest heartbeat figures of every drone, in columns shared by a fleet.

A heartbeat's figures (load, CPU, memory, disk, whether emerge runs) are
packed into the drone's row of one bytearray, 64 bytes a drone, in one C
call; its job id goes into a list beside it. Nothing is allocated per
heartbeat and nothing is freed: a HeartbeatData per heartbeat made ten
objects (itself, six floats, an int) that were freed a second later, when
that drone's next heartbeat replaced them, each a cache miss among 2,000
drones' worth of memory (bench/README.md, i15-hb session 12). The views
read a drone's figures back as a HeartbeatData (``get``).
"""

from __future__ import annotations

import logging
import struct

from swarm.controller.domain import HeartbeatData

log = logging.getLogger(__name__)

# load1, load5, load15, cpu_percent, memory_percent, disk_percent as doubles
# (exactly the floats that came), disk_free_bytes as a signed 64-bit int
# (serde caps it there), emerge_running; padded to 64 bytes, one cache line.
# Native layout: doubles copied as they are (the standard one converts each).
ROW = struct.Struct("@6dq?7x")
ROW_SIZE = ROW.size
# One figure read alone (the scheduler reads load1 of every drone): its
# format and offset in the row.
_DOUBLE = struct.Struct("@d")
_INT = struct.Struct("@q")
_BOOL = struct.Struct("@?")
LOAD1, LOAD5, LOAD15, CPU, MEMORY, DISK = range(6)

# A row and its job id, in the order of HeartbeatData's fields.
FigureValues = tuple[float, float, float, float, float, float, int, bool, str]


class Figures:
    """Rows of figures, one per slot; a slot is a drone's for the fleet's life."""

    __slots__ = ("_jobs", "_rows")

    def __init__(self) -> None:
        self._rows = bytearray()
        self._jobs: list[str] = []

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, beat: HeartbeatData) -> int:
        """A new slot holding ``beat``; its index."""
        slot = len(self._jobs)
        self._rows.extend(bytes(ROW_SIZE))
        self._jobs.append("")
        self.put(slot, beat)
        return slot

    def put(self, slot: int, beat: HeartbeatData) -> None:
        self.set(
            slot,
            beat.load1,
            beat.load5,
            beat.load15,
            beat.cpu_percent,
            beat.memory_percent,
            beat.disk_percent,
            beat.disk_free_bytes,
            beat.emerge_running,
            beat.current_job_id,
        )

    def set(
        self,
        slot: int,
        load1: float,
        load5: float,
        load15: float,
        cpu_percent: float,
        memory_percent: float,
        disk_percent: float,
        disk_free_bytes: int,
        emerge_running: bool,
        current_job_id: str,
    ) -> None:
        """The heartbeat's hot path (serde.read_figures): each figure as an
        argument, no tuple or dataclass in between."""
        ROW.pack_into(
            self._rows,
            slot * ROW_SIZE,
            load1,
            load5,
            load15,
            cpu_percent,
            memory_percent,
            disk_percent,
            disk_free_bytes,
            emerge_running,
        )
        self._jobs[slot] = current_job_id

    def set_job(self, slot: int, job_id: str) -> None:
        self._jobs[slot] = job_id

    def get(self, slot: int) -> HeartbeatData:
        return HeartbeatData(*ROW.unpack_from(self._rows, slot * ROW_SIZE), self._jobs[slot])

    def values(self, slot: int) -> FigureValues:
        """The row as a tuple, for a NodeLive or a NodeRecord built around it."""
        return (*ROW.unpack_from(self._rows, slot * ROW_SIZE), self._jobs[slot])  # type: ignore[return-value]

    def double(self, slot: int, index: int) -> float:
        """One of the six doubles (LOAD1 ... DISK)."""
        value: float = _DOUBLE.unpack_from(self._rows, slot * ROW_SIZE + 8 * index)[0]
        return value

    def disk_free(self, slot: int) -> int:
        value: int = _INT.unpack_from(self._rows, slot * ROW_SIZE + 48)[0]
        return value

    def emerge(self, slot: int) -> bool:
        value: bool = _BOOL.unpack_from(self._rows, slot * ROW_SIZE + 56)[0]
        return value

    def job(self, slot: int) -> str:
        return self._jobs[slot]
