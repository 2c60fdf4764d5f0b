"""What the web tiers may use of the running controller."""

from __future__ import annotations

from dataclasses import dataclass

from swarm.controller.config import ControllerConfig
from swarm.controller.events import EventLog
from swarm.controller.fleet import Fleet
from swarm.controller.protolog import ProtocolLog
from swarm.controller.store.runner import StoreRunner
from swarm.controller.trust import Trust


@dataclass(frozen=True, slots=True)
class Services:
    config: ControllerConfig
    fleet: Fleet
    events: EventLog
    protolog: ProtocolLog
    runner: StoreRunner
    started_at: float
    backend: str
    trust: Trust | None
    grpc_port: int
    enroll_port: int | None
