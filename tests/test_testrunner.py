"""The test runner's choices and state machine, in process with a clock the
test moves: regular jobs first, marked drones taking test builds anyway,
at most N at once, an admin's cancel, the timers, what a notification
says, and retention.

The real runner, test-build queue (testbuilds.py), build queue, fleet,
event log and store (SQLite) are used; drones are control streams that
record what they are sent (fakes/links.py) and their outcomes are
reported by the test. tests/test_testbuild_runs.py proves the same with
a real agent and real emerge.

Retention's last test runs a whole controller in process (its Portage
prefix, the test binhost's own Portage worker), days passing on a clock
whose wall time the test moves (fakes/clock.py's ShiftedClock).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prefix as pfx
import pytest

from swarm.controller.builds import BuildQueue, BuildSettings
from swarm.controller.domain import BuildEventData
from swarm.controller.errors import NotFound
from swarm.controller.events import EventLog
from swarm.controller.fleet import DroneState, Fleet
from swarm.controller.notify import Notifier
from swarm.controller.persist import NodeWriter
from swarm.controller.portage import PortageWorker
from swarm.controller.scheduler import ASSIGNED
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore
from swarm.controller.testbinhost import WARNING, TestBinhost
from swarm.controller.testbuild_rules import Rate
from swarm.controller.testbuilds import TestBuild, TestBuilds
from swarm.controller.testrunner import RunnerSettings, TestRunner
from swarm.files import sha256_file
from swarm.protocol import TEST_BUILDS

from fakes.builds import GraphResolver, StagedSet
from fakes.clock import ManualClock, ShiftedClock
from fakes.links import FakeLink, connect
from support import gpkgs
from support.inproc import InProcessController, fill_executor, local_config
from support.procs import http, wait_for

pytestmark = pytest.mark.timeout(60)

NAMES = ("alpha", "beta", "gamma", "delta")
LEAVES = tuple(f"swarm-test/{n}-1" for n in NAMES)
SETTINGS = RunnerSettings(parallel=1, drones=frozenset({"tester"}), keep_days=7, start_timeout=60, grace=30)


async def resolve(atom: str) -> str:
    cpv = atom.removeprefix("=") if atom.startswith("=") else atom + "-1"
    if cpv not in LEAVES:
        raise NotFound(f"no package matches {atom!r}")
    return cpv


@dataclass
class Rig:
    clock: ManualClock
    fleet: Fleet
    queue: BuildQueue
    tests: TestBuilds
    runner: TestRunner
    writer: NodeWriter
    secret: str
    logs: Path
    links: dict[str, FakeLink] = field(default_factory=dict)

    async def connect(self, name: str) -> DroneState:
        state, self.links[name] = connect(self.fleet, name)
        state.features = (TEST_BUILDS,)
        await self.writer.flush()
        return state

    async def submit(self, package: str, **extra: Any) -> TestBuild:
        return (await self.tests.submit(self.secret, package, **extra)).build

    def test_starts(self, name: str) -> list[Any]:
        sent = self.links[name].sent
        return [m.start_build for m in sent if m.HasField("start_build") and m.start_build.test_build]

    def cancels(self, name: str) -> list[Any]:
        return [m.cancel_build for m in self.links[name].sent if m.HasField("cancel_build")]

    async def report(self, name: str, build_id: str, kind: str, reason: str = "", exit_code: int = 0) -> None:
        drone = self.fleet.find(name)
        assert drone is not None
        self.runner.on_build_event(drone, BuildEventData(build_id, "", kind, exit_code, reason, 1.0, ()))
        await self.runner.run_pass()

    async def until(self, predicate: Any, what: str) -> None:
        for _ in range(2000):
            if predicate():
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"timed out waiting for {what}")

    async def state(self, id: str) -> TestBuild:
        build = await self.tests.get(id)
        assert build is not None
        return build


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, settings: RunnerSettings = SETTINGS) -> AsyncIterator[Rig]:
    store = StoreRunner(SqlStore(f"sqlite:///{tmp_path}/swarm.db"))
    await store.open()
    clock = ManualClock()
    events = EventLog(store, buffer=1000, retention=1000)
    fleet = Fleet(events, y_threshold=8.0, clock=clock)
    writer = NodeWriter(fleet, store, interval=1.0)
    await writer.start()
    graph: dict[str, tuple[str, ...]] = dict.fromkeys(LEAVES, ())
    queue = BuildQueue(fleet, events, store, GraphResolver(graph), StagedSet(), BuildSettings(), clock=clock)
    await queue.start()
    tests = TestBuilds(store, events, resolve, parallel=settings.parallel, clock=clock)
    await tests.start()
    _, secret = await tests.create_token("alice", Rate.parse("100/h"), 50, 50, "admin:test")
    # The worker is never asked here: no package reaches this binhost in these tests.
    binhost = TestBinhost(tmp_path / "test", tmp_path / "uploads", "", PortageWorker(tmp_path), store, events)
    logs = tmp_path / "buildlogs"
    logs.mkdir()
    runner = TestRunner(
        tests, queue, fleet, binhost, Notifier(None, tests.notified), logs, settings, clock=clock
    )
    runner.public_url = "http://ctl.test:8100"
    await runner.start()
    try:
        yield Rig(clock, fleet, queue, tests, runner, writer, secret, logs)
    finally:
        await runner.stop()
        await queue.stop()
        await writer.stop()
        await store.close()


def test_regular_jobs_go_first_and_a_marked_drone_takes_test_builds_anyway(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.connect("worker")
            await r.connect("tester")
            first = await r.submit("swarm-test/alpha")
            second = await r.submit("swarm-test/beta")
            await r.runner.run_pass()
            # Nothing regular waits: the marked drone (first in line) takes the oldest.
            assert [s.cpv for s in r.test_starts("tester")] == ["swarm-test/alpha-1"]
            [start] = r.test_starts("tester")
            assert start.test_build and start.job_id == first.id
            assert (await r.state(first.id)).state == "running"
            # At most one at once (parallel 1): the second waits though "worker" is idle.
            assert r.test_starts("worker") == [] and (await r.state(second.id)).state == "queued"

            # A session's two jobs: the planner gives one to "worker"; the other waits
            # for a drone, and so does the test build (the marked one is busy).
            await r.queue.queue(["swarm-test/gamma-1", "swarm-test/delta-1"], name=None, by="test")
            await r.until(lambda: any(j.state == ASSIGNED for j in r.queue.jobs.values()), "a job placed")
            await r.report("tester", start.build_id, "started")
            await r.report("tester", start.build_id, "succeeded")
            done = await r.state(first.id)
            assert done.state == "failed" and done.reason == "reported success but no package arrived"
            # The marked drone is free and a regular job is ready: the test build goes there anyway.
            assert [s.cpv for s in r.test_starts("tester")][-1] == "swarm-test/beta-1"
            assert (await r.state(second.id)).state == "running"
            regular = [m.start_build for m in r.links["worker"].sent if m.HasField("start_build")]
            assert [s.test_build for s in regular] == [False]

    asyncio.run(scenario())


def test_an_unmarked_drone_takes_test_builds_only_when_no_regular_job_is_ready(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, RunnerSettings(parallel=2)) as r:
            await r.queue.queue(["swarm-test/gamma-1"], name=None, by="test")
            assert r.queue.ready()  # no drone yet: the job waits
            waiting = await r.submit("swarm-test/alpha")
            await r.connect("worker")
            await r.runner.run_pass()
            await r.until(lambda: not r.queue.ready(), "the job placed")
            assert r.test_starts("worker") == [] and (await r.state(waiting.id)).state == "queued"
            # The worker is busy with the job; a second drone comes, nothing regular waits.
            await r.connect("other")
            await r.runner.run_pass()
            assert [s.cpv for s in r.test_starts("other")] == ["swarm-test/alpha-1"]
            # Busy for the planner too: a new job does not go to "other".
            await r.queue.queue(["swarm-test/delta-1"], name=None, by="test")
            await asyncio.sleep(0.05)
            assert r.queue.ready()

    asyncio.run(scenario())


def test_an_admin_cancels_a_running_test_build_on_its_drone(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.connect("worker")
            asked = await r.submit("swarm-test/alpha")
            await r.runner.run_pass()
            [start] = r.test_starts("worker")
            await r.report("worker", start.build_id, "started")
            assert (await r.tests.cancel(asked.id, "admin:bob")).state == "running"
            await r.runner.run_pass()
            [cancel] = r.cancels("worker")
            assert cancel.build_id == start.build_id and cancel.reason == "cancelled by admin:bob"
            await r.runner.run_pass()
            assert len(r.cancels("worker")) == 1  # asked once
            await r.report("worker", start.build_id, "cancelled", "cancelled by the controller")
            done = await r.state(asked.id)
            assert (done.state, done.reason) == ("cancelled", "cancelled by admin:bob")

    asyncio.run(scenario())


def test_a_build_not_started_in_time_or_lost_with_its_drone_fails_saying_why(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.connect("worker")
            slow = await r.submit("swarm-test/alpha")
            await r.runner.run_pass()
            await r.clock.advance(SETTINGS.start_timeout + 1)
            await r.runner.run_pass()
            done = await r.state(slow.id)
            assert (done.state, done.reason) == ("failed", "worker did not start it within 60s")
            assert [c.reason for c in r.cancels("worker")] == [done.reason]

            lost = await r.submit("swarm-test/beta")
            await r.runner.run_pass()
            start = r.test_starts("worker")[-1]
            await r.report("worker", start.build_id, "started")
            r.fleet.detach(r.links["worker"], "killed")
            await r.clock.advance(SETTINGS.grace - 5)
            await r.runner.run_pass()
            assert (await r.state(lost.id)).state == "running"
            await r.clock.advance(10)
            await r.runner.run_pass()
            done = await r.state(lost.id)
            assert (done.state, done.reason) == ("failed", "worker went away during the test build")

            # Back without the build it was sent (after the allowance for one on its way): lost.
            drone = await r.connect("worker")
            gone = await r.submit("swarm-test/gamma")
            await r.runner.run_pass()
            r.runner.on_hello(drone, "", [])
            await r.runner.run_pass()
            assert (await r.state(gone.id)).state == "running"  # just sent: it may be on its way
            await r.clock.advance(6)
            r.runner.on_hello(drone, "", [])
            await r.runner.run_pass()
            done = await r.state(gone.id)
            assert (done.state, done.reason) == (
                "failed",
                "worker reconnected without the build (it was lost)",
            )
            # Back still running a test build that is not the runner's any more: cancelled there.
            r.runner.on_hello(drone, "tb-0123456789ab-abcdef", [])
            assert r.cancels("worker")[-1].build_id == "tb-0123456789ab-abcdef"

    asyncio.run(scenario())


def test_a_failure_keeps_the_end_of_its_log_and_the_notice_tells_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.connect("worker")
            asked = await r.submit("swarm-test/alpha", notify_email="a@example.org", webhook_url="")
            await r.runner.run_pass()
            [start] = r.test_starts("worker")
            lines = [f"line {i}" for i in range(200)] + [
                " * ERROR: swarm-test/alpha-1::gentoo failed",
                " * boom",
            ]
            (r.logs / f"{start.build_id}.log").write_text("\n".join(lines) + "\n")
            await r.report("worker", start.build_id, "failed", "the agent's tail", exit_code=1)
            done = await r.state(asked.id)
            assert done.state == "failed" and done.exit_code == 1
            assert done.reason == "ERROR: swarm-test/alpha-1::gentoo failed boom"
            assert done.log_tail.endswith(" * boom") and "line 199" in done.log_tail
            assert "line 100" not in done.log_tail  # the last lines only

            notice = r.runner.notice(done)
            assert notice.email == "a@example.org" and "failed" in notice.subject
            assert f"http://ctl.test:8100/api/v1/test-build/{asked.id}/log" in notice.text
            assert " * boom" in notice.text and WARNING not in notice.text  # no package, no warning
            payload = notice.payload
            assert payload["state"] == "failed" and payload["links"]["log"].endswith(f"{asked.id}/log")
            assert not {"notify_email", "webhook_url", "token_id"} & set(payload)
            # No SMTP server configured: the notification fails, and the record says why.
            for _ in range(1000):
                recorded = await r.state(asked.id)
                if recorded.notified:
                    break
                await asyncio.sleep(0.01)
            assert recorded.notified == "failed: email: no SMTP server is configured (--smtp-url)"

    asyncio.run(scenario())


def test_retention_forgets_old_test_builds_with_their_logs(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.connect("worker")
            old = await r.submit("swarm-test/alpha")
            await r.runner.run_pass()
            [start] = r.test_starts("worker")
            log_file = r.logs / f"{start.build_id}.log"
            log_file.write_text("built\n")
            await r.report("worker", start.build_id, "failed", "no", exit_code=1)
            young = await r.submit("swarm-test/beta")  # queued: never pruned
            day = 86400
            assert await r.runner.retain(r.clock.time() + 6 * day) == 0  # kept 7 days
            assert log_file.exists()
            assert await r.runner.retain(r.clock.time() + 8 * day) == 1
            assert await r.tests.get(old.id) is None and not log_file.exists()
            assert await r.tests.get(young.id) is not None

    asyncio.run(scenario())


# -- retention in a whole controller --------------------------------------------------------

DAY = 86400.0


def finished_test_build(api: InProcessController, secret: str, gpkg: Path, cpv: str) -> dict[str, Any]:
    """A test build of ``cpv`` asked over HTTP that ran and succeeded: its
    record, its package (a real gpkg) filed in the test binhost by the path
    a drone's upload takes, and its log."""
    status, asked = http(
        "POST",
        api.public_url + "/api/v1/test-build",
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        body=json.dumps({"package": cpv.rsplit("-", 1)[0]}).encode(),
    )
    assert status == 202, asked
    runner, tests = api.controller.testrunner, api.controller.testbuilds
    assert runner is not None and tests is not None
    build_id = f"{asked['id']}-000001"
    digest, size = sha256_file(gpkg)
    data = gpkg.read_bytes()
    # Its log, as the drone's BuildLog stream leaves it.
    runner.log_path(build_id).parent.mkdir(exist_ok=True)
    runner.log_path(build_id).write_text(f">>> Emerging (1 of 1) {cpv}\n")

    async def chunks() -> AsyncIterator[tuple[int, bytes, int]]:
        yield 0, data, zlib.crc32(data)

    async def run_it() -> None:
        await tests.started(asked["id"], "tester", build_id)
        assert await runner.binhost.receive(build_id, cpv, gpkg.name, size, digest, chunks()) == (size, True)
        await tests.finished(asked["id"], "succeeded", 0, "", "built", runner.binhost.files_of(build_id))
        runner.binhost.forget(build_id)

    api.run(run_it)
    done: dict[str, Any] = api.get(f"/api/v1/test-build/{asked['id']}")
    assert done["state"] == "succeeded" and done["cpv"] == cpv and len(done["packages"]) == 1, done
    return {**done, "build_id": build_id}


