"""The build queue's writes when the database refuses them: nothing is
forgotten, and everything reaches the database once it takes writes again.

In process, with real parts: a SQLite store on its own database thread,
the Portage worker resolving the test overlay in a controller prefix, and
the staging binhost. The database is made unavailable for real: another
connection holds SQLite's write lock, so the queue's writes fail with
"database is locked" until it lets go.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import prefix as pfx
import pytest

from swarm.controller.builds import PAUSED, BuildQueue, BuildSettings
from swarm.controller.events import EventLog
from swarm.controller.fleet import Fleet
from swarm.controller.portage import PortageWorker
from swarm.controller.staging import StagingBinhost
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore

from support.rawsql import execute_sql

pytestmark = pytest.mark.timeout(120)


async def until(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


def test_a_failed_flush_keeps_its_changes_and_writes_them_once_the_database_is_back(tmp_path: Path) -> None:
    ctl = pfx.create_prefix(pfx.PrefixConfig(tmp_path / "ctl-prefix", pfx.Role.CONTROLLER))
    db_path = tmp_path / "swarm.db"

    def rows(sql: str) -> list[tuple[object, ...]]:
        with contextlib.closing(sqlite3.connect(db_path)) as db:
            return db.execute(sql).fetchall()

    async def scenario() -> None:
        store = SqlStore(f"sqlite:///{db_path}")
        runner = StoreRunner(store)
        await runner.open()
        # Fail fast while locked, instead of waiting out the usual 5 s each time.
        await runner.call(execute_sql, store.db, "PRAGMA busy_timeout = 50")
        events = EventLog(runner, buffer=1000, retention=10_000)
        await events.start()
        worker = PortageWorker(ctl.root)
        staging = StagingBinhost(
            ctl.pkgdir, tmp_path / "uploads", "http://127.0.0.1:9/binhost", worker, runner, events
        )
        await staging.start()
        queue = BuildQueue(Fleet(events, y_threshold=8.0), events, runner, worker, staging, BuildSettings())
        await queue.start()
        try:
            await outage_and_back(queue)
        finally:
            await queue.stop()
            await events.stop()
            await worker.stop()
            await runner.close()

    async def outage_and_back(queue: BuildQueue) -> None:
        blocker = sqlite3.connect(db_path, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            session, jobs = await queue.queue(["swarm-test/chain-b"], name="outage", by="test")
            assert sorted(j.cpv for j in jobs) == ["swarm-test/chain-a-1", "swarm-test/chain-b-1"]
            await until(lambda: queue.flush_failures >= 2, "the write failing, then again on its retry")
            # A change made during the outage: its newest state is what gets written.
            queue.control("pause", session.id, "test")
            assert rows("SELECT count(*) FROM job") == [(0,)]
            assert rows("SELECT count(*) FROM build_session") == [(0,)]
        finally:
            blocker.rollback()
            blocker.close()
        await until(lambda: queue.flush_failures == 0, "the write going through after the outage")
        assert sorted(rows("SELECT cpv, state, session_id FROM job")) == sorted(
            (j.cpv, j.state, session.id) for j in jobs
        )
        assert rows("SELECT id, state FROM build_session") == [(session.id, PAUSED)]

    asyncio.run(scenario())
