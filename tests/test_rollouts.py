"""Payload rollouts (controller/rollout.py) in process: one real controller
(support/inproc.py) for the module, with mTLS and real HTTP, on a manual
clock (fakes/clock.py) that moves only when a test says so.

The drones are hand-driven control streams (fakes/links.py's FakeLink)
that list the "payloads" feature: a test reads the ApplyPayload each one
is sent and answers with the PayloadStatus an agent would send. What the
agent does with a payload is tests/test_payload_agent.py's and
tests/test_payload_deploy.py's (real agents).
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from swarm import payloadsig
from swarm.clock import iso
from swarm.controller.domain import CheckData, HelloData, PayloadStatusData, PayloadVersionData, PongData
from swarm.controller.fleet import DroneState
from swarm.controller.web import openapi
from swarm.v1 import payload_pb2

from fakes.clock import ManualClock
from fakes.links import FakeLink
from support.inproc import InProcessController, fill_executor, local_config
from support.inproc import run_cli as cli
from support.procs import wait_for

pytestmark = [
    pytest.mark.timeout(60),
]

KIND = "portage-config"
PATH = "/admin/api/payloads"
ROLLOUTS = "/admin/api/rollouts"


def start(root: Path) -> InProcessController:
    config = local_config(root, ping_interval=3600.0, payload_confirm_within=45)
    return InProcessController(config, ManualClock()).start()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessController]:
    proc = start(tmp_path_factory.mktemp("rollouts"))
    try:
        fill_executor(proc)
        yield proc
    finally:
        proc.stop()


def admin(api: InProcessController, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return api.admin(method, path, None if body is None else json.dumps(body).encode())


def per_schema(view: str, value: Any) -> None:
    doc = openapi.admin_document()
    root = {"$ref": f"#/components/schemas/{view}", "components": doc["components"]}
    errors = [
        f"{e.instance_path}: {e.message}" for e in jsonschema_rs.Draft202012Validator(root).iter_errors(value)
    ]
    assert not errors, errors


def staged(api: InProcessController, make_conf: str) -> int:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as t:
        data = make_conf.encode()
        info = tarfile.TarInfo("etc/portage/make.conf")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    status, reply = api.admin("POST", f"{PATH}?kind={KIND}", out.getvalue())
    assert status == 201, reply
    version = int(reply["version"])
    assert admin(api, "POST", f"{PATH}/{KIND}/{version}/stage")[0] == 200
    return version


def advance(api: InProcessController, seconds: float) -> None:
    clock = api.controller.clock
    assert isinstance(clock, ManualClock)
    api.run(lambda: clock.advance(seconds))


@dataclass
class Drone:
    """A hand-driven drone: its control stream and what it says."""

    api: InProcessController
    name: str
    network: str
    runs: int = 0  # the portage-config version it says it runs
    link: FakeLink = field(init=False)
    state: DroneState = field(init=False)

    def connect(self) -> Drone:
        """Its Hello, as the gateway takes it (the fleet, then the payloads)."""
        self.link = FakeLink(self.name.ljust(32, "0"))
        hello = HelloData(
            self.link.drone_id,
            self.name,
            2,
            "lxc",
            self.network,
            "test",
            60_000,
            "h",
            "",
            "",
            "i-" + self.name,
            None,
            features=("payloads",),
            payloads=(PayloadVersionData(KIND, self.runs, ""),),
        )
        payloads = self.api.controller.payloads
        assert payloads is not None

        def attach() -> DroneState:
            state = self.api.controller.fleet.attach(hello, self.link)
            payloads.on_hello(state)
            return state

        self.state = self.api.call(attach)
        return self

    def offers(self) -> list[payload_pb2.PayloadMeta]:
        return [
            payload_pb2.PayloadMeta.FromString(m.apply_payload.meta)
            for m in self.link.sent
            if m.WhichOneof("body") == "apply_payload"
        ]

    def offered(self, count: int) -> payload_pb2.PayloadMeta:
        """Wait for its ``count``-th ApplyPayload; that one."""
        wait_for(lambda: len(self.offers()) >= count, timeout=10, what=f"offer {count} to {self.name}")
        return self.offers()[count - 1]

    def say(self, meta: payload_pb2.PayloadMeta, state: str, reason: str = "") -> None:
        payloads = self.api.controller.payloads
        assert payloads is not None
        status = PayloadStatusData(meta.kind, meta.version, state, reason, meta.deploy_id)
        self.api.call(payloads.on_status, self.state, status)
        if state == "applied":
            self.runs = meta.version

    def unwell(self) -> None:
        """A pong that says a check fails (as an agent's does): unhealthy."""
        fleet = self.api.controller.fleet

        def pong() -> str:
            seq, sent = self.state.ping_seq + 1, fleet.clock.time_ns()
            fleet.on_ping_sent(self.state, seq, sent)
            fleet.on_pong(
                self.state, PongData(seq, sent, False, "", 0.0, 1.0, 1, (CheckData("disk", False, "full"),))
            )
            return self.state.status

        assert self.api.call(pong) == "unhealthy"

    def leave(self) -> None:
        self.api.call(self.api.controller.fleet.detach, self.link, "gone")


def drones(api: InProcessController, network: str, count: int, runs: int = 0) -> list[Drone]:
    return [Drone(api, f"{network}-{i}", network, runs).connect() for i in range(count)]


def rollout(api: InProcessController, rollout_id: str) -> dict[str, Any]:
    status, reply = admin(api, "GET", f"{ROLLOUTS}/{rollout_id}")
    assert status == 200, reply
    return dict(reply)


def reaches(api: InProcessController, rollout_id: str, state: str) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (r := rollout(api, rollout_id))["state"] == state and r,
            timeout=10,
            what=f"rollout {rollout_id} {state}",
        )
    )


