"""What the drones said, taken in batches.

A stream's reader puts each message here as it comes, with the time it
came, and the inbox hands them to the core in the order they came, all
at once, ``DELAY`` after the first of a batch (or at once when the batch
is at its bound, or when somebody must see everything said so far: a
stream that ends, the health monitor's look, the controller stopping).

Why: at 2,000 drones a heartbeat handled on its own, between two of
grpc's reads, finds everything it touches (its drone's state and
detector, the protocol log's ring, the code itself) gone from the CPU's
caches since the last one; taken a hundred at a time the same work costs
a fraction, and the event loop wakes once for them. What it costs a
user: a heartbeat is seen up to ``DELAY`` later. Nothing it measures
moves: the time a message came is the time it is judged by (the
detector's intervals, a pong's round trip).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# The longest a message waits to be taken, and the most a batch may hold:
# a reader never holds more than this beyond the message it just read.
DELAY = 0.05
MAX_MESSAGES = 1024
MAX_BYTES = 1 << 20


class Inbox(Generic[T]):
    """A batch of messages, handed to ``take`` one by one when it is taken."""

    __slots__ = ("_bytes", "_items", "_take", "_timer", "delay", "max_bytes", "max_messages")

    def __init__(
        self,
        take: Callable[[T], None],
        *,
        delay: float = DELAY,
        max_messages: int = MAX_MESSAGES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._take = take
        self.delay = delay
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: list[T] = []
        self._bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, size: int) -> None:
        """Keep ``item`` (``size`` bytes) for the batch; it is taken within
        ``delay``, or now if the batch is full."""
        items = self._items
        items.append(item)
        self._bytes += size
        if len(items) >= self.max_messages or self._bytes >= self.max_bytes or self.delay <= 0:
            self.drain()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self.drain)

    def drain(self) -> None:
        """Take everything kept so far, in the order it came. What ``take``
        puts meanwhile is the next batch's."""
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        items = self._items
        if not items:
            return
        self._items = []
        self._bytes = 0
        take = self._take
        for item in items:
            take(item)
