"""A second implementation of the drone protocol against a real controller.

tests/conformance/client.js is a drone written in JavaScript (grpc-js) from
docs/protocol.md and the .proto files alone. It enrolls, runs as a drone and
sends each violation the spec answers, checking every answer itself; this
test runs it and checks the controller's side: its events and its API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.procs import Controller

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "tests" / "conformance" / "client.js"
NODE_MODULES = ROOT / "tests" / "conformance" / "node_modules"
PROTOS = ROOT / "protos"

PING_INTERVAL = 0.3
PING_TIMEOUT = 1.0
MISSED_PINGS = 3
PENDING_PER_PEER = 4
REPLACE_MAX = 3
HELLO_TIMEOUT = 1.0

# Every check the client makes; one missing from its output is a failure too.
CHECKS = {
    "enroll.pin",
    "enroll.bad_csr_refused_token_kept",
    "enroll.ed25519_refused_token_kept",
    "enroll.p256",
    "enroll.taken_name_refused_token_kept",
    "enroll.p384",
    "enroll.token_single_use",
    "connect.welcome",
    "connect.online_with_unknown_drone_type",
    "ping.pong_echoed",
    "forward.unknown_kind_ignored",
    "channel.exec",
    "connect.second_process_refused",
    "violation.other_drones_id",
    "violation.first_not_hello",
    "violation.unknown_kind_first",
    "violation.bad_heartbeat_interval",
    "violation.second_hello",
    "connect.half_close_before_hello",
    "violation.no_hello_in_time",
    "violation.impostor_name",
    "identity.free_other_name_keeps_bound_name",
    "violation.garbage_first",
    "violation.garbage_after_hello",
    "bounds.replacement_burst",
    "bounds.pending_streams",
    "ping.deaf_drone_unhealthy_then_online",
    "connect.half_close_is_goodbye",
}


@dataclass(frozen=True)
class ClientRun:
    controller: Controller
    returncode: int
    checks: dict[str, dict[str, Any]]  # name -> {"name", "ok", "details"}
    output: str  # stdout and stderr, for the failure message


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not NODE_MODULES.is_dir():
        return "tests/conformance/node_modules is missing: run `make conformance`"
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClientRun]:
    """One controller with short ping timing and small stream caps, and the client's run against it."""
    missing = _missing()
    if missing is not None:
        if os.environ.get("SWARM_REQUIRE_NODE") == "1":
            pytest.fail(f"SWARM_REQUIRE_NODE=1 but {missing}")
        pytest.skip(missing)
    controller = Controller(
        tmp_path_factory.mktemp("conformance"),
        "--ping-interval",
        str(PING_INTERVAL),
        "--ping-timeout",
        str(PING_TIMEOUT),
        "--missed-pings",
        str(MISSED_PINGS),
        "--stream-pending-per-peer",
        str(PENDING_PER_PEER),
        "--stream-replace-max",
        str(REPLACE_MAX),
        "--stream-replace-window",
        "2",
        "--hello-timeout",
        str(HELLO_TIMEOUT),
    )
    controller.start()
    try:
        result = subprocess.run(
            [
                "node",
                str(CLIENT),
                "--gateway",
                controller.grpc_target,
                "--enroll",
                controller.enroll_target,
                "--api",
                controller.public_url,
                "--admin-url",
                controller.admin_url,
                "--pin",
                controller.ca_pin,
                "--token",
                controller.create_token(),
                "--token",
                controller.create_token(),
                "--protos",
                str(PROTOS),
                "--ping-interval",
                str(PING_INTERVAL),
                "--ping-timeout",
                str(PING_TIMEOUT),
                "--missed-pings",
                str(MISSED_PINGS),
                "--pending-per-peer",
                str(PENDING_PER_PEER),
                "--replace-max",
                str(REPLACE_MAX),
                "--hello-timeout",
                str(HELLO_TIMEOUT),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "SWARM_ADMIN_KEY": controller.admin_key},
        )
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        checks = {line["name"]: line for line in lines if line["name"] != "summary"}
        yield ClientRun(controller, result.returncode, checks, f"{result.stdout}\n{result.stderr}")
    finally:
        controller.kill()