def events(api: InProcessController, rollout_id: str) -> list[str]:
    found = sorted(
        (e for e in api.events() if e["data"].get("rollout_id") == rollout_id), key=lambda e: e["id"]
    )
    return [e["type"] for e in found]


def said(api: InProcessController, rollout_id: str, *, ending: list[str], starting: str = "") -> list[str]:
    """The rollout's events once they end so (a state is written, then its event is emitted)."""
    return list(
        wait_for(
            lambda: (
                (found := events(api, rollout_id))[-len(ending) :] == ending
                and (not starting or found[0] == starting)
                and found
            ),
            timeout=10,
            what=f"rollout {rollout_id}'s events ending {ending}",
        )
    )


def versions(api: InProcessController, *names: str) -> list[dict[str, Any]]:
    """The drones' rows of GET /admin/api/drones/versions for the module's kind, in ``names``' order."""
    status, reply = admin(api, "GET", "/admin/api/drones/versions")
    assert status == 200, reply
    rows = {v["drone"]: v for v in reply["versions"] if v["kind"] == KIND}
    return [rows[name] for name in names]


def by_name(reply: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["drone"]: d for d in reply["drones"]}


# -- the plan, the batches, the gate -------------------------------------------------------------


def test_a_rollout_goes_to_the_canary_then_batch_by_batch_each_drone_through_its_gate(
    api: InProcessController,
) -> None:
    version = staged(api, 'MAKEOPTS="-j1"\n')
    fleet = drones(api, "lan1", 5)
    current = Drone(api, "lan1-current", "lan1", version).connect()
    gone = Drone(api, "lan1-gone", "lan1").connect()
    gone.leave()
    Drone(api, "elsewhere", "lan2").connect()

    status, reply = admin(
        api, "POST", f"{PATH}/{KIND}/{version}/deploy", {"network": "lan1", "canary": 1, "batch": 2}
    )
    assert status == 202, reply
    per_schema("RolloutView", reply)
    rid = reply["id"]
    assert reply["batches"] == 3 and reply["state"] == "running" and reply["started_by"] == "admin:admin"
    plan = by_name(reply)
    assert [plan[d.name]["batch"] for d in fleet] == [0, 1, 1, 2, 2]
    assert plan[current.name]["state"] == "skipped" and "runs this version" in plan[current.name]["reason"]
    assert plan[gone.name]["state"] == "skipped" and "not connected" in plan[gone.name]["reason"]
    assert "elsewhere" not in plan

    # One at a time per kind.
    status, again = admin(api, "POST", f"{PATH}/{KIND}/{version}/deploy", {"network": "lan1"})
    assert status == 409 and rid in again["error"]["message"], again

    canary = fleet[0].offered(1)
    assert (canary.version, canary.rollback) == (version, False)
    assert [len(d.offers()) for d in fleet] == [1, 0, 0, 0, 0]  # the canary alone
    fleet[0].say(canary, "applied")
    for batch in (fleet[1:3], fleet[3:5]):
        metas = [d.offered(1) for d in batch]
        for d, meta in zip(batch, metas, strict=True):
            d.say(meta, "applied")
    done = reaches(api, rid, "done")
    assert done["next_batch"] == 3
    assert all(by_name(done)[d.name]["state"] == "passed" for d in fleet)
    assert [len(d.offers()) for d in fleet] == [1] * 5 and current.offers() == []
    assert said(api, rid, ending=["rollout_done"]) == [
        "rollout_started",
        "rollout_batch",
        "rollout_batch",
        "rollout_batch",
        "rollout_done",
    ]
    listing = admin(api, "GET", ROLLOUTS)[1]
    per_schema("RolloutsView", listing)
    assert listing["rollouts"][0]["id"] == rid

    # A drone of that network that connects later, behind: the version is
    # deployed to it, registered (and so the drone held from builds:
    # test_build_timers) by the time its Hello is taken.
    payloads = api.controller.payloads
    assert payloads is not None
    late = Drone(api, "lan1-late", "lan1").connect()
    assert payloads.busy(late.state.id, KIND)
    meta = late.offered(1)
    assert meta.version == version
    # Why it is held (GET /admin/api/drones' dispatch.held_for_payload, with builds on).
    held = api.call(payloads.holding, late.state.id)
    assert held == f"to take {KIND} version {version} (deploy {meta.deploy_id}, rollout {rid} (catch-up))"
    late.say(meta, "applied")
    wait_for(lambda: not payloads.busy(late.state.id, KIND), timeout=10, what="its deploy over")
    assert api.call(payloads.holding, late.state.id) == ""
    # Connecting again, running it: nothing more.
    again = Drone(api, "lan1-late", "lan1", version).connect()
    assert again.offers() == [] and not payloads.busy(late.state.id, KIND)


