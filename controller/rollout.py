"""Rollouts: one staged payload version deployed to a set of drones (all,
a network, a list) a batch at a time, each drone through a health gate.

A rollout (payload_rollouts.state)::

    running --pause--> paused --resume--> running
       |  \\--abort (running or paused)--> aborted
       |---a drone fails its gate--> failed [--auto-rollback--> rolling_back --> rolled_back]
       \\---every batch passed--> done
    failed | aborted | done | paused --rollback--> rolling_back --> rolled_back

The plan is fixed when it starts: the canaries (``canary`` drones, batch
0), then batches of ``batch`` drones, by name. A drone passes its gate
when its deploy (Payloads.deploy_one) ends APPLIED and the fleet sees it
online (not unhealthy) and running the new version, all within
``gate_timeout_s``. The first drone that does not stops the rollout: the
batch under way ends, no later batch starts (those drones keep their
version), and with ``auto_rollback`` the drones that took the version go
back to the one they ran before, each a deploy signed as a rollback.

Durable: the plan and each drone's progress are written before and after
every step (a drone is marked sent before its ApplyPayload goes), so a
controller killed mid-rollout finds it paused where it was; on resume a
drone marked sent that runs the version already passes on to its gate
without being sent it again, and the drones that passed are not touched.

A drone that connects while no rollout of a kind is active, and runs an
older version of it than the last rollout that was done (and meant it:
all, its network, or named), is deployed that version at once and held
from builds until its deploy ends (catch-up).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

from swarm.clock import SYSTEM, Clock
from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound
from swarm.controller.events import EventLog
from swarm.controller.fleet import ONLINE, DroneState, Fleet
from swarm.controller.payloads import APPLIED, FAILED, REFUSED, ROLLED_BACK, UPLOADED, Payloads
from swarm.controller.store.records import PayloadRecord, RolloutRecord
from swarm.controller.store.runner import StoreRunner
from swarm.payloadsig import KINDS
from swarm.protocol import PAYLOADS, speaks
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)

# A rollout's states.
RUNNING, PAUSED, ABORTED, DONE = "running", "paused", "aborted", "done"
ROLLING_BACK, ROLLOUT_FAILED, ROLLOUT_ROLLED_BACK = "rolling_back", "failed", "rolled_back"
ACTIVE = frozenset({RUNNING, PAUSED, ROLLING_BACK})
# A planned drone's states.
PENDING, SENT, PASSED, SKIPPED = "pending", "sent", "passed", "skipped"
DRONE_FAILED, DRONE_ROLLED_BACK, KEPT = "failed", "rolled_back", "kept"
# How often the gate looks at the fleet's view of a drone that applied it.
GATE_POLL = 0.5
MAX_DRONES_NAMED = 1000
RESTARTED = "the controller restarted mid-rollout: resume it, abort it or roll it back"


@dataclass(frozen=True, slots=True)
class Strategy:
    canary: int = 1  # drones in batch 0, alone
    batch: int = 5  # drones in each batch after
    pause_s: float = 0.0  # between batches
    gate_timeout_s: float = 600.0  # a drone's deploy and gate, together
    auto_rollback: bool = True

    def check(self) -> None:
        if not 0 <= self.canary <= MAX_DRONES_NAMED:
            raise InvalidArgument(f"canary must be between 0 and {MAX_DRONES_NAMED}")
        if not 1 <= self.batch <= MAX_DRONES_NAMED:
            raise InvalidArgument(f"batch must be between 1 and {MAX_DRONES_NAMED}")
        if not 0 <= self.pause_s <= 86400:
            raise InvalidArgument("pause_s must be between 0 and 86400 seconds")
        if not 1 <= self.gate_timeout_s <= 86400:
            raise InvalidArgument("gate_timeout_s must be between 1 and 86400 seconds")


@dataclass(frozen=True, slots=True)
class Target:
    """Which drones: every one, one network's, or those named."""

    all: bool = False
    network: str = ""
    drones: tuple[str, ...] = ()

    def check(self) -> None:
        if sum((self.all, bool(self.network), bool(self.drones))) != 1:
            raise InvalidArgument("say which drones: all, a network, or drones (a list), exactly one of them")
        if len(self.drones) > MAX_DRONES_NAMED:
            raise InvalidArgument(f"name at most {MAX_DRONES_NAMED} drones")

    def describe(self) -> str:
        if self.all:
            return "every drone"
        if self.network:
            return f"network {self.network}"
        return ", ".join(self.drones)


