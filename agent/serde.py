"""The agent's one place where protobuf messages are built and read."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from swarm.agent.checks import CheckResult
from swarm.agent.probes import Sample
from swarm.protocol import AGENT_FEATURES, PROTOCOL_REVISION
from swarm.v1 import build_pb2, fleet_pb2, gateway_pb2, payload_pb2

DRONE_TYPES = {
    "unknown": fleet_pb2.DRONE_TYPE_UNKNOWN,
    "lxc": fleet_pb2.DRONE_TYPE_LXC,
    "qemu": fleet_pb2.DRONE_TYPE_QEMU,
    "bare-metal": fleet_pb2.DRONE_TYPE_BARE_METAL,
}


@dataclass(frozen=True, slots=True)
class HelloInfo:
    drone_id: str
    name: str
    cores: int
    drone_type: str
    network: str
    agent_version: str
    heartbeat_interval: float
    hostname: str
    # Random per agent process (the healer knows a restarted agent by it),
    # and when this process (or its program, after a restart by exec) started.
    instance_id: str = ""
    process_started_at_ns: int = 0
    # Why drone_type is what it is: the detection's evidence, or "configured".
    drone_type_reason: str = ""


def hello(
    info: HelloInfo,
    current_job_id: str = "",
    recent: Iterable[build_pb2.BuildEvent] = (),
    payloads: Iterable[tuple[str, int, str]] = (),
) -> gateway_pb2.AgentMessage:
    """Hello; ``payloads``: (kind, version, sha256) of each payload kind the drone runs."""
    message = gateway_pb2.AgentMessage(
        hello=fleet_pb2.Hello(
            drone_id=info.drone_id,
            name=info.name,
            cores=info.cores,
            drone_type=DRONE_TYPES[info.drone_type],
            network=info.network,
            agent_version=info.agent_version,
            heartbeat_interval_ms=round(info.heartbeat_interval * 1000),
            hostname=info.hostname,
            current_job_id=current_job_id,
            instance_id=info.instance_id,
            process_started_at_unix_ns=info.process_started_at_ns,
            drone_type_reason=info.drone_type_reason,
            protocol_revision=PROTOCOL_REVISION,
            features=AGENT_FEATURES,
        )
    )
    message.hello.recent_builds.extend(recent)
    for kind, version, sha256 in payloads:
        message.hello.payloads.add(kind=kind, version=version, sha256=sha256)
        if kind == "agent":
            # For controllers from before Hello.payloads: the agent kind's version, as text.
            message.hello.payload_version = str(version)
    return message


def unverified_meta(raw: bytes) -> payload_pb2.PayloadMeta:
    """What a payload says it is, before (or without) verifying it: only
    to name it in an answer (empty if it does not parse)."""
    meta = payload_pb2.PayloadMeta()
    try:
        meta.ParseFromString(raw)
    except DecodeError:
        meta = payload_pb2.PayloadMeta()
    return meta


def payload_status(
    kind: str, version: int, state: int, reason: str = "", deploy_id: str = ""
) -> gateway_pb2.AgentMessage:
    return gateway_pb2.AgentMessage(
        payload_status=payload_pb2.PayloadStatus(
            kind=kind,
            version=version,
            state=state,  # type: ignore[arg-type]
            reason=reason[:500],
            deploy_id=deploy_id,
        )
    )


def heartbeat(
    seq: int, sample: Sample, current_job_id: str = "", pong: fleet_pb2.Pong | None = None
) -> gateway_pb2.AgentMessage:
    """A heartbeat, with ``pong`` riding on it if a ping is answered here (pong-in-heartbeat)."""
    return gateway_pb2.AgentMessage(
        heartbeat=fleet_pb2.Heartbeat(
            pong=pong,
            seq=seq,
            sent_at_unix_ns=time.time_ns(),
            load1=sample.load1,
            load5=sample.load5,
            load15=sample.load15,
            cpu_percent=sample.cpu_percent,
            memory_percent=sample.memory_percent,
            disk_percent=sample.disk_percent,
            disk_free_bytes=sample.disk_free_bytes,
            emerge_running=sample.emerge_running,
            current_job_id=current_job_id,
        )
    )


def pong_of(
    ping: fleet_pb2.Ping,
    sample: Sample | None,
    current_job_id: str = "",
    checks: Iterable[CheckResult] = (),
    held_ns: int = 0,
) -> fleet_pb2.Pong:
    """The answer to ``ping``: sent as a Pong (``pong``) or in a heartbeat,
    then with how long it was held."""
    status = fleet_pb2.DroneStatus(current_job_id=current_job_id)
    status.checks.extend(fleet_pb2.Check(name=c.name, ok=c.ok, detail=c.detail) for c in checks)
    if sample is not None:
        status.emerge_running = sample.emerge_running
        status.load1 = sample.load1
        status.disk_percent = sample.disk_percent
        status.disk_free_bytes = sample.disk_free_bytes
    return fleet_pb2.Pong(seq=ping.seq, sent_at_unix_ns=ping.sent_at_unix_ns, status=status, held_ns=held_ns)


def pong(
    ping: fleet_pb2.Ping,
    sample: Sample | None,
    current_job_id: str = "",
    checks: Iterable[CheckResult] = (),
) -> gateway_pb2.AgentMessage:
    return gateway_pb2.AgentMessage(pong=pong_of(ping, sample, current_job_id, checks))