def test_a_failure_stops_the_rollout_and_the_drones_that_took_it_go_back(api: InProcessController) -> None:
    before = staged(api, 'MAKEOPTS="-j2"\n')
    version = staged(api, 'MAKEOPTS="-j3"\n')
    fleet = drones(api, "lan3", 5, runs=before)
    status, reply = admin(
        api, "POST", f"{PATH}/{KIND}/{version}/deploy", {"drones": [d.name for d in fleet], "batch": 2}
    )
    assert status == 202, reply
    rid = reply["id"]
    fleet[0].say(fleet[0].offered(1), "applied")
    took, refused = fleet[1], fleet[2]
    took.say(took.offered(1), "applied")
    refused.say(refused.offered(1), "failed", "emerge --info failed: restored the old files")

    # Those that took it are sent their previous version, signed as a rollback.
    for d in (fleet[0], took):
        offer = d.offered(2)
        assert (offer.version, offer.rollback) == (before, True)
        d.say(offer, "applied")
    back = reaches(api, rid, "rolled_back")
    plan = by_name(back)
    assert plan[refused.name]["state"] == "failed" and "emerge --info failed" in plan[refused.name]["reason"]
    assert back["reason"].startswith(refused.name)
    assert plan[fleet[0].name]["state"] == plan[took.name]["state"] == "rolled_back"
    assert len(refused.offers()) == 1  # the drone restored its files itself
    # The later batch never got it.
    assert fleet[3].offers() == [] and fleet[4].offers() == []
    assert plan[fleet[3].name]["state"] == "pending"
    said(api, rid, starting="rollout_started", ending=["rollout_failed", "rollout_rolled_back"])
    # The offer the drone verifies: signed, for this drone, a rollback.
    public_key = bytes.fromhex(admin(api, "GET", PATH)[1]["public_key"])
    apply = [m for m in took.link.sent if m.WhichOneof("body") == "apply_payload"][1].apply_payload
    meta = payloadsig.verify(
        public_key,
        payloadsig.Signed(apply.meta, apply.signature),
        now=time.time(),
        drone_id=took.link.drone_id,
        running=version,
    )
    assert meta.rollback and meta.version == before


