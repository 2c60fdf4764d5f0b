"""Views of the controller's own state: health, the swarm summary, events,
activity and the protocol log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from swarm.clock import iso
from swarm.controller.protolog import ProtocolEntry
from swarm.controller.selfcheck import SelfHealth
from swarm.controller.store.records import EventRecord
from swarm.controller.web.views.base import Doc, Range, Timestamp
from swarm.controller.web.views.builds import SessionView

Count = Annotated[int, Range(0)]
Seconds = Annotated[float, Range(0)]


@dataclass(frozen=True, slots=True)
class HealthReason:
    code: Literal["database_unreachable", "database_stalled", "writes_failing", "disk_low"]
    message: str
    since: Timestamp


@dataclass(frozen=True, slots=True)
class DroneCounts:
    """Drones by status."""

    online: Count
    unhealthy: Count
    suspect: Count
    offline: Count


@dataclass(frozen=True, slots=True)
class FleetFiguresView:
    """Availability and recovery over the last day (healer.FleetFigures)."""

    window_s: Seconds
    availability: Annotated[float | None, Range(0, 1)]
    incidents: Count
    open_incidents: Count
    mttr_s: float | None
    mean_detection_s: float | None
    healing_paused: bool
    fleet_dark: bool


@dataclass(frozen=True, slots=True)
class HealthView:
    """The controller's health, from memory only (200 also when degraded)."""

    status: Literal["ok", "degraded"]
    reasons: Annotated[
        tuple[HealthReason, ...],
        Doc("why degraded (empty when ok); public messages leave out addresses and paths"),
    ]
    checked_at: Annotated[Timestamp, Doc("the latest background check (null before the first)")]
    version: str
    uptime_s: Seconds
    database: Literal["sqlite", "postgresql"]
    drones: DroneCounts
    fleet: Annotated[FleetFiguresView | None, Doc("null until first computed, in the background")]


def health_reasons(own: SelfHealth, *, admin: bool) -> tuple[HealthReason, ...]:
    return tuple(
        HealthReason(p.code, p.message if admin else p.public, iso(p.since))  # type: ignore[arg-type]
        for p in own.problems
    )


@dataclass(frozen=True, slots=True)
class StoreFailureView:
    message: str
    connection_lost: bool
    since: Timestamp
    last_at: Timestamp


@dataclass(frozen=True, slots=True)
class StoreView:
    """The database thread as the store runner sees it."""

    failure: StoreFailureView | None
    busy_s: Annotated[Seconds, Doc("how long the current call has run")]
    waiting: Annotated[Count, Doc("calls queued behind it")]


@dataclass(frozen=True, slots=True)
class EventBacklogView:
    pending: Annotated[Count, Doc("emitted, not written yet")]
    pending_limit: Count
    dropped: Annotated[Count, Doc("never written (backlog full), in all")]


@dataclass(frozen=True, slots=True)
class DiskView:
    path: str
    free_mb: float
    total_mb: float
    min_free_mb: float


@dataclass(frozen=True, slots=True)
class AdminHealthView(HealthView):
    """The public health and what lies behind it."""

    store: StoreView
    events: EventBacklogView
    disk: DiskView | None


@dataclass(frozen=True, slots=True)
class ControllerView:
    version: str
    started_at: Timestamp
    uptime_s: Seconds


@dataclass(frozen=True, slots=True)
class DroneTotals(DroneCounts):
    total: Count


@dataclass(frozen=True, slots=True)
class StatusView:
    """The swarm summary."""

    controller: ControllerView
    drones: DroneTotals
    cores_online: Count
    emerge_running: Annotated[Count, Doc("connected drones running emerge")]
    session: Annotated[SessionView | None, Doc("the session started last")]
    last_event_id: Count


@dataclass(frozen=True, slots=True)
class HealingHeldView:
    paused: bool
    fleet_dark: bool


@dataclass(frozen=True, slots=True)
class AdminStatusView(StatusView):
    healing: Annotated[HealingHeldView | None, Doc("null when the healer does not run")]


@dataclass(frozen=True, slots=True)
class EventView:
    id: int
    ts: Timestamp
    type: str
    message: str
    drone_id: str | None
    drone_name: str | None
    data: dict[str, Any]


def event_view(event: EventRecord) -> EventView:
    return EventView(
        event.id, iso(event.ts), event.type, event.message, event.drone_id, event.drone_name, event.data
    )


@dataclass(frozen=True, slots=True)
class EventsPage:
    events: Annotated[tuple[EventView, ...], Doc("in ascending id order")]
    last_id: Annotated[Count, Doc("the newest event's id, also of events this tier leaves out")]


@dataclass(frozen=True, slots=True)
class BucketView:
    start: Timestamp
    count: Count


@dataclass(frozen=True, slots=True)
class ActivityView:
    window_s: Count
    bucket_s: Seconds
    start: Timestamp
    end: Timestamp
    total: Count
    buckets: tuple[BucketView, ...]


@dataclass(frozen=True, slots=True)
class ProtocolEntryView:
    seq: Count
    ts: Timestamp
    direction: Literal["in", "out"]
    drone_id: str
    type: str
    size: Annotated[Count, Doc("bytes on the wire (protobuf)")]
    latency_ms: Annotated[float | None, Doc("a pong: its ping's round trip")]
    unknown_fields: Annotated[bool, Doc("it carried fields this controller does not know (ignored)")]


def protocol_view(entry: ProtocolEntry) -> ProtocolEntryView:
    return ProtocolEntryView(
        entry.seq,
        iso(entry.ts),
        entry.direction,  # type: ignore[arg-type]
        entry.drone_id,
        entry.type,
        entry.size,
        entry.latency_ms,
        entry.unknown_fields,
    )


@dataclass(frozen=True, slots=True)
class ProtocolPage:
    entries: Annotated[tuple[ProtocolEntryView, ...], Doc("oldest first")]
    last_seq: Count
    unknown_fields: Annotated[
        dict[str, int], Doc("per message type: how many carried fields this controller does not know")
    ]


@dataclass(frozen=True, slots=True)
class ProtocolMessageView(ProtocolEntryView):
    drone: str | None
    message: Annotated[dict[str, Any] | None, Doc("the AgentMessage or ControllerMessage as JSON")]
