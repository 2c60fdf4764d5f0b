"""The controller's one place where protobuf messages are read and built."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from swarm import __version__
from swarm.controller.errors import FailedPrecondition, InvalidArgument
from swarm.printable import printable
from swarm.protocol import CONTROLLER_FEATURES, PROTOCOL_REVISION, read_features
from swarm.v1 import build_pb2, fleet_pb2, gateway_pb2

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
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


@dataclass(frozen=True, slots=True)
class HelloData:
    drone_id: str
    name: str
    cores: int
    drone_type: str
    network: str
    agent_version: str
    heartbeat_interval_ms: int
    hostname: str
    payload_version: str
    current_job_id: str
    instance_id: str = ""  # random per agent process; "" from an agent that predates it
    process_started_at: float | None = None  # seconds since the epoch
    drone_type_reason: str = ""  # the agent's evidence for drone_type; "" from older agents
    protocol_revision: int = PROTOCOL_REVISION  # 0 on the wire (an older agent) reads as 1
    features: tuple[str, ...] = ()  # what the agent speaks (swarm.protocol); () from older agents


@dataclass(frozen=True, slots=True)
class CheckData:
    """One functional check as the agent reported it (fleet.proto Check)."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class HeartbeatData:
    seq: int
    sent_at: float
    load1: float
    load5: float
    load15: float
    cpu_percent: float
    memory_percent: float
    disk_percent: float
    disk_free_bytes: int
    emerge_running: bool
    current_job_id: str


@dataclass(frozen=True, slots=True)
class PongData:
    seq: int
    sent_at_ns: int
    emerge_running: bool
    current_job_id: str
    load1: float
    disk_percent: float
    disk_free_bytes: int
    checks: tuple[CheckData, ...] = ()


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
    )


def _figure(value: float, top: float = math.inf) -> float:
    """A figure as a drone reported it, as the controller keeps it: a NaN or an
    infinity (which no database column and no JSON reader takes) or a negative
    value is 0, and a share is at most 100."""
    if not math.isfinite(value) or value < 0:
        return 0.0
    return min(value, top)


def read_heartbeat(hb: fleet_pb2.Heartbeat) -> HeartbeatData:
    return HeartbeatData(
        seq=hb.seq,
        sent_at=hb.sent_at_unix_ns / 1e9,
        load1=_figure(hb.load1),
        load5=_figure(hb.load5),
        load15=_figure(hb.load15),
        cpu_percent=_figure(hb.cpu_percent, 100.0),
        memory_percent=_figure(hb.memory_percent, 100.0),
        disk_percent=_figure(hb.disk_percent, 100.0),
        disk_free_bytes=min(hb.disk_free_bytes, MAX_BYTES),
        emerge_running=hb.emerge_running,
        current_job_id=printable(hb.current_job_id, 64),
    )


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


def ping(seq: int, sent_at_ns: int) -> gateway_pb2.ControllerMessage:
    return gateway_pb2.ControllerMessage(ping=fleet_pb2.Ping(seq=seq, sent_at_unix_ns=sent_at_ns))


BUILD_EVENT_KINDS = {
    build_pb2.BuildEvent.STARTED: "started",
    build_pb2.BuildEvent.SUCCEEDED: "succeeded",
    build_pb2.BuildEvent.FAILED: "failed",
    build_pb2.BuildEvent.REFUSED: "refused",
    build_pb2.BuildEvent.CANCELLED: "cancelled",
}


@dataclass(frozen=True, slots=True)
class BuildEventData:
    build_id: str
    job_id: str
    kind: str
    exit_code: int
    reason: str
    duration: float
    artifacts: tuple[str, ...]


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
    job_id: str, build_id: str, cpv: str, timeout_s: int, binhost_url: str
) -> gateway_pb2.ControllerMessage:
    return gateway_pb2.ControllerMessage(
        start_build=build_pb2.StartBuild(
            job_id=job_id, build_id=build_id, cpv=cpv, timeout_s=timeout_s, binhost_url=binhost_url
        )
    )


def cancel_build(build_id: str, reason: str) -> gateway_pb2.ControllerMessage:
    return gateway_pb2.ControllerMessage(cancel_build=build_pb2.CancelBuild(build_id=build_id, reason=reason))


def restart_service(reason: str) -> gateway_pb2.ControllerMessage:
    """Ask an agent to replace its process with a fresh one (send with DroneState.link.send)."""
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
