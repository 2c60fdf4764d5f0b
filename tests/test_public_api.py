"""The public tier: every endpoint's shape, and its refusals."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from support.procs import Agent, Controller, http, wait_for

NODE_KEYS = {
    "id",
    "name",
    "status",
    "drone_type",
    "cores",
    "network",
    "agent_version",
    "last_heartbeat_at",
    "ping_latency_ms",
    "load",
    "disk_pct",
    "emerge_running",
}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def fleet(controller: Controller, agents: Callable[..., Agent]) -> Controller:
    agents("alpha", drone_type="lxc")
    agents("beta", drone_type="bare-metal")
    for name in ("alpha", "beta"):
        wait_for(
            lambda n=name: (
                (x := controller.node(n))
                and x["ping_latency_ms"] is not None
                and x["last_heartbeat_at"] is not None
            ),
            what=f"{name} online, heartbeating and pinged",
        )
    return controller


def test_nodes_lists_every_drone_with_live_fields(fleet: Controller) -> None:
    nodes = fleet.get("/api/v1/nodes")["nodes"]
    assert [n["name"] for n in nodes] == ["alpha", "beta"]
    for node in nodes:
        assert node.keys() >= NODE_KEYS
        assert node["status"] == "online"
        assert ISO.match(node["last_heartbeat_at"])
        assert isinstance(node["ping_latency_ms"], float)
    assert {n["drone_type"] for n in nodes} == {"lxc", "bare-metal"}


def test_node_by_name_and_by_id(fleet: Controller) -> None:
    by_name = fleet.get("/api/v1/nodes/alpha")["node"]
    by_id = fleet.get(f"/api/v1/nodes/{by_name['id']}")["node"]
    assert by_id["name"] == "alpha" and by_id["id"] == by_name["id"]


def test_status_and_health(fleet: Controller) -> None:
    status = fleet.get("/api/v1/status")
    assert status["drones"] == {"total": 2, "online": 2, "unhealthy": 0, "suspect": 0, "offline": 0}
    assert status["cores_online"] >= 2
    assert status["session"] is None
    health = fleet.get("/api/v1/health")
    assert health["status"] == "ok" and health["database"] == "sqlite"
    assert health["drones"]["online"] == 2


def test_events_paging_and_filters(fleet: Controller) -> None:
    everything = fleet.events()
    assert [e["type"] for e in everything[:1]] == ["controller_started"]
    connected = fleet.events(type="drone_connected")
    assert sorted(e["drone_name"] for e in connected) == ["alpha", "beta"]
    first = everything[0]["id"]
    after = fleet.get(f"/api/v1/events?since={first}")["events"]
    assert [e["id"] for e in after] == [e["id"] for e in everything[1:]]
    since_time = fleet.get(f"/api/v1/events?since={everything[1]['ts']}")["events"]
    assert since_time and since_time[0]["ts"] >= everything[1]["ts"]
    newest = fleet.get("/api/v1/events?limit=1")
    assert [e["id"] for e in newest["events"]] == [everything[-1]["id"]]
    assert newest["last_id"] == everything[-1]["id"]
    alpha = fleet.get("/api/v1/events?drone=alpha")["events"]
    assert alpha and all(e["drone_name"] == "alpha" for e in alpha)


def test_activity_counts_events_in_buckets(fleet: Controller) -> None:
    activity = fleet.get("/api/v1/activity?window=600&buckets=10")
    assert activity["window_s"] == 600 and len(activity["buckets"]) == 10
    assert activity["bucket_s"] == 60
    assert activity["total"] == sum(b["count"] for b in activity["buckets"]) >= 3
    assert activity["buckets"][-1]["count"] >= 3  # everything happened in the last minute
    # The admin tier answers the same (the console's waveform), and refuses the same bad input.
    status, admin = fleet.admin("GET", "/admin/api/activity?window=600&buckets=10")
    assert status == 200 and admin.keys() == activity.keys() and len(admin["buckets"]) == 10
    assert admin["total"] >= activity["total"]
    status, body = fleet.admin("GET", "/admin/api/activity?buckets=0")
    assert status == 400 and "buckets must be between" in body["error"]["message"]


def test_history_and_sessions_are_empty_lists(fleet: Controller) -> None:
    assert fleet.get("/api/v1/history") == {"history": []}
    assert fleet.get("/api/v1/sessions") == {"sessions": []}


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
        ("POST", "/api/v1/nodes", 405, "read-only"),
        ("DELETE", "/api/v1/nodes/alpha", 405, "read-only"),
        ("PUT", "/api/v1/anything", 405, "read-only"),
        ("PATCH", "/", 405, "read-only"),
    ],
)
def test_refusals_are_json_with_a_message(
    fleet: Controller, method: str, path: str, status: int, needle: str
) -> None:
    got, body = http(method, fleet.public_url + path, body=b"{}" if method != "GET" else None)
    assert got == status
    assert isinstance(body, dict), f"not JSON: {body!r}"
    assert body["error"]["status"] == status
    assert needle in body["error"]["message"]
    assert "Traceback" not in str(body)


def test_openapi_documents_exactly_the_served_routes(fleet: Controller) -> None:
    from swarm.controller.web import public

    served = {route.path for route in public.routes if hasattr(route, "path")}  # type: ignore[union-attr]
    doc = fleet.get("/api/v1/openapi.json")
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == served
    for path, item in doc["paths"].items():
        assert set(item) == {"get"}, path
        assert "200" in item["get"]["responses"], path


def test_public_tier_hides_the_admin_key(fleet: Controller) -> None:
    key = fleet.admin_key
    for path in (
        "/api/v1/status",
        "/api/v1/nodes",
        "/api/v1/events",
        "/api/v1/health",
        "/api/v1/openapi.json",
    ):
        _, body = http("GET", fleet.public_url + path)
        assert key not in str(body)
    assert key not in fleet.log()


def test_admin_tier_requires_the_key(fleet: Controller) -> None:
    assert http("GET", fleet.admin_url + "/admin/api/whoami")[0] == 401
    status, body = http("GET", fleet.admin_url + "/admin/api/whoami", headers={"X-Admin-Key": "wrong" * 8})
    assert status == 401 and body["error"]["message"] == "missing or wrong X-Admin-Key"
    status, body = fleet.admin("GET", "/admin/api/whoami")
    assert status == 200 and body == {"key": "admin"}
    status, body = fleet.admin("GET", "/admin/api/protocol?drone=alpha&type=heartbeat&limit=5")
    assert status == 200
    entries = body["entries"]
    assert 0 < len(entries) <= 5
    assert all(e["type"] == "heartbeat" and e["direction"] == "in" and e["size"] > 0 for e in entries)
    status, body = fleet.admin("GET", "/admin/api/protocol?type=ping")
    assert status == 200 and body["entries"] and all(e["direction"] == "out" for e in body["entries"])


def test_admin_openapi_documents_exactly_the_served_routes(fleet: Controller) -> None:
    from swarm.controller.web import admin, auth, dispatch, healing, logs, metrics, shells, streams

    served: dict[str, set[str]] = {}
    for route in [
        *admin.routes,
        *healing.routes,
        *auth.routes,
        *shells.routes,
        *streams.routes,
        *logs.routes,
        *dispatch.routes,
        *metrics.routes,
    ]:
        served.setdefault(route.path, set()).add(route.method.lower())  # type: ignore[union-attr]
    status, doc = fleet.admin("GET", "/admin/api/openapi.json")
    assert status == 200
    assert {path: set(item) for path, item in doc["paths"].items()} == served
    assert doc["components"]["securitySchemes"]["adminKey"]["name"] == "X-Admin-Key"
