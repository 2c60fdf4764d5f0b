"""What the web tiers may use of the running controller."""

from __future__ import annotations

from dataclasses import dataclass

from swarm.clock import SYSTEM, Clock
from swarm.controller.binhosts import BinhostTargets, MirrorsAPI
from swarm.controller.builds import BuildQueue
from swarm.controller.buildsvc import BuildsService
from swarm.controller.channels import Channels
from swarm.controller.config import ControllerConfig
from swarm.controller.events import EventLog
from swarm.controller.execs import Execs
from swarm.controller.fleet import Fleet
from swarm.controller.healer import Healer
from swarm.controller.metrics import Metrics
from swarm.controller.payloads import Payloads
from swarm.controller.pinger import Pinger
from swarm.controller.protolog import ProtocolLog
from swarm.controller.release_schedule import ReleaseSchedule
from swarm.controller.releases import Releases
from swarm.controller.selfcheck import SelfCheck
from swarm.controller.shells import ShellRegistry
from swarm.controller.staging import StagingBinhost
from swarm.controller.store.runner import StoreRunner, StoreStatus
from swarm.controller.testbuilds import TestBuilds
from swarm.controller.testrunner import TestRunner
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
    builds: BuildQueue | None = None
    staging: StagingBinhost | None = None
    build_logs: BuildsService | None = None
    healer: Healer | None = None
    pinger: Pinger | None = None
    shells: ShellRegistry | None = None
    channels: Channels | None = None
    execs: Execs | None = None
    selfcheck: SelfCheck | None = None
    metrics: Metrics | None = None
    releases: Releases | None = None  # with builds on (a staging binhost to cut from)
    release_schedule: ReleaseSchedule | None = None  # with --release-schedule
    binhosts: BinhostTargets | None = None  # always, once started (None only in tests that build Services)
    mirrors: MirrorsAPI | None = None  # the mirror pusher, with releases on
    testbuilds: TestBuilds | None = None  # with builds on (Portage resolves their atoms)
    payloads: Payloads | None = None  # with mTLS (not --insecure): the drones pin its key at enrollment
    testrunner: TestRunner | None = None  # with builds on: runs them, serves their logs and packages
    clock: Clock = SYSTEM  # the controller's (tests hand it a manual one)

    def store_status(self) -> StoreStatus:
        """The database thread as the store runner sees it (from memory)."""
        return self.runner.status()
