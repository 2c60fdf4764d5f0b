"""Alerts to the admin over a webhook: a JSON POST, retried with backoff,
never blocking the healer that raises them.

Alerts wait in a bounded queue; when it is full the oldest goes (and is
counted), since the newest says most about the fleet now. Every alert is
also an event, so nothing is lost from the record if the webhook is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import aiohttp

from swarm.backoff import Backoff
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)

QUEUE_LIMIT = 100
ATTEMPTS = 5
REQUEST_TIMEOUT = 10.0


class Alerter:
    def __init__(self, url: str, *, backoff: Backoff | None = None) -> None:
        self.url = url
        self._backoff = backoff or Backoff(initial=1.0, cap=30.0)
        self._queue: deque[dict[str, Any]] = deque(maxlen=QUEUE_LIMIT)
        self._wake = asyncio.Event()
        self._tasks = TaskSet("alerts")
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    async def start(self) -> None:
        if self.url:
            self._tasks.spawn(self._deliver_loop(), "webhook")

    async def stop(self) -> None:
        await self._tasks.close()

    def alert(self, payload: dict[str, Any]) -> None:
        if not self.url:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(payload)
        self._wake.set()

    async def _deliver_loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    await self._deliver(session, self._queue.popleft())

    async def _deliver(self, session: aiohttp.ClientSession, payload: dict[str, Any]) -> None:
        for attempt in range(ATTEMPTS):
            try:
                async with session.post(self.url, json=payload) as response:
                    if response.status < 300:
                        self.sent += 1
                        return
                    why = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            log.warning("alert webhook attempt %d/%d failed: %s", attempt + 1, ATTEMPTS, why)
            if attempt + 1 < ATTEMPTS:
                await asyncio.sleep(self._backoff.delay(attempt))
        self.failed += 1
        log.error("alert webhook gave up on an alert after %d attempts", ATTEMPTS)
