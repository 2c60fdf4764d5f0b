"""Time: the clock components read and wait on, and ISO text for APIs.

A component with timers takes a ``Clock`` (constructor argument, the
system clock by default) and reads the time and sleeps only through it,
so that a test can hand it tests/fakes/clock.py's manual clock and move
time forward instead of waiting for it (Buildbot's test reactor, Twisted's
``task.Clock``).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol

from swarm.tasks import wait_event


class Clock(Protocol):
    """Wall time for stamps and deadlines that outlive the process, monotonic
    time for durations, and the waits of a component's loops."""

    def time(self) -> float:
        """Seconds since the epoch."""

    def time_ns(self) -> int:
        """Nanoseconds since the epoch."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never goes back."""

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of this clock's time."""

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until the event is set or ``timeout`` seconds of this clock's
        time pass; whether it is set."""


class SystemClock:
    """The real clock: the time module and the event loop's timers."""

    def time(self) -> float:
        return time.time()

    def time_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        return await wait_event(event, timeout)


SYSTEM: Clock = SystemClock()


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    """ISO 8601 (a trailing Z allowed) to seconds since the epoch; ValueError if malformed."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
