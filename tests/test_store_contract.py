"""The store contract: every backend behaves the same.

Each test runs on SQLite in a file, SQLite in memory and PostgreSQL (a
private server for the session, a fresh database per test; see
tests/support/postgres.py). The contract is the docstrings of
swarm.controller.store.base.Store.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from swarm.controller.store import sql
from swarm.controller.store.migrations import LATEST, MIGRATIONS, Migration, SchemaTooNew, migrate
from swarm.controller.store.models import MODELS, SchemaVersion
from swarm.controller.store.records import (
    AccessRecord,
    BinhostRecord,
    DronePayloadRecord,
    EventRecord,
    IncidentRecord,
    NodeLive,
    NodeRecord,
    PayloadRecord,
    RolloutRecord,
    TestBuildRecord,
    TestBuildTokenRecord,
)
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore

from support.postgres import PostgresServer, postgres_server, postgres_url  # noqa: F401
from support.rawsql import execute_sql


@dataclass(frozen=True)
class Backend:
    name: str
    url: str
    # False for SQLite :memory:, whose database goes with its connection.
    persistent: bool


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite-file":
        return Backend(request.param, f"sqlite:///{tmp_path / 'swarm.db'}", True)
    if request.param == "sqlite-memory":
        return Backend(request.param, "sqlite:///:memory:", False)
    # Requested only here, so SQLite runs never start PostgreSQL.
    return Backend(request.param, request.getfixturevalue("postgres_url"), True)


@pytest.fixture
def store(backend: Backend) -> Iterator[SqlStore]:
    s = SqlStore(backend.url)
    s.open()
    yield s
    s.close()


@contextmanager
def bound(store: SqlStore) -> Iterator[pw.Database]:
    """Bind the models to this store's database for direct queries."""
    with store.db.bind_ctx(MODELS):
        yield store.db


def recorded_versions(store: SqlStore) -> list[tuple[int, str]]:
    with bound(store):
        query = SchemaVersion.select(SchemaVersion.version, SchemaVersion.name).order_by(
            SchemaVersion.version
        )
        return [(row.version, row.name) for row in query]


def tables(store: SqlStore) -> set[str]:
    return set(store.db.get_tables())


def node(node_id: str, name: str | None = None, **changes: Any) -> NodeRecord:
    """A node with every field away from its default."""
    record = NodeRecord(
        id=node_id,
        name=name or f"drone-{node_id}",
        drone_type="drone",
        cores=16,
        network="10.0.0.0/24",
        hostname=f"{node_id}.example",
        agent_version="1.2.3",
        payload_version="4.5.6",
        heartbeat_interval_ms=2500,
        status="online",
        first_seen_at=1_700_000_000.25,
        last_seen_at=1_700_000_100.5,
        last_heartbeat_at=1_700_000_099.125,
        last_ping_at=1_700_000_098.0,
        last_pong_at=1_700_000_098.0625,
        ping_latency_ms=62.5,
        load1=1.5,
        load5=1.25,
        load15=0.75,
        cpu_percent=42.5,
        memory_percent=33.3,
        disk_percent=87.125,
        disk_free_bytes=3 * 2**40,
        emerge_running=True,
        current_job_id="job-7",
    )
    return replace(record, **changes)


def event(event_id: int, ts: float | None = None, type: str = "drone.online", **changes: Any) -> EventRecord:
    record = EventRecord(
        id=event_id,
        ts=1_000.0 + event_id if ts is None else ts,
        type=type,
        message=f"event {event_id}",
    )
    return replace(record, **changes)


def ids(events: list[EventRecord]) -> list[int]:
    return [e.id for e in events]


# --- opening and migrations -------------------------------------------------


def test_open_migrates_fresh_database_to_latest(backend: Backend) -> None:
    store = SqlStore(backend.url)
    try:
        store.open()
        assert store.schema_version() == LATEST
        assert recorded_versions(store) == [(number, name) for number, name, _ in MIGRATIONS]
        assert {"schema_version", "node", "event"} <= tables(store)
        assert store.list_nodes() == []
        assert store.list_events() == []
    finally:
        store.close()


def test_open_again_is_idempotent(backend: Backend, store: SqlStore) -> None:
    store.upsert_nodes([node("n1")])
    store.add_events([event(1)])
    versions = recorded_versions(store)

    store.open()  # the same store, already open
    assert store.schema_version() == LATEST
    assert recorded_versions(store) == versions

    if backend.persistent:
        store.close()
        again = SqlStore(backend.url)
        try:
            again.open()
            assert again.schema_version() == LATEST
            assert recorded_versions(again) == versions
            assert again.list_nodes() == [node("n1")]
            assert again.list_events() == [event(1)]
        finally:
            again.close()


def test_database_newer_than_code_is_refused(backend: Backend, store: SqlStore) -> None:
    with bound(store):
        SchemaVersion.create(version=LATEST + 1, name="from the future", applied_at=0.0)
    store.upsert_nodes([node("n1")])

    with pytest.raises(SchemaTooNew):
        store.open()
    if backend.persistent:
        newer = SqlStore(backend.url)
        try:
            with pytest.raises(SchemaTooNew):
                newer.open()
        finally:
            newer.close()
    # Refusing changes nothing.
    assert recorded_versions(store)[-1] == (LATEST + 1, "from the future")
    assert store.list_nodes() == [node("n1")]


