"""The event log's ids: handed out from a block reserved in the database, so
events lost in a crash (emitted, not yet written) never share their ids with
the events of the next run, and a client that saw one resumes after it.

And its writes while the database refuses them: a real SQLite file locked
by another connection (as a long writer elsewhere would) makes every write
fail with "database is locked"; the events wait, bounded, and are written
in order once the lock goes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from swarm.controller.events import ID_BLOCK, EventLog
from swarm.controller.store.records import EventRecord
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore, StoreUnavailable

from support.sqlite import event_rows, locked, quick_runner


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


def test_a_failed_write_keeps_its_events_and_writes_them_in_order_once_back(tmp_path: Path) -> None:
    path = tmp_path / "events.db"

    async def scenario() -> tuple[list[int], int, str]:
        runner = await quick_runner(path)
        log = EventLog(runner, buffer=100, retention=10_000, retry_max=0.1)
        await log.start()
        await log.flush()
        with locked(path):
            ids = [log.emit("during", f"event {i}").id for i in range(3)]
            with pytest.raises(StoreUnavailable) as refused:
                await log.flush()
            assert "database is locked" in refused.value.reason
            assert not refused.value.lost  # SQLite answered; it just takes no writes
            assert refused.value.message == "the database is not taking writes for now; try again later"
            ids += [log.emit("during", "more").id for _ in range(2)]
            with pytest.raises(StoreUnavailable):
                await log.flush()
            pending = log.pending
            failure = runner.status().failure
            assert failure is not None and "locked" in failure.message
        await log.flush()
        await runner.probe()  # a write that succeeds ends the failure
        assert runner.status().failure is None and log.pending == 0
        await log.stop()
        await runner.close()
        return ids, pending, failure.message

    ids, pending, message = asyncio.run(scenario())
    assert pending == 5 and message.startswith("writes failing")
    during = [i for i, t in event_rows(path) if t == "during"]
    assert during == ids  # every one, in order


def test_past_the_backlog_bound_the_oldest_are_dropped_and_an_event_says_so(tmp_path: Path) -> None:
    path = tmp_path / "events.db"

    async def scenario() -> tuple[list[int], EventRecord, int]:
        runner = await quick_runner(path)
        log = EventLog(runner, buffer=100, retention=10_000, pending_limit=4, retry_max=0.1)
        await log.start()
        await log.flush()
        seen: list[EventRecord] = []
        log.subscribe(seen.append)
        with locked(path):
            ids = [log.emit("during", f"event {i}").id for i in range(7)]
            assert log.pending == 4 and log.dropped == 3
        await log.flush()  # the four kept, then the marker (emitted once they are written)
        await log.flush()
        [marker] = [e for e in seen if e.type == "events_dropped"]
        dropped = log.dropped
        await log.stop()
        await runner.close()
        return ids, marker, dropped

    ids, marker, dropped = asyncio.run(scenario())
    assert dropped == 3
    assert marker.data == {"count": 3, "first_id": ids[0], "last_id": ids[2]}
    assert f"ids {ids[0]}-{ids[2]}" in marker.message
    rows = event_rows(path)
    assert [i for i, t in rows if t == "during"] == ids[3:]
    assert (marker.id, "events_dropped") in rows  # live listeners saw it, and it is written
