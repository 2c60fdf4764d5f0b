"""The event log: what happened in the swarm, newest in memory, all of it
(up to the retention limit) in the database.

``emit`` is synchronous and cheap: it hands out the next id (from a block
reserved in the database, see ID_BLOCK), keeps the event in a ring buffer
and wakes the writer, which persists whatever has piled up in one
transaction. Events are rare next to heartbeats, so they
are written at once rather than on a timer: a kill -9 loses at most the
batch in flight.

Live listeners (the admin tier's /ws/events) ``subscribe`` a callback that
``emit`` calls synchronously; with nobody subscribed that costs one check.
A listener must not block: it filters and puts into a bounded queue of its
own.

While the database is unavailable, events wait in ``pending`` and are
written in order once it is back (a failed write keeps its batch; the
writer retries with backoff, and at once when the health check sees the
database return: ``kick``). ``pending`` is bounded: past ``pending_limit``
the oldest waiting events are dropped, and the first write that succeeds
afterwards adds an ``events_dropped`` event saying how many and which ids,
so that a client that saw one of them learns it was never written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from swarm.backoff import Backoff
from swarm.controller.store.base import StoreUnavailable
from swarm.controller.store.records import EventRecord
from swarm.controller.store.retrying import RetryingWriter
from swarm.controller.store.runner import StoreRunner
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)

TRIM_INTERVAL = 60.0
PENDING_LIMIT = 50_000
RETRY_FIRST = 0.1
RETRY_MAX = 5.0
# Ids are handed out from a block reserved in the database first, so a kill -9
# that loses the batch in flight never gives its ids to other events after the
# restart (a client resuming with since=ID would miss those). Ids stay
# increasing; a restart leaves a gap.
ID_BLOCK = 1000
IDS_KEY = "event_ids_reserved"

EventListener = Callable[[EventRecord], None]


class EventLog:
    def __init__(
        self,
        runner: StoreRunner,
        *,
        buffer: int,
        retention: int,
        pending_limit: int = PENDING_LIMIT,
        retry_max: float = RETRY_MAX,
    ) -> None:
        self._runner = runner
        self._ring: deque[EventRecord] = deque(maxlen=buffer)
        self._pending: deque[EventRecord] = deque()
        self._pending_limit = max(1, pending_limit)
        self._retention = retention
        self._next_id = 1
        self._reserved = 0  # ids up to here are reserved in the database
        self._tasks = TaskSet("events")
        self._writer = RetryingWriter(
            "events", self._write, Backoff(initial=RETRY_FIRST, cap=max(retry_max, RETRY_FIRST)), log
        )
        self._next_trim = 0.0
        self._flushing = asyncio.Lock()
        self._listeners: tuple[EventListener, ...] = ()
        self.dropped = 0  # events never written, in all
        # Dropped since the latest events_dropped event: how many, first and last id.
        self._unreported = 0
        self._unreported_ids = (0, 0)

    async def start(self) -> None:
        last = await self._runner.call(self._runner.store.max_event_id)
        reserved = await self._runner.call(self._runner.store.get_setting, IDS_KEY)
        self._next_id = max(last, int(reserved or 0)) + 1
        await self._reserve()
        recent = await self._runner.call(self._runner.store.list_events, limit=self._ring.maxlen or 100)
        self._ring.extend(recent)
        self._tasks.spawn(self._writer.run(), "flush")

    async def stop(self) -> None:
        await self._tasks.close()
        try:
            await self.flush()
        except StoreUnavailable as exc:
            log.error("%d events were never written: %s", len(self._pending), exc.reason)

    def emit(
        self,
        type: str,
        message: str,
        *,
        drone_id: str | None = None,
        drone_name: str | None = None,
        **data: Any,
    ) -> EventRecord:
        event = EventRecord(
            id=self._next_id,
            ts=time.time(),
            type=type,
            message=message,
            drone_id=drone_id,
            drone_name=drone_name,
            data=data,
        )
        self._next_id += 1
        self._ring.append(event)
        self._pending.append(event)
        self._bound_pending()
        self._writer.wake()
        log.info("event %s: %s", type, message)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed")
        return event

    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener`` with every event emitted from now on; returns the unsubscribe function."""
        self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unsubscribe

    def _bound_pending(self) -> None:
        """Keep memory bounded while the database is away: drop the oldest
        waiting events, counted for the events_dropped event."""
        while len(self._pending) > self._pending_limit:
            lost = self._pending.popleft()
            self.dropped += 1
            first = self._unreported_ids[0] if self._unreported else lost.id
            self._unreported += 1
            self._unreported_ids = (first, lost.id)
            if self._unreported % 1000 == 1:
                log.error(
                    "event backlog full (%d): %d events not written to the database",
                    self._pending_limit,
                    self._unreported,
                )

    @property
    def pending_limit(self) -> int:
        return self._pending_limit

    @property
    def pending(self) -> int:
        """Events emitted but not written yet."""
        return len(self._pending)

    def kick(self) -> None:
        """Retry a failed write now (the database is back)."""
        self._writer.kick()

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    def recent(
        self,
        *,
        after_id: int | None,
        since_ts: float | None,
        limit: int,
        drone_id: str | None,
        types: Sequence[str],
    ) -> list[EventRecord] | None:
        """Answer from memory, or None when the ring does not reach back far enough."""
        ring = self._ring
        if not ring:
            return [] if self.last_id == 0 else None
        oldest = ring[0]
        if after_id is not None:
            covered = after_id >= oldest.id - 1
        elif since_ts is not None:
            covered = since_ts >= oldest.ts
        else:
            covered = True
        if not covered:
            return None
        picked = [
            e
            for e in ring
            if (after_id is None or e.id > after_id)
            and (since_ts is None or e.ts >= since_ts)
            and (drone_id is None or e.drone_id == drone_id)
            and (not types or e.type in types)
        ]
        if after_id is not None or since_ts is not None:
            return picked[:limit]
        if len(picked) >= limit:
            return picked[-limit:]
        # Fewer matches than asked for: complete only if memory holds every event.
        return picked if oldest.id == 1 else None

    async def query(
        self,
        *,
        after_id: int | None = None,
        since_ts: float | None = None,
        limit: int = 100,
        drone_id: str | None = None,
        types: Sequence[str] = (),
    ) -> list[EventRecord]:
        found = self.recent(after_id=after_id, since_ts=since_ts, limit=limit, drone_id=drone_id, types=types)
        if found is not None:
            return found
        await self.flush()
        return await self._runner.call(
            self._runner.store.list_events,
            after_id=after_id,
            since_ts=since_ts,
            limit=limit,
            drone_id=drone_id,
            types=tuple(types),
        )

    async def activity(self, start: float, width: float, buckets: int) -> list[int]:
        await self.flush()
        return await self._runner.call(self._runner.store.count_events, start, width, buckets)

    async def _reserve(self) -> None:
        reserved = self._next_id + ID_BLOCK
        await self._runner.call(self._runner.store.set_setting, IDS_KEY, str(reserved))
        self._reserved = reserved

    async def flush(self) -> None:
        """Write every pending event, in order; on failure they stay pending
        (in front of newer ones) and the error is raised."""
        # One writer at a time, or two failed batches would go back out of order.
        async with self._flushing:
            if self._next_id > self._reserved - ID_BLOCK // 2:
                await self._reserve()
            if not self._pending:
                return
            batch = list(self._pending)
            self._pending.clear()
            try:
                await self._runner.call(self._runner.store.add_events, batch)
            except BaseException:
                self._pending.extendleft(reversed(batch))
                self._bound_pending()
                raise
        if self._unreported:
            self._report_dropped()

    def _report_dropped(self) -> None:
        count, (first, last) = self._unreported, self._unreported_ids
        self._unreported = 0
        self.emit(
            "events_dropped",
            f"{count} events (ids {first}-{last}) were never written: the database was unavailable "
            f"and more than {self._pending_limit} events waited for it",
            count=count,
            first_id=first,
            last_id=last,
        )

    async def _write(self) -> None:
        await self.flush()
        now = time.monotonic()
        if now >= self._next_trim:
            self._next_trim = now + TRIM_INTERVAL
            removed = await self._runner.call(self._runner.store.trim_events, self._retention)
            if removed:
                log.info("event retention: removed %d old events", removed)
