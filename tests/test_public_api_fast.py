"""The public tier's answers and refusals, and the admin key's place in
them, in process: one real controller (controller/app.py) in this process
for the module (support/inproc.py), real HTTP over 127.0.0.1. Its two
drones are control streams that only record what they are sent
(tests/fakes/links.py); their heartbeats and pong go through the fleet's own
API. tests/test_public_api.py shows the same fields from real agents."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_public_api import ISO, NODE_KEYS

from swarm.controller.domain import HeartbeatData, HelloData, PongData
from swarm.controller.fleet import DroneState

from fakes.links import FakeLink
from support.inproc import InProcessController, LogLines, local_config, swarm_log
from support.procs import http

pytestmark = [
    pytest.mark.timeout(60),
    # The controller runs in this process, under pytest's warnings-as-errors:
]

DRONES = {"alpha": "lxc", "beta": "bare-metal"}
# The longest interval a Hello may give: the drones stay online without more heartbeats.
INTERVAL_MS = 60_000
PING_SEQ = 1_000_000  # above the pinger's own (it pings each drone once, at attach)


def beat_and_pong(proc: InProcessController, state: DroneState, load: float) -> None:
    """A heartbeat, then a ping answered 3 ms later: what an agent's stream brings."""
    fleet = proc.controller.fleet
    beat = HeartbeatData(load, load / 2, load / 4, 12.5, 40.0, 55.0, 10**9, False, "")
    proc.call(fleet.on_heartbeat, state, beat)
    sent_at_ns = fleet.clock.time_ns() - 3_000_000
    proc.call(fleet.on_ping_sent, state, PING_SEQ, sent_at_ns)
    pong = PongData(PING_SEQ, sent_at_ns, False, "", load, 55.0, 10**9)
    assert proc.call(fleet.on_pong, state, pong) is not None


@pytest.fixture(scope="module")
def records() -> Iterator[LogLines]:
    with swarm_log() as lines:
        yield lines


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, records: LogLines) -> Iterator[InProcessController]:
    config = local_config(tmp_path_factory.mktemp("public-api"), ping_interval=3600.0)
    proc = InProcessController(config).start()
    try:
        for name, drone_type in DRONES.items():
            link = FakeLink(name.ljust(32, "0"))
            hello = HelloData(link.drone_id, name, 4, drone_type, "lan", "test", INTERVAL_MS, "host", "", "")
            state = proc.call(proc.controller.fleet.attach, hello, link)
            beat_and_pong(proc, state, 0.8)
        yield proc
    finally:
        proc.stop()


def test_nodes_lists_every_drone_with_live_fields(api: InProcessController) -> None:
    nodes = api.get("/api/v1/nodes")["nodes"]
    assert [n["name"] for n in nodes] == ["alpha", "beta"]
    for node in nodes:
        assert node.keys() >= NODE_KEYS
        assert node["status"] == "online"
        assert ISO.match(node["last_heartbeat_at"])
        assert isinstance(node["ping_latency_ms"], float) and node["ping_latency_ms"] >= 3.0
        assert (node["load1"], node["load5"], node["load15"]) == (0.8, 0.4, 0.2) and node[
            "disk_percent"
        ] == 55.0
        assert node["emerge_running"] is False
    assert {n["drone_type"] for n in nodes} == {"lxc", "bare-metal"}


def test_node_by_name_and_by_id(api: InProcessController) -> None:
    by_name = api.get("/api/v1/nodes/alpha")["node"]
    by_id = api.get(f"/api/v1/nodes/{by_name['id']}")["node"]
    assert by_id["name"] == "alpha" and by_id["id"] == by_name["id"] == "alpha".ljust(32, "0")


def test_status_and_health(api: InProcessController) -> None:
    status = api.get("/api/v1/status")
    assert status["drones"] == {"total": 2, "online": 2, "unhealthy": 0, "suspect": 0, "offline": 0}
    assert status["cores_online"] == 8
    assert status["session"] is None
    health = api.get("/api/v1/health")
    assert health["status"] == "ok" and health["database"] == "sqlite"
    assert health["drones"]["online"] == 2


def test_events_paging_and_filters(api: InProcessController) -> None:
    everything = api.events()
    assert [e["type"] for e in everything[:1]] == ["controller_started"]
    connected = api.events(type="drone_connected")
    assert sorted(e["drone_name"] for e in connected) == ["alpha", "beta"]
    first = everything[0]["id"]
    after = api.get(f"/api/v1/events?since={first}")["events"]
    assert [e["id"] for e in after] == [e["id"] for e in everything[1:]]
    since_time = api.get(f"/api/v1/events?since={everything[1]['ts']}")["events"]
    assert since_time and since_time[0]["ts"] >= everything[1]["ts"]
    newest = api.get("/api/v1/events?limit=1")
    assert [e["id"] for e in newest["events"]] == [everything[-1]["id"]]
    assert newest["last_id"] == everything[-1]["id"]
    alpha = api.get("/api/v1/events?drone=alpha")["events"]
    assert alpha and all(e["drone_name"] == "alpha" for e in alpha)


