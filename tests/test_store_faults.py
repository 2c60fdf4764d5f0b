"""The controller's own dependencies failing under it (issue 14): its
PostgreSQL killed and restarted, or frozen; its SQLite data disk full.
Real parts: a private PostgreSQL server of this module's own (so it can be
killed), a real controller process, a real tmpfs mounted for the disk.

Each time the controller must come back by itself (same process), health
must say ``degraded`` with the reason while it lasts and ``ok`` after,
every event a client saw meanwhile must reach the database, and
``POST /admin/api/queue`` must answer 503 while writes fail.

How long each fault lasts is configurable (seconds):
SWARM_FAULT_OUTAGE (PostgreSQL down, default 1), SWARM_FAULT_FREEZE
(PostgreSQL stopped, default 2), SWARM_FAULT_FULL (disk full, default 1).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.disk import fill
from support.postgres import PostgresServer, private_server
from support.procs import Controller, http, wait_for
from support.session_faults import FAST_HEALTH

OUTAGE = float(os.environ.get("SWARM_FAULT_OUTAGE", "1"))
FREEZE = float(os.environ.get("SWARM_FAULT_FREEZE", "2"))
FULL = float(os.environ.get("SWARM_FAULT_FULL", "1"))
RECOVERY = 20.0  # deadline for coming back once the dependency is back


def health(controller: Controller) -> dict[str, Any]:
    status, body = http("GET", controller.public_url + "/api/v1/health")
    assert status == 200, body
    return dict(body)


def codes(controller: Controller) -> set[str]:
    return {r["code"] for r in health(controller)["reasons"]}


def wrong_key(controller: Controller) -> None:
    """An event from outside that needs no database: a refused admin key."""
    status, _ = http("GET", controller.admin_url + "/admin/api/status", headers={"X-Admin-Key": "wrong"})
    assert status == 401


def seen_events(controller: Controller, after: int) -> list[dict[str, Any]]:
    """What a client is shown (the admin tier's events, answered from memory)."""
    status, body = controller.admin("GET", f"/admin/api/events?since={after}&limit=1000")
    assert status == 200, body
    return list(body["events"])


def queue_refused(controller: Controller) -> str:
    status, body = controller.admin(
        "POST", "/admin/api/queue", json.dumps({"atoms": ["app-misc/a"]}).encode()
    )
    assert status == 503, (status, body)
    return str(body["error"]["message"])


def assert_healthy(controller: Controller) -> None:
    wait_for(lambda: health(controller)["status"] == "ok", timeout=RECOVERY, what="health ok")


# -- PostgreSQL ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = private_server(durable=True)  # killed with SIGKILL: what it acknowledged must stay
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def on_pg(pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    proc = Controller(tmp_path_factory.mktemp("pg-faults"), "--db", pg.url(), *FAST_HEALTH)
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


def pg_event_ids(pg: PostgresServer) -> set[int]:
    import psycopg2

    conn = psycopg2.connect(pg.url(), connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM event")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def test_a_killed_postgresql_is_reconnected_and_nothing_seen_is_lost(
    pg: PostgresServer, on_pg: Controller
) -> None:
    assert_healthy(on_pg)
    pid = on_pg.pid
    before = on_pg.events()[-1]["id"]

    pg.kill()
    wrong_key(on_pg)
    down = wait_for(
        lambda: "database_unreachable" in codes(on_pg) and health(on_pg),
        timeout=RECOVERY,
        what="health degraded: database unreachable",
    )
    assert down["status"] == "degraded"
    [reason] = [r for r in down["reasons"] if r["code"] == "database_unreachable"]
    assert reason["message"] == "database unreachable"  # not the server's address: that is for the admin
    status, detailed = on_pg.admin("GET", "/admin/api/health")
    assert status == 200 and f"port {pg.port}" in detailed["reasons"][0]["message"]
    assert detailed["store"]["failure"]["connection_lost"] is True
    assert "database" in queue_refused(on_pg)
    # What needs the database is a retryable 503, naming no address.
    status, body = http("GET", on_pg.public_url + "/api/v1/activity")
    assert (status, body["error"]["message"]) == (503, "the database is unreachable for now; try again later")
    wrong_key(on_pg)
    time.sleep(OUTAGE)  # the outage itself
    seen = seen_events(on_pg, before)
    seen_types = [e["type"] for e in seen]
    assert "store_unavailable" in seen_types and seen_types.count("admin_login_failed") == 2
    # Events are public: they say what is wrong, not where the database is.
    told = [json.dumps(e) for e in seen if e["type"] == "store_unavailable"]
    assert told and not any(f"port {pg.port}" in t or "127.0.0.1" in t for t in told), told

    pg.restart()
    assert_healthy(on_pg)
    # Written once it was back: every event a client was shown, and the recovery.
    wait_for(
        lambda: {e["id"] for e in seen} <= pg_event_ids(pg), timeout=RECOVERY, what="seen events written"
    )
    recovered = wait_for(
        lambda: [e for e in seen_events(on_pg, before) if e["type"] == "store_recovered"],
        what="store_recovered event",
    )
    assert recovered[0]["data"]["code"] == "database_unreachable" and recovered[0]["data"]["down_s"] > 0
    wait_for(lambda: recovered[0]["id"] in pg_event_ids(pg), what="store_recovered written")
    # The same process all along, and it takes writes again.
    assert on_pg.alive() and on_pg.pid == pid
    status, body = on_pg.admin("POST", "/admin/api/queue", json.dumps({"atoms": ["app-misc/a"]}).encode())
    assert status != 503, body


def test_a_frozen_postgresql_degrades_health_without_hanging_it(
    pg: PostgresServer, on_pg: Controller
) -> None:
    assert_healthy(on_pg)
    pid = on_pg.pid
    before = on_pg.events()[-1]["id"]
    pg.freeze()
    try:
        # Answered while the server answers nothing (it stays frozen until
        # this is seen): health never waits for the database.
        stalled = wait_for(
            lambda: "database_stalled" in codes(on_pg) and health(on_pg),
            timeout=RECOVERY,
            what="health degraded: database stalled",
        )
        assert "not answering" in stalled["reasons"][0]["message"]
        assert "database" in queue_refused(on_pg)
        wrong_key(on_pg)
        time.sleep(FREEZE)  # the freeze itself
        seen = seen_events(on_pg, before)
    finally:
        pg.thaw()
    assert_healthy(on_pg)
    assert [e["type"] for e in seen].count("admin_login_failed") == 1
    wait_for(
        lambda: {e["id"] for e in seen} <= pg_event_ids(pg), timeout=RECOVERY, what="seen events written"
    )
    recovered = wait_for(
        lambda: [e for e in seen_events(on_pg, before) if e["type"] == "store_recovered"],
        what="store_recovered event",
    )
    assert recovered[0]["data"]["code"] == "database_stalled"
    assert on_pg.alive() and on_pg.pid == pid


def test_the_controller_stops_while_postgresql_is_frozen(pg: PostgresServer, on_pg: Controller) -> None:
    """Last of the PostgreSQL tests: it stops the module's controller. A
    call hanging on the frozen server must not keep the process alive past
    its staged shutdown (the database thread is a daemon)."""
    pg.freeze()
    try:
        wait_for(lambda: "database_stalled" in codes(on_pg), timeout=RECOVERY, what="database stalled")
        # The stages' budget (STOP_* in app.py) is 21 s; far below OpenRC's 60 s.
        assert on_pg.terminate(timeout=30) == 0
    finally:
        pg.thaw()
    assert "events were never written: the database did not answer" in on_pg.log()


# -- SQLite on a full disk -----------------------------------------------------


@pytest.fixture(scope="module")
def on_small_disk(small_disk: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    # Only the data dir on the small disk: the test's log stays readable.
    proc = Controller(
        tmp_path_factory.mktemp("disk-faults"),
        "--data-dir",
        str(small_disk / "data"),
        "--disk-min-free-mb",
        "4",
        *FAST_HEALTH,
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


def sqlite_event_ids(disk: Path) -> set[int]:
    conn = sqlite3.connect(disk / "data" / "swarm.db", timeout=5)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM event")}
    finally:
        conn.close()


def test_a_full_data_disk_degrades_health_and_writes_resume_once_freed(
    small_disk: Path, on_small_disk: Controller
) -> None:
    controller = on_small_disk
    assert (small_disk / "data" / "swarm.db").exists()
    assert_healthy(controller)
    before = controller.events()[-1]["id"]
    filler = fill(small_disk, small_disk / "data" / "swarm.db")
    try:
        wrong_key(controller)
        full = wait_for(
            lambda: {"disk_low", "writes_failing"} <= codes(controller) and health(controller),
            timeout=RECOVERY,
            what="health degraded: disk low and writes failing",
        )
        reasons = {r["code"]: r["message"] for r in full["reasons"]}
        assert reasons["writes_failing"] == "database writes failing"
        assert "data disk nearly full" in reasons["disk_low"] and str(small_disk) not in reasons["disk_low"]
        # The admin tier has the details: SQLite's own words and the path.
        status, detailed = controller.admin("GET", "/admin/api/health")
        assert status == 200
        details = {r["code"]: r["message"] for r in detailed["reasons"]}
        assert (
            "database or disk is full" in details["writes_failing"] and str(small_disk) in details["disk_low"]
        )
        assert "database" in queue_refused(controller)
        time.sleep(FULL)  # the disk stays full a while
        seen = seen_events(controller, before)
        assert {"disk_low", "store_unavailable", "admin_login_failed"} <= {e["type"] for e in seen}
    finally:
        filler.unlink()
    assert_healthy(controller)
    wait_for(
        lambda: {e["id"] for e in seen} <= sqlite_event_ids(small_disk),
        timeout=RECOVERY,
        what="events of the full disk written",
    )
    after = {e["type"] for e in seen_events(controller, before)}
    assert {"disk_ok", "store_recovered"} <= after
    status, body = controller.admin("GET", "/admin/api/health")
    assert status == 200 and body["status"] == "ok" and body["events"]["dropped"] == 0
    assert body["disk"]["free_mb"] > body["disk"]["min_free_mb"]
