"""Raw SQL on a store's peewee database, typed for the tests: peewee's own
stubs leave Database.execute_sql untyped, so the tests call it through here."""

from __future__ import annotations

from typing import Any, Protocol

import peewee as pw


class Cursor(Protocol):
    """What the tests read of a DB-API cursor (sqlite3's or psycopg2's)."""

    def fetchone(self) -> tuple[Any, ...] | None: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...


def execute_sql(db: pw.Database, sql: str) -> Cursor:
    cursor: Cursor = db.execute_sql(sql)  # type: ignore[no-untyped-call]  # untyped in peewee's stubs
    return cursor
