"""Writes changed drone state to the database in batches.

A heartbeat only changes memory; this writer persists whatever changed
every ``persist_interval`` in one transaction, because one UPDATE per
heartbeat would cost as much CPU as receiving it. A new drone or a status
change is written at once (``Fleet.urgent``), so a kill -9 of the
controller does not forget who was there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from swarm.controller.fleet import Fleet
from swarm.controller.store.runner import StoreRunner
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)


class NodeWriter:
    def __init__(self, fleet: Fleet, runner: StoreRunner, interval: float) -> None:
        self._fleet = fleet
        self._runner = runner
        self._interval = interval
        self._tasks = TaskSet("node-writer")
        self.batches = 0

    async def start(self) -> None:
        self._tasks.spawn(self._loop(), "loop")

    async def stop(self) -> None:
        await self._tasks.close()
        await self.flush()

    async def flush(self) -> None:
        records = self._fleet.take_dirty()
        if not records:
            return
        try:
            await self._runner.call(self._runner.store.upsert_nodes, records)
        except Exception:
            # Mark them dirty again; the next round retries with fresher data.
            self._fleet.dirty.update(r.id for r in records)
            raise
        self.batches += 1

    async def _loop(self) -> None:
        urgent = self._fleet.urgent
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(urgent.wait(), self._interval)
            urgent.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("writing drone state failed; will retry")
