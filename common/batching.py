"""Calls that arrive while one is being served go together in the next.

A burst of requests that each need a slow, serial resource (a database
transaction, a question to a Portage worker) costs a few round trips
rather than one each. The first caller of a burst drives: it runs batches
until nobody waits; every caller gets its own item's answer. There is no
task of its own, so there is nothing to stop; and no timer, so a lone
call is not delayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")

# One answer per item, in order: a value, or the exception that item's caller gets.
Run = Callable[[list[Item]], Awaitable[Sequence[Answer | Exception]]]


class Batcher(Generic[Item, Answer]):
    def __init__(self, run: Run[Item, Answer], abandoned: Callable[[], Exception], *, limit: int = 0) -> None:
        """``abandoned``: what the callers of a batch get when its driver was
        cancelled (the batch may or may not have been served). ``limit``:
        items a batch at most (0: no limit)."""
        self._run = run
        self._abandoned = abandoned
        self._limit = limit
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._driving = False

    async def __call__(self, item: Item) -> Answer:
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, answer))
        if not self._driving:
            self._driving = True
            try:
                while self._waiting:
                    cut = self._limit or len(self._waiting)
                    batch, self._waiting = self._waiting[:cut], self._waiting[cut:]
                    await self._serve(batch)
            except BaseException:
                if answer.done() and not answer.cancelled():
                    answer.exception()  # ours is told by the raise: not an unretrieved error
                raise
            finally:
                self._driving = False
                # Cancelled while serving: nobody is left to serve the others.
                for _, waiting in self._waiting:
                    _settle(waiting, self._abandoned())
                self._waiting = []
        return await answer

    async def _serve(self, batch: list[tuple[Item, asyncio.Future[Answer]]]) -> None:
        try:
            answers = await self._run([item for item, _ in batch])
        except Exception as exc:
            for _, answer in batch:
                _settle(answer, exc)
        except BaseException:
            for _, answer in batch:
                _settle(answer, self._abandoned())
            raise
        else:
            for (_, answer), given in zip(batch, answers, strict=True):
                _settle(answer, given)


def _settle(future: asyncio.Future[Answer], given: Answer | Exception) -> None:
    """Give a caller its answer, unless it has gone (its future cancelled)."""
    if future.done():
        return
    if isinstance(given, Exception):
        future.set_exception(given)
    else:
        future.set_result(given)