def _add_widget_table(db: pw.Database) -> None:
    execute_sql(db, "CREATE TABLE widget (id INTEGER PRIMARY KEY, label VARCHAR(20) NOT NULL)")


def test_migrate_applies_pending_steps_in_order(store: SqlStore) -> None:
    applied: list[int] = []

    def add_widgets(db: pw.Database) -> None:
        applied.append(LATEST + 1)
        _add_widget_table(db)

    def fill_widgets(db: pw.Database) -> None:
        # Needs the step before it to have run.
        applied.append(LATEST + 2)
        execute_sql(db, "INSERT INTO widget (id, label) VALUES (1, 'one')")

    steps: list[Migration] = [
        *MIGRATIONS,
        (LATEST + 1, "widgets", add_widgets),
        (LATEST + 2, "fill", fill_widgets),
    ]
    with bound(store) as db:
        assert migrate(db, steps) == LATEST + 2
        assert execute_sql(db, "SELECT label FROM widget").fetchall() == [("one",)]
    assert applied == [LATEST + 1, LATEST + 2]
    assert recorded_versions(store)[-2:] == [(LATEST + 1, "widgets"), (LATEST + 2, "fill")]

    with bound(store) as db:
        assert migrate(db, steps) == LATEST + 2  # nothing pending
    assert applied == [LATEST + 1, LATEST + 2]


def test_each_migration_runs_in_its_own_transaction(store: SqlStore) -> None:
    def half_then_fail(db: pw.Database) -> None:
        execute_sql(db, "CREATE TABLE gadget (id INTEGER PRIMARY KEY)")
        execute_sql(db, "INSERT INTO widget (id, label) VALUES (2, 'two')")
        raise RuntimeError("migration failed halfway")

    steps: list[Migration] = [
        *MIGRATIONS,
        (LATEST + 1, "widgets", _add_widget_table),
        (LATEST + 2, "gadgets", half_then_fail),
    ]
    with bound(store) as db, pytest.raises(RuntimeError, match="halfway"):
        migrate(db, steps)

    # The step before the failure is kept; nothing of the failed one is.
    assert "widget" in tables(store)
    assert "gadget" not in tables(store)
    assert recorded_versions(store)[-1] == (LATEST + 1, "widgets")
    with bound(store) as db:
        assert execute_sql(db, "SELECT COUNT(*) FROM widget").fetchone() == (0,)

        # Fixed, it applies on the next run.
        def add_gadgets(db: pw.Database) -> None:
            execute_sql(db, "CREATE TABLE gadget (id INTEGER)")

        steps[-1] = (LATEST + 2, "gadgets", add_gadgets)
        assert migrate(db, steps) == LATEST + 2
    assert "gadget" in tables(store)


# --- nodes ------------------------------------------------------------------


def test_upsert_inserts_and_round_trips_every_field(store: SqlStore) -> None:
    full = node("n1")
    sparse = NodeRecord(id="n2", name="drone-n2")  # defaults, None timestamps
    store.upsert_nodes([full, sparse])
    assert store.get_node("n1") == full
    assert store.get_node("n2") == sparse
    got = store.get_node("n2")
    assert got is not None and got.last_seen_at is None and got.ping_latency_ms is None


def test_upsert_updates_every_field_but_first_seen_at(store: SqlStore) -> None:
    original = node("n1")
    store.upsert_nodes([original])
    changed = NodeRecord(
        id="n1",
        name="renamed",
        drone_type="sweeper",
        cores=2,
        network="192.168.1.0/24",
        hostname="other.example",
        agent_version="2.0.0",
        payload_version="2.0.1",
        heartbeat_interval_ms=500,
        status="paused",
        first_seen_at=1_800_000_000.0,  # ignored: first seen stays first seen
        last_seen_at=None,
        last_heartbeat_at=None,
        last_ping_at=None,
        last_pong_at=None,
        ping_latency_ms=None,
        load1=0.0,
        load5=0.0,
        load15=0.0,
        cpu_percent=0.0,
        memory_percent=0.0,
        disk_percent=0.0,
        disk_free_bytes=0,
        emerge_running=False,
        current_job_id="",
    )
    store.upsert_nodes([changed])
    assert store.get_node("n1") == replace(changed, first_seen_at=original.first_seen_at)

    # And back from None to values.
    store.upsert_nodes([replace(original, first_seen_at=5.0)])
    assert store.get_node("n1") == original


def test_upsert_many_nodes_in_one_call(store: SqlStore) -> None:
    count = 1_000
    nodes = [node(f"n{i:04d}", status="online") for i in range(count)]
    store.upsert_nodes(nodes)
    assert store.list_nodes() == nodes

    # Update all of them and add more, in one call.
    updated = [replace(n, status="offline", cores=n.cores + 1) for n in nodes]
    extra = [node(f"n{i:04d}") for i in range(count, count + 10)]
    store.upsert_nodes(updated + extra)
    assert store.list_nodes() == updated + extra