@dataclass(slots=True)
class PlannedDrone:
    drone_id: str
    name: str
    batch: int  # -1: not in a batch (skipped)
    state: str
    previous: int  # the version it ran when the rollout started
    reason: str = ""
    deploy_id: str = ""


@dataclass(slots=True)
class Rollout:
    id: str
    kind: str
    version: int
    rollback: bool
    strategy: Strategy
    target: Target
    drones: list[PlannedDrone]
    state: str
    started_by: str
    created_at: float
    updated_at: float
    next_batch: int = 0
    reason: str = ""
    # When the pause before next_batch ends (None: not in a pause); not kept:
    # a restart pauses the rollout, and a resume starts the batch at once.
    next_batch_at: float | None = None
    # Set to wake its run from a pause between batches (pause, abort).
    nudge: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def batches(self) -> int:
        return max((d.batch for d in self.drones), default=-1) + 1

    def in_batch(self, batch: int) -> list[PlannedDrone]:
        return [d for d in self.drones if d.batch == batch]

    def record(self) -> RolloutRecord:
        return RolloutRecord(
            id=self.id,
            kind=self.kind,
            version=self.version,
            state=self.state,
            rollback=self.rollback,
            strategy=json.dumps(asdict(self.strategy)),
            target=json.dumps(asdict(self.target)),
            drones=json.dumps([asdict(d) for d in self.drones]),
            next_batch=self.next_batch,
            reason=self.reason,
            started_by=self.started_by,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    @classmethod
    def of(cls, r: RolloutRecord) -> Rollout:
        target = json.loads(r.target)
        return cls(
            id=r.id,
            kind=r.kind,
            version=r.version,
            rollback=r.rollback,
            strategy=Strategy(**json.loads(r.strategy)),
            target=Target(target["all"], target["network"], tuple(target["drones"])),
            drones=[PlannedDrone(**d) for d in json.loads(r.drones)],
            state=r.state,
            started_by=r.started_by,
            created_at=r.created_at,
            updated_at=r.updated_at,
            next_batch=r.next_batch,
            reason=r.reason,
        )


class Rollouts:
    def __init__(
        self, payloads: Payloads, fleet: Fleet, events: EventLog, runner: StoreRunner, clock: Clock = SYSTEM
    ) -> None:
        self._payloads = payloads
        self._fleet = fleet
        self._events = events
        self._runner = runner
        self._store = runner.store
        self._clock = clock
        self._rollouts: dict[str, Rollout] = {}
        self._runs: dict[str, asyncio.Task[Any]] = {}
        self._tasks = TaskSet("rollouts")

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        for record in await self._runner.call(self._store.list_rollouts):
            rollout = Rollout.of(record)
            self._rollouts[rollout.id] = rollout
            if rollout.state == RUNNING:
                await self._set(rollout, PAUSED, RESTARTED)
                self._emit(rollout, "rollout_paused", f"paused: {RESTARTED}", by="controller")
            elif rollout.state == ROLLING_BACK:
                why = "the controller restarted during its rollback: ask for the rollback again"
                await self._set(rollout, ROLLOUT_FAILED, why)
                self._emit(rollout, "rollout_failed", why, by="controller")
        self._payloads.hello_listeners.append(self._on_hello)

    async def stop(self) -> None:
        if self._on_hello in self._payloads.hello_listeners:
            self._payloads.hello_listeners.remove(self._on_hello)
        await self._tasks.close()

    # -- views ---------------------------------------------------------------

    def all(self) -> list[Rollout]:
        """Newest first."""
        return sorted(self._rollouts.values(), key=lambda r: (r.created_at, r.id), reverse=True)

    def get(self, rollout_id: str) -> Rollout:
        rollout = self._rollouts.get(rollout_id)
        if rollout is None:
            raise NotFound(f"no rollout {rollout_id[:40]!r}")
        return rollout

    def active(self, kind: str) -> Rollout | None:
        return next((r for r in self._rollouts.values() if r.kind == kind and r.state in ACTIVE), None)

    # -- what an admin asks --------------------------------------------------

    async def create(
        self, kind: str, version: int, target: Target, strategy: Strategy, *, rollback: bool, by: str
    ) -> Rollout:
        """Plan a rollout and start it (4xx saying why it cannot be)."""
        record = self._payloads.get(kind, version)
        if record.state == UPLOADED:
            raise FailedPrecondition(f"{kind} version {version} is not staged: stage it first")
        target.check()
        strategy.check()
        under_way = self.active(kind)
        if under_way is not None:
            raise FailedPrecondition(
                f"rollout {under_way.id} of {kind} version {under_way.version} is {under_way.state}: "
                "one rollout at a time per kind (abort it or wait for it)"
            )
        now = self._clock.time()
        rollout = Rollout(
            id="r-" + secrets.token_hex(6),
            kind=kind,
            version=version,
            rollback=rollback,
            strategy=strategy,
            target=target,
            drones=self._plan(kind, version, target, strategy),
            state=RUNNING,
            started_by=by,
            created_at=now,
            updated_at=now,
        )
        if rollout.batches == 0:
            why = "; ".join(f"{d.name}: {d.reason}" for d in rollout.drones[:5]) or "no drone matches"
            raise FailedPrecondition(f"no drone to deploy {kind} version {version} to ({why})")
        self._rollouts[rollout.id] = rollout
        await self._save(rollout)
        self._emit(
            rollout,
            "rollout_started",
            f"to {target.describe()}: {sum(d.batch >= 0 for d in rollout.drones)} drones in "
            f"{rollout.batches} batches (canary {strategy.canary}, batch {strategy.batch})",
            by=by,
            strategy=asdict(strategy),
        )
        self._spawn(rollout)
        return rollout

    def _plan(self, kind: str, version: int, target: Target, strategy: Strategy) -> list[PlannedDrone]:
        if target.all:
            chosen = self._fleet.all()
        elif target.network:
            chosen = [s for s in self._fleet.all() if s.network == target.network]
        else:
            chosen = [self._fleet.require(key) for key in target.drones]
        unique = sorted({s.id: s for s in chosen}.values(), key=lambda s: (s.name, s.id))
        planned: list[PlannedDrone] = []
        todo = 0
        for s in unique:
            running = self._payloads.running(s, kind)
            why = ""
            if s.link is None:
                why = "not connected: it gets the version when it connects after the rollout is done"
            elif not speaks(s.features, PAYLOADS):
                why = "its agent does not take payloads (too old)"
            elif running == version:
                why = "it runs this version already"
            if why:
                planned.append(PlannedDrone(s.id, s.name, -1, SKIPPED, running, why))
                continue
            if strategy.canary and todo < strategy.canary:
                batch = 0
            else:
                batch = (1 if strategy.canary else 0) + (todo - strategy.canary) // strategy.batch
            planned.append(PlannedDrone(s.id, s.name, batch, PENDING, running))
            todo += 1
        return planned

    async def pause(self, rollout_id: str, *, by: str) -> Rollout:
        """The batch under way ends; the next does not start."""
        rollout = self._expect(rollout_id, (RUNNING,), "pause")
        await self._set(rollout, PAUSED, f"paused by {by}")
        rollout.nudge.set()
        self._emit(rollout, "rollout_paused", f"paused by {by}", by=by)
        return rollout

    async def resume(self, rollout_id: str, *, by: str) -> Rollout:
        rollout = self._expect(rollout_id, (PAUSED,), "resume")
        rollout.nudge.clear()
        await self._set(rollout, RUNNING, "")
        self._emit(rollout, "rollout_resumed", f"resumed by {by} at batch {rollout.next_batch}", by=by)
        if rollout_id not in self._runs:
            self._spawn(rollout, resumed=True)
        return rollout

    async def abort(self, rollout_id: str, *, by: str) -> Rollout:
        """No drone is sent it any more, and the rollout stops waiting for
        those sent it (a drone may still apply what it was sent: its status
        shows in drones/versions); those that took it keep it unless rolled back."""
        rollout = self._expect(rollout_id, (RUNNING, PAUSED), "abort")
        await self._set(rollout, ABORTED, f"aborted by {by}")
        run = self._runs.pop(rollout_id, None)
        if run is not None:
            run.cancel()
        self._emit(rollout, "rollout_aborted", f"aborted by {by}", by=by)
        return rollout

    async def rollback(self, rollout_id: str, *, by: str) -> Rollout:
        """The drones that took the version go back to the one each ran before."""
        rollout = self._expect(rollout_id, (PAUSED, ABORTED, ROLLOUT_FAILED, DONE), "roll back")
        under_way = self.active(rollout.kind)
        if under_way is not None and under_way is not rollout:
            raise FailedPrecondition(f"rollout {under_way.id} of {rollout.kind} is {under_way.state}")
        run = self._runs.pop(rollout_id, None)
        if run is not None:
            run.cancel()  # a paused rollout's batch still under way
        await self._set(rollout, ROLLING_BACK, f"rollback asked by {by}")
        self._runs[rollout.id] = self._tasks.spawn(
            self._guarded(rollout, self._roll_back(rollout, by)), rollout.id
        )
        return rollout

    def _expect(self, rollout_id: str, states: tuple[str, ...], verb: str) -> Rollout:
        rollout = self.get(rollout_id)
        if rollout.state not in states:
            raise FailedPrecondition(f"rollout {rollout.id} is {rollout.state}: it cannot {verb}")
        return rollout

    # -- the run ---------------------------------------------------------------

    def _spawn(self, rollout: Rollout, *, resumed: bool = False) -> None:
        rollout.nudge.clear()
        run = self._run(rollout, resumed=resumed)
        self._runs[rollout.id] = self._tasks.spawn(self._guarded(rollout, run), rollout.id)

    async def _guarded(self, rollout: Rollout, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The store failed under it: stopped where it was, to be resumed.
            log.exception("rollout %s stopped", rollout.id)
            if rollout.state in (RUNNING, ROLLING_BACK):
                rollout.state, rollout.reason = PAUSED, f"stopped by an error: {exc}"
                self._emit(rollout, "rollout_paused", rollout.reason, by="controller")
        finally:
            if self._runs.get(rollout.id) is asyncio.current_task():
                del self._runs[rollout.id]

    async def _run(self, rollout: Rollout, *, resumed: bool = False) -> None:
        """The batches from ``next_batch`` on. ``resumed``: the admin's resume
        is the go-ahead for the next batch, which starts at once (the pause
        is between the batches of an uninterrupted run, not waited again)."""
        record = self._payloads.get(rollout.kind, rollout.version)
        while rollout.next_batch < rollout.batches:
            batch = rollout.next_batch
            if not any(d.state in (PENDING, SENT) for d in rollout.in_batch(batch)):
                # Every drone of it passed before a restart that came before
                # next_batch was written: done, no pause for it.
                rollout.next_batch = batch + 1
                await self._save(rollout)
                continue
            if batch > 0 and rollout.strategy.pause_s > 0 and not resumed:
                rollout.next_batch_at = self._clock.time() + rollout.strategy.pause_s
                try:
                    await self._clock.wait(rollout.nudge, rollout.strategy.pause_s)
                finally:
                    rollout.next_batch_at = None
            resumed = False
            if rollout.state != RUNNING:
                return
            members = [d for d in rollout.in_batch(batch) if d.state in (PENDING, SENT)]
            self._emit(
                rollout,
                "rollout_batch",
                f"batch {batch}{' (canary)' if batch == 0 and rollout.strategy.canary else ''}: "
                + ", ".join(d.name for d in members),
                batch=batch,
                drones=[d.name for d in members],
            )
            passed = await asyncio.gather(*(self._deploy(rollout, record, d) for d in members))
            if not all(passed):
                failed = next(d for d, ok in zip(members, passed, strict=True) if not ok)
                why = f"{failed.name}: {failed.reason}"
                await self._set(rollout, ROLLOUT_FAILED, why)
                self._emit(rollout, "rollout_failed", f"stopped at batch {batch}: {why}", batch=batch)
                if rollout.strategy.auto_rollback:
                    await self._set(rollout, ROLLING_BACK, why)
                    await self._roll_back(rollout, "auto-rollback")
                return
            rollout.next_batch = batch + 1
            await self._save(rollout)
            if rollout.state == PAUSED:
                return
        if rollout.state == RUNNING:
            await self._set(rollout, DONE, "")
            passed_count = sum(d.state == PASSED for d in rollout.drones)
            self._emit(rollout, "rollout_done", f"done: {passed_count} drones took it")

    async def _deploy(self, rollout: Rollout, record: PayloadRecord, drone: PlannedDrone) -> bool:
        """One drone: its deploy, then its gate; whether it passed (its state and reason say)."""
        deadline = self._clock.monotonic() + rollout.strategy.gate_timeout_s
        state = self._fleet.get(drone.drone_id)
        taken = state is not None and self._payloads.running(state, rollout.kind) == rollout.version
        # Marked sent before a restart and taken since: not sent again.
        if not (drone.state == SENT and taken):
            why = self._unreachable(state, rollout.kind)
            if why:
                return await self._fail(rollout, drone, why)
            assert state is not None
            drone.deploy_id = self._payloads.register(state, rollout.kind)
            drone.state = SENT
            await self._save(rollout)
            outcome = await self._payloads.deploy_one(
                state,
                record,
                deploy_id=drone.deploy_id,
                rollback=rollout.rollback,
                by=f"rollout {rollout.id}",
                timeout=rollout.strategy.gate_timeout_s,
            )
            if outcome != APPLIED:
                said = self._payloads.last_outcome(drone.drone_id, rollout.kind)
                reason = said.reason if said is not None else ""
                ended = outcome.replace("_", " ")
                # The drone's reason says how it ended, as a rule ("rolled back: ...").
                why = reason if reason.startswith(ended) else f"{ended}: {reason}" if reason else ended
                return await self._fail(rollout, drone, why)
        while True:
            why = self._gate(drone.drone_id, rollout.kind, rollout.version)
            if not why:
                drone.state, drone.reason = PASSED, ""
                await self._save(rollout)
                return True
            if self._clock.monotonic() >= deadline:
                return await self._fail(
                    rollout, drone, f"{why} {rollout.strategy.gate_timeout_s:g}s after its deploy began"
                )
            await self._clock.sleep(GATE_POLL)

    def _unreachable(self, state: DroneState | None, kind: str) -> str:
        if state is None or state.link is None:
            return "not connected"
        if not speaks(state.features, PAYLOADS):
            return "its agent does not take payloads (too old)"
        if self._payloads.busy(state.id, kind):
            return f"it is taking another {kind} payload"
        return ""

    def _gate(self, drone_id: str, kind: str, version: int) -> str:
        """Why the drone does not pass the gate ("" when it does)."""
        state = self._fleet.get(drone_id)
        if state is None or state.link is None:
            return "not connected"
        if state.status != ONLINE:
            return f"{state.status}"
        running = self._payloads.running(state, kind)
        if running != version:
            return f"runs version {running}"
        return ""

    async def _fail(self, rollout: Rollout, drone: PlannedDrone, why: str) -> bool:
        drone.state, drone.reason = DRONE_FAILED, why
        await self._save(rollout)
        return False

    async def _roll_back(self, rollout: Rollout, by: str) -> None:
        """Each drone of the plan that runs the rollout's version goes back to
        the one it ran before (one it was installed with, version 0, is no
        payload: that drone keeps the new version, said so)."""
        back: list[tuple[PlannedDrone, DroneState, PayloadRecord]] = []
        for d in rollout.drones:
            state = self._fleet.get(d.drone_id)
            if d.batch < 0 or state is None or self._payloads.running(state, rollout.kind) != rollout.version:
                continue
            if d.previous == 0 or d.previous == rollout.version:
                d.state, d.reason = KEPT, "no earlier payload version to go back to"
                continue
            why = self._unreachable(state, rollout.kind)
            if why:
                d.state, d.reason = KEPT, f"not rolled back: {why}"
                continue
            try:
                back.append((d, state, self._payloads.get(rollout.kind, d.previous)))
            except NotFound:
                d.state, d.reason = KEPT, f"version {d.previous} it ran before is not kept here"
        await self._save(rollout)
        outcomes = await asyncio.gather(*(self._back_one(rollout, d, s, r) for d, s, r in back))
        went = [d.name for (d, _, _), ok in zip(back, outcomes, strict=True) if ok]
        await self._set(rollout, ROLLOUT_ROLLED_BACK, rollout.reason)
        kept = [d.name for d in rollout.drones if d.state == KEPT]
        self._emit(
            rollout,
            "rollout_rolled_back",
            f"rolled back ({by}): {len(went)} of {len(back)} drones went back"
            + (f"; kept it: {', '.join(kept)}" if kept else ""),
            by=by,
            drones=went,
            kept=kept,
        )

    async def _back_one(
        self, rollout: Rollout, d: PlannedDrone, state: DroneState, record: PayloadRecord
    ) -> bool:
        d.deploy_id = self._payloads.register(state, rollout.kind)
        outcome = await self._payloads.deploy_one(
            state,
            record,
            deploy_id=d.deploy_id,
            rollback=record.version < rollout.version,
            by=f"rollout {rollout.id} (rollback)",
            timeout=rollout.strategy.gate_timeout_s,
        )
        if outcome == APPLIED:
            d.state, d.reason = DRONE_ROLLED_BACK, f"back to version {record.version}"
            return True
        d.reason = f"its rollback to version {record.version} ended {outcome.replace('_', ' ')}"
        return False

    # -- a drone that connects ---------------------------------------------------

    def _on_hello(self, state: DroneState) -> None:
        """A drone behind the last rollout done of a kind is deployed its version (catch-up)."""
        if state.link is None or not speaks(state.features, PAYLOADS):
            return
        for kind in KINDS:
            if self.active(kind) is not None or self._payloads.busy(state.id, kind):
                continue
            last = self._last_done(kind, state)
            if last is None or self._payloads.running(state, kind) >= last.version:
                continue
            said = self._payloads.last_outcome(state.id, kind)
            if (
                said is not None
                and said.expected_version == last.version
                and said.state in (REFUSED, FAILED, ROLLED_BACK)
            ):
                continue  # it would not take that version: not sent again at every connection
            record = self._payloads.get(kind, last.version)
            log.info(
                "%s runs %s behind rollout %s: deploying version %d", state.name, kind, last.id, last.version
            )
            self._payloads.begin(state, record, rollback=False, by=f"rollout {last.id} (catch-up)")

    def _last_done(self, kind: str, state: DroneState) -> Rollout | None:
        for rollout in self.all():
            if rollout.kind != kind or rollout.state != DONE:
                continue
            target = rollout.target
            if (
                target.all
                or (target.network and target.network == state.network)
                or any(d.drone_id == state.id for d in rollout.drones)
            ):
                return rollout
        return None

    # -- state and its record ------------------------------------------------------

    async def _set(self, rollout: Rollout, state: str, reason: str) -> None:
        rollout.state, rollout.reason = state, reason
        await self._save(rollout)

    async def _save(self, rollout: Rollout) -> None:
        rollout.updated_at = self._clock.time()
        await self._runner.call(self._store.put_rollout, rollout.record())

    def _emit(self, rollout: Rollout, event: str, what: str, **data: Any) -> None:
        self._events.emit(
            event,
            f"rollout {rollout.id} of {rollout.kind} version {rollout.version}: {what}",
            rollout_id=rollout.id,
            kind=rollout.kind,
            version=rollout.version,
            state=rollout.state,
            **data,
        )
