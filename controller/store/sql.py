"""The SQL store on peewee: SQLite (WAL) by default, PostgreSQL by URL.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a crash or kill -9 of
the controller loses nothing that was committed, while a power cut or
kernel crash may lose the last transactions since the latest WAL sync
(never corrupting the file). Live drone state is rewritten every few
seconds anyway; events are the only thing such a cut could drop.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import sqlite3
import threading
import time
import typing
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from urllib.parse import unquote, urlparse

import peewee as pw

from swarm.controller.store.base import StoreError, StoreUnavailable
from swarm.controller.store.migrations import migrate
from swarm.controller.store.models import MODELS, Event, Node
from swarm.controller.store.records import EventRecord, NodeLive, NodeRecord
from swarm.controller.store.sql_binhosts import BinhostTables
from swarm.controller.store.sql_builds import BuildTables
from swarm.controller.store.sql_health import HealthTables
from swarm.controller.store.sql_payloads import PayloadTables
from swarm.controller.store.sql_testbuilds import TestBuildTables
from swarm.controller.store.sql_trust import TrustTables

log = logging.getLogger(__name__)

__all__ = ["SqlStore", "StoreError", "StoreUnavailable", "connect"]

NODE_FIELDS = tuple(f.name for f in fields(NodeRecord))
# What a new row of a known drone replaces (it was first seen when it was).
NODE_UPDATES = tuple(c for c in NODE_FIELDS if c not in ("id", "first_seen_at"))
NODE_ROW = operator.attrgetter(*NODE_FIELDS)
# The live columns, then the id: the parameters of LIVE_UPDATE, in order.
LIVE_COLUMNS = NodeLive._fields[1:]
LIVE_ROW = operator.itemgetter(*range(1, len(NodeLive._fields)), 0)
EVENT_COLUMNS = ("id", "ts", "type", "message", "drone_id", "drone_name", "data")
# Seconds a PostgreSQL connection attempt may take: a frozen server accepts
# the TCP connection (its kernel does) and then never answers.
CONNECT_TIMEOUT = 5
PROBE_KEY = "health_probe"
# What sqlite3 says when the file is busy, full, read-only or its disk fails:
# worth retrying later. Anything else (no such table, a syntax error) is a bug.
SQLITE_TRANSIENT = ("locked", "busy", "full", "disk i/o error", "unable to open", "readonly")


@functools.cache
def insert_sql(table: str, columns: tuple[str, ...], param: str, update: tuple[str, ...] = ()) -> str:
    """One row's INSERT, for a prepared statement: a row whose id is there
    already is skipped, or with ``update`` has those columns replaced. Names
    are quoted ("user" is a keyword of PostgreSQL's)."""
    quoted = ", ".join(f'"{c}"' for c in columns)
    values = ", ".join([param] * len(columns))
    if update:
        conflict = "DO UPDATE SET " + ", ".join(f'"{c}" = excluded."{c}"' for c in update)
    else:
        conflict = "DO NOTHING"
    return f'INSERT INTO "{table}" ({quoted}) VALUES ({values}) ON CONFLICT ("id") {conflict}'


def connect(url: str) -> pw.Database:
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        # As elsewhere: sqlite:///relative/path, sqlite:////absolute/path.
        if not url.startswith("sqlite:///"):
            raise StoreError("a SQLite URL looks like sqlite:///relative.db or sqlite:////abs/path.db")
        path = unquote(url[len("sqlite:///") :])
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return pw.SqliteDatabase(
            path,
            pragmas={"journal_mode": "wal", "synchronous": "normal", "foreign_keys": 1, "busy_timeout": 5000},
            check_same_thread=False,
        )
    if parsed.scheme in ("postgresql", "postgres"):
        return pw.PostgresqlDatabase(
            unquote(parsed.path.lstrip("/")),
            user=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            host=parsed.hostname or None,
            port=parsed.port,
            connect_timeout=CONNECT_TIMEOUT,
            # A server that vanished without a word (a host gone) is noticed
            # by TCP keepalive rather than after the kernel's two hours.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
    raise StoreError(f"unsupported database URL scheme {parsed.scheme!r}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and those it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _node_from_row(row: Node) -> NodeRecord:
    return NodeRecord(**{name: getattr(row, name) for name in NODE_FIELDS})


def _event_from_row(row: Event) -> EventRecord:
    try:
        data = json.loads(row.data) if row.data else {}
    except ValueError:
        data = {}
    return EventRecord(
        id=row.id,
        ts=row.ts,
        type=row.type,
        message=row.message,
        drone_id=row.drone_id,
        drone_name=row.drone_name,
        data=data,
    )


class SqlStore(TrustTables, BuildTables, HealthTables, BinhostTables, PayloadTables, TestBuildTables):
    # Binding sets the database on the model classes, which every store
    # shares: one lock for all stores, not one each.
    _lock = threading.Lock()

    def __init__(self, url: str) -> None:
        self.url = url
        self.db = connect(url)
        self._version = 0

    @property
    def backend(self) -> str:
        return "postgresql" if isinstance(self.db, pw.PostgresqlDatabase) else "sqlite"

    @contextmanager
    def _bound(self) -> Iterator[None]:
        # Models are bound per call so that two stores (say, SQLite and
        # PostgreSQL in one test run) never see each other's connection.
        with self._lock, self.db.bind_ctx(MODELS):
            yield

    def open(self) -> None:
        try:
            self.db.connect(reuse_if_open=True)
        except pw.OperationalError as exc:
            raise StoreError(f"cannot open database {self.describe()}: {exc}".strip()) from None
        with self._bound():
            self._version = migrate(self.db)
        log.info("database %s at schema version %d", self.describe(), self._version)

    def describe(self) -> str:
        parsed = urlparse(self.url)
        if parsed.password:
            return self.url.replace(f":{parsed.password}@", ":***@")
        return self.url

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    def unavailable(self, exc: BaseException) -> StoreUnavailable | None:
        if not isinstance(exc, (pw.OperationalError, pw.InterfaceError)):
            return None
        detail = " ".join(str(exc).split()) or type(exc).__name__
        if self.backend == "sqlite":
            # An SQLite connection is never lost: the file is busy, full or failing.
            # SQLite rolls back by itself on such an error, so the error seen
            # can be peewee's ROLLBACK failing after it: look down the chain.
            for cause in _chain(exc):
                text = " ".join(str(cause).split())
                if isinstance(cause, (pw.OperationalError, sqlite3.OperationalError)) and any(
                    w in text.lower() for w in SQLITE_TRANSIENT
                ):
                    return StoreUnavailable(f"writes failing: {text}")
            return None
        # PostgreSQL: every OperationalError (connection, shutdown, disk full,
        # deadlock, cancelled) and InterfaceError (connection already closed)
        # passes; whether the connection survived decides what it means.
        if self._connection_lost():
            return StoreUnavailable(f"database unreachable: {detail}", lost=True)
        return StoreUnavailable(f"writes failing: {detail}")

    def _connection_lost(self) -> bool:
        # peewee's own is_closed() knows nothing of a dead socket: ask the driver's connection.
        conn = typing.cast(typing.Any, self.db)._state.conn
        return conn is None or bool(getattr(conn, "closed", 0))

    def reconnect(self) -> None:
        try:
            self.db.close()
        except pw.PeeweeException:
            # Still in a transaction as peewee sees it: the connection is dead anyway.
            typing.cast(typing.Any, self.db)._state.reset()
        self.db.connect()

    def probe(self) -> None:
        self.set_setting(PROBE_KEY, repr(time.time()))

    def schema_version(self) -> int:
        return self._version

    def upsert_nodes(self, nodes: Sequence[NodeRecord]) -> None:
        if not nodes:
            return
        # One row per id, the last one winning: PostgreSQL refuses an upsert
        # that touches the same row twice, SQLite would apply both.
        rows = list({node.id: NODE_ROW(node) for node in nodes}.values())
        # A prepared statement: building peewee queries cost ~100 us a row,
        # this ~7 us, and it runs for the whole fleet.
        self._insert_many(Node, NODE_FIELDS, rows, NODE_UPDATES)

    def update_nodes_live(self, nodes: Sequence[NodeLive]) -> None:
        if not nodes:
            return
        param = self.db.param
        sets = ", ".join(f"{c} = {param}" for c in LIVE_COLUMNS)
        self._execute_many(f"UPDATE node SET {sets} WHERE id = {param}", [LIVE_ROW(n) for n in nodes])

    def _insert_many(
        self,
        model: type[pw.Model],
        columns: tuple[str, ...],
        rows: Sequence[Sequence[object]],
        update: tuple[str, ...] = (),
    ) -> None:
        """``rows`` (values in ``columns``' order) into ``model``'s table, in one
        transaction, as one prepared statement (``insert_sql``)."""
        self._execute_many(insert_sql(model._meta.table_name, columns, self.db.param, update), rows)

    def _execute_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """``sql`` once per row, in one transaction, as one prepared statement."""
        # peewee's wrapper turns driver errors into peewee.IntegrityError etc.
        with self._bound(), self.db.atomic(), pw.__exception_wrapper__:  # type: ignore[attr-defined]
            cursor = self.db.cursor()  # type: ignore[no-untyped-call]
            if self.backend == "postgresql":
                from psycopg2.extras import execute_batch

                execute_batch(cursor, sql, rows, page_size=500)
            else:
                cursor.executemany(sql, rows)

    def list_nodes(self) -> list[NodeRecord]:
        with self._bound():
            return [_node_from_row(row) for row in Node.select().order_by(Node.name, Node.id)]

    def get_node(self, node_id: str) -> NodeRecord | None:
        with self._bound():
            row = Node.get_or_none(Node.id == node_id)
            return None if row is None else _node_from_row(row)

    def delete_node(self, node_id: str) -> bool:
        with self._bound():
            return bool(Node.delete().where(Node.id == node_id).execute())

    def add_events(self, events: Sequence[EventRecord]) -> None:
        if not events:
            return
        rows = [
            (e.id, e.ts, e.type, e.message, e.drone_id, e.drone_name, json.dumps(e.data, sort_keys=True))
            for e in events
        ]
        # A prepared statement, as upsert_nodes: a burst of test builds writes an
        # event each, and peewee's query building held the GIL the loop needs.
        # Only a duplicate id is skipped: SQLite's INSERT OR IGNORE would also
        # drop rows breaking NOT NULL, where PostgreSQL fails.
        self._insert_many(Event, EVENT_COLUMNS, rows)

    def list_events(
        self,
        *,
        after_id: int | None = None,
        since_ts: float | None = None,
        limit: int = 100,
        drone_id: str | None = None,
        types: Sequence[str] = (),
    ) -> list[EventRecord]:
        with self._bound():
            query = Event.select()
            if drone_id is not None:
                query = query.where(Event.drone_id == drone_id)
            if types:
                query = query.where(Event.type.in_(list(types)))
            if after_id is not None or since_ts is not None:
                if after_id is not None:
                    query = query.where(Event.id > after_id)
                if since_ts is not None:
                    query = query.where(Event.ts >= since_ts)
                rows = list(query.order_by(Event.id.asc()).limit(limit))
            else:
                rows = list(query.order_by(Event.id.desc()).limit(limit))
                rows.reverse()
            return [_event_from_row(row) for row in rows]

    def max_event_id(self) -> int:
        with self._bound():
            return int(Event.select(pw.fn.MAX(Event.id)).scalar() or 0)

    def trim_events(self, keep: int) -> int:
        with self._bound():
            newest = int(Event.select(pw.fn.MAX(Event.id)).scalar() or 0)
            cutoff = Event.select(Event.id).order_by(Event.id.desc()).offset(keep).limit(1).scalar()
            if cutoff is None or newest == 0:
                return 0
            return int(Event.delete().where(Event.id <= cutoff).execute())

    def count_events(self, start: float, width: float, buckets: int) -> list[int]:
        end = start + width * buckets
        offset = (Event.ts - start) / width
        # SQLite truncates on CAST (the offset is never negative here);
        # PostgreSQL rounds on CAST, so it gets FLOOR.
        guess = pw.fn.FLOOR(offset) if self.backend == "postgresql" else offset.cast("INTEGER")
        # The division can land one bucket off for an event on (or within
        # rounding of) an edge. Edges are start + k * width, computed as
        # callers compute them; compare with them to settle the bucket.
        bucket = guess + pw.Case(
            None,
            [(Event.ts < start + guess * width, -1), (Event.ts >= start + (guess + 1) * width, 1)],
            0,
        )
        counts = [0] * buckets
        with self._bound():
            query = (
                Event.select(bucket.alias("b"), pw.fn.COUNT(Event.id).alias("n"))
                .where((Event.ts >= start) & (Event.ts < end))
                .group_by(pw.SQL("b"))
                .tuples()
            )
            for index, count in typing.cast(Iterable[tuple[float, int]], query):
                i = int(index)
                if 0 <= i < buckets:
                    counts[i] += int(count)
        return counts