def test_upsert_is_one_transaction(store: SqlStore) -> None:
    store.upsert_nodes([node("n0000", status="online")])
    batch = [node(f"n{i:04d}", status="busy") for i in range(410)]
    batch.append(NodeRecord(id="broken", name=None))  # type: ignore[arg-type]  # NOT NULL violated
    with pytest.raises(pw.IntegrityError):
        store.upsert_nodes(batch)
    # Not even the rows before the broken one were kept.
    assert store.list_nodes() == [node("n0000", status="online")]


def test_upsert_same_id_twice_in_one_call_keeps_the_last(store: SqlStore) -> None:
    store.upsert_nodes([node("n1", status="online"), node("n2"), node("n1", status="busy")])
    assert store.get_node("n1") == node("n1", status="busy")
    assert len(store.list_nodes()) == 2


def test_upsert_nothing_is_a_no_op(store: SqlStore) -> None:
    store.upsert_nodes([])
    assert store.list_nodes() == []


def live(node_id: str, **changes: Any) -> NodeLive:
    """Live columns with every value unlike node()'s."""
    values = NodeLive(
        id=node_id,
        last_seen_at=1_700_000_200.5,
        last_heartbeat_at=1_700_000_199.25,
        last_ping_at=1_700_000_197.0,
        last_pong_at=1_700_000_197.125,
        ping_latency_ms=125.25,
        load1=3.5,
        load5=2.25,
        load15=1.75,
        cpu_percent=99.5,
        memory_percent=12.5,
        disk_percent=10.0,
        disk_free_bytes=5 * 2**40,
        emerge_running=False,
        current_job_id="job-2",
    )
    return values._replace(**changes)


def test_live_fields_are_node_fields() -> None:
    assert set(NodeLive._fields) <= set(sql.NODE_FIELDS)


def test_update_nodes_live_changes_only_the_live_columns(store: SqlStore) -> None:
    store.upsert_nodes([node("n1"), node("n2")])
    store.update_nodes_live([live("n1")])
    assert store.get_node("n1") == replace(node("n1"), **live("n1")._asdict())
    assert store.get_node("n2") == node("n2")
    # And to None where a column may be None.
    cleared = live("n1", last_ping_at=None, last_pong_at=None, ping_latency_ms=None)
    store.update_nodes_live([cleared])
    assert store.get_node("n1") == replace(node("n1"), **cleared._asdict())


def test_update_nodes_live_skips_ids_not_stored(store: SqlStore) -> None:
    store.upsert_nodes([node("n1")])
    store.update_nodes_live([live("never"), live("n1")])
    assert store.list_nodes() == [replace(node("n1"), **live("n1")._asdict())]
    store.update_nodes_live([])
    assert store.get_node("never") is None


def test_update_nodes_live_many_in_one_transaction(store: SqlStore) -> None:
    count = 1_000
    nodes = [node(f"n{i:04d}") for i in range(count)]
    store.upsert_nodes(nodes)
    store.update_nodes_live([live(n.id, cpu_percent=float(i)) for i, n in enumerate(nodes)])
    assert [n.cpu_percent for n in store.list_nodes()] == [float(i) for i in range(count)]
    # A row that breaks a constraint: none of the batch is kept.
    broken = [live(n.id, cpu_percent=1.0) for n in nodes] + [live("n0001", current_job_id=None)]
    with pytest.raises(pw.IntegrityError):
        store.update_nodes_live(broken)
    assert [n.cpu_percent for n in store.list_nodes()] == [float(i) for i in range(count)]


def test_list_nodes_orders_by_name_then_id(store: SqlStore) -> None:
    store.upsert_nodes(
        [
            node("id-c", name="beta"),
            node("id-b", name="alpha"),
            node("id-z", name="alpha"),
            node("id-a", name="gamma"),
            node("id-y", name="alpha"),
        ]
    )
    listed = [(n.name, n.id) for n in store.list_nodes()]
    assert listed == [
        ("alpha", "id-b"),
        ("alpha", "id-y"),
        ("alpha", "id-z"),
        ("beta", "id-c"),
        ("gamma", "id-a"),
    ]


def test_get_node(store: SqlStore) -> None:
    store.upsert_nodes([node("n1"), node("n2")])
    assert store.get_node("n2") == node("n2")
    assert store.get_node("missing") is None


def test_delete_node(store: SqlStore) -> None:
    store.upsert_nodes([node("n1"), node("n2")])
    assert store.delete_node("n1") is True
    assert store.delete_node("n1") is False
    assert store.delete_node("never") is False
    assert store.get_node("n1") is None
    assert store.list_nodes() == [node("n2")]


# --- events -----------------------------------------------------------------


def test_add_events_keeps_ids_and_round_trips_data(store: SqlStore) -> None:
    events = [
        event(5, drone_id="d1", drone_name="drone-1", data={"package": "dev-lang/python-3.11", "slot": 0}),
        event(
            10,
            data={"nested": {"list": [1, 2.5, "x", None, True]}, "unicode": "Grüße ✓", "empty": {}},
        ),
        event(42, ts=1.5, type="job.failed", message="", drone_id=None, drone_name=None),
    ]
    store.add_events(events)
    assert store.list_events() == events
    assert store.max_event_id() == 42


