"""Prometheus metrics of one controller, served at ``/metrics`` (web/metrics.py).

Each controller has a registry of its own, not prometheus-client's global
one: several controllers in one process (tests) do not collide, and what
other libraries register globally does not leak into the answer.

Two kinds of figures:

- Read when scraped (``LiveCollector``): drones by status, heartbeat ages,
  jobs and sessions by state, open incidents, shell sessions, websocket
  clients, gRPC streams, the database's queue. They come from state the
  components keep anyway, so the heartbeat path pays nothing for them.
- Observed where the event happens (``Metrics``): ping round trips,
  dispatch latency, build durations, heal actions, incidents opened,
  event-loop lag, database write latency. Each is one ``observe`` or
  ``inc`` (a lock and a bisect), none of them per heartbeat.

The README's "Metrics" section lists every name with its type and meaning;
tests/test_metrics.py scrapes them with prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
import gzip as gzip_module
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric

from swarm import __version__
from swarm.controller.errors import Unavailable
from swarm.tasks import TaskSet

if TYPE_CHECKING:
    from swarm.controller.builds import BuildQueue
    from swarm.controller.fleet import Fleet
    from swarm.controller.gateway import Gateway
    from swarm.controller.healer import Healer
    from swarm.controller.shells import ShellRegistry
    from swarm.controller.store.runner import StoreRunner

log = logging.getLogger(__name__)

# How often the event loop's lag is measured: a sleep this long, and by how much it overshot.
LAG_INTERVAL = 0.5
# Store calls that only read. Every other call the runner reports is a write:
# a method such as upsert_nodes, the health probe's small write, or a
# function writing several tables in one transaction (builds.py).
READS = ("list_", "get_", "count_", "max_", "schema_version", "open", "close", "describe")

STATUSES = ("online", "unhealthy", "suspect", "offline")  # fleet.STATUSES
HOLDS = ("draining", "grounded")
JOB_STATES = ("queued", "blocked", "assigned", "building", "done", "failed", "cancelled")  # scheduler
SESSION_STATES = ("running", "paused", "stopped", "complete")  # builds.SESSION_STATES
SHELL_STATES = ("opening", "attached", "detached", "closing")  # live ones (shells.ShellInfo.state)
HEAL_STEPS = ("restart", "hard_restart", "reboot", "alert")
HEAL_RESULTS = ("ok", "failed", "skipped")
INCIDENT_KINDS = ("offline", "suspect", "unhealthy")

RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DISPATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BUILD_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DB_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def heal_result(done: bool, failed: bool) -> str:
    """A heal action's result label: ``skipped`` (it did not run: no SSH
    target, a bare-metal drone, a full control stream), ``failed`` (its
    command failed or could not be run), else ``ok`` (it ran; whether the
    drone comes back is the incident's outcome)."""
    if not done:
        return "skipped"
    return "failed" if failed else "ok"


class Metrics:
    """The registry and the figures observed where their events happen.
    ``start``/``stop`` run the event-loop lag probe and the thread that
    renders scrapes."""

    def __init__(self, lag_interval: float = LAG_INTERVAL) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.ping_rtt = Histogram(
            "swarm_ping_rtt_seconds",
            "Round trip of the controller's pings over the drones' control streams",
            buckets=RTT_BUCKETS,
            registry=registry,
        )
        self.dispatch_latency = Histogram(
            "swarm_dispatch_latency_seconds",
            "From a job becoming ready to its StartBuild being sent to a drone",
            buckets=DISPATCH_BUCKETS,
            registry=registry,
        )
        self.build_duration = Histogram(
            "swarm_build_duration_seconds",
            "Build attempts from their start on a drone to their end, by result "
            "(done, failed, cancelled, refused, lost)",
            ["result"],
            buckets=BUILD_BUCKETS,
            registry=registry,
        )
        self.heal_actions = Counter(
            "swarm_heal_actions_total",
            "Healing actions taken (the ladder's and admins'), by step and result",
            ["step", "result"],
            registry=registry,
        )
        self.incidents = Counter(
            "swarm_incidents_total",
            "Incidents opened (a drone became sick), by the status that opened them",
            ["kind"],
            registry=registry,
        )
        self.loop_lag = Histogram(
            "swarm_event_loop_lag_seconds",
            f"How much later than asked the event loop woke from a {lag_interval:g} s sleep",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.db_write = Histogram(
            "swarm_db_write_duration_seconds",
            "Database writes that completed, on the database thread, by operation",
            ["operation"],
            buckets=DB_BUCKETS,
            registry=registry,
        )
        # Every label value known up front, so a rate() sees the first one.
        for step in HEAL_STEPS:
            for result in HEAL_RESULTS:
                self.heal_actions.labels(step, result)
        for kind in INCIDENT_KINDS:
            self.incidents.labels(kind)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self._lag_interval = lag_interval
        self._tasks = TaskSet("metrics")
        # Renders scrapes off the event loop; one thread, from start to stop.
        self._renderer: ThreadPoolExecutor | None = None

    def watch(self, collector: LiveCollector) -> None:
        self.registry.register(collector)

    async def scrape(self, accept: str, accept_encoding: str) -> tuple[bytes, dict[str, str]]:
        """The exposition for a scraper's Accept and Accept-Encoding: its body
        and headers. The figures are collected on the event loop, where the
        state they read lives (a few ms for 2,000 drones); rendering them,
        most of the work, runs in a thread (bench/metrics.py)."""
        if self._renderer is None:
            raise Unavailable("metrics are not served while the controller starts or stops")
        encoder, content_type = choose_encoder(accept)
        collected = Collected(list(self.registry.collect()))
        gzip = gzip_accepted(accept_encoding)
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(self._renderer, _render, encoder, collected, gzip)
        headers = {"Content-Type": content_type}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        return body, headers

    def heal_action(self, step: str, result: str) -> None:
        self.heal_actions.labels(step.replace(" ", "_"), result).inc()

    def store_call(self, operation: str, seconds: float) -> None:
        """StoreRunner's timing hook; runs on the database thread (the client's metrics are thread-safe)."""
        if not operation.startswith(READS):
            self.db_write.labels(operation).observe(seconds)

    async def start(self) -> None:
        self._renderer = ThreadPoolExecutor(1, thread_name_prefix="swarm-metrics")
        # Its thread now, not at the first scrape: it belongs to the controller's lifetime.
        await asyncio.wrap_future(self._renderer.submit(lambda: None))
        self._tasks.spawn(self._measure_lag(), "loop-lag")

    async def stop(self) -> None:
        await self._tasks.close()
        if self._renderer is not None:
            # A render in progress ends by itself (it never waits on anything).
            self._renderer.shutdown(wait=False, cancel_futures=True)
            self._renderer = None

    async def _measure_lag(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._lag_interval
        while True:
            start = loop.time()
            await asyncio.sleep(interval)
            self.loop_lag.observe(max(0.0, loop.time() - start - interval))


# name -> (help, labels) of the figures read when scraped.
LIVE = {
    "swarm_drones": ("Drones the controller knows, by status", ("status",)),
    "swarm_drones_held": ("Drones held out of dispatch by an admin or the circuit breaker", ("hold",)),
    "swarm_drone_heartbeat_age_seconds": (
        "Seconds since each connected drone's latest heartbeat",
        ("drone", "drone_id"),
    ),
    "swarm_jobs": ("Build jobs in memory (unfinished sessions and recent ones), by state", ("state",)),
    "swarm_build_sessions": ("Build sessions in memory, by state", ("state",)),
    "swarm_incidents_open": ("Incidents not recovered yet", ()),
    "swarm_healing_paused": ("1 while an admin has paused healing", ()),
    "swarm_healing_fleet_dark": ("1 while most of the fleet went dark at once and healing holds", ()),
    "swarm_shell_sessions": ("Live terminal sessions, by state", ("state",)),
    "swarm_websocket_clients": ("Open websockets on the admin tier, by endpoint", ("endpoint",)),
    "swarm_grpc_streams": (
        "Open gRPC streams from drones: control (past Hello), channel (shell, logs, exec), "
        "waiting (not past Hello or Attach yet)",
        ("kind",),
    ),
    "swarm_db_calls_waiting": ("Database calls queued behind the one running", ()),
    "swarm_db_failing": ("1 while the database is lost or refuses writes", ()),
    "swarm_controller_start_time_seconds": ("When the controller started, in Unix time", ()),
}


class LiveCollector:
    """Gauges read from the components when scraped, on the event loop (the
    web handler runs there), so they see a consistent state. ``builds``,
    ``healer`` and ``websockets`` are set once those exist."""

    def __init__(
        self,
        fleet: Fleet,
        gateway: Gateway,
        runner: StoreRunner,
        shells: ShellRegistry,
        *,
        started_at: float,
        database: str,
    ) -> None:
        self.fleet = fleet
        self.gateway = gateway
        self.runner = runner
        self.shells = shells
        self.started_at = started_at
        self.database = database
        self.builds: BuildQueue | None = None
        self.healer: Healer | None = None
        self.websockets: Callable[[], Mapping[str, int]] | None = None

    def describe(self) -> Iterator[Metric]:
        """The names, for the registry's check against duplicates."""
        yield InfoMetricFamily("swarm_controller", "")
        for name, (doc, labels) in LIVE.items():
            yield GaugeMetricFamily(name, doc, labels=labels)

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("swarm_controller", "The controller's version and database backend")
        info.add_metric([], {"version": __version__, "database": self.database})
        yield info
        yield self._one("swarm_controller_start_time_seconds", self.started_at)
        yield from self._drones()
        yield from self._builds()
        yield from self._healing()
        yield self._labelled("swarm_shell_sessions", _count(SHELL_STATES, self._shell_states()))
        yield self._labelled("swarm_websocket_clients", dict(self.websockets() if self.websockets else {}))
        bounds = self.gateway.bounds
        streams = {
            "control": len(self.gateway.sessions),
            "channel": bounds.channels.held_total,
            "waiting": bounds.pending.held_total,
        }
        yield self._labelled("swarm_grpc_streams", streams)
        store = self.runner.status()
        yield self._one("swarm_db_calls_waiting", store.waiting)
        yield self._one("swarm_db_failing", store.failure is not None)

    def _drones(self) -> Iterator[Metric]:
        now = time.time()
        yield self._labelled("swarm_drones", self.fleet.counts())
        ages = self._family("swarm_drone_heartbeat_age_seconds")
        for state in self.fleet.connected():
            if state.last_heartbeat_at is not None:
                ages.add_metric([state.name, state.id], max(0.0, now - state.last_heartbeat_at))
        yield ages
        builds = self.builds
        held = dict.fromkeys(HOLDS, 0)
        if builds is not None:
            held["draining"] = len(builds.draining)
            planner = builds.planner
            held["grounded"] = sum(planner.grounded(drone_id, now) for drone_id in planner.breakers)
        yield self._labelled("swarm_drones_held", held)

    def _builds(self) -> Iterator[Metric]:
        builds = self.builds
        jobs = (j.state for j in builds.jobs.values()) if builds is not None else ()
        sessions = (s.state for s in builds.sessions.values()) if builds is not None else ()
        yield self._labelled("swarm_jobs", _count(JOB_STATES, jobs))
        yield self._labelled("swarm_build_sessions", _count(SESSION_STATES, sessions))

    def _healing(self) -> Iterator[Metric]:
        healer = self.healer
        yield self._one("swarm_incidents_open", healer.open_incidents() if healer is not None else 0)
        yield self._one("swarm_healing_paused", healer is not None and healer.paused)
        yield self._one("swarm_healing_fleet_dark", healer is not None and healer.dark)

    def _shell_states(self) -> Iterator[str]:
        return (s.state for s in self.shells.sessions() if s.state != "closed")

    @staticmethod
    def _family(name: str) -> GaugeMetricFamily:
        doc, labels = LIVE[name]
        return GaugeMetricFamily(name, doc, labels=labels)

    def _one(self, name: str, value: float) -> GaugeMetricFamily:
        family = self._family(name)
        family.add_metric([], float(value))
        return family

    def _labelled(self, name: str, values: Mapping[str, int]) -> GaugeMetricFamily:
        family = self._family(name)
        for label, value in values.items():
            family.add_metric([label], value)
        return family


class Collected:
    """Figures collected already, for an encoder to render elsewhere."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def _render(encoder: Callable[[Collected], bytes], collected: Collected, gzip: bool) -> bytes:
    body = encoder(collected)
    return gzip_module.compress(body) if gzip else body


def _count(known: Iterable[str], values: Iterable[str]) -> dict[str, int]:
    """How often each value occurs, every known one included (as 0)."""
    counts = dict.fromkeys(known, 0)
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts
