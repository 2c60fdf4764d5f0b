"""common/tasks.py: waiting that a stop can always interrupt."""

from __future__ import annotations

import asyncio

import pytest

from swarm.tasks import wait_event


def test_wait_event_says_whether_the_event_was_set() -> None:
    async def scenario() -> tuple[bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_event(event, 0.01)
        asyncio.get_running_loop().call_soon(event.set)
        return timed_out, await wait_event(event, 10)

    assert asyncio.run(scenario()) == (False, True)


def test_a_cancel_arriving_as_the_event_is_set_is_not_swallowed() -> None:
    """asyncio.wait_for(event.wait(), t) on Python 3.11 returns normally here,
    and a loop around it never stops."""

    async def scenario() -> None:
        event = asyncio.Event()
        waiter = asyncio.create_task(wait_event(event, 10))
        await asyncio.sleep(0)  # the waiter now waits on the event
        event.set()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(scenario())