def test_add_events_ignores_duplicate_ids(store: SqlStore) -> None:
    store.add_events([event(1), event(2)])
    store.add_events([event(2, message="a second 2"), event(3)])
    # Within one batch, too: the first of an id wins.
    store.add_events([event(4), event(4, message="another 4")])
    assert store.list_events() == [event(1), event(2), event(3), event(4)]


def test_a_large_batch_of_events_is_one_transaction(store: SqlStore) -> None:
    many = 1100
    store.add_events([event(1)])
    batch = [event(i) for i in range(2, many + 100)]
    # NOT NULL violated on purpose, by the last row.
    batch.append(EventRecord(id=many + 200, ts=1.0, type=None, message="x"))  # type: ignore[arg-type]
    with pytest.raises(pw.IntegrityError):
        store.add_events(batch)
    assert store.list_events() == [event(1)]

    store.add_events(batch[:-1])
    assert store.max_event_id() == many + 99
    assert ids(store.list_events(limit=10_000)) == list(range(1, many + 100))


def test_list_events_without_cursor_returns_newest_in_ascending_order(store: SqlStore) -> None:
    # ts does not follow id here: order is by id.
    store.add_events([event(i, ts=2_000.0 - i) for i in (3, 1, 2, 5, 4)])
    assert ids(store.list_events()) == [1, 2, 3, 4, 5]
    assert ids(store.list_events(limit=2)) == [4, 5]
    assert ids(store.list_events(limit=0)) == []


def test_list_events_after_id(store: SqlStore) -> None:
    store.add_events([event(i) for i in range(1, 11)])
    assert ids(store.list_events(after_id=4, limit=3)) == [5, 6, 7]  # the first after the cursor
    assert ids(store.list_events(after_id=8)) == [9, 10]
    assert ids(store.list_events(after_id=10)) == []
    assert ids(store.list_events(after_id=0, limit=2)) == [1, 2]


def test_list_events_since_ts(store: SqlStore) -> None:
    store.add_events([event(i, ts=100.0 + i) for i in range(1, 11)])
    # An event exactly at since_ts is included.
    assert ids(store.list_events(since_ts=105.0, limit=3)) == [5, 6, 7]
    assert ids(store.list_events(since_ts=104.5)) == [5, 6, 7, 8, 9, 10]
    assert ids(store.list_events(since_ts=111.0)) == []
    # Both cursors: both apply.
    assert ids(store.list_events(since_ts=103.0, after_id=6, limit=2)) == [7, 8]
    assert ids(store.list_events(since_ts=108.0, after_id=2)) == [8, 9, 10]


def test_list_events_filters_by_drone_and_type(store: SqlStore) -> None:
    store.add_events(
        [
            event(1, type="drone.online", drone_id="d1"),
            event(2, type="job.done", drone_id="d2"),
            event(3, type="job.failed", drone_id="d1"),
            event(4, type="job.done", drone_id="d1"),
            event(5, type="drone.offline", drone_id=None),
            event(6, type="job.done", drone_id="d1"),
            event(7, type="job.failed", drone_id="d2"),
        ]
    )
    assert ids(store.list_events(drone_id="d1")) == [1, 3, 4, 6]
    assert ids(store.list_events(types=["job.done"])) == [2, 4, 6]
    assert ids(store.list_events(types=("job.done", "job.failed"))) == [2, 3, 4, 6, 7]
    assert ids(store.list_events(drone_id="d1", types=["job.done", "job.failed"])) == [3, 4, 6]
    assert ids(store.list_events(drone_id="nobody")) == []
    assert ids(store.list_events(types=["no.such.type"])) == []
    # The limit applies to the matches: newest without a cursor, first after one.
    assert ids(store.list_events(drone_id="d1", limit=2)) == [4, 6]
    assert ids(store.list_events(types=["job.done", "job.failed"], after_id=2, limit=2)) == [3, 4]
    assert ids(store.list_events(drone_id="d2", since_ts=1_003.0)) == [7]


def test_max_event_id(store: SqlStore) -> None:
    assert store.max_event_id() == 0
    store.add_events([event(3), event(7), event(5)])
    assert store.max_event_id() == 7


def test_trim_events_keeps_the_newest(store: SqlStore) -> None:
    assert store.trim_events(5) == 0
    store.add_events([event(i) for i in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)])
    assert store.trim_events(20) == 0
    assert store.trim_events(10) == 0
    assert len(store.list_events()) == 10

    assert store.trim_events(4) == 6
    assert ids(store.list_events()) == [21, 34, 55, 89]
    assert store.trim_events(4) == 0
    assert store.trim_events(1) == 3
    assert ids(store.list_events()) == [89]
    assert store.trim_events(0) == 1
    assert store.list_events() == []
    assert store.max_event_id() == 0


