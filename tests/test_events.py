"""The event log's ids: handed out from a block reserved in the database, so
events lost in a crash (emitted, not yet written) never share their ids with
the events of the next run, and a client that saw one resumes after it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from swarm.controller.events import ID_BLOCK, EventLog
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore


def test_ids_lost_in_a_crash_are_not_handed_out_again(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[int], list[int], list[int]]:
        url = f"sqlite:///{tmp_path}/events.db"
        first = StoreRunner(SqlStore(url))
        await first.open()
        before = EventLog(first, buffer=100, retention=10_000)
        await before.start()
        written = [before.emit("written", "persisted").id for _ in range(3)]
        await before.flush()
        # Emitted, then the process dies before the writer gets to them (no await in between).
        lost = [before.emit("lost", "never persisted").id for _ in range(2)]

        second = StoreRunner(SqlStore(url))
        await second.open()
        after = EventLog(second, buffer=100, retention=10_000)
        await after.start()
        fresh = [after.emit("fresh", "after the restart").id for _ in range(2)]
        await after.stop()
        await second.close()
        await before.stop()  # cleanup only: its writer was never given a turn before the "crash"
        await first.close()
        return written, lost, fresh

    written, lost, fresh = asyncio.run(scenario())
    assert written == [1, 2, 3] and lost == [4, 5]
    assert fresh[0] > max(lost) and fresh == sorted(fresh)
    assert fresh[0] <= ID_BLOCK + 2  # the gap is one reserved block at most


def test_a_long_run_reserves_new_blocks_as_it_goes(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        url = f"sqlite:///{tmp_path}/events.db"
        runner = StoreRunner(SqlStore(url))
        await runner.open()
        log = EventLog(runner, buffer=100, retention=100_000)
        await log.start()
        last = 0
        for _ in range(3 * ID_BLOCK):
            last = log.emit("busy", "an event").id
            await log.flush()
        reserved = int(await runner.call(runner.store.get_setting, "event_ids_reserved") or 0)
        await log.stop()
        await runner.close()
        return last, reserved

    last, reserved = asyncio.run(scenario())
    assert reserved > last  # never behind the ids handed out
