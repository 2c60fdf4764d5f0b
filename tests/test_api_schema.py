"""Every documented operation of both web tiers, called on a live controller
with two enrolled agents, answers with a body its generated OpenAPI schema
(controller/web/openapi.py, from the route declarations and the views)
describes: the schema of the status received, every field required, no
other field allowed. The fleet is given what the routes need to answer
with content: a join token, an admin key, a browser session, a build
session with jobs, a shell with its recording, an incident (an agent
killed), a release promoted (its package built into staging). A
documented operation not called here fails the test, so a new route comes
with its check.

tests/test_probe.py (schemathesis) checks the same schemas against
generated requests; this checks them against answers with content.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jsonschema_rs
import pytest
import requests

from support.probe import DRONES, probe_fleet
from support.procs import FAST_HEARTBEAT, Agent, Controller, wait_for
from support.terminal import open_terminal

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]

JSON = "application/json"
ATOM = "swarm-test/leaf-data"
STAGED = "swarm-test/leaf-script-1"  # in the release the fixture cuts
STAGED_ATOM = "swarm-test/leaf-script"
SHELL, GONE = DRONES  # a drone that stays online, and one whose agent is killed for an incident


class Checker:
    """Calls a tier's operations and validates each answer against the
    schema its document gives for the status received."""

    def __init__(self, base_url: str, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url
        self.doc = doc
        self.http = requests.Session()
        self.http.headers.update(headers or {})
        self.called: set[str] = set()

    def documented(self) -> set[str]:
        return {f"{method.upper()} {path}" for path, item in self.doc["paths"].items() for method in item}

    def responses(self, method: str, template: str) -> dict[str, Any]:
        operation = self.doc["paths"][template][method.lower()]
        self.called.add(f"{method} {template}")
        responses: dict[str, Any] = operation["responses"]
        return responses

    def validate(self, schema: dict[str, Any], body: Any, what: str) -> None:
        root = {**schema, "components": self.doc["components"]}
        errors = [
            f"{e.instance_path}: {e.message}"
            for e in jsonschema_rs.Draft202012Validator(root).iter_errors(body)
        ]
        assert not errors, f"{what}: the answer does not match its schema:\n" + "\n".join(errors[:20])

    def call(
        self,
        method: str,
        template: str,
        expect: int | tuple[int, ...],
        *,
        path: str | None = None,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Any:
        """``data``: a raw body (an upload) instead of ``body``'s JSON."""
        url = self.base_url + (path or template) + (f"?{urlencode(query)}" if query else "")
        answer = self.http.request(method, url, json=body, data=data, headers=headers, timeout=30)
        what = f"{method} {path or template} -> {answer.status_code}"
        assert answer.status_code in (expect if isinstance(expect, tuple) else (expect,)), (
            f"{what}: {answer.text[:2000]}"
        )
        documented = self.responses(method, template).get(str(answer.status_code))
        assert documented is not None, f"{what}: status not documented"
        media = answer.headers.get("Content-Type", "").split(";")[0]
        assert media in documented["content"], f"{what}: content type {media} not documented"
        value: Any = answer.json() if media == JSON else answer.text
        self.validate(documented["content"][media]["schema"], value, what)
        return value

    def component(self, name: str, value: Any, what: str) -> None:
        self.validate({"$ref": f"#/components/schemas/{name}"}, value, what)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Controller, list[Agent], Path]]:
    root = tmp_path_factory.mktemp("schema")
    own_log = root / "controller-own.log"
    swarm = probe_fleet(root, "--log-file", str(own_log), agent_logs=True, heartbeat_interval=FAST_HEARTBEAT)
    try:
        # A release, current: a package built straight into staging (not ATOM,
        # which the admin test's session builds), cut and promoted.
        swarm.stage_packages(STAGED)
        status, release = swarm.controller.admin("POST", "/admin/api/releases", b'{"notes": "schema"}')
        assert status == 201, release
        status, promoted = swarm.controller.admin("POST", f"/admin/api/releases/{release['version']}/promote")
        assert status == 200, promoted
        yield swarm.controller, list(swarm.agents.values()), own_log
    finally:
        swarm.stop()


def admin_checker(controller: Controller) -> Checker:
    key = {"X-Admin-Key": controller.admin_key}
    doc = requests.get(controller.admin_url + "/admin/api/openapi.json", headers=key, timeout=30).json()
    return Checker(controller.admin_url, doc, key)


async def _streams(check: Checker, controller: Controller) -> str:
    """The websockets (101) with their first messages checked against the
    views they send; a shell opened and detached. Returns its session id."""
    ws_url = controller.admin_url.replace("http://", "ws://")
    key = {"X-Admin-Key": controller.admin_key}
    async with aiohttp.ClientSession(headers=key) as session:
        for template, path, view in (
            ("/ws/events", "/ws/events?since=0", "EventView"),
            ("/ws/protocol", f"/ws/protocol?drone={SHELL}&type=heartbeat", "ProtocolEntryView"),
        ):
            async with session.ws_connect(ws_url + path) as ws:
                assert "101" in check.responses("GET", template)
                message = await ws.receive_json(timeout=20)
                check.component(view, message, template)
        for template, path in (
            ("/ws/logs/control-plane", "/ws/logs/control-plane?follow=0&lines=5"),
            ("/ws/logs/drones/{drone}", f"/ws/logs/drones/{SHELL}?source=agent&follow=0&lines=5"),
        ):
            async with session.ws_connect(ws_url + path) as ws:
                assert "101" in check.responses("GET", template)
                kinds = []
                async for msg in ws:
                    kinds.append(json.loads(msg.data)["type"])
                assert kinds and kinds[-1] == "end", kinds
    assert "101" in check.responses("GET", "/ws/ssh/{drone}")
    async with open_terminal(f"{ws_url}/ws/ssh/{SHELL}?rows=24&cols=80", controller.admin_key) as term:
        await term.run("echo schema-$((6*7))", "schema-42")
        return str(term.session["session"])