def test_count_events_buckets_and_boundaries(store: SqlStore) -> None:
    assert store.count_events(1_000.0, 10.0, 3) == [0, 0, 0]
    stamps = [
        999.999,  # before start: not counted
        1_000.0,  # exactly at start: bucket 0
        1_005.0,
        1_009.999,
        1_010.0,  # exactly at the start of bucket 1
        1_025.0,
        1_029.999,
        1_030.0,  # exactly at the end: not counted
        1_100.0,
    ]
    store.add_events([event(i, ts=ts) for i, ts in enumerate(stamps, start=1)])
    assert store.count_events(1_000.0, 10.0, 3) == [3, 1, 2]
    assert store.count_events(1_000.0, 30.0, 1) == [6]
    assert store.count_events(1_010.0, 10.0, 2) == [1, 2]
    assert store.count_events(2_000.0, 10.0, 2) == [0, 0]


@pytest.mark.parametrize(("window", "buckets"), [(3_600, 7), (600, 9), (86_400, 96)])
def test_count_events_edges_with_inexact_widths(store: SqlStore, window: int, buckets: int) -> None:
    """As /api/v1/activity asks: width = window / buckets, start a wall-clock time.

    An event exactly on the edge start + k * width belongs to bucket k even
    where (ts - start) / width rounds to just below k.
    """
    start = 1_700_000_000.123456
    width = window / buckets
    edges = [start + k * width for k in range(buckets + 1)]
    stamps: list[float] = []
    for edge in edges:
        stamps += [edge, math.nextafter(edge, -math.inf)]
    store.add_events([event(i, ts=ts) for i, ts in enumerate(stamps, start=1)])
    # Each bucket holds its own start and the last instant before the next.
    assert store.count_events(start, width, buckets) == [2] * buckets


def test_count_events_inexact_widths_are_exercised() -> None:
    # Keeps the test above honest: naive division misplaces some edges.
    start = 1_700_000_000.123456
    width = 3_600 / 7
    misplaced = [k for k in range(8) if math.floor((start + k * width - start) / width) != k]
    assert misplaced


# --- the runner -------------------------------------------------------------


class ThreadRecordingStore(SqlStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.threads: dict[str, threading.Thread] = {}

    def open(self) -> None:
        self.threads["open"] = threading.current_thread()
        super().open()

    def close(self) -> None:
        self.threads["close"] = threading.current_thread()
        super().close()


def test_store_runner_runs_every_call_on_one_thread(backend: Backend) -> None:
    store = ThreadRecordingStore(backend.url)
    runner = StoreRunner(store)

    async def scenario() -> list[threading.Thread]:
        await runner.open()
        seen = list(await asyncio.gather(*(runner.call(threading.current_thread) for _ in range(8))))
        # Works with keyword arguments, and on :memory: too: one thread, one connection.
        await runner.call(store.upsert_nodes, [node("n1")])
        await runner.call(store.add_events, [event(1), event(2)])
        assert await runner.call(store.get_node, "n1") == node("n1")
        assert await runner.call(store.list_events, after_id=1) == [event(2)]
        await runner.close()
        return seen

    seen = asyncio.run(scenario())
    threads = {*seen, store.threads["open"], store.threads["close"]}
    assert len(threads) == 1
    (thread,) = threads
    assert thread is not threading.main_thread()
    assert thread.name.startswith("swarm-db")
    # close() shut the executor down: its thread is gone, new calls refused.
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="shutdown"):
        asyncio.run(runner.call(store.max_event_id))


def test_a_connection_the_server_ended_is_replaced_on_the_next_call(request: pytest.FixtureRequest) -> None:
    """PostgreSQL only (an SQLite connection cannot be lost): a backend the
    server terminated (as a restart does) costs the caller nothing."""
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url: str = request.getfixturevalue("postgres_url")
    runner = StoreRunner(SqlStore(url))

    async def scenario() -> None:
        await runner.open()
        await runner.call(runner.store.upsert_nodes, [node("n1")])
        dbname = url.rsplit("/", 1)[1]
        with server._admin() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )
            assert cur.fetchall() == [(True,)]
        assert await runner.call(runner.store.get_node, "n1") == node("n1")
        assert runner.status().failure is None
        await runner.close()

    asyncio.run(scenario())


def test_errors_that_mean_unavailable_are_told_from_bugs(store: SqlStore) -> None:
    """Busy, full or failing: StoreUnavailable (retry later); anything else
    (a missing table, a syntax error) stays the error it is."""
    if store.backend == "sqlite":
        for message in ("database is locked", "database or disk is full", "disk I/O error"):
            found = store.unavailable(pw.OperationalError(message))
            assert found is not None and not found.lost and message in found.reason
    else:
        found = store.unavailable(pw.OperationalError("could not serialize access"))
        assert found is not None and not found.lost  # the connection is fine: an error, not an outage
    with pytest.raises(pw.DatabaseError) as bug:
        execute_sql(store.db, "SELECT * FROM no_such_table")
    assert store.unavailable(bug.value) is None
    assert store.unavailable(ValueError("no")) is None


# -- join tokens and certificates -------------------------------------------


