"""Views of drones: their live state (public and admin), dispatch, pings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from swarm.clock import iso
from swarm.controller.builds import DispatchState
from swarm.controller.fleet import DroneState
from swarm.controller.web.views.base import Doc, Range, Timestamp

Status = Literal["online", "unhealthy", "suspect", "offline"]
DroneType = Literal["lxc", "qemu", "bare-metal", "unknown"]
Percent = Annotated[float, Range(0, 100)]


@dataclass(frozen=True, slots=True)
class CheckView:
    """A functional check from the drone's latest pong."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class DispatchView:
    """Whether the drone gets work."""

    draining: Annotated[bool, Doc("finishes its jobs, gets no new one")]
    grounded: Annotated[bool, Doc("gets no job (an admin, or its circuit breaker)")]
    grounded_until: Timestamp
    running_jobs: Annotated[int, Range(0)]


@dataclass(frozen=True, slots=True)
class AdminDispatchView(DispatchView):
    """Whether the drone gets work, and who decided."""

    drained_by: str | None
    grounded_by: Annotated[str | None, Doc("the admin; null: the circuit breaker")]
    failures: Annotated[int, Doc("failed builds in a row"), Range(0)]
    held_for_payload: Annotated[
        str | None,
        Doc(
            "why it gets no new build meanwhile: the payload it is to take, its deploy and who "
            "asked (a rollout's catch-up for a drone that came back behind); null: not held"
        ),
    ]


def public_dispatch_view(d: DispatchState) -> DispatchView:
    return DispatchView(d.draining, d.grounded, iso(d.grounded_until), d.running)


def admin_dispatch_view(d: DispatchState) -> AdminDispatchView:
    return AdminDispatchView(
        d.draining,
        d.grounded,
        iso(d.grounded_until),
        d.running,
        d.drained_by,
        d.grounded_by,
        d.failures,
        d.held_for_payload or None,
    )


@dataclass(frozen=True, slots=True)
class DroneFields:
    """A drone's identity and its latest heartbeat, as both tiers show them."""

    id: str
    name: str
    status: Status
    connected: bool
    drone_type: Annotated[DroneType, Doc("what the agent reports (an admin's access type wins for healing)")]
    drone_type_reason: Annotated[str, Doc("the agent's evidence for drone_type")]
    cores: Annotated[int, Range(0)]
    network: str
    hostname: str
    agent_version: str
    protocol_revision: Annotated[
        int | None, Doc("from the agent's Hello (null: not connected since the start)")
    ]
    features: Annotated[tuple[str, ...], Doc("what the agent speaks, from its Hello (docs/protocol.md)")]
    payload_version: str
    heartbeat_interval_ms: Annotated[int, Range(0)]
    first_seen_at: Timestamp
    last_seen_at: Timestamp
    last_heartbeat_at: Timestamp
    last_ping_at: Timestamp
    last_pong_at: Timestamp
    ping_latency_ms: float | None
    phi: Annotated[float | None, Doc("phi-accrual suspicion level (null if not connected)")]
    load1: Annotated[float, Doc("load average over 1 minute")]
    load5: Annotated[float, Doc("load average over 5 minutes")]
    load15: Annotated[float, Doc("load average over 15 minutes")]
    cpu_percent: Percent
    memory_percent: Percent
    disk_percent: Annotated[float, Range(0, 100), Doc("use of the build cache's disk")]
    disk_free_bytes: Annotated[int, Range(0)]
    emerge_running: bool
    current_job_id: str | None


