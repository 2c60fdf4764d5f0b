"""Payload rollout benchmark: an agent payload rolled out to N real agents.
It prints figures; it is not a test and asserts nothing about timing.

Run from the repository root::

    .venv/bin/python bench/payloads.py                   # 20 agents, batch 5, about 3-5 minutes
    .venv/bin/python bench/payloads.py --agents 5        # a quick look
    .venv/bin/python bench/payloads.py --json figures.json --keep

One controller on 127.0.0.1 (tests/support/fleet.py, as the tests start
it) and N real ``swarm-agent`` processes, heartbeats every
``--heartbeat`` seconds. Two wheels of this checkout are built
(tests/support/payloads.py): a good one with a bumped version and a broken
one whose control link does not import after the exec. Then:

1. **Good rollout.** The good wheel to every drone, canary 1, then
   batches of ``--batch``. Time from the deploy's POST to the rollout
   ``done``. Meanwhile ``GET /api/v1/nodes`` every ``--poll`` seconds: per
   drone, the longest gap between heartbeats the controller saw (target:
   under 3 heartbeat intervals) and the longest it was shown other than
   online (target: never more than that).
2. **Broken canary.** The broken wheel, the same way: time from the POST
   until the rollout stops (``failed``, the canary having rolled itself
   back by its watchdog; target: under 30 s beyond the confirm window),
   and how many drones were sent it (target: the canary alone).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))

from swarm.clock import parse_iso  # noqa: E402

from support.fleet import Fleet, start_fleet  # noqa: E402
from support.payloads import build_wheel  # noqa: E402
from support.procs import http  # noqa: E402

PATH = "/admin/api/payloads"


def say(text: str) -> None:
    print(text, flush=True)


def push(swarm: Fleet, data: bytes) -> int:
    c = swarm.controller
    status, reply = http(
        "POST", f"{c.admin_url}{PATH}?kind=agent", headers={"X-Admin-Key": c.admin_key}, body=data
    )
    if status != 201:
        raise SystemExit(f"upload refused: {status} {reply}")
    version = int(reply["version"])
    status, reply = c.admin("POST", f"{PATH}/agent/{version}/stage")
    if status != 200:
        raise SystemExit(f"stage refused: {status} {reply}")
    return version


def roll_out(swarm: Fleet, version: int, batch: int, gate_timeout: float) -> str:
    body = {"all": True, "canary": 1, "batch": batch, "gate_timeout_s": gate_timeout}
    status, reply = swarm.controller.admin(
        "POST", f"{PATH}/agent/{version}/deploy", json.dumps(body).encode()
    )
    if status != 202:
        raise SystemExit(f"deploy refused: {status} {reply}")
    return str(reply["id"])


def rollout_state(swarm: Fleet, rollout_id: str) -> dict[str, Any]:
    status, reply = swarm.controller.admin("GET", f"/admin/api/rollouts/{rollout_id}")
    if status != 200:
        raise SystemExit(f"rollout {rollout_id}: {status} {reply}")
    return dict(reply)


class Watch:
    """The controller's view of every drone, polled: heartbeat gaps and
    time shown other than online, per drone."""

    def __init__(self, swarm: Fleet) -> None:
        self.swarm = swarm
        self.last_beat: dict[str, float] = {}
        self.gap: dict[str, float] = {}
        self.down_since: dict[str, float] = {}
        self.down: dict[str, float] = {}

    def poll(self) -> None:
        status, reply = http("GET", f"{self.swarm.controller.public_url}/api/v1/nodes")
        if status != 200:
            return
        now = time.time()
        for node in reply["nodes"]:
            name = node["name"]
            if node.get("last_heartbeat_at"):
                beat = parse_iso(node["last_heartbeat_at"])
                before = self.last_beat.get(name)
                if before is not None and beat > before:
                    self.gap[name] = max(self.gap.get(name, 0.0), beat - before)
                self.last_beat[name] = beat
            if node["status"] != "online":
                self.down_since.setdefault(name, now)
            elif name in self.down_since:
                self.down[name] = max(self.down.get(name, 0.0), now - self.down_since.pop(name))


def until_over(
    swarm: Fleet, rollout_id: str, timeout: float, watch: Watch | None, poll: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        if watch is not None:
            watch.poll()
        state = rollout_state(swarm, rollout_id)
        if state["state"] in ("done", "failed", "aborted", "rolled_back"):
            return state
        if time.monotonic() > deadline:
            raise SystemExit(f"rollout {rollout_id} not over within {timeout:g}s: {state['state']}")
        time.sleep(poll)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--heartbeat", type=float, default=1.0, help="the agents' heartbeat interval (s)")
    parser.add_argument("--confirm-within", type=int, default=20, help="a new agent's window to connect (s)")
    parser.add_argument("--gate-timeout", type=float, default=120.0)
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between looks at the fleet")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ns = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-payloads-"))
    figures: dict[str, Any] = {"agents": ns.agents, "batch": ns.batch, "heartbeat_s": ns.heartbeat}
    try:
        say(f"building two wheels of this checkout in {root}")
        good = build_wheel(root / "good", "0.1.0.post1").read_bytes()
        broken = build_wheel(
            root / "broken",
            "0.1.0.post2",
            {"agent/link.py": ("import grpc\n", "import grpc\nimport swarm_no_such_module  # noqa\n")},
        ).read_bytes()
        names = [f"pb-{i:02d}" for i in range(ns.agents)]
        say(f"starting a controller and {ns.agents} agents")
        swarm = start_fleet(
            root,
            names,
            "--payload-confirm-within",
            str(ns.confirm_within),
            heartbeat_interval=ns.heartbeat,
        )
        try:
            # An agent its watchdog starts again outlives the process group's leader.
            swarm.orphans.extend(agent.pid for agent in swarm.agents.values())

            version = push(swarm, good)
            watch = Watch(swarm)
            watch.poll()
            started = time.monotonic()
            rollout_id = roll_out(swarm, version, ns.batch, ns.gate_timeout)
            over = until_over(swarm, rollout_id, ns.gate_timeout * (ns.agents + 1), watch, ns.poll)
            took = time.monotonic() - started
            for _ in range(int(3 * ns.heartbeat / ns.poll) + 1):  # the last restarts' beats
                watch.poll()
                time.sleep(ns.poll)
            gaps = sorted(watch.gap.values())
            figures["good"] = {
                "state": over["state"],
                "seconds_to_all_updated": round(took, 2),
                "passed": sum(d["state"] == "passed" for d in over["drones"]),
                "heartbeat_gap_s": {
                    "median": round(statistics.median(gaps), 2) if gaps else None,
                    "max": round(gaps[-1], 2) if gaps else None,
                    "over_3_intervals": sum(g > 3 * ns.heartbeat for g in gaps),
                },
                "shown_not_online_s_max": round(max(watch.down.values(), default=0.0), 2),
                "drones_shown_not_online": len(watch.down),
            }
            say(
                f"good: {over['state']} in {took:.1f}s; {figures['good']['passed']} of {ns.agents} passed; "
                f"heartbeat gap median {figures['good']['heartbeat_gap_s']['median']}s, "
                f"max {figures['good']['heartbeat_gap_s']['max']}s "
                f"({figures['good']['heartbeat_gap_s']['over_3_intervals']} over 3 intervals); "
                f"shown not online at most {figures['good']['shown_not_online_s_max']}s "
                f"({len(watch.down)} drones ever)"
            )

            version = push(swarm, broken)
            started = time.monotonic()
            rollout_id = roll_out(swarm, version, ns.batch, ns.gate_timeout)
            over = until_over(swarm, rollout_id, ns.gate_timeout + 60, None, ns.poll)
            took = time.monotonic() - started
            sent = [
                e
                for e in swarm.controller.events(type="payload_deploy_started")
                if e["data"]["version"] == version
            ]
            canary = next(d for d in over["drones"] if d["batch"] == 0)
            figures["broken"] = {
                "state": over["state"],
                "seconds_to_stopped": round(took, 2),
                "confirm_within_s": ns.confirm_within,
                "drones_sent_it": len(sent),
                "canary": canary["drone"],
                "canary_reason": canary["reason"],
            }
            say(
                f"broken: {over['state']} in {took:.1f}s (confirm window {ns.confirm_within}s); "
                f"sent to {len(sent)} drone(s); the canary {canary['drone']}: {canary['reason']}"
            )
        finally:
            swarm.stop()
        if ns.json:
            ns.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps(figures, indent=2))
    finally:
        if ns.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