def test_the_gate_wants_the_drone_connected_within_its_timeout_and_a_rollback_is_asked_for(
    api: InProcessController,
) -> None:
    before = staged(api, 'MAKEOPTS="-j4"\n')
    version = staged(api, 'MAKEOPTS="-j5"\n')
    fleet = drones(api, "lan4", 4, runs=before)
    body = {"network": "lan4", "canary": 1, "batch": 3, "gate_timeout_s": 30, "auto_rollback": False}
    status, reply = admin(api, "POST", f"{PATH}/{KIND}/{version}/deploy", body)
    assert status == 202, reply
    rid = reply["id"]
    fleet[0].say(fleet[0].offered(1), "applied")
    # Batch 1: one applies it, its stream gone by then; one never answers;
    # one applies it and is unhealthy.
    meta = fleet[1].offered(1)
    fleet[1].leave()
    fleet[1].say(meta, "applied")
    fleet[2].offered(1)
    fleet[3].unwell()
    fleet[3].say(fleet[3].offered(1), "applied")
    advance(api, 31)
    failed = reaches(api, rid, "failed")
    plan = by_name(failed)
    assert plan[fleet[2].name]["state"] == "failed" and "timed out" in plan[fleet[2].name]["reason"]
    assert plan[fleet[1].name]["state"] == "failed" and "not connected" in plan[fleet[1].name]["reason"]
    assert plan[fleet[3].name]["state"] == "failed" and "unhealthy" in plan[fleet[3].name]["reason"]
    said(api, rid, ending=["rollout_failed"])
    assert len(fleet[0].offers()) == 1  # no rollback unasked

    status, refused = admin(api, "POST", f"{ROLLOUTS}/{rid}/resume")
    assert status == 409 and "failed" in refused["error"]["message"]
    status, reply = admin(api, "POST", f"{ROLLOUTS}/{rid}/rollback")
    assert status == 202 and reply["state"] == "rolling_back", reply
    for d in (fleet[0], fleet[3]):
        offer = d.offered(2)
        assert (offer.version, offer.rollback) == (before, True)
        d.say(offer, "applied")
    back = reaches(api, rid, "rolled_back")
    plan = by_name(back)
    assert plan[fleet[0].name]["state"] == plan[fleet[3].name]["state"] == "rolled_back"
    # Gone: it keeps it, said so; never having taken it: not sent anything.
    assert plan[fleet[1].name]["state"] == "kept" and "not connected" in plan[fleet[1].name]["reason"]
    assert len(fleet[2].offers()) == 1
    status, refused = admin(api, "POST", f"{ROLLOUTS}/{rid}/rollback")
    assert status == 409


