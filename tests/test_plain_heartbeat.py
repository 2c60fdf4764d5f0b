"""serde.plain_heartbeat: the gateway tells a heartbeat that holds its
figures alone from its bytes, without parsing them. It must say yes exactly
where the parser finds a heartbeat without a pong, a job id or a field this
controller does not know, so that the two paths cannot differ: anything
else goes to the parser, and bytes it says yes to always parse (their
figures are read from them later, when asked for)."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.unknown_fields import UnknownFieldSet

from swarm.controller import serde
from swarm.v1 import fleet_pb2, gateway_pb2

# Each scalar field of a Heartbeat, and values for it (edges included).
SCALARS: dict[str, Callable[[random.Random], Any]] = {
    "seq": lambda rng: rng.choice([0, 1, 127, 128, 2**32, 2**64 - 1]),
    "sent_at_unix_ns": lambda rng: rng.choice([0, 1, -1, 1_796_547_638_626_690_600, -(2**63), 2**63 - 1]),
    "load1": lambda rng: rng.choice([0.0, -0.0, 0.5, 1e300, -3.0, math.inf, math.nan]),
    "load5": lambda rng: rng.uniform(0, 64),
    "load15": lambda rng: rng.uniform(0, 64),
    "cpu_percent": lambda rng: rng.choice([0.0, 12.5, 100.0, -1.0, math.inf, math.nan]),
    "memory_percent": lambda rng: rng.uniform(0, 100),
    "disk_percent": lambda rng: rng.uniform(0, 100),
    "disk_free_bytes": lambda rng: rng.choice([0, 1, 2**40, 2**64 - 1]),
    "emerge_running": lambda rng: rng.random() < 0.5,
}


def random_beat(rng: random.Random, share: float) -> fleet_pb2.Heartbeat:
    """A heartbeat with about ``share`` of its figures set."""
    return fleet_pb2.Heartbeat(**{name: make(rng) for name, make in SCALARS.items() if rng.random() < share})


def wrapped(body: bytes) -> bytes:
    """An AgentMessage whose heartbeat field holds ``body`` as it is."""
    return b"\x12" + serde._varint(len(body)) + body


def parser_says_plain(raw: bytes) -> bool:
    """What the parser finds: a heartbeat, nothing in it but its figures."""
    try:
        message = gateway_pb2.AgentMessage.FromString(raw)
    except Exception:
        return False
    heartbeat = message.heartbeat
    return (
        message.WhichOneof("body") == "heartbeat"
        and not heartbeat.HasField("pong")
        and not heartbeat.current_job_id
        and not UnknownFieldSet(message)
        and not UnknownFieldSet(heartbeat)
    )


def test_a_heartbeat_with_its_figures_alone_is_plain_and_one_with_a_pong_or_a_job_is_not() -> None:
    rng = random.Random(15)
    plain = others = 0
    for _ in range(3000):
        beat = fleet_pb2.Heartbeat(
            **{name: make(rng) for name, make in SCALARS.items() if rng.random() < 0.8}
        )
        if rng.random() < 0.2:
            beat.current_job_id = rng.choice(["build-1", "é" * 40])
        if rng.random() < 0.2:
            beat.pong.seq = rng.randrange(1, 1000)
        raw = gateway_pb2.AgentMessage(heartbeat=beat).SerializeToString()
        expected = not beat.current_job_id and not beat.HasField("pong")
        assert serde.plain_heartbeat(raw) is expected, (beat, raw)
        assert parser_says_plain(raw) is expected
        plain += expected
        others += not expected
        if expected:
            assert serde.read_heartbeat_bytes(raw) == serde.read_heartbeat(beat)
    assert plain > 1000 and others > 500
    # All figures at once, and none (an empty heartbeat is all zeros).
    full = fleet_pb2.Heartbeat(
        seq=1,
        sent_at_unix_ns=-1,
        load1=1.0,
        load5=2.0,
        load15=3.0,
        cpu_percent=4.0,
        memory_percent=5.0,
        disk_percent=6.0,
        disk_free_bytes=2**64 - 1,
        emerge_running=True,
    )
    assert {field.name for field, _ in full.ListFields()} == set(SCALARS), "every scalar of a Heartbeat"
    assert serde.plain_heartbeat(gateway_pb2.AgentMessage(heartbeat=full).SerializeToString())
    assert serde.plain_heartbeat(wrapped(b""))


@pytest.mark.parametrize(
    "extra",
    [
        b"\x68\x01",  # field 13, a varint: a newer protocol's figure
        b"\xa0\x06\x05",  # field 100
        b"\x6a\x03abc",  # field 13, bytes
        b"\x19" + struct.pack("<d", 1.0),  # load1 again: in order or not, a second time is the parser's
        b"\x18\x01",  # load1 (field 3, a double) as a varint: unknown to the parser
        b"\x08\x01",  # seq after the figures: out of order
    ],
)
def test_a_heartbeat_with_anything_more_is_left_to_the_parser(extra: bytes) -> None:
    body = fleet_pb2.Heartbeat(seq=7, load1=0.5, cpu_percent=3.0).SerializeToString()
    assert serde.plain_heartbeat(wrapped(body))
    assert not serde.plain_heartbeat(wrapped(body + extra))
    # And a field of the message itself beside the heartbeat (a newer kind).
    assert not serde.plain_heartbeat(wrapped(body) + b"\xf8\x01\x01")


def test_other_kinds_and_broken_bytes_are_not_plain_heartbeats() -> None:
    for message in (
        gateway_pb2.AgentMessage(),
        gateway_pb2.AgentMessage(pong=fleet_pb2.Pong(seq=1)),
        gateway_pb2.AgentMessage(hello=fleet_pb2.Hello(drone_id="d")),
    ):
        assert not serde.plain_heartbeat(message.SerializeToString())
    body = fleet_pb2.Heartbeat(seq=300, load1=0.5).SerializeToString()
    for raw in (b"", b"\x12", wrapped(body)[:-1], wrapped(body) + b"\x00", b"\x12\x7f" + body):
        assert not serde.plain_heartbeat(raw), raw


def test_whatever_it_says_is_plain_the_parser_reads_the_same_way() -> None:
    """Bytes changed at random (a byte flipped, cut, doubled): where the
    recogniser says plain, the parser agrees, and the figures read back."""
    rng = random.Random(19)
    seeds = [
        gateway_pb2.AgentMessage(
            heartbeat=fleet_pb2.Heartbeat(
                **{n: make(rng) for n, make in SCALARS.items() if rng.random() < 0.7}
            )
        ).SerializeToString()
        for _ in range(50)
    ]
    said_plain = 0
    for _ in range(20000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(raw))
            change = rng.random()
            if change < 0.5:
                raw[at] = rng.randrange(256)
            elif change < 0.75:
                del raw[at]
            else:
                raw.insert(at, rng.randrange(256))
        if len(raw) >= 2 and rng.random() < 0.5:
            raw[1] = (len(raw) - 2) & 0xFF  # keep the length right, so the body is what is tried
        raw_bytes = bytes(raw)
        if serde.plain_heartbeat(raw_bytes):
            said_plain += 1
            assert parser_says_plain(raw_bytes), raw_bytes
            serde.read_heartbeat_bytes(raw_bytes)
    assert said_plain > 1000
