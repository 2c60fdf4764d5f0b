"""swarm.batching: calls that arrive while one batch is served go together
in the next; each caller gets its own answer, error or abandonment."""

from __future__ import annotations

import asyncio

from swarm.batching import Batcher


class Served(Exception):
    pass


class Gone(Exception):
    pass


class Resource:
    """A serial resource that answers a batch when the test lets it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self, items: list[str]) -> list[str | Exception]:
        self.batches.append(items)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [Served(i) if i.startswith("bad") else i.upper() for i in items]


async def settled(tasks: list[asyncio.Task[str]]) -> list[str | BaseException]:
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def start(batcher: Batcher[str, str], items: list[str]) -> list[asyncio.Task[str]]:
    tasks = [asyncio.create_task(batcher(i)) for i in items]
    await asyncio.sleep(0)  # every call has arrived: the first drives, the others wait
    return tasks


def test_a_burst_goes_in_two_batches_each_caller_with_its_own_answer() -> None:
    async def main() -> None:
        resource = Resource()
        batcher = Batcher(resource, Gone)
        tasks = await start(batcher, ["a", "bad-b", "c", "d"])
        resource.release.set()
        answers = await settled(tasks)
        assert resource.batches == [["a"], ["bad-b", "c", "d"]]
        assert answers[0] == "A" and answers[2:] == ["C", "D"]
        assert isinstance(answers[1], Served) and str(answers[1]) == "bad-b"
        # Alone, a call is served at once, in a batch of its own.
        assert await batcher("e") == "E" and resource.batches[-1] == ["e"]

    asyncio.run(main())


def test_a_limit_splits_what_waits() -> None:
    async def main() -> None:
        resource = Resource()
        tasks = await start(Batcher(resource, Gone, limit=2), ["a", "b", "c", "d", "e"])
        resource.release.set()
        assert await settled(tasks) == ["A", "B", "C", "D", "E"]
        assert resource.batches == [["a"], ["b", "c"], ["d", "e"]]

    asyncio.run(main())


def test_a_failed_batch_fails_its_callers_only() -> None:
    async def main() -> None:
        resource = Resource()
        batcher = Batcher(resource, Gone)
        resource.fail = OSError("disk full")
        tasks = await start(batcher, ["a", "b"])
        resource.release.set()
        answers = await settled(tasks)
        assert all(isinstance(a, OSError) for a in answers)
        resource.fail = None
        assert await batcher("c") == "C"

    asyncio.run(main())


def test_a_caller_that_left_does_not_stop_the_others_answers() -> None:
    async def main() -> None:
        resource = Resource()
        tasks = await start(Batcher(resource, Gone), ["a", "b", "c"])
        tasks[1].cancel()
        await asyncio.sleep(0)
        resource.release.set()
        answers = await settled(tasks)
        assert answers[0] == "A" and answers[2] == "C"
        assert isinstance(answers[1], asyncio.CancelledError)

    asyncio.run(main())


def test_when_the_driver_is_cancelled_the_waiting_callers_are_told() -> None:
    async def main() -> None:
        resource = Resource()
        batcher = Batcher(resource, lambda: Gone("try again"))
        tasks = await start(batcher, ["a", "b", "c"])
        tasks[0].cancel()  # the driver, serving ["a"]
        answers = await settled(tasks)
        assert isinstance(answers[0], asyncio.CancelledError)
        assert [type(a) for a in answers[1:]] == [Gone, Gone]
        # Nobody drives any more: the next call drives again.
        resource.release.set()
        assert await batcher("d") == "D"

    asyncio.run(main())


def test_no_task_is_left_behind() -> None:
    async def main() -> None:
        resource = Resource()
        resource.release.set()
        assert await settled(await start(Batcher(resource, Gone), ["x", "y"])) == ["X", "Y"]
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())
