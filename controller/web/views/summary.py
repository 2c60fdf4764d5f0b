"""The controller's health and the swarm summary as views, from the
running services (memory only: these answer whatever the database does)."""

from __future__ import annotations

import dataclasses

from swarm import __version__
from swarm.clock import iso
from swarm.controller.selfcheck import SelfHealth
from swarm.controller.services import Services
from swarm.controller.web.views.builds import session_view
from swarm.controller.web.views.status import (
    AdminHealthView,
    AdminStatusView,
    ControllerView,
    DiskView,
    DroneCounts,
    DroneTotals,
    EventBacklogView,
    FleetFiguresView,
    HealingHeldView,
    HealthView,
    StatusView,
    StoreFailureView,
    StoreView,
    health_reasons,
)


def _health_fields(s: Services, *, admin: bool) -> dict[str, object]:
    own = s.selfcheck.health if s.selfcheck is not None else SelfHealth()
    figures = s.healer.figures() if s.healer is not None else None
    return {
        "status": own.status,
        "reasons": health_reasons(own, admin=admin),
        "checked_at": iso(own.checked_at),
        "version": __version__,
        "uptime_s": round(s.clock.time() - s.started_at, 3),
        "database": s.backend,
        "drones": DroneCounts(**s.fleet.counts()),
        "fleet": None if figures is None else FleetFiguresView(**dataclasses.asdict(figures)),
    }


def health_view(s: Services) -> HealthView:
    """The controller's health, from memory only: whatever the database
    does, this answers at once (selfcheck.py looks in the background)."""
    return HealthView(**_health_fields(s, admin=False))  # type: ignore[arg-type]


def admin_health_view(s: Services) -> AdminHealthView:
    """The public health and what lies behind it (/admin/api/health): the
    reasons keep the details (the driver's words, the data path), the
    database runner's state, the event backlog, the data disk."""
    store = s.store_status()
    failure = store.failure
    own = s.selfcheck
    disk = own.health.disk if own is not None else None
    return AdminHealthView(
        **_health_fields(s, admin=True),  # type: ignore[arg-type]
        store=StoreView(
            failure=None
            if failure is None
            else StoreFailureView(failure.message, failure.lost, iso(failure.at), iso(failure.last_at)),
            busy_s=round(store.busy_for, 3),
            waiting=store.waiting,
        ),
        events=EventBacklogView(s.events.pending, s.events.pending_limit, s.events.dropped),
        disk=None
        if disk is None or own is None
        else DiskView(
            path=disk.path,
            free_mb=round(disk.free / 2**20, 1),
            total_mb=round(disk.total / 2**20, 1),
            min_free_mb=round(own.settings.disk_min_free / 2**20, 1),
        ),
    )


def _status_fields(s: Services) -> dict[str, object]:
    counts = s.fleet.counts()
    online = [d for d in s.fleet.all() if d.connected]
    current = s.builds.latest_session() if s.builds is not None else None
    return {
        "controller": ControllerView(__version__, iso(s.started_at), round(s.clock.time() - s.started_at, 3)),
        "drones": DroneTotals(**counts, total=len(s.fleet)),
        "cores_online": sum(d.cores for d in online),
        "emerge_running": len([d for d in online if d.emerge_running]),
        "session": None if s.builds is None or current is None else session_view(s.builds, current),
        "last_event_id": s.events.last_id,
    }


def status_view(s: Services) -> StatusView:
    """The swarm summary (also the start of the admin tier's /admin/api/status)."""
    return StatusView(**_status_fields(s))  # type: ignore[arg-type]


def admin_status_view(s: Services) -> AdminStatusView:
    held = None if s.healer is None else HealingHeldView(s.healer.paused, s.healer.dark)
    return AdminStatusView(**_status_fields(s), healing=held)  # type: ignore[arg-type]