def test_pause_resume_and_abort(api: InProcessController) -> None:
    version = staged(api, 'MAKEOPTS="-j6"\n')
    fleet = drones(api, "lan5", 3)
    body = {"network": "lan5", "canary": 1, "batch": 1, "pause_s": 60}
    rid = admin(api, "POST", f"{PATH}/{KIND}/{version}/deploy", body)[1]["id"]
    fleet[0].say(fleet[0].offered(1), "applied")
    paused = wait_for(lambda: (r := rollout(api, rid))["next_batch_at"] and r, timeout=10, what="the pause")
    assert paused["next_batch"] == 1  # the canary passed
    assert paused["next_batch_at"] == iso(api.controller.clock.time() + 60)
    # Between batches (the pause): paused, the next batch waits for a resume.
    status, reply = admin(api, "POST", f"{ROLLOUTS}/{rid}/pause")
    assert status == 200 and reply["state"] == "paused", reply
    assert admin(api, "POST", f"{ROLLOUTS}/{rid}/pause")[0] == 409
    wait_for(lambda: rollout(api, rid)["next_batch_at"] is None, timeout=10, what="the pause cut short")
    advance(api, 120)
    assert fleet[1].offers() == []
    status, reply = admin(api, "POST", f"{ROLLOUTS}/{rid}/resume")
    assert status == 200 and reply["state"] == "running", reply
    # Batch 1 at once, the clock unmoved: the resume is the admin's go-ahead,
    # the pause is not waited again.
    fleet[1].offered(1)
    status, reply = admin(api, "POST", f"{ROLLOUTS}/{rid}/abort")
    assert status == 200 and reply["state"] == "aborted", reply
    advance(api, 120)
    assert fleet[2].offers() == []
    assert admin(api, "POST", f"{ROLLOUTS}/{rid}/resume")[0] == 409
    assert said(api, rid, ending=["rollout_aborted"]) == [
        "rollout_started",
        "rollout_batch",
        "rollout_paused",
        "rollout_resumed",
        "rollout_batch",
        "rollout_aborted",
    ]
    # Over: the kind is free for the next rollout.
    assert admin(api, "GET", ROLLOUTS)[1]["rollouts"][0]["state"] == "aborted"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({}, 400, "say which drones"),
        ({"all": True, "network": "x"}, 400, "exactly one of them"),
        ({"network": "lan9", "canary": -1}, 400, "canary must be"),
        ({"network": "lan9", "batch": 0}, 400, "batch must be"),
        ({"network": "lan9", "pause_s": "soon"}, 400, "pause_s must be"),
        ({"network": "lan9", "gate_timeout_s": 0}, 400, "gate_timeout_s must be"),
        ({"network": "lan9", "auto_rollback": "yes"}, 400, "auto_rollback must be"),
        ({"network": "lan9", "speed": 3}, 400, "unknown field 'speed'"),
        ({"drones": ["nobody", "either"]}, 404, "no drone named 'nobody'"),
        ({"network": "no-such-network"}, 409, "no drone to deploy"),
    ],
)
def test_a_bad_deploy_is_refused_saying_why(
    api: InProcessController, body: dict[str, Any], status: int, needle: str
) -> None:
    version = api.controller.payloads.latest(KIND) if api.controller.payloads else 0
    if not version:
        version = staged(api, "A=1\n")
    got, reply = admin(api, "POST", f"{PATH}/{KIND}/{version}/deploy", body)
    assert got == status and needle in reply["error"]["message"], reply


def test_unknown_rollouts_and_ids(api: InProcessController) -> None:
    assert admin(api, "GET", f"{ROLLOUTS}/r-0123456789ab")[0] == 404
    status, reply = admin(api, "GET", f"{ROLLOUTS}/nonsense")
    assert status == 400 and "a rollout id" in reply["error"]["message"]
    assert admin(api, "POST", f"{ROLLOUTS}/r-0123456789ab/abort")[0] == 404


# -- a restart mid-rollout ---------------------------------------------------------------------------