def test_the_javascript_drone_passes_every_check(run: ClientRun) -> None:
    failed = [line for line in run.checks.values() if not line["ok"]]
    assert not failed, "\n".join(json.dumps(line) for line in failed) + "\n" + run.output
    assert set(run.checks) == CHECKS, run.output
    assert run.returncode == 0, run.output


def test_the_controller_recorded_each_violation(run: ClientRun) -> None:
    controller = run.controller
    nodes = {n["name"]: n for n in controller.get("/api/v1/nodes")["nodes"]}
    assert set(nodes) == {"js-a", "js-b"}, nodes  # the Ed25519 attempt and the impostor left no drone
    js_a, js_b = nodes["js-a"]["id"], nodes["js-b"]["id"]
    assert nodes["js-a"]["drone_type"] == "unknown"

    # One protocol_error event per refusal the client provoked (§5.3, §9),
    # each naming the drone its certificate says, Hello or not.
    errors = controller.events(type="protocol_error")
    assert not [e for e in errors if e["drone_id"] == js_a], errors
    reasons = {
        f"claimed drone id {js_a}": js_b,
        "must be hello, got heartbeat": js_b,
        "must be hello, got nothing": js_b,  # a kind it does not know, as the first message
        "hello.heartbeat_interval_ms": js_b,
        "hello sent twice": js_b,
        "no hello within": js_b,
        "the name 'js-a' belongs to another drone": js_b,
    }
    for reason, drone in reasons.items():
        hits = [e for e in errors if reason in e["message"]]
        assert len(hits) == 1, (reason, errors)
        assert hits[0]["drone_id"] == drone, (reason, hits)
    unparsable = [e for e in errors if e["message"].endswith("does not parse as swarm.v1.AgentMessage")]
    assert [e["drone_id"] for e in unparsable] == [js_b, js_b], errors  # first, and after Hello
    # The bounds: one event per burst at once, with a count (a summary follows the window).
    bounds = [e for e in errors if "refused" in (e.get("data") or {})]
    assert {e["data"]["bound"] for e in bounds} == {"replacements", "pending"}, errors
    assert {e["drone_id"] for e in bounds} == {js_b}, errors
    assert len(errors) == len(reasons) + len(unparsable) + len(bounds), errors

    # The second process on js-a's identity: one drone_duplicate event naming both.
    [duplicate] = controller.events(type="drone_duplicate")
    assert (
        duplicate["drone_id"] == js_a
        and duplicate["data"]["kept"]["instance_id"] == nodes["js-a"]["instance_id"]
    )

    mismatch = controller.events(type="drone_name_mismatch")
    assert [(e["drone_id"], e["data"]["claimed"]) for e in mismatch] == [(js_b, "js-free")]
    # The deaf drone went unhealthy. How often, and whether js-b did too, is
    # not asserted: on a loaded machine a pong can come later than the 1 s
    # ping timeout outside the deaf step, on either drone (seen with six test
    # modules side by side, and with js-b in a 4-worker run beside a
    # benchmark); that is the only way either went unhealthy.
    unhealthy = controller.events(type="drone_unhealthy")
    assert js_a in {e["drone_id"] for e in unhealthy}, unhealthy
    assert all("pings in a row unanswered" in e["message"] for e in unhealthy), unhealthy
    assert js_a in [e["drone_id"] for e in controller.events(type="drone_healthy")]
    assert [e["drone_id"] for e in controller.events(type="drone_exec")] == [js_a]

    # What a newer agent sent was counted, not fatal.
    _, body = controller.admin("GET", f"/admin/api/protocol?drone={js_a}")
    assert [e["type"] for e in body["entries"]].count("unknown") == 1
    assert "Traceback" not in controller.log()