def _fields(state: DroneState, now: float) -> dict[str, Any]:
    detector = state.detector
    return {
        "id": state.id,
        "name": state.name,
        "status": state.status,
        "connected": state.connected,
        "drone_type": state.drone_type,
        "drone_type_reason": state.drone_type_reason,
        "cores": state.cores,
        "network": state.network,
        "hostname": state.hostname,
        "agent_version": state.agent_version,
        "protocol_revision": state.protocol_revision or None,
        "features": tuple(state.features),
        "payload_version": state.payload_version,
        "heartbeat_interval_ms": state.heartbeat_interval_ms,
        "first_seen_at": iso(state.first_seen_at),
        "last_seen_at": iso(state.last_seen_at),
        "last_heartbeat_at": iso(state.last_heartbeat_at),
        "last_ping_at": iso(state.last_ping_at),
        "last_pong_at": iso(state.last_pong_at),
        "ping_latency_ms": state.ping_latency_ms,
        "phi": round(detector.phi(now), 3) if detector is not None and state.connected else None,
        "load1": round(state.load1, 2),
        "load5": round(state.load5, 2),
        "load15": round(state.load15, 2),
        "cpu_percent": round(state.cpu_percent, 1),
        "memory_percent": round(state.memory_percent, 1),
        "disk_percent": round(state.disk_percent, 1),
        "disk_free_bytes": state.disk_free_bytes,
        "emerge_running": state.emerge_running,
        "current_job_id": state.current_job_id or None,
    }


@dataclass(frozen=True, slots=True)
class NodeView(DroneFields):
    """A drone on the public tier, with its proof of life: the functional
    checks of its latest pong and which agent process it is."""

    checks: Annotated[
        tuple[CheckView, ...], Doc("from the latest pong; one not ok makes the drone unhealthy")
    ]
    checks_at: Timestamp
    instance_id: Annotated[str | None, Doc("random per agent process")]
    process_started_at: Timestamp
    dispatch: Annotated[DispatchView | None, Doc("null without builds (no --portage-eprefix)")]


def node_view(state: DroneState, now: float, dispatch: Callable[[str], DispatchView | None]) -> NodeView:
    return NodeView(
        **_fields(state, now),
        checks=tuple(CheckView(c.name, c.ok, c.detail) for c in state.checks),
        checks_at=iso(state.checks_at),
        instance_id=state.instance_id or None,
        process_started_at=iso(state.process_started_at),
        dispatch=dispatch(state.id),
    )


@dataclass(frozen=True, slots=True)
class DroneView(DroneFields):
    """A drone on the admin tier: enrollment, dispatch and out-of-band reach."""

    enrolled: Annotated[bool | None, Doc("holds a certificate (null with --insecure)")]
    dispatch: AdminDispatchView | None
    ssh_access: Annotated[
        Literal["ssh", "local"] | None,
        Doc("how a terminal or command reaches the drone without its agent (via=ssh); null: it cannot"),
    ]


def drone_view(
    state: DroneState,
    now: float,
    enrolled: bool | None,
    dispatch: AdminDispatchView | None,
    ssh_access: Literal["ssh", "local"] | None,
) -> DroneView:
    return DroneView(**_fields(state, now), enrolled=enrolled, dispatch=dispatch, ssh_access=ssh_access)


@dataclass(frozen=True, slots=True)
class NodesView:
    nodes: tuple[NodeView, ...]


@dataclass(frozen=True, slots=True)
class NodeReply:
    node: NodeView


@dataclass(frozen=True, slots=True)
class DronesView:
    drones: tuple[DroneView, ...]


@dataclass(frozen=True, slots=True)
class PingView:
    """A ping answered: its round trip and what the pong said."""

    drone: str
    seq: int
    latency_ms: float | None
    load1: float
    disk_percent: float
    disk_free_bytes: int
    emerge_running: bool
    current_job_id: str
    checks: tuple[CheckView, ...]


@dataclass(frozen=True, slots=True)
class HoldView:
    """A drone drained, undrained, grounded or ungrounded."""

    drone: str
    dispatch: AdminDispatchView | None


@dataclass(frozen=True, slots=True)
class DroneRevokedView:
    drone: str
    certificates: Annotated[int, Doc("certificates revoked"), Range(0)]


@dataclass(frozen=True, slots=True)
class DroneRenamedView:
    drone: str
    name: str
    old_name: str
