"""Writes changed drone state to the database in batches.

A heartbeat only changes memory; this writer persists whatever changed
every ``persist_interval`` in a transaction or two, because one UPDATE per
heartbeat would cost as much CPU as receiving it. Drones whose heartbeats
and pongs are all that changed get only those columns updated
(``Store.update_nodes_live``), not their whole rows. A new drone or a status
change is written at once (``Fleet.urgent``), so a kill -9 of the
controller does not forget who was there.
"""

from __future__ import annotations

import logging

from swarm.clock import SYSTEM, Clock
from swarm.controller.fleet import Fleet
from swarm.controller.store.base import StoreUnavailable
from swarm.controller.store.runner import StoreRunner
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)

URGENT_COALESCE = 0.05


class NodeWriter:
    def __init__(self, fleet: Fleet, runner: StoreRunner, interval: float, clock: Clock = SYSTEM) -> None:
        self._fleet = fleet
        self._clock = clock
        self._runner = runner
        self._interval = interval
        self._tasks = TaskSet("node-writer")
        self.batches = 0

    async def start(self) -> None:
        self._tasks.spawn(self._loop(), "loop")

    async def stop(self) -> None:
        await self._tasks.close()
        await self.flush()

    async def flush(self, urgent_only: bool = False) -> None:
        fleet = self._fleet
        records = fleet.take_dirty(urgent_only)
        live = [] if urgent_only else fleet.take_live()
        store = self._runner.store
        try:
            if records:
                await self._runner.call(store.upsert_nodes, records)
        except Exception:
            # Mark them dirty again; the next round retries with fresher data.
            fleet.dirty.update(r.id for r in records)
            fleet.live_dirty.update(n.id for n in live)
            raise
        try:
            if live:
                # Most rounds: heartbeats and pongs only, so only their columns.
                await self._runner.call(store.update_nodes_live, live)
        except Exception:
            fleet.live_dirty.update(n.id for n in live)
            raise
        if records or live:
            self.batches += 1

    async def _loop(self) -> None:
        urgent = self._fleet.urgent
        clock = self._clock
        next_full = clock.monotonic() + self._interval
        while True:
            await clock.wait(urgent, max(0.0, next_full - clock.monotonic()))
            full = clock.monotonic() >= next_full
            if not full:
                # Let a burst of connects gather into one write.
                await clock.sleep(URGENT_COALESCE)
            urgent.clear()
            if full:
                next_full = clock.monotonic() + self._interval
            try:
                await self.flush(urgent_only=not full)
            except StoreUnavailable as exc:
                # Kept dirty; the database's outage is reported by selfcheck.py.
                log.warning("writing drone state failed (%s); will retry", exc.reason)
            except Exception:
                log.exception("writing drone state failed; will retry")