def test_tokens_are_spent_once_and_revocable(store: SqlStore) -> None:
    from swarm.controller.store.records import TokenRecord

    store.add_token(TokenRecord("t1", "h1", None, created_at=1.0, expires_at=100.0, created_by="admin"))
    store.add_token(TokenRecord("t2", "h2", "drone-a", created_at=2.0, expires_at=100.0))
    store.add_token(TokenRecord("t3", "h3", None, created_at=3.0, expires_at=10.0))
    assert [t.id for t in store.list_tokens()] == ["t3", "t2", "t1"]
    assert store.get_token("t2") == TokenRecord("t2", "h2", "drone-a", 2.0, 100.0)
    assert store.get_token("nope") is None
    assert store.use_token("t1", "d1", now=50.0)
    assert not store.use_token("t1", "d2", now=50.0), "a token is spent once"
    spent = store.get_token("t1")
    assert spent is not None and spent.used_by == "d1"
    assert not store.use_token("t3", "d1", now=10.0), "expired at expires_at"
    assert store.revoke_token("t2", now=60.0)
    assert not store.use_token("t2", "d1", now=61.0), "revoked"
    assert not store.revoke_token("t1", now=62.0), "a spent token cannot be revoked"
    assert not store.revoke_token("nope", now=62.0)
    store.add_token(TokenRecord("t4", "h4", None, created_at=4.0, expires_at=100.0))
    assert store.count_live_tokens(now=5.0) == 2, "t3 and t4: t1 spent, t2 revoked"
    assert store.count_live_tokens(now=10.0) == 1, "t3 expired at expires_at"
    assert store.count_live_tokens(now=100.0) == 0


def test_a_name_is_bound_to_one_drone_id(store: SqlStore) -> None:
    from swarm.controller.store.records import NameRecord

    store.bind_name(NameRecord("drone-a", "io", 1.0, "enrollment"))
    store.bind_name(NameRecord("drone-b", "europa", 2.0, "hello"))
    assert store.list_names() == [
        NameRecord("drone-b", "europa", 2.0, "hello"),
        NameRecord("drone-a", "io", 1.0, "enrollment"),
    ]
    # An admin renames a: its old name is free again.
    store.bind_name(NameRecord("drone-a", "ganymede", 3.0, "admin"))
    # A new drone takes over b's name (the controller checked that b no longer counts): b loses it.
    store.bind_name(NameRecord("drone-c", "europa", 4.0, "enrollment"))
    assert {(r.drone_id, r.name) for r in store.list_names()} == {
        ("drone-a", "ganymede"),
        ("drone-c", "europa"),
    }


def test_certificates_list_unexpired_and_revoke_per_drone(store: SqlStore) -> None:
    from swarm.controller.store.records import CertRecord

    store.add_certificate(CertRecord("a1", "drone-a", issued_at=1.0, not_after=100.0))
    store.add_certificate(CertRecord("a2", "drone-a", issued_at=2.0, not_after=200.0))
    store.add_certificate(CertRecord("b1", "drone-b", issued_at=3.0, not_after=50.0))
    assert [c.serial for c in store.list_certificates(valid_at=60.0)] == ["a1", "a2"]
    assert store.revoke_certificates("drone-a", now=70.0) == 2
    assert store.revoke_certificates("drone-a", now=71.0) == 0
    assert {c.serial: c.revoked_at for c in store.list_certificates(valid_at=0.0)} == {
        "a1": 70.0,
        "a2": 70.0,
        "b1": None,
    }


# -- builds ---------------------------------------------------------------------


def test_sessions_and_jobs_round_trip_and_update(store: SqlStore) -> None:
    from swarm.controller.store.records import JobRecord, SessionRecord

    session = SessionRecord("s1", "world", "running", ("@world", "dev-lang/rust"), created_at=1.0)
    store.upsert_sessions([session, SessionRecord("s2", "later", "queued", (), created_at=2.0)])
    assert [s.id for s in store.list_sessions()] == ["s2", "s1"]
    assert store.list_sessions(limit=5)[1] == session
    jobs = [
        JobRecord(
            f"j{i}",
            "s1",
            f"cat/p{i}-1",
            deps=(f"j{i - 1}",) if i else (),
            state="blocked",
            created_at=float(i),
        )
        for i in range(450)
    ]
    store.upsert_jobs(jobs)
    store.upsert_jobs([replace(jobs[3], state="failed", failed_on=("d1", "d2"), attempts=2, reason="boom")])
    listed = store.list_jobs(["s1"])
    assert len(listed) == 450 and listed[0] == jobs[0]
    assert listed[3].failed_on == ("d1", "d2") and listed[3].state == "failed" and listed[3].deps == ("j2",)
    assert store.list_jobs(["s2"]) == []
    assert len(store.list_jobs()) == 450


def test_builds_history_newest_first(store: SqlStore) -> None:
    from swarm.controller.store.records import BuildRecord

    store.upsert_builds(
        [BuildRecord(f"b{i}", "j1", "s1", "cat/p-1", "d1", "building", created_at=float(i)) for i in range(5)]
    )
    store.upsert_builds(
        [
            BuildRecord(
                "b1",
                "j1",
                "s1",
                "cat/p-1",
                "d1",
                "failed",
                created_at=1.0,
                finished_at=9.0,
                exit_code=1,
                reason="compile error",
            )
        ]
    )
    assert [b.id for b in store.list_builds(limit=3)] == ["b4", "b3", "b2"]
    assert [b.id for b in store.list_builds(finished=True)] == ["b1"]
    assert store.list_builds(job_id="j1", limit=1)[0].id == "b4"
    assert store.list_builds(job_id="nope") == []
    found = store.get_builds(["b1", "b3", "nope", "b1"])
    assert sorted((b.id, b.state) for b in found) == [("b1", "failed"), ("b3", "building")]
    assert store.get_builds([]) == []


