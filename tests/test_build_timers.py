"""The build queue's timers, in process with a clock the test moves: the
grace period of a drone that went away, the start timeout, a reconnect
without the build, the grace period after a controller restart, and the
grounding cooldown with its half-open probe.

The real queue, fleet, event log and store (SQLite, on its database
thread) are used; drones are control streams that only record what they
are sent (fakes/links.py), their builds' outcomes are reported by the
test, and the resolver and staging binhost are fakes (fakes/builds.py).
tests/test_build_failures.py and test_build_grounding.py prove the same
behaviour end to end with real agents, real emerge and real timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from swarm.controller.builds import TIMER, BuildQueue, BuildSettings
from swarm.controller.domain import BuildEventData
from swarm.controller.events import EventLog
from swarm.controller.fleet import DroneState, Fleet
from swarm.controller.persist import NodeWriter
from swarm.controller.scheduler import ASSIGNED, BUILDING, DONE, QUEUED, Job
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore

from fakes.builds import GraphResolver, StagedSet
from fakes.clock import ManualClock
from fakes.links import FakeLink, connect

pytestmark = pytest.mark.timeout(60)

SETTINGS = BuildSettings(build_timeout=3600.0, grace=30.0, start_timeout=60.0, ground_after=3, cooldown=300.0)
LEAVES = tuple(f"swarm-test/leaf-{i}-1" for i in range(12))
GRAPH: dict[str, tuple[str, ...]] = dict.fromkeys(LEAVES, ())


@dataclass
class Rig:
    clock: ManualClock
    fleet: Fleet
    events: EventLog
    queue: BuildQueue
    staging: StagedSet
    writer: NodeWriter
    links: dict[str, FakeLink] = field(default_factory=dict)

    async def connect(self, name: str, instance: str = "", cores: int = 2) -> DroneState:
        state, self.links[name] = connect(self.fleet, name, instance, cores)
        await self.writer.flush()  # its row first: the builds' rows refer to it
        return state

    def drop(self, name: str) -> None:
        self.fleet.detach(self.links[name], "killed")

    def drone(self, job: Job) -> DroneState:
        state = self.fleet.get(job.drone_id or "")
        assert state is not None, job
        return state

    def job(self, cpv: str) -> Job:
        return next(j for j in self.queue.jobs.values() if j.cpv == cpv)

    async def until(self, predicate: Callable[[], object], what: str) -> None:
        """Wait (in real time: the writes go through the database thread) for ``predicate``."""
        deadline = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.005)

    async def sent(self, cpv: str, besides: str | None = None) -> Job:
        """The job once its StartBuild went out (saved first), to another drone than ``besides``."""
        job = self.job(cpv)
        await self.until(
            lambda: job.state == ASSIGNED and job.reason.startswith("sent to") and job.build_id != besides,
            f"{cpv} sent to a drone",
        )
        return job

    def report(self, job: Job, kind: str, reason: str = "") -> None:
        """The drone building ``job`` reports an event of its current attempt."""
        if kind == "succeeded":
            self.staging.cpvs.add(job.cpv)
        event = BuildEventData(job.build_id or "", job.id, kind, int(kind == "failed"), reason, 1.0, ())
        self.queue.on_build_event(self.drone(job), event)

    async def build(self, outcome: Callable[[Job], str], done: Callable[[], bool]) -> None:
        """Each StartBuild sent, until ``done()``, is started on its drone and
        ends as ``outcome(job)`` says."""
        while not done():
            await self.until(lambda: done() or self.sent_jobs(), "a build sent, or the end")
            for job in self.sent_jobs():
                self.report(job, "started")
                self.report(job, outcome(job))

    def sent_jobs(self) -> list[Job]:
        return [j for j in self.queue.jobs.values() if j.state == ASSIGNED and j.reason.startswith("sent to")]

    def recorded(self, *types: str) -> list[Any]:
        found = self.events.recent(after_id=None, since_ts=None, limit=1000, drone_id=None, types=types)
        assert found is not None
        return sorted(found, key=lambda e: e.id)

    def requeues(self, job: Job) -> list[dict[str, Any]]:
        return [e.data for e in self.recorded("job_requeued") if e.data["job_id"] == job.id]


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path, settings: BuildSettings = SETTINGS, clock: ManualClock | None = None, up_for: float = 10.0
) -> AsyncIterator[Rig]:
    """A build queue over the database in ``tmp_path`` (what an earlier rig
    there left is loaded, like a controller restart), started ``up_for``
    seconds ago."""
    runner = StoreRunner(SqlStore(f"sqlite:///{tmp_path}/builds.db"))
    await runner.open()
    clock = clock or ManualClock()
    events = EventLog(runner, buffer=1000, retention=1000)
    fleet = Fleet(events, y_threshold=8.0, clock=clock)
    fleet.load(await runner.call(runner.store.list_nodes))
    writer = NodeWriter(fleet, runner, interval=1.0)
    await writer.start()
    staging = StagedSet()
    queue = BuildQueue(fleet, events, runner, GraphResolver(GRAPH), staging, settings, clock=clock)
    await queue.start()
    await clock.advance(up_for)
    try:
        yield Rig(clock, fleet, events, queue, staging, writer)
    finally:
        await queue.stop()
        await writer.stop()
        await runner.close()


def test_a_build_whose_drone_went_away_is_requeued_when_the_grace_period_runs_out(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.connect("first")
            session, _ = await r.queue.queue([LEAVES[0]], name=None, by="test")
            job = await r.sent(LEAVES[0])
            attempt, victim = job.build_id, r.drone(job).name
            r.report(job, "started")
            await r.connect("second")
            r.drop(victim)
            await r.clock.advance(SETTINGS.grace - 1)
            assert (job.state, job.build_id) == (BUILDING, attempt) and r.requeues(job) == []
            await r.clock.advance(TIMER + 1)
            [requeue] = r.requeues(job)
            assert requeue["cause"] == "drone_lost" and requeue["build_id"] == attempt
            assert requeue["reason"] == f"{victim} went away during the build (gone for more than 30s)"
            job = await r.sent(LEAVES[0], besides=attempt)
            assert r.drone(job).name != victim and job.attempts == 2
            r.report(job, "started")
            r.report(job, "succeeded")
            assert job.state == DONE and r.queue.sessions[session.id].state == "complete"

    asyncio.run(scenario())


def test_a_drone_back_within_the_grace_period_keeps_its_build(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.connect("first")
            await r.queue.queue([LEAVES[0]], name=None, by="test")
            job = await r.sent(LEAVES[0])
            attempt = job.build_id
            r.report(job, "started")
            r.drop("first")
            await r.clock.advance(SETTINGS.grace - 1)
            # The same agent process on a new stream, still building it.
            state = await r.connect("first")
            r.queue.on_hello(state, attempt or "", [])
            await r.clock.advance(SETTINGS.grace * 3)
            assert (job.state, job.build_id, job.attempts) == (BUILDING, attempt, 1)
            assert r.requeues(job) == []

    asyncio.run(scenario())


def test_a_build_not_started_within_the_start_timeout_is_given_to_another_drone(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.connect("silent")
            await r.queue.queue([LEAVES[0]], name=None, by="test")
            job = await r.sent(LEAVES[0])
            attempt = job.build_id
            await r.connect("eager")
            # The start timeout counts from the StartBuild sent, not from the assignment.
            await r.clock.advance(SETTINGS.start_timeout - 1)
            assert (job.state, job.build_id) == (ASSIGNED, attempt)
            await r.clock.advance(TIMER + 1)
            [requeue] = r.requeues(job)
            assert requeue["cause"] == "not_started"
            assert requeue["reason"] == "silent did not start the build within 60s"
            job = await r.sent(LEAVES[0], besides=attempt)
            assert job.attempts == 2

    asyncio.run(scenario())


def test_a_drone_that_reconnects_without_its_build_loses_it_unless_just_assigned(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            state = await r.connect("flaky")
            await r.queue.queue([LEAVES[0]], name=None, by="test")
            job = await r.sent(LEAVES[0])
            first = job.build_id
            # Assigned a moment ago: the StartBuild may still be on its way.
            await r.clock.advance(4.0)
            r.queue.on_hello(state, "", [])
            assert (job.state, job.build_id) == (ASSIGNED, first) and r.requeues(job) == []
            await r.clock.advance(TIMER + 1)
            r.queue.on_hello(state, "", [])
            assert [q["cause"] for q in r.requeues(job)] == ["build_lost"]
            # Built, asked to upload, then back without the build: the upload is what was lost.
            job = await r.sent(LEAVES[0], besides=first)
            r.report(job, "started")
            r.queue.uploading(job.build_id or "")
            r.queue.on_hello(state, "", [])
            assert [q["cause"] for q in r.requeues(job)] == ["build_lost", "upload_lost"]
            assert job.state in (QUEUED, ASSIGNED) and job.attempts == 2

    asyncio.run(scenario())


def test_after_a_controller_restart_a_drone_gets_the_grace_period_from_the_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = ManualClock()
        async with rig(tmp_path, clock=clock) as r:
            await r.connect("away")
            await r.queue.queue([LEAVES[0]], name=None, by="test")
            job = await r.sent(LEAVES[0])
            r.report(job, "started")
            attempt = job.build_id
            r.drop("away")
        # Down for an hour: longer than the grace period since the drone was last seen.
        await clock.advance(3600)
        async with rig(tmp_path, clock=clock, up_for=0) as r:
            job = r.job(LEAVES[0])
            assert (job.state, job.build_id) == (BUILDING, attempt)
            await r.clock.advance(SETTINGS.grace - 1)
            assert job.state == BUILDING and r.requeues(job) == []
            await r.clock.advance(TIMER + 1)
            [requeue] = r.requeues(job)
            assert requeue["cause"] == "controller_restart"
            assert requeue["reason"] == "away not back within 30s of the controller's restart"

    asyncio.run(scenario())


def test_a_drone_failing_every_build_is_grounded_for_the_cooldown_then_gets_one_probe(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            # The faulty drone is the strongest: the planner offers it work first.
            faulty = await r.connect("faulty", cores=8)
            await r.connect("good-0")
            await r.connect("good-1")

            def fails_on_faulty(job: Job) -> str:
                return "failed" if job.drone_id == faulty.id else "succeeded"

            def grounded() -> bool:
                return r.queue.dispatch_state(faulty.id, r.clock.time(), {}).grounded

            first, _ = await r.queue.queue(list(LEAVES[:8]), name=None, by="test")
            await r.build(fails_on_faulty, lambda: r.queue.sessions[first.id].state == "complete")
            timeline = [(e.type, e.drone_name) for e in r.recorded("job_failed_on_drone", "drone_grounded")]
            assert timeline == [("job_failed_on_drone", "faulty")] * 3 + [("drone_grounded", "faulty")]
            assert {r.queue.jobs[j].state for j in r.queue.sessions[first.id].job_ids} == {DONE}
            grounded_at = r.clock.time()  # (the clock stands still while the builds run)
            state = r.queue.dispatch_state(faulty.id, r.clock.time(), {})
            assert state.grounded and state.grounded_until == pytest.approx(grounded_at + 300, abs=0.01)

            # Grounded: new work waits for the busy healthy drones rather than go to it.
            second, _ = await r.queue.queue(list(LEAVES[8:]), name=None, by="test")
            await r.until(lambda: len(r.sent_jobs()) == 2, "the healthy drones given work")
            await r.clock.advance(grounded_at + 300 - r.clock.time() - 1)
            assert grounded() and all(j.drone_id != faulty.id for j in r.queue.jobs.values())
            waiting = [r.job(cpv) for cpv in LEAVES[8:] if r.job(cpv).state == QUEUED]
            assert len(waiting) == 2 and {r.queue.why(j) for j in waiting} == {"all drones busy"}

            # The cooldown over: half-open, one probe; it fails and grounds the drone again.
            await r.clock.advance(TIMER + 1)
            probe = next(j for j in [r.job(c) for c in LEAVES[8:]] if j.drone_id == faulty.id)
            await r.sent(probe.cpv)
            probed_at = r.clock.time()
            r.report(probe, "started")
            r.report(probe, "failed", "still broken")
            assert grounded() and [e.drone_name for e in r.recorded("drone_grounded")] == ["faulty"] * 2
            state = r.queue.dispatch_state(faulty.id, r.clock.time(), {})
            assert state.grounded_until == pytest.approx(probed_at + 300, abs=0.01)
            await r.build(fails_on_faulty, lambda: r.queue.sessions[second.id].state == "complete")
            assert [j.failed_on for j in r.queue.jobs.values() if j.drone_id == faulty.id] == []

    asyncio.run(scenario())


def test_a_drone_taking_a_payload_gets_no_new_build_until_it_is_over(tmp_path: Path) -> None:
    """A drone a payload is deployed to takes it only when idle
    (controller/payloads.py): meanwhile it is out of the rotation."""

    async def scenario() -> None:
        async with rig(tmp_path) as r:
            taker = await r.connect("taker", cores=8)  # the stronger: the first pick, were it free
            r.queue.hold_for_payload(taker.id, "to take agent version 2 (deploy d-0123456789ab, admin)")
            await r.connect("other")
            await r.queue.queue([LEAVES[0], LEAVES[1]], name=None, by="test")
            await r.until(r.sent_jobs, "a build sent")
            [first] = r.sent_jobs()
            [waiting] = [r.job(cpv) for cpv in LEAVES[:2] if cpv != first.cpv]
            # The pass that sent it had the other job and no free drone but the held one.
            assert r.drone(first).name == "other" and waiting.state == QUEUED
            held = r.queue.dispatch_state(taker.id, r.clock.time(), {}).held_for_payload
            assert held == "to take agent version 2 (deploy d-0123456789ab, admin)"
            r.queue.hold_for_payload(taker.id, "")
            second = await r.sent(waiting.cpv)
            assert r.drone(second).name == "taker"
            assert r.queue.dispatch_state(taker.id, r.clock.time(), {}).held_for_payload == ""

    asyncio.run(scenario())
