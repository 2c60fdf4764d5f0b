"""Runs blocking store calls on one dedicated thread.

One thread means one connection and no locking surprises in SQLite; the
event loop only awaits futures.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from swarm.controller.store.base import Store

P = ParamSpec("P")
R = TypeVar("R")


class StoreRunner:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="swarm-db")

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def open(self) -> None:
        await self.call(self.store.open)

    async def close(self) -> None:
        try:
            await self.call(self.store.close)
        finally:
            self._executor.shutdown(wait=True)