def test_artifacts_are_idempotent_by_build_and_file(store: SqlStore) -> None:
    from swarm.controller.store.records import ArtifactRecord

    first = ArtifactRecord("b1", "p-1-1.gpkg.tar", "cat/p-1", "ab" * 32, 1234, stored_at=5.0)
    assert store.add_artifact(first)
    assert not store.add_artifact(replace(first, sha256="cd" * 32)), "a second upload is a no-op"
    assert store.get_artifact("b1", "p-1-1.gpkg.tar") == first
    assert store.get_artifact("b2", "p-1-1.gpkg.tar") is None
    store.add_artifact(ArtifactRecord("b2", "q-1-1.gpkg.tar", "cat/q-1", "ef" * 32, 1, stored_at=6.0))
    assert [a.build_id for a in store.list_artifacts()] == ["b1", "b2"]
    assert [a.build_id for a in store.list_artifacts(cpv="cat/q-1")] == ["b2"]


def test_package_stats_upsert(store: SqlStore) -> None:
    from swarm.controller.store.records import PackageStat

    store.upsert_package_stats([PackageStat("cat/p", 10.0, 1, 1.0), PackageStat("cat/q", 3.0, 2, 1.0)])
    store.upsert_package_stats([PackageStat("cat/p", 12.5, 2, 2.0)])
    assert sorted(store.list_package_stats(), key=lambda s: s.cpn) == [
        PackageStat("cat/p", 12.5, 2, 2.0),
        PackageStat("cat/q", 3.0, 2, 1.0),
    ]


def test_drone_access_is_replaced_whole(store: SqlStore) -> None:
    first = AccessRecord(
        "d1", "lxc", "root@10.0.0.5", "root@pve1:2222", "105", "proxmox-lxc", False, 1.5, "a"
    )
    store.put_access(first)
    store.put_access(AccessRecord("d0", ssh="d0.lan"))
    changed = replace(first, ssh="", healing_paused=True, updated_at=2.5, updated_by="b")
    store.put_access(changed)
    assert store.list_access() == [AccessRecord("d0", ssh="d0.lan"), changed]


def test_incidents_round_trip_newest_first_and_since(store: SqlStore) -> None:
    old = IncidentRecord("i1", "d1", "offline", "stream cut", 100.0, 100.5, 130.0, 1, "recovered")
    open_one = IncidentRecord("i2", "d1", "suspect", "silent", 200.0, 203.0)
    other = IncidentRecord("i3", "d2", "unhealthy", "disk", 150.0, 150.0, 400.0, 4, "recovered")
    store.upsert_incidents([old, open_one, other])
    assert store.list_incidents() == [open_one, other, old]
    assert store.list_incidents(drone_id="d1") == [open_one, old]
    # Recovered before 140: out; still open or recovered later: in.
    assert store.list_incidents(since=140.0) == [open_one, other]
    closed = replace(open_one, recovered_at=210.0, level=2, outcome="recovered")
    store.upsert_incidents([closed])
    assert store.list_incidents(drone_id="d1", limit=1) == [closed]


def test_settings_are_kept_by_key(store: SqlStore) -> None:
    assert store.get_setting("healing_paused") is None
    store.set_setting("healing_paused", "1")
    store.set_setting("healing_paused", "0")
    assert store.get_setting("healing_paused") == "0"


def test_binhost_targets_are_replaced_whole_and_deleted(store: SqlStore) -> None:
    assert store.list_binhosts() == []
    mirror = BinhostRecord(
        "lan", "rsync", "http://m.lan/b", "push@m.lan:2222:/srv/b", ("lan", "wg0"), 7, False, 1.5, "a"
    )
    local = BinhostRecord("controller", "local", networks=("lan",), priority=999)
    store.put_binhost(mirror)
    store.put_binhost(local)
    assert store.list_binhosts() == [local, mirror]
    changed = replace(
        mirror, url="https://m.lan/c", networks=(), enabled=True, updated_at=2.5, updated_by="b"
    )
    store.put_binhost(changed)
    assert store.list_binhosts() == [local, changed]
    assert store.delete_binhost("lan") is True
    assert store.delete_binhost("lan") is False
    assert store.list_binhosts() == [local]


