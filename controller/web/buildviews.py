"""Whether drones get work, as both web tiers show it; the build queue or a 409."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from swarm.controller.builds import BuildQueue, DispatchState
from swarm.controller.errors import FailedPrecondition
from swarm.controller.services import Services
from swarm.controller.web.views.fleet import (
    AdminDispatchView,
    DispatchView,
    admin_dispatch_view,
    public_dispatch_view,
)

V = TypeVar("V")


def queue_of(services: Services) -> BuildQueue:
    if services.builds is None:
        raise FailedPrecondition("builds are off: start the controller with --portage-eprefix")
    return services.builds


def _dispatch(
    services: Services, now: float, view: Callable[[DispatchState], V]
) -> Callable[[str], V | None]:
    """Whether a drone gets work, by drone id (None without builds), for one
    answer: the fleet's running jobs are counted once for all its drones."""
    queue = services.builds
    if queue is None:
        return lambda drone_id: None
    running = queue.running_by_drone()
    return lambda drone_id: view(queue.dispatch_state(drone_id, now, running))


def public_dispatch(services: Services, now: float) -> Callable[[str], DispatchView | None]:
    return _dispatch(services, now, public_dispatch_view)


def admin_dispatch(services: Services, now: float) -> Callable[[str], AdminDispatchView | None]:
    """Also who drained or grounded a drone, and its failures in a row."""
    return _dispatch(services, now, admin_dispatch_view)
