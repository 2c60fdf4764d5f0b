"""A real SQLite database that refuses writes, for the store's outage tests:
another connection holds the write lock (as a long writer elsewhere would),
and the store gives up on it after 50 ms instead of its usual 5 s."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore

from support.rawsql import execute_sql


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold SQLite's write lock on ``path`` from another connection."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


async def quick_runner(path: Path) -> StoreRunner:
    """An opened runner on ``path`` whose writes fail 50 ms into a lock."""
    store = SqlStore(f"sqlite:///{path}")
    runner = StoreRunner(store, retry_max=0.1)
    await runner.open()
    await runner.call(execute_sql, store.db, "PRAGMA busy_timeout = 50")
    return runner


def event_rows(path: Path) -> list[tuple[int, str]]:
    """(id, type) of every event written to ``path``, by id."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute("SELECT id, type FROM event ORDER BY id"))
    finally:
        conn.close()