def test_test_builds_round_trip_newest_first_and_prune_what_finished(store: SqlStore) -> None:
    assert store.list_test_builds() == [] and store.get_test_build("tb-1") is None
    full = TestBuildRecord(
        id="tb-000000000001",
        package="=swarm-test/leaf-data-1",
        cpv="swarm-test/leaf-data-1",
        user="alice@lan",
        token_id="tbt-000000000001",
        state="succeeded",
        queued_at=1_800_000_000.25,
        use=("-doc", "ssl"),
        started_at=1_800_000_001.5,
        finished_at=1_800_000_060.125,
        drone="builder-0",
        build_id="b-7",
        exit_code=0,
        reason="",
        log_tail="line 1\nline 2 ✓",
        packages=("swarm-test/leaf-data-1-1.gpkg.tar",),
        notify_email="me@example.org",
        webhook_url="https://hooks.example.org/x?y=1",
        notified="sent",
    )
    queued = TestBuildRecord(
        "tb-000000000002",
        "swarm-test/broken",
        "swarm-test/broken-1",
        "bob",
        "tbt-2",
        "queued",
        1_800_000_100.0,
    )
    store.put_test_builds([full, queued])
    store.put_test_builds([])
    assert store.get_test_build(full.id) == full
    assert store.list_test_builds() == [queued, full]
    assert store.list_test_builds(limit=1) == [queued]
    assert store.list_test_builds(states=["queued", "running"]) == [queued]
    running = replace(queued, state="running", started_at=1_800_000_101.0, drone="builder-1", build_id="b-8")
    store.put_test_builds([running])
    assert store.list_test_builds(states=["running"]) == [running]
    finished = replace(running, state="failed", finished_at=1_800_000_200.0, exit_code=1, reason="why")
    store.put_test_builds([replace(finished, reason="not yet"), finished])  # the last one wins
    assert store.prune_test_builds(1_800_000_060.0) == []  # finished at .125 past it
    assert store.prune_test_builds(1_800_000_061.0) == [full]
    assert store.list_test_builds() == [finished]
    assert store.prune_test_builds(1_900_000_000.0) == [finished] and store.list_test_builds() == []
    many = [replace(queued, id=f"tb-{i:012x}", queued_at=float(i)) for i in range(250)]
    store.put_test_builds(many)  # across statements, one transaction
    assert store.list_test_builds(limit=1000) == many[::-1]


def test_test_build_tokens_are_replaced_whole_and_listed_newest_first(store: SqlStore) -> None:
    assert store.list_test_build_tokens() == []
    older = TestBuildTokenRecord("tbt-1", "alice", "a" * 64, "5/h", 2, 3, 1_800_000_000.5, "admin:root")
    newer = TestBuildTokenRecord("tbt-2", "bob", "b" * 64, "10/d", 10, 1, 1_800_000_001.0)
    store.put_test_build_token(older)
    store.put_test_build_token(newer)
    assert store.list_test_build_tokens() == [newer, older]
    used = replace(older, last_used_at=1_800_000_002.25, revoked_at=1_800_000_003.0)
    store.put_test_build_token(used)
    assert store.list_test_build_tokens() == [newer, used]


def test_payload_versions_are_kept_per_kind_once_each(store: SqlStore) -> None:
    assert store.list_payloads() == []
    big = 2**40 + 3  # beyond 32 bits: a wheel is small, the columns are not
    first = PayloadRecord("agent", 1, "a" * 64, big, "admin:ann", 10.5, "notes\nwith a line", "uploaded")
    second = replace(first, version=2, sha256="b" * 64, size=9, notes="")
    config = PayloadRecord("agent-config", 1, "c" * 64, 42, "admin:bob", 11.0)
    assert store.add_payload(first) and store.add_payload(second) and store.add_payload(config)
    assert store.add_payload(replace(first, sha256="d" * 64)) is False
    assert store.list_payloads() == [second, first, config]
    assert store.list_payloads("agent-config") == [config]
    assert store.set_payload_state("agent", 2, "staged") is True
    assert store.set_payload_state("agent", 3, "staged") is False
    assert store.list_payloads("agent") == [replace(second, state="staged"), first]


def test_drone_payloads_are_replaced_whole_by_drone_and_kind(store: SqlStore) -> None:
    assert store.list_drone_payloads() == []
    a = DronePayloadRecord("d2", "agent", 3, 2, "e" * 64, "sent", "", "d-1", 5.0)
    b = DronePayloadRecord("d1", "portage-config", 1, 1, "f" * 64, "applied", "", "d-2", 6.0)
    store.put_drone_payloads([a, b])
    assert store.list_drone_payloads() == [b, a]
    refused = replace(a, state="refused", reason="expired", updated_at=7.0)
    store.put_drone_payloads([refused])
    store.put_drone_payloads([])
    assert store.list_drone_payloads() == [b, refused]


def test_rollouts_are_replaced_whole_by_id_oldest_first(store: SqlStore) -> None:
    assert store.list_rollouts() == []
    plan = '[{"drone_id": "d1", "name": "a", "batch": 0, "state": "sent", "previous": 2, "reason": ""}]'
    late = RolloutRecord(
        "r-2", "agent", 3, "running", False, "{}", '{"all": true}', plan, 0, "", "admin:a", 9.0, 9.0
    )
    early = replace(late, id="r-1", kind="portage-config", version=2**40, created_at=1.0, rollback=True)
    store.put_rollout(late)
    store.put_rollout(early)
    assert store.list_rollouts() == [early, late]
    paused = replace(late, state="paused", next_batch=1, reason="the controller restarted", updated_at=10.0)
    store.put_rollout(paused)
    assert store.list_rollouts() == [early, paused]
