"""The protocol log's ring: what an admin reads back of recent messages, and
what the gateway marks in it as carrying fields this controller does not know."""

from __future__ import annotations

from swarm.controller.gateway import beat_carries_unknown, carried_unknown, parse_agent_message
from swarm.controller.protolog import IN, OUT, ProtocolEntry, ProtocolLog
from swarm.v1 import fleet_pb2, gateway_pb2


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


def test_a_heartbeats_unknown_fields_are_found_at_either_level_without_serializing() -> None:
    """The gateway asks a heartbeat without a pong for unknown fields on the
    message and the heartbeat (beat_carries_unknown) instead of serializing it
    again: it finds them at either level, as carried_unknown does."""
    plain = gateway_pb2.AgentMessage(heartbeat=fleet_pb2.Heartbeat(seq=3, load1=0.5))
    raw = plain.SerializeToString()
    body = plain.heartbeat.SerializeToString() + bytes([0xA0, 0x06, 0x01])  # Heartbeat field 100
    in_heartbeat = bytes([0x12, len(body)]) + body  # AgentMessage field 2 (heartbeat)
    on_message = raw + bytes([0xA0, 0x06, 0x01])  # AgentMessage field 100
    for wire, unknown in ((raw, False), (in_heartbeat, True), (on_message, True)):
        message = parse_agent_message(wire)
        assert message.WhichOneof("body") == "heartbeat"
        assert beat_carries_unknown(message, message.heartbeat) is unknown
        kept, carried = carried_unknown(message, wire)
        assert carried is unknown and kept == raw


def test_a_heartbeats_only_message_field_is_its_pong() -> None:
    """beat_carries_unknown looks at two levels only because every other field
    of Heartbeat is a scalar: a message field added to Heartbeat must be
    looked into there too (or the pong path taken for it)."""
    fields = fleet_pb2.Heartbeat.DESCRIPTOR.fields
    assert [f.name for f in fields if f.message_type is not None] == ["pong"]
