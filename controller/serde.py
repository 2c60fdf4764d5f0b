"""The control stream on the wire: the one place where its protobuf messages
are read and built (channel_serde.py does the same for channels).

It turns what drones send into the domain's dataclasses (``domain``) and
the core's requests (the verbs of ``fleet.Link``, which the gateway
implements) into swarm.v1 messages. Nothing in the controller's core
imports protobuf (tests/test_core_boundary.py).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict

from swarm import __version__
from swarm.controller.domain import (
    ID_RE,
    NAME_RE,
    BuildEventData,
    CheckData,
    HeartbeatData,
    HelloData,
    PayloadStatusData,
    PayloadVersionData,
    PongData,
)
from swarm.controller.errors import FailedPrecondition, InvalidArgument
from swarm.controller.protolog import IN
from swarm.payloadsig import KINDS, SHA256_RE
from swarm.printable import printable
from swarm.protocol import CONTROLLER_FEATURES, PROTOCOL_REVISION, read_features
from swarm.v1 import build_pb2, fleet_pb2, gateway_pb2, payload_pb2

# uint64 on the wire, a signed 64-bit column in the databases.
MAX_BYTES = 2**63 - 1
DRONE_TYPES = {
    fleet_pb2.DRONE_TYPE_UNKNOWN: "unknown",
    fleet_pb2.DRONE_TYPE_LXC: "lxc",
    fleet_pb2.DRONE_TYPE_QEMU: "qemu",
    fleet_pb2.DRONE_TYPE_BARE_METAL: "bare-metal",
}
MIN_INTERVAL_MS = 50
MAX_INTERVAL_MS = 60_000
MAX_CHECKS = 16
INF = math.inf


def _short(text: str, limit: int = 80) -> str:
    """What a drone reported, as kept: without control characters, and cut
    to ``limit`` (marked "...")."""
    text = printable(text)
    return text if len(text) <= limit else text[:limit] + "..."


def read_hello(message: gateway_pb2.AgentMessage) -> HelloData:
    """Validate the first message of a control stream."""
    kind = message.WhichOneof("body")
    if kind != "hello":
        raise FailedPrecondition(
            f"the first message on a control stream must be hello, got {kind or 'nothing'}"
        )
    hello = message.hello
    if not hello.name:
        raise InvalidArgument("hello.name must not be empty")
    if not NAME_RE.match(hello.name):
        raise InvalidArgument(
            f"hello.name {_short(hello.name)!r}: use letters, digits, '.', '_' or '-' (max 63)"
        )
    if not ID_RE.match(hello.drone_id):
        raise InvalidArgument(f"hello.drone_id {_short(hello.drone_id)!r} is not a valid drone id")
    reason = _short(hello.drone_type_reason, 200)
    if hello.drone_type not in DRONE_TYPES:
        # A type of a newer agent: unknown here (never rebooted), not a refusal.
        reason = f"drone type {hello.drone_type} is unknown to this controller" + (
            f" ({reason})" if reason else ""
        )
    interval = hello.heartbeat_interval_ms or 1000
    if not MIN_INTERVAL_MS <= interval <= MAX_INTERVAL_MS:
        raise InvalidArgument(f"hello.heartbeat_interval_ms must be {MIN_INTERVAL_MS}..{MAX_INTERVAL_MS}")
    return HelloData(
        drone_id=hello.drone_id,
        name=hello.name,
        cores=hello.cores,
        drone_type=DRONE_TYPES.get(hello.drone_type, "unknown"),
        network=_short(hello.network, 64),
        agent_version=_short(hello.agent_version, 64),
        heartbeat_interval_ms=interval,
        hostname=_short(hello.hostname, 255),
        payload_version=_short(hello.payload_version, 64),
        current_job_id=_short(hello.current_job_id, 64),
        instance_id=_short(hello.instance_id, 64),
        process_started_at=hello.process_started_at_unix_ns / 1e9
        if hello.process_started_at_unix_ns > 0
        else None,
        drone_type_reason=reason,
        protocol_revision=hello.protocol_revision or 1,
        features=read_features(printable(f) for f in hello.features),
        payloads=read_payload_versions(hello.payloads),
    )


def read_payload_versions(versions: Any) -> tuple[PayloadVersionData, ...]:
    """Hello.payloads as kept: known kinds only, once each (the first), a
    sha256 only when it looks like one."""
    kept: dict[str, PayloadVersionData] = {}
    for v in versions[: len(KINDS) * 4]:
        if v.kind in KINDS and v.kind not in kept:
            sha = v.sha256 if SHA256_RE.fullmatch(v.sha256) else ""
            kept[v.kind] = PayloadVersionData(v.kind, min(v.version, MAX_BYTES), sha)
    return tuple(kept.values())


PAYLOAD_STATES = {
    payload_pb2.PayloadStatus.WAITING: "waiting",
    payload_pb2.PayloadStatus.FETCHING: "fetching",
    payload_pb2.PayloadStatus.APPLIED: "applied",
    payload_pb2.PayloadStatus.REFUSED: "refused",
    payload_pb2.PayloadStatus.FAILED: "failed",
    payload_pb2.PayloadStatus.ROLLED_BACK: "rolled_back",
}


def read_payload_status(status: payload_pb2.PayloadStatus) -> PayloadStatusData | None:
    """None for a state this controller does not know or a kind it does not deploy."""
    state = PAYLOAD_STATES.get(status.state)
    if state is None or status.kind not in KINDS:
        return None
    return PayloadStatusData(
        status.kind,
        min(status.version, MAX_BYTES),
        state,
        _short(status.reason, 500),
        printable(status.deploy_id, 32),
    )


def apply_payload(meta: bytes, signature: bytes, confirm_within_s: int) -> gateway_pb2.ControllerMessage:
    """Ask an agent to apply a payload: ``meta`` is a serialized PayloadMeta
    exactly as signed (payloadsvc.sign_offer), ``signature`` its signature."""
    return gateway_pb2.ControllerMessage(
        apply_payload=payload_pb2.ApplyPayload(
            meta=meta, signature=signature, confirm_within_s=confirm_within_s
        )
    )


def _figure(value: float, top: float = math.inf) -> float:
    """A figure as a drone reported it, as the controller keeps it: a NaN or an
    infinity (which no database column and no JSON reader takes) or a negative
    value is 0, and a share is at most 100."""
    if not math.isfinite(value) or value < 0:
        return 0.0
    return min(value, top)


def read_heartbeat(hb: fleet_pb2.Heartbeat) -> HeartbeatData:
    """The figures as kept (``_figure``). This runs for every heartbeat of
    every drone: a figure within its range is taken without a call."""
    load1, load5, load15 = hb.load1, hb.load5, hb.load15
    cpu, memory, disk = hb.cpu_percent, hb.memory_percent, hb.disk_percent
    free, job = hb.disk_free_bytes, hb.current_job_id
    return HeartbeatData(
        load1 if 0.0 <= load1 < INF else _figure(load1),
        load5 if 0.0 <= load5 < INF else _figure(load5),
        load15 if 0.0 <= load15 < INF else _figure(load15),
        cpu if 0.0 <= cpu <= 100.0 else _figure(cpu, 100.0),
        memory if 0.0 <= memory <= 100.0 else _figure(memory, 100.0),
        disk if 0.0 <= disk <= 100.0 else _figure(disk, 100.0),
        free if free <= MAX_BYTES else MAX_BYTES,
        hb.emerge_running,
        printable(job, 64) if job else "",
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# A scalar field's wire type and what its value looks like on the wire (a
# varint is at most ten bytes).
_F = FieldDescriptor
_FIXED64 = (_F.TYPE_DOUBLE, _F.TYPE_FIXED64, _F.TYPE_SFIXED64)
_FIXED32 = (_F.TYPE_FLOAT, _F.TYPE_FIXED32, _F.TYPE_SFIXED32)
_VARINTS = (_F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_UINT32, _F.TYPE_UINT64, _F.TYPE_BOOL, _F.TYPE_ENUM)
_VARINT = rb"[\x80-\xff]{0,9}+[\x00-\x7f]"


def _scalars_pattern(fields: Iterable[tuple[int, int]]) -> re.Pattern[bytes]:
    """The bytes of a message that holds nothing but its scalar fields (of
    ``fields``: number and type, repeated ones left out), each at most once
    and in the order of their numbers (as protobuf writes them): a field of
    another kind (a string, a message), one this controller does not know,
    or one out of order does not match."""
    parts = []
    for number, kind in sorted(fields):
        if kind in _FIXED64:
            wire, value = 1, rb".{8}"
        elif kind in _FIXED32:
            wire, value = 5, rb".{4}"
        elif kind in _VARINTS:
            wire, value = 0, _VARINT
        else:
            continue
        parts.append(rb"(?:" + re.escape(_varint(number << 3 | wire)) + value + rb")?+")
    return re.compile(b"".join(parts), re.DOTALL)


_HEARTBEAT_TAG = _varint(gateway_pb2.AgentMessage.HEARTBEAT_FIELD_NUMBER << 3 | 2)[0]
_PLAIN_HEARTBEAT = _scalars_pattern(
    (f.number, f.type) for f in fleet_pb2.Heartbeat.DESCRIPTOR.fields if not f.is_repeated
).fullmatch


def plain_heartbeat(raw: bytes) -> bool:
    """Whether ``raw`` is an AgentMessage that holds a heartbeat and nothing
    but its figures: no pong, no job id, no field this controller does not
    know. Nearly every message is one, and this tells from the bytes
    without an object (0.4 us here, where parsing and asking the message
    took 0.7, and about 0.9 against 1.3 inside a controller at 2,000
    drones); anything else is for the parser. Its figures are read from the same
    bytes when asked for (``read_heartbeat_bytes``)."""
    return (
        len(raw) >= 2
        and raw[0] == _HEARTBEAT_TAG
        and raw[1] == len(raw) - 2
        and _PLAIN_HEARTBEAT(raw, 2) is not None
    )


def read_heartbeat_bytes(raw: bytes) -> HeartbeatData:
    """The figures of an AgentMessage's heartbeat, from its bytes as they
    came (they parsed once already: the gateway keeps them unread)."""
    return read_heartbeat(gateway_pb2.AgentMessage.FromString(raw).heartbeat)


def read_pong(pong: fleet_pb2.Pong) -> PongData:
    status = pong.status
    return PongData(
        seq=pong.seq,
        sent_at_ns=pong.sent_at_unix_ns,
        emerge_running=status.emerge_running,
        current_job_id=printable(status.current_job_id, 64),
        load1=_figure(status.load1),
        disk_percent=_figure(status.disk_percent, 100.0),
        disk_free_bytes=min(status.disk_free_bytes, MAX_BYTES),
        checks=tuple(
            CheckData(_short(c.name, 32), c.ok, _short(c.detail, 300))
            for c in status.checks[:MAX_CHECKS]
            if c.name
        ),
        held_ns=max(0, pong.held_ns),
    )


def welcome(drone_id: str) -> gateway_pb2.ControllerMessage:
    return gateway_pb2.ControllerMessage(
        welcome=fleet_pb2.Welcome(
            drone_id=drone_id,
            server_time_unix_ns=time.time_ns(),
            controller_version=__version__,
            protocol_revision=PROTOCOL_REVISION,
            features=CONTROLLER_FEATURES,
        )
    )


def ping(seq: int, sent_at_ns: int, answer_within_ms: int = 0) -> gateway_pb2.ControllerMessage:
    return gateway_pb2.ControllerMessage(
        ping=fleet_pb2.Ping(seq=seq, sent_at_unix_ns=sent_at_ns, answer_within_ms=answer_within_ms)
    )


BUILD_EVENT_KINDS = {
    build_pb2.BuildEvent.STARTED: "started",
    build_pb2.BuildEvent.SUCCEEDED: "succeeded",
    build_pb2.BuildEvent.FAILED: "failed",
    build_pb2.BuildEvent.REFUSED: "refused",
    build_pb2.BuildEvent.CANCELLED: "cancelled",
}


def read_build_event(event: build_pb2.BuildEvent) -> BuildEventData | None:
    """None for an event of a kind this controller does not know."""
    kind = BUILD_EVENT_KINDS.get(event.kind)
    if kind is None:
        return None
    return BuildEventData(
        printable(event.build_id, 64),
        printable(event.job_id, 64),
        kind,
        event.exit_code,
        printable(event.reason, 4000, keep="\n\t"),
        max(0.0, event.duration_s),
        tuple(printable(a, 255) for a in event.artifacts[:16]),
    )


def recent_builds(hello: fleet_pb2.Hello) -> list[BuildEventData]:
    return [e for e in (read_build_event(b) for b in hello.recent_builds[:64]) if e is not None]


def start_build(
    job_id: str,
    build_id: str,
    cpv: str,
    timeout_s: int,
    binhost_url: str,
    test_build: bool = False,
    env: Mapping[str, str] | None = None,
) -> gateway_pb2.ControllerMessage:
    return gateway_pb2.ControllerMessage(
        start_build=build_pb2.StartBuild(
            job_id=job_id,
            build_id=build_id,
            cpv=cpv,
            timeout_s=timeout_s,
            binhost_url=binhost_url,
            test_build=test_build,
            env=env or {},
        )
    )


def cancel_build(build_id: str, reason: str) -> gateway_pb2.ControllerMessage:
    return gateway_pb2.ControllerMessage(cancel_build=build_pb2.CancelBuild(build_id=build_id, reason=reason))


def restart_service(reason: str) -> gateway_pb2.ControllerMessage:
    """Ask an agent to replace its process with a fresh one (Link.restart_service)."""
    return gateway_pb2.ControllerMessage(restart_service=fleet_pb2.RestartService(reason=reason[:500]))


def duplicate_drone(
    instance_id: str, peer: str, hostname: str, refused_at: float
) -> gateway_pb2.ControllerMessage:
    """Tell the agent in place that another process with its drone id was refused."""
    return gateway_pb2.ControllerMessage(
        duplicate_drone=fleet_pb2.DuplicateDrone(
            instance_id=instance_id,
            peer=peer,
            hostname=hostname,
            refused_at_unix_ns=int(refused_at * 1e9),
        )
    )


def logged_message(direction: str, raw: bytes) -> dict[str, Any]:
    """A message the protocol log kept (its bytes, protolog.py) as its fields, for JSON."""
    kind = gateway_pb2.AgentMessage if direction == IN else gateway_pb2.ControllerMessage
    return MessageToDict(kind.FromString(raw), preserving_proto_field_name=True)
