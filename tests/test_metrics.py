"""/metrics: scraped over HTTP from a real controller and read with
prometheus-client's own parser; the figures follow what happens.

One controller (controller/app.py) runs in this process for the module
(support/inproc.py) with builds on (a controller Portage prefix) and the
unauthenticated --metrics-port listener. Its drones: a real agent process
over real gRPC for the control-stream figures (streams, pings, heartbeats),
and a control stream that only records what it is sent (fakes/links.py)
for what an agent would do with a job or a restart.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import prefix as pfx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics
from prometheus_client.parser import text_string_to_metric_families

from swarm.controller.config import ControllerConfig
from swarm.controller.domain import BuildEventData, HelloData

from fakes.links import FakeLink
from support.inproc import InProcessController
from support.procs import FAST_HEARTBEAT, Agent, http, wait_for

pytestmark = [
    pytest.mark.timeout(60),
    # The controller runs in this process, under pytest's warnings-as-errors:
]

# Prometheus's own Accept header (scrape_protocols, default order).
OPENMETRICS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=underscores;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
BUILDER = "metrics-builder"  # a recording control stream: it is sent jobs and restarts
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Rig:
    proc: InProcessController
    root: Path
    builder: FakeLink

    @property
    def url(self) -> str:
        return self.proc.admin_url + "/metrics"

    @property
    def grpc_target(self) -> str:
        ports = self.proc.controller.ports
        assert ports is not None
        return f"127.0.0.1:{ports.grpc}"

    @property
    def open_url(self) -> str:
        ports = self.proc.controller.ports
        assert ports is not None and ports.metrics is not None
        return f"http://127.0.0.1:{ports.metrics}/metrics"

    def scrape(self) -> Samples:
        return scrape(self.url, {"Authorization": f"Bearer {self.proc.admin_key}"})

    def admin(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        headers = {"X-Admin-Key": self.proc.admin_key, "Content-Type": "application/json"}
        data = None if body is None else json.dumps(body).encode()
        return http(method, self.proc.admin_url + path, headers=headers, body=data)


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of a scrape, parsed by prometheus-client: (name, labels) -> value."""
    status, text = http("GET", url, headers=headers)
    assert status == 200, f"GET {url}: {status} {text}"
    assert isinstance(text, str)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def openmetrics_families(text: str) -> list[Metric]:
    # prometheus-client's OpenMetrics parser has no annotations (its Prometheus text parser has).
    return list(openmetrics.text_string_to_metric_families(text))  # type: ignore[no-untyped-call]