def test_after_a_restart_a_running_rollout_is_paused_where_it_was_and_nothing_is_sent_twice(
    tmp_path: Path,
) -> None:
    """The controller stops mid-batch (its tasks cancelled, nothing more
    written: as a kill -9 leaves the store); the next finds it paused."""
    first = start(tmp_path)
    try:
        version = staged(first, 'MAKEOPTS="-j7"\n')
        fleet = drones(first, "lan6", 4)
        body = {"network": "lan6", "canary": 1, "batch": 2}
        rid = admin(first, "POST", f"{PATH}/{KIND}/{version}/deploy", body)[1]["id"]
        fleet[0].say(fleet[0].offered(1), "applied")
        fleet[1].say(fleet[1].offered(1), "applied")
        fleet[2].offered(1)  # sent; it applies it while the controller is down
        runner = first.controller.runner

        def stored_state(name: str) -> str:
            # What a restart will read: the API shows a drone's state before its write lands.
            record = next(
                r for r in first.run(lambda: runner.call(runner.store.list_rollouts)) if r.id == rid
            )
            return str(next(d["state"] for d in json.loads(record.drones) if d["name"] == name))

        wait_for(
            lambda: stored_state(fleet[1].name) == "passed",
            timeout=10,
            what="the first of batch 1 passed, and written",
        )
        # A deploy to one drone, in flight too: its drone's answer is lost.
        lone = Drone(first, "lan6-lone", "lan6-lone").connect()
        status, reply = admin(first, "POST", f"{PATH}/{KIND}/{version}/deploy", {"drones": [lone.name]})
        assert status == 202, reply
        lone_offer = lone.offered(1)
    finally:
        first.stop()

    second = start(tmp_path)
    try:
        found = rollout(second, rid)
        assert found["state"] == "paused" and "restarted" in found["reason"], found
        plan = by_name(found)
        assert [plan[d.name]["state"] for d in fleet] == ["passed", "passed", "sent", "pending"]
        assert found["next_batch"] == 1
        orphans = versions(second, fleet[2].name, lone.name)
        assert [v["state"] for v in orphans] == ["sent", "sent"], orphans
        assert all("controller restarted" in v["reason"] for v in orphans), orphans
        # The drones come back, each saying what it runs: the deploys left in
        # flight are settled by that (one applied it, one did not).
        again = [Drone(second, d.name, "lan6", version).connect() for d in fleet[:3]]
        lone = Drone(second, lone.name, "lan6-lone").connect()
        took, lost = versions(second, fleet[2].name, lone.name)
        assert (took["state"], took["running"], took["drift"]) == ("applied", version, False), took
        assert (lost["state"], lost["running"], lost["drift"]) == ("timed_out", 0, True), lost
        assert "controller restarted" in lost["reason"] and "runs version 0" in lost["reason"], lost
        settled = {
            e["drone_name"]: e["type"]
            for e in second.events()
            if e["data"].get("deploy_id") in (took["deploy_id"], lost["deploy_id"])
            and e["type"] != "payload_deploy_started"
        }
        assert settled == {fleet[2].name: "payload_applied", lone.name: "payload_failed"}, settled
        # The lone drone's own answer, said after its Welcome, still counts.
        lone.say(lone_offer, "failed", "emerge --info failed: restored the old files")
        (lost,) = versions(second, lone.name)
        assert (lost["state"], lost["reason"]) == ("failed", "emerge --info failed: restored the old files")
        last = Drone(second, fleet[3].name, "lan6").connect()
        status, reply = admin(second, "POST", f"{ROLLOUTS}/{rid}/resume")
        assert status == 200, reply
        last.say(last.offered(1), "applied")
        done = reaches(second, rid, "done")
        assert all(d["state"] == "passed" for d in done["drones"])
        assert [d.offers() for d in again] == [[], [], []]  # none sent it twice
        said(
            second,
            rid,
            ending=["rollout_paused", "rollout_resumed", "rollout_batch", "rollout_batch", "rollout_done"],
        )
    finally:
        second.stop()


