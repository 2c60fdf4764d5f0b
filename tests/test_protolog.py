"""The protocol log's ring: what an admin reads back of recent messages."""

from __future__ import annotations

from swarm.controller.protolog import IN, OUT, ProtocolEntry, ProtocolLog


def filled(size: int, count: int) -> ProtocolLog:
    """``count`` messages through a ring of ``size``: message i is i bytes long,
    every fifth a pong with a round trip, the 24th with unknown fields."""
    log = ProtocolLog(size)
    for i in range(1, count + 1):
        pong = i % 5 == 0
        log.record(
            IN if i % 2 else OUT,
            f"d{i % 3}",
            "pong" if pong else "heartbeat",
            i,
            bytes([i]),
            1.5 if pong else None,
            unknown_fields=i == 24,
        )
    return log


def test_an_empty_log_has_nothing() -> None:
    log = ProtocolLog(10)
    assert log.entries() == [] and log.last_seq == 0
    assert log.message(0) is None and log.message(1) is None


def test_the_ring_keeps_the_latest_entries_with_every_field() -> None:
    log = filled(10, 25)
    assert log.last_seq == 25
    assert [e.seq for e in log.entries(limit=100)] == list(range(16, 26))
    assert log.message(15) is None and log.message(26) is None
    found = log.message(20)
    assert found is not None
    entry, raw = found
    assert raw == bytes([20])
    assert entry == ProtocolEntry(20, entry.ts, OUT, "d2", "pong", 20, 1.5, False)
    found = log.message(24)
    assert found is not None and found[0].unknown_fields and found[0].latency_ms is None
    assert dict(log.unknown_fields) == {"heartbeat": 1}


def test_entries_filter_by_sequence_drone_and_kind_newest_within_the_limit() -> None:
    log = filled(10, 25)
    assert [e.seq for e in log.entries(after_seq=22)] == [23, 24, 25]
    assert [e.seq for e in log.entries(limit=2)] == [24, 25]
    assert [e.seq for e in log.entries(drone_id="d1")] == [16, 19, 22, 25]
    assert [e.seq for e in log.entries(kinds=frozenset({"pong"}))] == [20, 25]
    assert [e.seq for e in log.entries(after_seq=3)] == list(range(16, 26))
    before = filled(10, 4)  # not yet full
    assert [e.seq for e in before.entries()] == [1, 2, 3, 4]
    assert before.message(1) is not None


def test_listeners_get_each_entry_as_it_is_recorded() -> None:
    log = ProtocolLog(4)
    got: list[ProtocolEntry] = []
    unsubscribe = log.subscribe(got.append)
    log.record(IN, "d", "heartbeat", 7, b"x")
    unsubscribe()
    log.record(IN, "d", "heartbeat", 8, b"y")
    assert [(e.seq, e.size, e.latency_ms) for e in got] == [(1, 7, None)]
