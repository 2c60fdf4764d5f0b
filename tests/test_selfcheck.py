"""The controller's check of itself (selfcheck.py), in process, on a real
SQLite file and the real filesystem: a database that refuses writes makes
health ``degraded`` (``writes_failing``) with a ``store_unavailable`` event,
and its return ``ok`` with ``store_recovered`` and the event backlog
written at once; the data disk's threshold is checked with hysteresis."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

from swarm.controller.events import EventLog
from swarm.controller.selfcheck import SelfCheck, SelfCheckSettings
from swarm.controller.store.records import EventRecord

from support.sqlite import event_rows, locked, quick_runner

DEADLINE = 10.0


async def until(predicate: Callable[[], object], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_a_database_refusing_writes_degrades_health_until_a_write_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "swarm.db"

    async def scenario() -> tuple[list[EventRecord], list[str], list[tuple[int, str]]]:
        runner = await quick_runner(path)
        events = EventLog(runner, buffer=100, retention=10_000, retry_max=30)
        await events.start()
        seen: list[EventRecord] = []
        events.subscribe(seen.append)
        check = SelfCheck(runner, events, tmp_path, SelfCheckSettings(0.05, stall_after=60, disk_min_free=0))
        await check.start()
        await until(lambda: check.health.status == "ok" and check.health.checked_at, "a first check")
        statuses = []
        with locked(path):
            await until(lambda: check.health.status != "ok", "health to notice")
            statuses.append(check.health.status)
            # What the queue's POST asks: the same problem, read from the runner now.
            problem = check.writes_failing()
            assert problem is not None and problem.code == "writes_failing"
            events.emit("meanwhile", "emitted while the database refused writes")
            # The writer fails and backs off; the recovery kicks it.
            await until(lambda: any(e.type == "store_unavailable" for e in seen), "store_unavailable")
        await until(lambda: check.health.status == "ok", "health ok again")
        statuses.append(check.health.status)
        await until(lambda: events.pending == 0, "the backlog written")
        await check.stop()
        await events.stop()
        await runner.close()
        return seen, statuses, event_rows(path)

    seen, statuses, rows = asyncio.run(scenario())
    assert statuses == ["degraded", "ok"]
    [down] = [e for e in seen if e.type == "store_unavailable"]
    # Events are public: the summary, not the driver's words (the admin's health view has those).
    assert (
        down.data["code"] == "writes_failing"
        and down.message == "database unavailable: database writes failing"
    )
    [up] = [e for e in seen if e.type == "store_recovered"]
    assert up.data["code"] == "writes_failing" and up.data["down_s"] > 0
    written = {i for i, _ in rows}
    assert {down.id, up.id} <= written
    assert any(t == "meanwhile" for _, t in rows)


def test_the_data_disk_threshold_has_hysteresis(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize

    async def scenario() -> tuple[list[tuple[str, list[str]]], list[str], list[EventRecord]]:
        runner = await quick_runner(tmp_path / "swarm.db")
        events = EventLog(runner, buffer=100, retention=10_000)
        await events.start()
        seen: list[EventRecord] = []
        events.subscribe(seen.append)
        check = SelfCheck(runner, events, tmp_path, SelfCheckSettings(3600, stall_after=60, disk_min_free=0))
        steps = []
        # Above the free space; just under it (within the 10 % margin); well under it.
        for limit in (free * 2, int(free / 1.05), free // 2):
            check.settings = SelfCheckSettings(3600, stall_after=60, disk_min_free=limit)
            health = await check.check()
            steps.append((health.status, [p.code for p in health.problems]))
        await check.stop()
        await events.stop()
        await runner.close()
        return steps, [e.type for e in seen if e.type.startswith("disk_")], seen

    steps, kinds, seen = asyncio.run(scenario())
    assert steps == [("degraded", ["disk_low"]), ("degraded", ["disk_low"]), ("ok", [])]
    assert kinds == ["disk_low", "disk_ok"]
    low = next(e for e in seen if e.type == "disk_low")
    assert low.data["free_mb"] > 0 and str(tmp_path) not in json.dumps(low.data) + low.message