def scrape_until(rig: Rig, done: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until ``done`` holds for a scrape (within the usual deadline); that scrape."""
    samples: Samples = wait_for(lambda: s if done(s := rig.scrape()) else None, what=what)
    return samples


def value(samples: Samples, name: str, default: float | None = None, **labels: str) -> float:
    """A sample's value; ``default`` if it is missing (else that fails the test)."""
    found = samples.get((name, frozenset(labels.items())), default)
    assert found is not None, f"no sample {name}{labels} among {sorted({n for n, _ in samples})}"
    return found


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("metrics")
    prefix = pfx.create_prefix(pfx.PrefixConfig(root / "ctl-prefix", pfx.Role.CONTROLLER))
    config = ControllerConfig(
        data_dir=root / "controller",
        bind="127.0.0.1",
        admin_bind="127.0.0.1",
        grpc_port=0,
        public_port=0,
        admin_port=0,
        enroll_port=0,
        metrics_port=0,
        insecure=True,
        log_file=Path(""),
        portage_eprefix=prefix.root,
        ping_interval=0.2,
        # The recording stream answers no ping: it must not turn unhealthy for that.
        missed_pings=1000,
        # Incidents open, but the healer takes no step of its own: only the test's actions count.
        heal_grace=3600.0,
    )
    proc = InProcessController(config).start()
    builder = FakeLink(BUILDER.ljust(32, "0"))
    # It sends no heartbeat: one an hour is due, so it stays online for the module.
    hello = HelloData(builder.drone_id, BUILDER, 2, "lxc", "lan", "test", 3_600_000, "host", "", "")
    proc.call(proc.controller.fleet.attach, hello, builder)
    try:
        yield Rig(proc, root, builder)
    finally:
        proc.stop()


def test_the_admin_tier_serves_metrics_to_the_admin_key_only(rig: Rig) -> None:
    status, body = http("GET", rig.url)
    assert status == 401 and body["error"]["message"] == "missing or wrong X-Admin-Key"
    status, body = http("GET", rig.url, headers={"Authorization": "Bearer not-the-key"})
    assert status == 401
    status, body = http("GET", rig.url, headers={"Authorization": f"Basic {rig.proc.admin_key}"})
    assert status == 401
    # What Prometheus sends (its `authorization` setting), and what swarm-cli sends.
    by_bearer = rig.scrape()
    by_header = scrape(rig.url, {"X-Admin-Key": rig.proc.admin_key})
    for samples in (by_bearer, by_header):
        assert value(samples, "swarm_controller_info", version="0.1.0", database="sqlite") == 1
        assert value(samples, "swarm_controller_start_time_seconds") > 0
    bearer = {"Authorization": f"Bearer {rig.proc.admin_key}"}
    with urllib.request.urlopen(urllib.request.Request(rig.url, headers=bearer), timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    # What Prometheus asks for: OpenMetrics, gzipped.
    asks = {**bearer, "Accept": OPENMETRICS_ACCEPT, "Accept-Encoding": "gzip"}
    with urllib.request.urlopen(urllib.request.Request(rig.url, headers=asks), timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        assert response.headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(response.read()).decode()
    families = {f.name: f for f in openmetrics_families(text)}
    assert families["swarm_heal_actions"].type == "counter"
    assert families["swarm_ping_rtt_seconds"].type == "histogram"
    assert families["swarm_drones"].type == "gauge"


def test_the_metrics_port_answers_without_a_key_and_serves_nothing_else(rig: Rig) -> None:
    samples = scrape(rig.open_url)
    assert value(samples, "swarm_drones", status="online") >= 1
    status, body = http("GET", rig.open_url.removesuffix("/metrics") + "/admin/api/status")
    assert status == 404 and "no such endpoint" in body["error"]["message"]
    # A DNS-rebinding page's Host: refused like on the admin tier.
    status, body = http("GET", rig.open_url, headers={"Host": "rebound.example"})
    assert status == 421


def test_the_event_loop_lag_and_database_writes_are_measured(rig: Rig) -> None:
    samples = scrape_until(
        rig, lambda s: value(s, "swarm_event_loop_lag_seconds_count") >= 2, "two event-loop lag measurements"
    )
    assert value(samples, "swarm_event_loop_lag_seconds_sum") >= 0
    # The recording drone's connection was written at once; events are written in batches.
    assert value(samples, "swarm_db_write_duration_seconds_count", operation="upsert_nodes") >= 1
    assert value(samples, "swarm_db_write_duration_seconds_count", operation="add_events") >= 1
    assert value(samples, "swarm_db_calls_waiting") >= 0
    assert value(samples, "swarm_db_failing") == 0
    assert value(samples, "process_resident_memory_bytes") > 0


def test_drones_streams_pings_and_incidents_follow_a_real_agent(rig: Rig) -> None:
    before = rig.scrape()
    online = value(before, "swarm_drones", status="online")
    offline = value(before, "swarm_drones", status="offline")
    opened = value(before, "swarm_incidents_total", kind="offline")
    assert value(before, "swarm_grpc_streams", kind="control") == 0

    # Its second pong rides on a heartbeat: a quarter second's, not a second's, wait.
    agent = Agent(rig.root, "metrics-agent", rig.grpc_target, "--insecure", heartbeat_interval=FAST_HEARTBEAT)
    agent.start()
    try:
        samples = scrape_until(
            rig,
            lambda s: (
                value(s, "swarm_drones", status="online") == online + 1
                and value(s, "swarm_ping_rtt_seconds_count") >= 2
            ),
            "the agent online and answering pings",
        )
        assert value(samples, "swarm_grpc_streams", kind="control") == 1
        assert value(samples, "swarm_drones", status="offline") == offline
        age = value(
            samples, "swarm_drone_heartbeat_age_seconds", drone="metrics-agent", drone_id=agent.drone_id
        )
        assert 0 <= age < 5
        # Round trips over 127.0.0.1: all under a second, none negative.
        count = value(samples, "swarm_ping_rtt_seconds_count")
        assert value(samples, "swarm_ping_rtt_seconds_bucket", le="1.0") == count
        assert 0 < value(samples, "swarm_ping_rtt_seconds_sum") < count
    finally:
        assert agent.terminate() == 0

    samples = scrape_until(
        rig,
        lambda s: (
            value(s, "swarm_drones", status="offline") == offline + 1
            and value(s, "swarm_incidents_total", kind="offline") == opened + 1
        ),
        "the agent offline and its incident opened",
    )
    assert value(samples, "swarm_drones", status="online") == online
    assert value(samples, "swarm_grpc_streams", kind="control") == 0
    assert value(samples, "swarm_incidents_open") >= 1
    assert (
        "swarm_drone_heartbeat_age_seconds",
        frozenset({("drone", "metrics-agent"), ("drone_id", agent.drone_id)}),
    ) not in samples


def test_websocket_clients_are_counted_by_endpoint(rig: Rig) -> None:
    before = rig.scrape()
    for endpoint in ("/ws/events", "/ws/protocol", "/ws/logs/drones/{drone}", "/ws/ssh/{drone}"):
        assert value(before, "swarm_websocket_clients", endpoint=endpoint) == 0
    assert value(before, "swarm_shell_sessions", state="attached") == 0

    async def watch_events() -> None:
        url = rig.proc.admin_url.replace("http://", "ws://") + "/ws/events"
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, headers={"X-Admin-Key": rig.proc.admin_key}),
            session.ws_connect(url, headers={"X-Admin-Key": rig.proc.admin_key}),
        ):
            # The scrape blocks: it runs beside this loop, which keeps the sockets open.
            samples = await asyncio.to_thread(
                scrape_until,
                rig,
                lambda s: value(s, "swarm_websocket_clients", endpoint="/ws/events") == 2,
                "two /ws/events clients counted",
            )
            assert value(samples, "swarm_websocket_clients", endpoint="/ws/protocol") == 0

    asyncio.run(watch_events())
    scrape_until(
        rig,
        lambda s: value(s, "swarm_websocket_clients", endpoint="/ws/events") == 0,
        "the closed websockets uncounted",
    )


def test_an_admin_restart_counts_as_a_heal_action(rig: Rig) -> None:
    before = value(rig.scrape(), "swarm_heal_actions_total", step="restart", result="ok")
    status, body = rig.admin("POST", f"/admin/api/drones/{BUILDER}/restart")
    assert status == 200, body
    after = rig.scrape()
    assert value(after, "swarm_heal_actions_total", step="restart", result="ok") == before + 1
    assert value(after, "swarm_heal_actions_total", step="reboot", result="ok") == 0


def test_jobs_dispatch_latency_and_build_durations_follow_a_build(rig: Rig) -> None:
    builds = rig.proc.controller.builds
    assert builds is not None
    before = rig.scrape()
    assert value(before, "swarm_jobs", state="assigned") == 0
    dispatched = value(before, "swarm_dispatch_latency_seconds_count")
    # A label set of a histogram appears with its first observation.
    failed = value(before, "swarm_build_duration_seconds_count", 0.0, result="failed")

    status, body = rig.admin("POST", "/admin/api/queue", {"atoms": ["swarm-test/leaf-hello"], "session": "m"})
    assert status == 201, body
    samples = scrape_until(
        rig,
        lambda s: value(s, "swarm_dispatch_latency_seconds_count") == dispatched + 1,
        "the job sent to the recording drone",
    )
    assert value(samples, "swarm_jobs", state="assigned") == 1
    assert value(samples, "swarm_build_sessions", state="running") == 1
    assert value(samples, "swarm_dispatch_latency_seconds_sum") >= 0
    job = next(j for j in builds.jobs.values() if j.drone_id == rig.builder.drone_id)
    assert job.build_id is not None

    def report(kind: str) -> None:
        state = rig.proc.controller.fleet.get(rig.builder.drone_id)
        assert state is not None
        builds.on_build_event(state, BuildEventData(job.build_id or "", job.id, kind, 1, "test", 0.0, ()))

    rig.proc.call(report, "started")
    assert value(rig.scrape(), "swarm_jobs", state="building") == 1
    rig.proc.call(report, "failed")
    samples = rig.scrape()
    assert value(samples, "swarm_build_duration_seconds_count", result="failed") == failed + 1
    # Failed on one drone: back in the queue for another (there is none), not dispatched again.
    assert value(samples, "swarm_jobs", state="queued") == 1
    assert value(samples, "swarm_jobs", state="building") == 0
    # Nothing left for a drone that connects later.
    status, body = rig.admin("POST", "/admin/api/control", {"action": "stop", "session": job.session_id})
    assert status == 200, body
