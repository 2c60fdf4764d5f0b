"""The public tier's live fields from real agents, the protocol log of
their traffic, and each tier's OpenAPI document against its routes: one
real controller and two real agents for the module. The public tier's
other answers and its refusals: tests/test_public_api_fast.py, in process."""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from support.inproc import local_config
from support.procs import Agent, Controller, enroll, wait_for

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
    "load1",
    "load5",
    "load15",
    "disk_percent",
    "emerge_running",
}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def heard(controller: Controller, name: str) -> bool:
    node = controller.node(name)
    return node is not None and node["ping_latency_ms"] is not None and node["last_heartbeat_at"] is not None


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """Only read by the tests: one controller and its two drones for the module."""
    root = tmp_path_factory.mktemp("public-api")
    controller = Controller(root, "--ping-interval", "0.5")
    controller.start()
    started: list[Agent] = []
    try:
        for name, drone_type in (("alpha", "lxc"), ("beta", "bare-metal")):
            agent = Agent(root, name, controller.grpc_target, drone_type=drone_type)
            result = enroll(controller, name, agent.state_dir)
            assert result.returncode == 0, result.stderr
            agent.start()
            started.append(agent)
        for name in ("alpha", "beta"):
            wait_for(
                functools.partial(heard, controller, name), what=f"{name} online, heartbeating and pinged"
            )
        yield controller
    finally:
        for agent in started:
            agent.kill()
        controller.kill()


def test_nodes_lists_every_drone_with_live_fields(fleet: Controller) -> None:
    nodes = fleet.get("/api/v1/nodes")["nodes"]
    assert [n["name"] for n in nodes] == ["alpha", "beta"]
    for node in nodes:
        assert node.keys() >= NODE_KEYS
        assert node["status"] == "online"
        assert ISO.match(node["last_heartbeat_at"])
        assert isinstance(node["ping_latency_ms"], float)
    assert {n["drone_type"] for n in nodes} == {"lxc", "bare-metal"}
    status = fleet.get("/api/v1/status")
    assert status["drones"] == {"total": 2, "online": 2, "unhealthy": 0, "suspect": 0, "offline": 0}
    assert status["cores_online"] >= 2


def test_openapi_documents_exactly_the_served_routes(fleet: Controller) -> None:
    from swarm.controller.web import binhosts, public, releases, testbuild_files, testbuilds

    served: dict[str, set[str]] = {}
    for route in [
        *public.routes,
        *releases.public_routes,
        *binhosts.public_routes,
        *testbuilds.public_routes,
        *testbuild_files.public_routes,
    ]:
        served.setdefault(route.path, set()).add(route.method.lower())
    doc = fleet.get("/api/v1/openapi.json")
    assert doc["openapi"].startswith("3.")
    assert {path: set(item) for path, item in doc["paths"].items()} == served
    # Read-only but for its one write: asking for a test build, with a token.
    writes = {path: item for path, item in served.items() if item != {"get"}}
    assert writes == {testbuilds.SUBMIT_PATH: {"post"}}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert {"200", "202"} & set(operation["responses"]), (method, path)


def test_the_protocol_log_shows_the_agents_traffic(fleet: Controller) -> None:
    status, body = fleet.admin("GET", "/admin/api/protocol?drone=alpha&type=heartbeat&limit=5")
    assert status == 200
    entries = body["entries"]
    assert 0 < len(entries) <= 5
    assert all(e["type"] == "heartbeat" and e["direction"] == "in" and e["size"] > 0 for e in entries)
    status, body = fleet.admin("GET", "/admin/api/protocol?type=ping")
    assert status == 200 and body["entries"] and all(e["direction"] == "out" for e in body["entries"])


def test_admin_openapi_documents_exactly_the_served_routes(fleet: Controller, tmp_path: Path) -> None:
    from swarm.clock import SYSTEM
    from swarm.controller.adminkey import KeyStore
    from swarm.controller.web import admin, console

    # The routes the admin tier's app really serves (made as the controller makes it, with
    # what making it reads), less the console's pages (not the API).
    made = SimpleNamespace(config=local_config(tmp_path), events=None, clock=SYSTEM)
    app = admin.create_app(made, KeyStore.__new__(KeyStore))  # type: ignore[arg-type]
    # And no module's admin routes are left out of the one list both are made from.
    import swarm.controller.web
    from swarm.controller.web.routes import Routes

    for found in pkgutil.iter_modules(swarm.controller.web.__path__):
        module = importlib.import_module(f"swarm.controller.web.{found.name}")
        table = getattr(module, "routes", None)
        if isinstance(table, Routes) and found.name != "public":  # public.routes: the public tier's
            assert table in admin.api_routes(), (
                f"{found.name}.routes is in neither the admin tier nor its document"
            )
    served: dict[str, set[str]] = {}
    for route in app.router.routes():
        if route.method != "HEAD" and route.handler.__module__ != console.__name__:
            assert route.resource is not None
            served.setdefault(route.resource.canonical, set()).add(route.method.lower())
    status, doc = fleet.admin("GET", "/admin/api/openapi.json")
    assert status == 200
    assert {path: set(item) for path, item in doc["paths"].items()} == served
    assert doc["components"]["securitySchemes"]["adminKey"]["name"] == "X-Admin-Key"