def test_activity_counts_events_in_buckets(api: InProcessController) -> None:
    activity = api.get("/api/v1/activity?window=600&buckets=10")
    assert activity["window_s"] == 600 and len(activity["buckets"]) == 10
    assert activity["bucket_s"] == 60
    assert activity["total"] == sum(b["count"] for b in activity["buckets"]) >= 3
    assert activity["buckets"][-1]["count"] >= 3  # everything happened in the last minute
    # The admin tier answers the same (the console's waveform), and refuses the same bad input.
    status, admin = api.admin("GET", "/admin/api/activity?window=600&buckets=10")
    assert status == 200 and admin.keys() == activity.keys() and len(admin["buckets"]) == 10
    assert admin["total"] >= activity["total"]
    status, body = api.admin("GET", "/admin/api/activity?buckets=0")
    assert status == 400 and "buckets must be between" in body["error"]["message"]


def test_history_and_sessions_are_empty_lists(api: InProcessController) -> None:
    assert api.get("/api/v1/history") == {"history": []}
    assert api.get("/api/v1/sessions") == {"sessions": []}


def test_without_builds_there_are_no_releases_and_no_cut(api: InProcessController) -> None:
    # No --portage-eprefix: no staging to cut from. The lists are empty (the
    # status page reads /releases.json), a release or its files are not
    # found, and a change is refused saying why.
    empty: dict[str, Any] = {"current": None, "previous": None, "releases": []}
    assert api.get("/api/v1/releases") == api.get("/releases.json") == empty
    status, body = api.admin("GET", "/admin/api/releases")
    assert status == 200 and body == {**empty, "promotions": [], "schedule": None, "next_version": None}
    for path in ("/api/v1/releases/v2026.12.05", "/releases/key.asc", "/binhost/current/Packages"):
        got, answer = http("GET", api.public_url + path)
        assert got == 404 and "releases are off" in answer["error"]["message"], (path, answer)
    status, body = api.admin("POST", "/admin/api/releases", b"{}")
    assert status == 409 and "--portage-eprefix" in body["error"]["message"]
    status, body = api.admin("POST", "/admin/api/releases/v2026.12.05/promote")
    assert status == 409 and "releases are off" in body["error"]["message"]


def test_without_builds_there_are_no_test_builds(api: InProcessController) -> None:
    # No --portage-eprefix: nothing to resolve an atom in. The lists are empty,
    # a request and a new token are refused saying why.
    assert api.get("/api/v1/test-builds") == {"builds": []}
    assert api.admin("GET", "/admin/api/test-builds") == (200, {"builds": []})
    assert api.admin("GET", "/admin/api/test-build-tokens") == (200, {"tokens": []})
    status, body = http(
        "POST",
        api.public_url + "/api/v1/test-build",
        headers={"Authorization": "Bearer tbt-000000000000.x", "Content-Type": "application/json"},
        body=b'{"package": "app-misc/foo"}',
    )
    assert status == 409 and "--portage-eprefix" in body["error"]["message"]
    status, body = api.admin("POST", "/admin/api/test-build-tokens", b'{"user": "u", "rate": "5/h"}')
    assert status == 409 and "test builds are off" in body["error"]["message"]
    got, answer = http("GET", api.public_url + "/api/v1/test-build/tb-000000000000")
    assert got == 404 and "no test build" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "needle"),
    [
        ("GET", "/api/v1/nope", 404, "no such endpoint"),
        ("GET", "/api/v1/nodes/ghost", 404, "no drone named"),
        ("GET", "/api/v1/events?drone=ghost", 404, "no drone named"),
        ("GET", "/api/v1/events?limit=0", 400, "limit must be between"),
        ("GET", "/api/v1/events?limit=x", 400, "whole number"),
        ("GET", "/api/v1/events?since=yesterday", 400, "since must be"),
        ("GET", "/api/v1/activity?window=5", 400, "window must be between"),
        ("GET", "/api/v1/activity?buckets=99999", 400, "buckets must be between"),
        ("GET", "/api/v1/releases/latest", 400, "version must be a release version"),
        ("GET", "/api/v1/releases/v2026.12.05/diff/current", 400, "b must be"),
        ("POST", "/api/v1/nodes", 405, "read-only"),
        ("POST", "/api/v1/releases", 405, "read-only"),
        ("DELETE", "/api/v1/nodes/alpha", 405, "read-only"),
        ("PUT", "/api/v1/anything", 405, "read-only"),
        ("PATCH", "/", 405, "read-only"),
    ],
)
def test_refusals_are_json_with_a_message(
    api: InProcessController, method: str, path: str, status: int, needle: str
) -> None:
    got, body = http(method, api.public_url + path, body=b"{}" if method != "GET" else None)
    assert got == status
    assert isinstance(body, dict), f"not JSON: {body!r}"
    assert body["error"]["status"] == status
    assert needle in body["error"]["message"]
    assert "Traceback" not in str(body)


def test_public_tier_hides_the_admin_key(api: InProcessController, records: LogLines) -> None:
    key = api.admin_key
    for path in (
        "/api/v1/status",
        "/api/v1/nodes",
        "/api/v1/events",
        "/api/v1/health",
        "/api/v1/openapi.json",
    ):
        _, body = http("GET", api.public_url + path)
        assert key not in str(body)
    log = records.text()
    assert "serving: gRPC 127.0.0.1:" in log, "the controller's log was not collected"
    assert key not in log


def test_admin_tier_requires_the_key(api: InProcessController) -> None:
    assert http("GET", api.admin_url + "/admin/api/whoami")[0] == 401
    status, body = http("GET", api.admin_url + "/admin/api/whoami", headers={"X-Admin-Key": "wrong" * 8})
    assert status == 401 and body["error"]["message"] == "missing or wrong X-Admin-Key"
    status, body = api.admin("GET", "/admin/api/whoami")
    assert status == 200 and body == {"key": "admin"}
