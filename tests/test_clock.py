"""The clock components take (swarm.clock) and the manual one tests move
(tests/fakes/clock.py), checked against each other."""

from __future__ import annotations

import asyncio
import inspect
import time

import pytest

from swarm.clock import SYSTEM, Clock, SystemClock

from fakes.clock import ManualClock

pytestmark = pytest.mark.timeout(10)

MEMBERS = [name for name in vars(Clock) if not name.startswith("_")]


def test_the_clock_interface_is_what_its_users_need() -> None:
    assert sorted(MEMBERS) == ["monotonic", "sleep", "time", "time_ns", "wait"]


@pytest.mark.parametrize("implementation", [SystemClock, ManualClock])
def test_each_clock_has_the_interfaces_signatures(implementation: type) -> None:
    for name in MEMBERS:
        declared, implemented = getattr(Clock, name), getattr(implementation, name)
        assert inspect.signature(implemented) == inspect.signature(declared), (implementation, name)
        assert inspect.iscoroutinefunction(implemented) == inspect.iscoroutinefunction(declared), name
    clock: Clock = implementation()  # mypy: the class satisfies the protocol
    assert clock is not None


def test_the_system_clock_reads_and_waits_on_real_time() -> None:
    async def scenario() -> tuple[float, bool, bool]:
        before = time.monotonic()
        await SYSTEM.sleep(0.01)
        slept = time.monotonic() - before
        event = asyncio.Event()
        timed_out = await SYSTEM.wait(event, 0.01)
        event.set()
        return slept, timed_out, await SYSTEM.wait(event, 10)

    assert abs(SYSTEM.time() - time.time()) < 1 and abs(SYSTEM.time_ns() / 1e9 - time.time()) < 1
    slept, timed_out, set_ = asyncio.run(scenario())
    assert slept >= 0.01 and not timed_out and set_


def test_time_moves_only_when_advanced_and_sleepers_wake_at_their_own_deadlines() -> None:
    async def scenario() -> None:
        clock = ManualClock(start=1000.0)
        woke: list[tuple[str, float, float]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append((name, clock.time(), clock.monotonic()))

        tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("late", 3.0), ("early", 1.0), ("mid", 2.0))]
        await asyncio.sleep(0)
        assert clock.pending == 3
        await clock.advance(0.999)
        assert woke == [] and clock.time() == pytest.approx(1000.999)
        await clock.advance(1.5)
        assert woke == [("early", 1001.0, 1.0), ("mid", 1002.0, 2.0)]
        await clock.advance(10)
        assert [w[0] for w in woke] == ["early", "mid", "late"] and clock.pending == 0
        assert clock.time() == pytest.approx(1012.499) and clock.time_ns() == 1_012_499_000_000
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_a_ticking_loop_runs_once_per_tick_within_one_advance() -> None:
    async def scenario() -> list[float]:
        clock = ManualClock(start=0.0)
        ticks: list[float] = []

        async def loop() -> None:
            while True:
                await clock.sleep(0.1)
                ticks.append(round(clock.time(), 6))

        task = asyncio.create_task(loop())
        await clock.advance(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert clock.pending == 0  # the cancelled sleep left no timer behind
        return ticks

    assert asyncio.run(scenario()) == [round(0.1 * i, 6) for i in range(1, 11)]


def test_a_wait_ends_when_its_event_is_set_or_at_its_timeout() -> None:
    async def scenario() -> None:
        clock = ManualClock(start=0.0)
        event = asyncio.Event()
        waiting = asyncio.create_task(clock.wait(event, 5.0))
        await clock.advance(4.0)
        assert not waiting.done()
        event.set()
        assert await waiting is True and clock.time() == 4.0
        event.clear()
        waiting = asyncio.create_task(clock.wait(event, 5.0))
        await clock.advance(5.0)
        assert waiting.done() and waiting.result() is False
        assert await clock.wait(event, 0.0) is False
        event.set()
        assert await clock.wait(event, 0.0) is True and clock.pending == 0

    asyncio.run(scenario())


def test_a_clock_does_not_go_back() -> None:
    with pytest.raises(ValueError, match="does not go back"):
        asyncio.run(ManualClock().advance(-1))