def test_every_admin_operation_answers_per_its_schema(fleet: tuple[Controller, list[Agent], Path]) -> None:
    controller, agents, _own_log = fleet
    check = admin_checker(controller)
    a = f"/admin/api/drones/{SHELL}"

    # What the controller knows about itself and the fleet.
    assert check.call("GET", "/admin/api/whoami", 200) == {"key": "admin"}
    check.call("GET", "/admin/api/status", 200)
    check.call("GET", "/admin/api/health", 200)
    check.call("GET", "/admin/api/events", 200, query={"limit": "50"})
    check.call("GET", "/admin/api/activity", 200, query={"window": "3600", "buckets": "12"})
    entries = check.call("GET", "/admin/api/protocol", 200, query={"drone": SHELL, "type": "heartbeat"})[
        "entries"
    ]
    assert entries
    seq = entries[-1]["seq"]
    check.call("GET", "/admin/api/protocol/{seq}", 200, path=f"/admin/api/protocol/{seq}")
    check.call("GET", "/admin/api/openapi.json", 200)
    drones = check.call("GET", "/admin/api/drones", 200)["drones"]
    assert {d["name"] for d in drones} == set(DRONES) and all(d["enrolled"] for d in drones)
    assert check.call("GET", "/admin/api/session", 200)["via"] == "key"

    # Join tokens and admin keys.
    token = check.call("POST", "/admin/api/tokens", 201, body={"ttl": 600, "name": "later"})
    assert check.call("GET", "/admin/api/tokens", 200)["tokens"]
    check.call("DELETE", "/admin/api/tokens/{id}", 200, path=f"/admin/api/tokens/{token['id']}")
    check.call("POST", "/admin/api/keys", 201, body={"name": "schema-check"})
    assert {"schema-check", "admin"} <= {k["name"] for k in check.call("GET", "/admin/api/keys", 200)["keys"]}
    check.call("DELETE", "/admin/api/keys/{name}", 200, path="/admin/api/keys/schema-check")

    # A browser session: login, the session seen through its cookie, logout.
    browser = Checker(controller.admin_url, check.doc)
    login = browser.call("POST", "/admin/api/login", 200, body={"key": controller.admin_key})
    assert browser.call("GET", "/admin/api/session", 200)["via"] == "session"
    browser.call("POST", "/admin/api/logout", 200, headers={"X-CSRF-Token": login["csrf_token"]})
    check.called |= browser.called

    # Releases, before the session below (a cut waits for a session to complete
    # without failures): a second one cut, promoted, rolled back and deleted.
    releases = "/admin/api/releases"
    first = check.call("GET", releases, 200)["current"]
    assert first is not None
    check.call("POST", releases, 409, body={"notes": "nothing changed"})
    second = check.call("POST", releases, 201, body={"notes": "forced", "force": True})["version"]
    one, two = f"{releases}/{first}", f"{releases}/{second}"
    assert check.call("GET", f"{releases}/{{version}}", 200, path=one)["packages"]
    check.call("GET", f"{releases}/{{version}}", 404, path=f"{releases}/v1999.01.01")
    check.call("GET", f"{releases}/{{a}}/diff/{{b}}", 200, path=f"{one}/diff/{second}")
    check.call("POST", f"{releases}/{{version}}/promote", 200, path=f"{two}/promote")
    check.call("POST", f"{releases}/{{version}}/rollback", 409, path=f"{one}/rollback")
    assert check.call("POST", f"{releases}/{{version}}/rollback", 200, path=f"{two}/rollback")["current"]
    check.call("DELETE", f"{releases}/{{version}}", 409, path=one)
    check.call("DELETE", f"{releases}/{{version}}", 200, path=two)
    check.call("DELETE", f"{releases}/{{version}}", 400, path=f"{releases}/latest")
    listed = check.call("GET", releases, 200)
    assert listed["current"] == first and [p["action"] for p in listed["promotions"]][:2] == [
        "rollback",
        "promote",
    ]

    # Binhost targets: the local one serves the current release; a mirror added,
    # shown, pushed to and deleted. Its destination is a closed port: whether
    # the mirror service (when it runs) starts a push or refuses, the answer
    # has its documented shape.
    binhosts = "/admin/api/binhosts"
    listed_hosts = check.call("GET", binhosts, 200)
    assert listed_hosts["current"] == first
    assert listed_hosts["binhosts"][0]["name"] == "controller"
    assert listed_hosts["binhosts"][0]["release"] == first
    mirror = f"{binhosts}/nearby"
    body = {"url": "http://127.0.0.1:1/m", "destination": "127.0.0.1:1:/srv/m", "networks": ["lan"]}
    check.call("PUT", f"{binhosts}/{{name}}", 200, path=mirror, body=body)
    check.call("PUT", f"{binhosts}/{{name}}", 400, path=mirror, body={**body, "destination": "x:/a/../b"})
    assert check.call("GET", f"{binhosts}/{{name}}", 200, path=mirror)["destination"] == "127.0.0.1:1:/srv/m"
    check.call("POST", f"{binhosts}/{{name}}/sync", (202, 409), path=mirror + "/sync")
    check.call("POST", f"{binhosts}/sync", (202, 409))
    conf = check.call("GET", "/admin/api/binrepos.conf", 200, query={"network": "lan"})
    assert "[swarm-controller]" in conf and "verify-signature = true" in conf
    check.call("DELETE", f"{binhosts}/{{name}}", 200, path=mirror)
    check.call("DELETE", f"{binhosts}/{{name}}", 409, path=f"{binhosts}/controller")

    # A build session with jobs; its builds once a drone took one.
    queued = check.call("POST", "/admin/api/queue", 201, body={"atoms": [ATOM], "session": "schema"})
    job_id = queued["jobs"][0]["id"]
    job = f"/admin/api/jobs/{job_id}"
    wait_for(
        lambda: any(
            b["finished_at"] for b in check.call("GET", "/admin/api/jobs/{id}", 200, path=job)["builds"]
        ),
        what="a finished build of the job",
    )
    # The drones have no Portage: whether the failed build left a log depends on where it failed.
    check.call("GET", "/admin/api/jobs/{id}/log", (200, 404), path=job + "/log")
    assert "swarm_drones" in check.call("GET", "/metrics", 200)
    check.call(
        "POST", "/admin/api/control", 200, body={"action": "pause", "session": queued["session"]["id"]}
    )
    assert check.call("GET", "/admin/api/sessions", 200)["sessions"]
    found = check.call(
        "GET", "/admin/api/queue", 200, query={"session": queued["session"]["id"], "q": "leaf"}
    )
    assert found["total"] >= 1

    # Test builds: a token made, a build asked for on the public tier, seen, cancelled
    # (or already over: a drone without Portage may have taken it), the token revoked.
    tokens = "/admin/api/test-build-tokens"
    made = check.call(
        "POST", tokens, 201, body={"user": "schema", "rate": "5/h", "burst": 2, "max_queued": 3}
    )
    check.call("POST", tokens, 400, body={"user": "schema", "rate": "often"})
    assert made["id"] in {t["id"] for t in check.call("GET", tokens, 200)["tokens"]}
    asked = requests.post(
        controller.public_url + "/api/v1/test-build",
        json={"package": ATOM, "notify": "schema@example.org"},
        headers={"Authorization": f"Bearer {made['secret']}"},
        timeout=30,
    )
    assert asked.status_code == 202, asked.text
    tb = f"/admin/api/test-builds/{asked.json()['id']}"
    assert check.call("GET", "/admin/api/test-builds", 200, query={"limit": "10"})["builds"]
    assert (
        check.call("GET", "/admin/api/test-builds/{id}", 200, path=tb)["notify_email"] == "schema@example.org"
    )
    check.call("GET", "/admin/api/test-builds/{id}", 404, path="/admin/api/test-builds/tb-000000000000")
    check.call("GET", "/admin/api/test-builds/{id}/log", 200, path=tb + "/log")
    check.call(
        "GET", "/admin/api/test-builds/{id}/log", 404, path="/admin/api/test-builds/tb-000000000000/log"
    )
    check.call("POST", "/admin/api/test-builds/{id}/cancel", (200, 409), path=tb + "/cancel")
    check.call("DELETE", f"{tokens}/{{id}}", 200, path=f"{tokens}/{made['id']}")
    check.call("DELETE", f"{tokens}/{{id}}", 404, path=f"{tokens}/tbt-000000000000")

    # The healer, a drone's access and its dispatch holds.
    check.call("GET", "/admin/api/healing", 200)
    check.call("POST", "/admin/api/healing", 200, body={"action": "pause", "drone": SHELL})
    check.call("POST", "/admin/api/healing", 200, body={"action": "resume", "drone": SHELL})
    check.call("PUT", "/admin/api/drones/{name}", 200, path=a, body={"vmid": "101"})
    check.call("POST", "/admin/api/drones/{name}/ping", 200, path=a + "/ping")
    result = check.call(
        "POST", "/admin/api/drones/{name}/exec", 200, path=a + "/exec", body={"command": "echo hi"}
    )
    assert result["stdout"] == "hi\n" and result["exit_code"] == 0
    for action in ("drain", "undrain", "ground", "unground"):
        check.call("POST", f"/admin/api/drones/{{name}}/{action}", 200, path=f"{a}/{action}")

    # Logs, the streams and a terminal: a shell detached, listed, killed, its recording fetched.
    check.call("GET", "/admin/api/logs/control-plane", 200, query={"lines": "20"})
    check.call("GET", "/admin/api/drones/{drone}/logs", 200, path=a + "/logs", query={"source": "agent"})
    shell_id = asyncio.run(_streams(check, controller))
    assert any(s["id"] == shell_id for s in check.call("GET", "/admin/api/shells", 200)["shells"])
    check.call("DELETE", "/admin/api/shells/{id}", 200, path=f"/admin/api/shells/{shell_id}")
    check.call("GET", "/admin/api/shells/{id}/recording", 200, path=f"/admin/api/shells/{shell_id}/recording")

    # An incident: the other drone's agent killed. Its health then shows it;
    # a manual restart is skipped (no stream, no out-of-band access), a
    # reboot refused (the drone's type is unknown: never rebooted).
    b = f"/admin/api/drones/{GONE}"
    next(agent for agent in agents if agent.name == GONE).kill()
    wait_for(
        lambda: check.call("GET", "/admin/api/drones/{name}/health", 200, path=b + "/health")["incidents"],
        what=f"an incident of {GONE}",
    )
    step = check.call("POST", "/admin/api/drones/{name}/restart", 200, path=b + "/restart")
    assert step["done"] is False and step["exit_code"] is None, step
    check.call("POST", "/admin/api/drones/{name}/reboot", 409, path=b + "/reboot")
    renamed = check.call(
        "POST", "/admin/api/drones/{name}/rename", 200, path=b + "/rename", body={"name": "gone"}
    )
    check.call("POST", "/admin/api/drones/{name}/revoke", 200, path="/admin/api/drones/gone/revoke")
    assert renamed["old_name"] == GONE

    # Payloads: an agent config uploaded, shown, staged; deployed to the drone
    # whose agent is gone (refused: not connected; tests/test_payloads.py
    # checks a deploy's 202 against its view); the drones' versions.
    payloads = "/admin/api/payloads"
    config = b'controller = "127.0.0.1:8094"\n'
    uploaded = check.call(
        "POST", payloads, 201, query={"kind": "agent-config", "notes": "schema"}, data=config
    )
    check.call("POST", payloads, 400, query={"kind": "agent-config"}, data=b"controller = [")
    one_payload = f"{payloads}/agent-config/{uploaded['version']}"
    check.call("GET", f"{payloads}/{{kind}}/{{version}}", 200, path=one_payload)
    check.call("GET", f"{payloads}/{{kind}}/{{version}}", 404, path=f"{payloads}/agent/99999")
    check.call("POST", f"{payloads}/{{kind}}/{{version}}/stage", 200, path=one_payload + "/stage")
    assert (
        check.call("GET", payloads, 200, query={"kind": "agent-config"})["payloads"][0]["state"] == "staged"
    )
    deploy = {"drones": ["gone"]}
    check.call(
        "POST", f"{payloads}/{{kind}}/{{version}}/deploy", 409, path=one_payload + "/deploy", body=deploy
    )
    check.call("GET", "/admin/api/drones/versions", 200)
    # Rollouts: none here to show (tests/test_rollouts.py checks each answer against its view).
    check.call("GET", "/admin/api/rollouts", 200)
    nobody = "/admin/api/rollouts/r-000000000000"
    check.call("GET", "/admin/api/rollouts/{id}", 404, path=nobody)
    for verb in ("pause", "resume", "abort", "rollback"):
        check.call("POST", f"/admin/api/rollouts/{{id}}/{verb}", 404, path=f"{nobody}/{verb}")

    missing = check.documented() - check.called
    assert not missing, f"documented operations this test does not call: {sorted(missing)}"


def test_every_public_operation_answers_per_its_schema(fleet: tuple[Controller, list[Agent], Path]) -> None:
    controller, _agents, _own_log = fleet
    doc = requests.get(controller.public_url + "/api/v1/openapi.json", timeout=30).json()
    check = Checker(controller.public_url, doc)
    check.call("GET", "/api/v1/health", 200)
    check.call("GET", "/api/v1/status", 200)
    assert check.call("GET", "/api/v1/nodes", 200)["nodes"]
    check.call("GET", "/api/v1/nodes/{name}", 200, path=f"/api/v1/nodes/{SHELL}")
    check.call("GET", "/api/v1/nodes/{name}", 404, path="/api/v1/nodes/nobody")
    check.call("GET", "/api/v1/events", 200, query={"since": "0", "limit": "1000"})
    check.call("GET", "/api/v1/events", 400, query={"limit": "1001"})
    check.call("GET", "/api/v1/activity", 200, query={"window": "60", "buckets": "1"})
    check.call("GET", "/api/v1/history", 200, query={"limit": "1000"})
    check.call("GET", "/api/v1/sessions", 200)
    check.call("GET", "/api/v1/queue", 200, query={"limit": "5000"})
    check.call("GET", "/api/v1/openapi.json", 200)
    listed = check.call("GET", "/api/v1/releases", 200)
    assert check.call("GET", "/releases.json", 200) == listed
    current = listed["current"]
    assert current is not None and listed["releases"]
    release = check.call("GET", "/api/v1/releases/{version}", 200, path=f"/api/v1/releases/{current}")
    assert [p["cpv"] for p in release["packages"]] == [STAGED]
    check.call("GET", "/api/v1/releases/{version}", 400, path="/api/v1/releases/v2026.1.1")
    diff = f"/api/v1/releases/{current}/diff/{current}"
    assert check.call("GET", "/api/v1/releases/{a}/diff/{b}", 200, path=diff)["changed"] == []
    check.call(
        "GET", "/api/v1/releases/{a}/diff/{b}", 404, path=f"/api/v1/releases/{current}/diff/v1999.01.01"
    )
    # Binhosts: the controller's own serves the current release; the
    # binrepos.conf answer points at it, and what it points at is served.
    hosts = check.call("GET", "/api/v1/binhosts", 200)
    local = hosts["binhosts"][0]
    assert (local["name"], local["release"], hosts["current"]) == ("controller", current, current)
    conf = check.call("GET", "/api/v1/binrepos.conf", 200, query={"drone": SHELL})
    assert "[swarm-controller]" in conf and f"sync-uri = {local['url']}/current/" in conf
    assert requests.get(f"{local['url']}/current/Packages", timeout=30).status_code == 200
    pinned = check.call("GET", "/api/v1/binrepos.conf", 200, query={"release": current, "network": "lan"})
    assert f"[swarm-{current}-controller]" in pinned and f"/releases/{current}/" in pinned
    assert requests.get(f"{local['url']}/releases/{current}/Packages", timeout=30).status_code == 200
    check.call("GET", "/api/v1/binrepos.conf", 404, query={"release": "v1999.01.01"})
    # Test builds: the public tier's one write, with a token an admin made.
    status, made = controller.admin(
        "POST", "/admin/api/test-build-tokens", b'{"user": "schema-public", "rate": "1/h"}'
    )
    assert status == 201, made
    bearer = {"Authorization": f"Bearer {made['secret']}"}
    asked = check.call("POST", "/api/v1/test-build", 202, body={"package": STAGED_ATOM}, headers=bearer)
    check.call("POST", "/api/v1/test-build", 429, body={"package": ATOM}, headers=bearer)
    check.call("POST", "/api/v1/test-build", 400, body={"package": "/etc/passwd"}, headers=bearer)
    check.call("POST", "/api/v1/test-build", 401, body={"package": ATOM})
    check.call(
        "POST", "/api/v1/test-build", 403, body={"package": ATOM}, headers={"Origin": "https://x.example"}
    )
    check.call("GET", "/api/v1/test-build/{id}", 200, path=f"/api/v1/test-build/{asked['id']}")
    check.call("GET", "/api/v1/test-build/{id}", 404, path="/api/v1/test-build/tb-000000000000")
    log_path = f"/api/v1/test-build/{asked['id']}/log"
    check.call("GET", "/api/v1/test-build/{id}/log", 200, path=log_path)
    check.call("GET", "/api/v1/test-build/{id}/log", 404, path="/api/v1/test-build/tb-000000000000/log")
    assert check.call("GET", "/api/v1/test-builds", 200, query={"limit": "1000"})["builds"]
    check.call("GET", "/api/v1/test-builds", 400, query={"state": "lost"})
    missing = check.documented() - check.called
    assert not missing, f"documented operations this test does not call: {sorted(missing)}"