def test_keep_days_deletes_an_expired_builds_packages_index_entry_log_and_record_and_keeps_a_fresh_one(
    tmp_path: Path,
) -> None:
    ctl = pfx.create_prefix(pfx.PrefixConfig(tmp_path / "ctl-prefix", pfx.Role.CONTROLLER))
    clock = ShiftedClock()
    # --test-build-keep-days 2
    config = local_config(tmp_path, portage_eprefix=ctl.root, test_build_keep_days=2.0)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # The two packages written by Portage's gpkg code while the controller starts.
        made = pool.submit(
            gpkgs.write, ctl, tmp_path / "made", "swarm-test/leaf-data-1", "swarm-test/leaf-hello-1"
        )
        api = InProcessController(config, clock).start()
        leaf_data, leaf_hello = made.result(timeout=60)
    try:
        fill_executor(api)
        status, token = api.admin(
            "POST", "/admin/api/test-build-tokens", json.dumps({"user": "alice", "rate": "10/h"}).encode()
        )
        assert status == 201, token
        test_pkgdir = config.data_dir / "binhost" / "test"
        old = finished_test_build(api, token["secret"], leaf_data, "swarm-test/leaf-data-1")
        clock.shift(DAY)
        fresh = finished_test_build(api, token["secret"], leaf_hello, "swarm-test/leaf-hello-1")
        index = (test_pkgdir / "Packages").read_text()
        assert "CPV: swarm-test/leaf-data-1" in index and "CPV: swarm-test/leaf-hello-1" in index
        files = {b["id"]: test_pkgdir / b["packages"][0].partition("/binhost/test/")[2] for b in (old, fresh)}
        assert all(f.is_file() for f in files.values()), files
        logs = {b["id"]: config.data_dir / "buildlogs" / f"{b['build_id']}.log" for b in (old, fresh)}
        assert all(f.is_file() for f in logs.values()), logs

        # The old one finished 2.5 days ago, the fresh one 1.5: the runner's hourly
        # retention, due (it last ran over an hour ago by the clock), forgets the old one.
        clock.shift(1.5 * DAY)
        # The record goes first, then its package (the index rewritten through a
        # Portage process: slow when loaded), then its log.
        wait_for(
            lambda: (
                http("GET", f"{api.public_url}/api/v1/test-build/{old['id']}")[0] == 404
                and not files[old["id"]].exists()
                and not logs[old["id"]].exists()
            ),
            timeout=60,
            what="the expired test build forgotten, its package and log deleted",
        )
        assert not (test_pkgdir / "swarm-test" / "leaf-data").exists()  # no empty folder left
        status, index = http("GET", api.public_url + "/binhost/test/Packages")
        assert status == 200 and "CPV: swarm-test/leaf-data-1" not in index, index
        assert "CPV: swarm-test/leaf-hello-1" in index
        assert files[fresh["id"]].is_file() and logs[fresh["id"]].is_file()
        assert api.get(f"/api/v1/test-build/{fresh['id']}")["state"] == "succeeded"
        listed = api.admin("GET", "/admin/api/test-builds")[1]["builds"]
        assert [b["id"] for b in listed] == [fresh["id"]]
    finally:
        api.stop()