def test_a_batch_that_passed_before_a_restart_is_not_run_again_and_the_resume_goes_on_at_once(
    tmp_path: Path,
) -> None:
    """Killed after the canary passed but before next_batch was written (the
    store says batch 0, its drone passed): on resume batch 0 is over without
    a deploy or an event, and batch 1 starts at once."""
    first = start(tmp_path)
    try:
        version = staged(first, 'MAKEOPTS="-j10"\n')
        fleet = drones(first, "lan8", 2)
        body = {"network": "lan8", "canary": 1, "batch": 1, "pause_s": 60}
        rid = admin(first, "POST", f"{PATH}/{KIND}/{version}/deploy", body)[1]["id"]
        fleet[0].say(fleet[0].offered(1), "applied")
        wait_for(lambda: rollout(first, rid)["next_batch_at"], timeout=10, what="the pause")
        rollouts, runner = first.controller.rollouts, first.controller.runner
        assert rollouts is not None
        behind = replace(rollouts.get(rid).record(), next_batch=0)
        first.run(lambda: runner.call(runner.store.put_rollout, behind))
    finally:
        first.stop()

    second = start(tmp_path)
    try:
        found = rollout(second, rid)
        assert (found["state"], found["next_batch"]) == ("paused", 0), found
        again = Drone(second, fleet[0].name, "lan8", version).connect()
        last = Drone(second, fleet[1].name, "lan8").connect()
        assert admin(second, "POST", f"{ROLLOUTS}/{rid}/resume")[0] == 200
        last.say(last.offered(1), "applied")  # the clock unmoved: no pause
        done = reaches(second, rid, "done")
        assert [d["state"] for d in done["drones"]] == ["passed", "passed"]
        assert again.offers() == []
        assert said(second, rid, ending=["rollout_resumed", "rollout_batch", "rollout_done"])[-4:] == [
            "rollout_paused",
            "rollout_resumed",
            "rollout_batch",
            "rollout_done",
        ]
    finally:
        second.stop()


# -- swarm-cli payload deploy | status | rollback -----------------------------------------------------


def test_cli_rolls_out_shows_and_rolls_back(
    api: InProcessController, capsys: pytest.CaptureFixture[str]
) -> None:
    before = staged(api, 'MAKEOPTS="-j8"\n')
    version = staged(api, 'MAKEOPTS="-j9"\n')
    fleet = drones(api, "lan7", 2, runs=before)
    argv = ("payload", "deploy", KIND, str(version), "--network", "lan7", "--canary", "1", "--batch", "5")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(cli, api, capsys, *argv, "--wait", "--timeout", "30")
        for d in fleet:
            d.say(d.offered(1), "applied")
        code, out, err = waiting.result(timeout=40)
    assert code == 0, err
    rid = out.split()[1].rstrip(":")
    lines = out.splitlines()
    assert lines[0] == f"rollout {rid}: {KIND} version {version} to network lan7: 2 drones in 2 batches"
    assert {f"{fleet[0].name}: passed", f"{fleet[1].name}: passed"} <= set(lines[1:])
    reaches(api, rid, "done")
    code, out, err = cli(api, capsys, "payload", "status", "--rollout", rid)
    assert code == 0, err
    assert f"rollout {rid}" in out and "done" in out
    assert all(
        any(
            line.split()[:3] == [d.name, "0" if d is fleet[0] else "1", "passed"] for line in out.splitlines()
        )
        for d in fleet
    )
    code, out, err = cli(api, capsys, "payload", "rollback", rid)
    assert code == 0, err
    assert "rolling_back" in out
    for d in fleet:
        d.say(d.offered(2), "applied")
    reaches(api, rid, "rolled_back")
    code, _, err = cli(api, capsys, "payload", "rollback", rid)
    assert code == 1 and err.count("\n") == 1 and "409" in err
    code, _, err = cli(api, capsys, "payload", "deploy", KIND, str(version), "--canary", "1")
    assert code == 2 and "say which drones: --drone (one or more), --network or --all" in err
