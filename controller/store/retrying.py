"""A background writer that keeps trying while the database is away.

The build queue and the event log keep their changes in memory and write
them in batches. When a write fails, the changes stay where they were and
this loop tries again with full-jitter backoff; as soon as the health
check sees the database back (``SelfCheck.add_recovery_listener`` calls
``kick``) it tries at once instead of sleeping out the backoff. An outage
is logged once when it starts and once when it ends: selfcheck.py is what
reports the outage itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from swarm.backoff import Backoff
from swarm.controller.store.base import StoreUnavailable
from swarm.tasks import wait_event


class RetryingWriter:
    def __init__(
        self,
        what: str,
        write: Callable[[], Awaitable[None]],
        backoff: Backoff,
        logger: logging.Logger,
    ) -> None:
        self._what = what
        self._write = write
        self._backoff = backoff
        self._log = logger
        self._wake = asyncio.Event()
        self._kick = asyncio.Event()
        self.failures = 0  # writes failed in a row (0: the last one worked)

    def wake(self) -> None:
        """There is something to write."""
        self._wake.set()

    def kick(self) -> None:
        """The database is back: retry now rather than after the backoff."""
        self._kick.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._kick.clear()
            try:
                await self._write()
            except Exception as exc:
                self.failures += 1
                self._failed(exc)
                await wait_event(self._kick, self._backoff.delay(self.failures - 1))
                self._wake.set()
            else:
                if self.failures:
                    self._log.warning(
                        "%s written again after %d failed attempt(s)", self._what, self.failures
                    )
                    self.failures = 0

    def _failed(self, exc: Exception) -> None:
        if self.failures > 1:
            self._log.debug("writing %s failed again (%d in a row): %s", self._what, self.failures, exc)
        elif isinstance(exc, StoreUnavailable):
            self._log.warning("writing %s failed (%s); kept, retrying", self._what, exc.reason)
        else:
            self._log.exception("writing %s failed; kept, retrying", self._what)
