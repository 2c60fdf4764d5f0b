"""What drones tell the controller, as its core uses it.

``serde`` reads these from the wire (swarm.v1) and is the only module that
does; the fleet, the healer, the build queue and the web tier take them as
they are, without knowing protobuf. Text in them is already printable and
cut to size, figures finite and within range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from swarm.protocol import PROTOCOL_REVISION

# A drone's name and id, as Hello carries them and as an admin may set the name.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@dataclass(frozen=True, slots=True)
class PayloadVersionData:
    """The version of one payload kind a drone runs (Hello.payloads)."""

    kind: str
    version: int  # 0: nothing deployed (what the drone was installed with)
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class PayloadStatusData:
    """How an ApplyPayload went on a drone (PayloadStatus)."""

    kind: str
    version: int
    state: str  # waiting, fetching, applied, refused, failed, rolled_back
    reason: str
    deploy_id: str


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
    payloads: tuple[PayloadVersionData, ...] = ()  # what it runs of each payload kind; () from older agents


@dataclass(frozen=True, slots=True)
class CheckData:
    """One functional check as the agent reported it (fleet.proto Check)."""

    name: str
    ok: bool
    detail: str


# Not frozen: one is built for every heartbeat of every drone, and a frozen
# dataclass sets each field through object.__setattr__, which made building
# it ten times slower (5 us against 0.6 us). Nobody changes one after serde
# built it: DroneState keeps the latest as it came.
@dataclass(slots=True)
class HeartbeatData:
    """What a drone's latest heartbeat says of it (fleet.proto Heartbeat)."""

    load1: float = 0.0
    load5: float = 0.0
    load15: float = 0.0
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    disk_percent: float = 0.0
    disk_free_bytes: int = 0
    emerge_running: bool = False
    current_job_id: str = ""


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
    # How long the agent held the ping before it answered (a pong riding on a
    # heartbeat): not part of the round trip.
    held_ns: int = 0


@dataclass(frozen=True, slots=True)
class BuildEventData:
    build_id: str
    job_id: str
    kind: str  # started, succeeded, failed, refused or cancelled
    exit_code: int
    reason: str
    duration: float
    artifacts: tuple[str, ...]
