"""Small asyncio helpers for owned, never-dangling tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


async def race(*coros: Coroutine[Any, Any, Any], names: tuple[str, ...] = ()) -> Any:
    """Run coroutines side by side until the first one ends, then cancel
    the others and wait for them. Returns the first one's result; its
    exception, if any, is raised as itself (not wrapped in a group). When
    several end in the same instant, the one listed first decides."""
    tasks = [
        asyncio.create_task(coro, name=names[i] if i < len(names) else None) for i, coro in enumerate(coros)
    ]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(task for task in tasks if task in done)
    exc = None if first.cancelled() else first.exception()
    if exc is not None:
        raise exc
    return first.result()


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until the event is set or ``timeout`` seconds pass; whether it is
    set. Not ``asyncio.wait_for(event.wait(), ...)``: on Python 3.11 that
    swallows a cancellation arriving as the event is set, and a loop built
    on it then never stops (the healer's did)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()


class TaskSet:
    """Tasks owned by one component: started by name, all cancelled and
    awaited on close, with the names of any that did not stop in time."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{self._owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, timeout: float = 5.0) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            log.warning(
                "%s: still running after %.1fs: %s",
                self._owner,
                timeout,
                ", ".join(sorted(t.get_name() for t in pending)),
            )
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
