"""Payloads: versioned files the controller deploys to its drones (the
agent itself, its config, the drone's Portage config), signed with the
payload key (payloadkey.py) and applied by the agent (docs/protocol.md, 7b).

A version of a kind (payload_versions.state)::

    upload --> uploaded --stage--> staged --deploy--> deployed

Its bytes are the file ``DATA_DIR/payloads/<kind>/<version>``, written
atomically once its kind's check passed (payloadcheck.py); versions are
numbered per kind from 1 and never reused.

A drone's payload of a kind (drone_payloads), for each deploy::

    sent --> [waiting] --> [fetching] --> applied | refused | failed | rolled_back
      \\--> timed_out (no final answer within the deploy's timeout)
      \\--> unsent (its control stream was full or gone)

A deploy still in flight when the controller stopped (killed) is settled by
the drone's next Hello: applied if it runs the version sent, else
timed_out; a status it sends later still counts (``_settle_orphan``).

``deploy_one`` is one drone's deploy, start to end: it signs an offer for
that drone, sends ApplyPayload, holds the drone out of the build rotation
meanwhile, and returns when the drone's PayloadStatus says how it ended
(or at the timeout). The HTTP deploy runs one of them for the drone it
names; a rollout (rollout.py: canaries, batches) runs them batch by batch. The drone alone
decides whether it may apply what it is sent (signature, expiry, rollback
protection: swarm.payloadsig), and says so in its status.

The expected version of each (drone, kind) is what the drone may fetch
(``fetchable``); the running one is what it said in its Hello or its last
APPLIED. Both are kept in memory and written behind (RetryingWriter).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from swarm.backoff import Backoff
from swarm.clock import SYSTEM, Clock
from swarm.controller import payloadcheck
from swarm.controller.builds import BuildQueue
from swarm.controller.domain import PayloadStatusData, PayloadVersionData
from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, TooLarge
from swarm.controller.events import EventLog
from swarm.controller.fleet import DroneState, Fleet
from swarm.controller.store.records import DronePayloadRecord, PayloadRecord
from swarm.controller.store.retrying import RetryingWriter
from swarm.controller.store.runner import StoreRunner
from swarm.files import fsync_dir
from swarm.payloadsig import KINDS
from swarm.protocol import PAYLOADS, speaks
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)

UPLOADED, STAGED, DEPLOYED = "uploaded", "staged", "deployed"
SENT, WAITING, FETCHING = "sent", "waiting", "fetching"
APPLIED, REFUSED, FAILED, ROLLED_BACK = "applied", "refused", "failed", "rolled_back"
TIMED_OUT, UNSENT = "timed_out", "unsent"
FINAL = frozenset({APPLIED, REFUSED, FAILED, ROLLED_BACK})
IN_FLIGHT = frozenset({SENT, WAITING, FETCHING})
# The event of each final state a drone reports.
EVENTS = {
    APPLIED: "payload_applied",
    REFUSED: "payload_refused",
    FAILED: "payload_failed",
    ROLLED_BACK: "payload_rolled_back",
}
ORPHANED = "in flight when the controller restarted: settled when the drone connects again"
WRITE_BLOCK = 1 << 20  # bytes of an upload gathered before a write (in a thread)
MAX_NOTES = 4000
FLUSH_BACKOFF = Backoff(initial=0.5, cap=10.0)


@dataclass(frozen=True, slots=True)
class Offer:
    """What the controller signs for one drone (payload.proto PayloadMeta)."""

    kind: str
    version: int
    sha256: str
    size: int
    expires_at: float
    rollback: bool
    drone_id: str
    deploy_id: str


# Signs an offer: the serialized PayloadMeta and its signature (payloadsvc.sign_offer).
Signer = Callable[[Offer], tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class PayloadSettings:
    max_bytes: int = 64 * 2**20
    expiry: float = 3600.0  # an offer's life: the drone refuses it after
    confirm_within: int = 60  # seconds a new agent has to connect before it rolls back
    deploy_timeout: float = 3600.0  # a deploy's wait for the drone's final answer


@dataclass(frozen=True, slots=True)
class DeployStarted:
    deploy_id: str
    kind: str
    version: int
    rollback: bool
    drones: tuple[str, ...]  # names


@dataclass(frozen=True, slots=True)
class DroneVersion:
    """One drone's payload of one kind: expected against running."""

    drone_id: str
    drone: str
    kind: str
    expected: int  # 0: nothing deployed to it
    running: int  # 0: what it was installed with (or an agent that does not say)
    state: str
    reason: str
    deploy_id: str
    updated_at: float

    @property
    def drift(self) -> bool:
        return self.expected != 0 and self.expected != self.running


class Payloads:
    def __init__(
        self,
        root: Path,
        runner: StoreRunner,
        events: EventLog,
        fleet: Fleet,
        sign: Signer,
        public_key: bytes,
        settings: PayloadSettings = PayloadSettings(),
        *,
        builds: BuildQueue | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.root = root
        self.public_key = public_key
        self.settings = settings
        self._runner = runner
        self._store = runner.store
        self._events = events
        self._fleet = fleet
        self._sign = sign
        self._builds = builds
        self._clock = clock
        self._versions: dict[tuple[str, int], PayloadRecord] = {}
        self._drones: dict[tuple[str, str], DronePayloadRecord] = {}
        self._dirty: set[tuple[str, str]] = set()
        # The deploy under way to each (drone, kind): its id, and set when it ends.
        self._waiters: dict[tuple[str, str], tuple[str, asyncio.Future[str]]] = {}
        # Why each deploy under way holds its drone from builds (the admin API
        # shows it): drone id -> kind -> why.
        self._holds: dict[str, dict[str, str]] = {}
        # Deploys a killed controller left in flight: their deploy ids (_settle_orphan).
        self._orphans: dict[tuple[str, str], str] = {}
        self._upload_lock = asyncio.Lock()
        # Told of each drone's Hello, after its versions are taken (synchronously).
        self.hello_listeners: list[Callable[[DroneState], None]] = []
        self._tasks = TaskSet("payloads")
        self.writer = RetryingWriter("drone payloads", self._save, FLUSH_BACKOFF, log)

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare)
        for record in await self._runner.call(self._store.list_payloads):
            self._versions[(record.kind, record.version)] = record
        for drone in await self._runner.call(self._store.list_drone_payloads):
            self._drones[(drone.drone_id, drone.kind)] = drone
            if drone.state in IN_FLIGHT:
                # No deploy of this process waits for it: settled at the drone's next Hello.
                self._orphans[(drone.drone_id, drone.kind)] = drone.deploy_id
                self._note(drone.drone_id, drone.kind, reason=ORPHANED)
        self._tasks.spawn(self.writer.run(), "writer")

    def _prepare(self) -> None:
        for kind in KINDS:
            (self.root / kind).mkdir(parents=True, exist_ok=True)
        incoming = self.root / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        # Left by an upload a crash cut short.
        for stale in incoming.iterdir():
            stale.unlink(missing_ok=True)

    async def stop(self) -> None:
        await self._tasks.close()
        if self._dirty:
            try:
                await self._save()
            except Exception as exc:
                log.error("%d drone payload changes were not written: %s", len(self._dirty), exc)

    async def _save(self) -> None:
        keys, self._dirty = self._dirty, set()
        records = [self._drones[k] for k in keys if k in self._drones]
        try:
            await self._runner.call(self._store.put_drone_payloads, records)
        except BaseException:
            self._dirty |= keys
            raise

    # -- versions ----------------------------------------------------------

    def path(self, kind: str, version: int) -> Path:
        return self.root / kind / str(version)

    def uploaded(self, kind: str | None = None) -> list[PayloadRecord]:
        """By kind, newest first."""
        found = [r for r in self._versions.values() if kind is None or r.kind == kind]
        return sorted(found, key=lambda r: (r.kind, -r.version))

    def get(self, kind: str, version: int) -> PayloadRecord:
        check_kind(kind)
        record = self._versions.get((kind, version))
        if record is None:
            raise NotFound(f"no {kind} payload version {version}")
        return record

    def latest(self, kind: str) -> int:
        return max((v for k, v in self._versions if k == kind), default=0)

    async def upload(self, kind: str, body: AsyncIterator[bytes], *, notes: str, by: str) -> PayloadRecord:
        """Keep an uploaded payload as the next version of its kind, once
        its check passes (InvalidArgument saying why, TooLarge past
        max_bytes; nothing is kept then)."""
        check_kind(kind)
        if len(notes) > MAX_NOTES:
            raise InvalidArgument(f"notes are longer than {MAX_NOTES} characters")
        tmp = self.root / ".incoming" / secrets.token_hex(8)
        try:
            sha256, size = await self._receive(body, tmp)
            if size == 0:
                raise InvalidArgument("the payload is empty")
            await asyncio.to_thread(payloadcheck.check, kind, tmp)
            async with self._upload_lock:
                version = self.latest(kind) + 1
                record = PayloadRecord(
                    kind=kind,
                    version=version,
                    sha256=sha256,
                    size=size,
                    uploaded_by=by,
                    uploaded_at=self._clock.time(),
                    notes=notes,
                    state=UPLOADED,
                )
                await asyncio.to_thread(_place, tmp, self.path(kind, version))
                if not await self._runner.call(self._store.add_payload, record):
                    raise FailedPrecondition(f"{kind} version {version} exists already")
                self._versions[(kind, version)] = record
        finally:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
        self._events.emit(
            "payload_uploaded",
            f"{kind} payload version {version} uploaded by {by} ({size} bytes)",
            kind=kind,
            version=version,
            sha256=sha256,
            size=size,
            by=by,
        )
        return record

    async def _receive(self, body: AsyncIterator[bytes], tmp: Path) -> tuple[str, int]:
        """Write the body to ``tmp`` in blocks (each in a thread), hashing
        it; TooLarge as soon as it passes max_bytes."""
        digest = hashlib.sha256()
        size = 0
        out: IO[bytes] = await asyncio.to_thread(tmp.open, "wb")
        try:
            pending: list[bytes] = []
            held = 0
            async for chunk in body:
                size += len(chunk)
                if size > self.settings.max_bytes:
                    raise TooLarge(f"a payload may have at most {self.settings.max_bytes} bytes")
                digest.update(chunk)
                pending.append(chunk)
                held += len(chunk)
                if held >= WRITE_BLOCK:
                    await asyncio.to_thread(out.write, b"".join(pending))
                    pending, held = [], 0
            if pending:
                await asyncio.to_thread(out.write, b"".join(pending))
        finally:
            await asyncio.to_thread(out.close)
        return digest.hexdigest(), size

    async def stage(self, kind: str, version: int, *, by: str) -> PayloadRecord:
        record = self.get(kind, version)
        if record.state != UPLOADED:
            raise FailedPrecondition(f"{kind} version {version} is {record.state} already")
        record = await self._set_state(record, STAGED)
        self._events.emit(
            "payload_staged",
            f"{kind} payload version {version} staged by {by}",
            kind=kind,
            version=version,
            by=by,
        )
        return record

    async def _set_state(self, record: PayloadRecord, state: str) -> PayloadRecord:
        await self._runner.call(self._store.set_payload_state, record.kind, record.version, state)
        record = replace(record, state=state)
        self._versions[(record.kind, record.version)] = record
        return record

    # -- deploys -------------------------------------------------------------

    def deploy(self, kind: str, version: int, drones: list[str], *, rollback: bool, by: str) -> DeployStarted:
        """Start deploying a staged version to one named drone (checked
        here: 4xx saying why); its deploy_one runs on, as a task of ours."""
        record = self.get(kind, version)
        if record.state == UPLOADED:
            raise FailedPrecondition(f"{kind} version {version} is not staged: stage it first")
        if len(drones) != 1:
            raise InvalidArgument("name exactly one drone (several make a rollout: rollout.py)")
        state = self._fleet.require(drones[0])
        if state.link is None:
            raise FailedPrecondition(f"{state.name} is not connected")
        if not speaks(state.features, PAYLOADS):
            raise FailedPrecondition(f"the agent on {state.name} does not apply payloads (too old)")
        if self.busy(state.id, kind):
            deploy_id = self._waiters[(state.id, kind)][0]
            raise FailedPrecondition(f"{state.name} is taking a {kind} payload already (deploy {deploy_id})")
        deploy_id = self.begin(state, record, rollback=rollback, by=by)
        return DeployStarted(deploy_id, kind, version, rollback, (state.name,))

    def busy(self, drone_id: str, kind: str) -> bool:
        """A deploy of ``kind`` to the drone is under way."""
        return (drone_id, kind) in self._waiters

    def begin(
        self,
        state: DroneState,
        record: PayloadRecord,
        *,
        rollback: bool,
        by: str,
        timeout: float | None = None,
    ) -> str:
        """Start deploy_one as a task of ours: its deploy id. The deploy is
        registered and the drone held from builds before this returns (not
        when the task first runs): a second deploy is refused at once, and a
        drone that has just connected gets no build first."""
        deploy_id = self.register(state, record.kind)
        self._tasks.spawn(
            self.deploy_one(state, record, deploy_id=deploy_id, rollback=rollback, by=by, timeout=timeout),
            f"deploy {deploy_id}",
        )
        return deploy_id

    def register(self, state: DroneState, kind: str) -> str:
        """A new deploy id for a deploy of ``kind`` to the drone, registered
        and the drone held from builds (deploy_one with that id follows)."""
        deploy_id = "d-" + secrets.token_hex(6)
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters[(state.id, kind)] = (deploy_id, waiter)
        self._hold(state.id, kind, f"to take {kind} (deploy {deploy_id})")
        return deploy_id

    async def deploy_one(
        self,
        state: DroneState,
        record: PayloadRecord,
        *,
        deploy_id: str,
        rollback: bool,
        by: str,
        timeout: float | None = None,
    ) -> str:
        """Deploy ``record`` to one drone: the final state (FINAL, TIMED_OUT or UNSENT)."""
        key = (state.id, record.kind)
        entry = self._waiters.get(key)
        if entry is None or entry[0] != deploy_id:
            entry = (deploy_id, asyncio.get_running_loop().create_future())
            self._waiters[key] = entry
        waiter = entry[1]
        timeout = self.settings.deploy_timeout if timeout is None else timeout
        try:
            if record.state == STAGED:
                record = await self._set_state(record, DEPLOYED)
            offer = Offer(
                kind=record.kind,
                version=record.version,
                sha256=record.sha256,
                size=record.size,
                expires_at=self._clock.time() + self.settings.expiry,
                rollback=rollback,
                drone_id=state.id,
                deploy_id=deploy_id,
            )
            meta, signature = self._sign(offer)
            self._note(
                state.id, record.kind, expected=record.version, state=SENT, reason="", deploy_id=deploy_id
            )
            self._events.emit(
                "payload_deploy_started",
                f"{record.kind} payload version {record.version} deployed to {state.name} by {by}"
                + (" (a rollback)" if rollback else ""),
                drone_id=state.id,
                drone_name=state.name,
                kind=record.kind,
                version=record.version,
                rollback=rollback,
                deploy_id=deploy_id,
                by=by,
            )
            why = f"to take {record.kind} version {record.version} (deploy {deploy_id}, {by})"
            self._hold(state.id, record.kind, why)
            link = state.link
            if link is None or not link.apply_payload(meta, signature, self.settings.confirm_within):
                why = "its control stream is full" if link is not None else "it is not connected"
                self._end(state, record.kind, record.version, UNSENT, f"not sent: {why}", deploy_id)
                return UNSENT
            done = asyncio.Event()
            waiter.add_done_callback(lambda _: done.set())
            if not await self._clock.wait(done, timeout):
                why = f"no final answer from the drone within {timeout:g}s"
                self._end(state, record.kind, record.version, TIMED_OUT, why, deploy_id)
                return TIMED_OUT
            return waiter.result()
        finally:
            if self._waiters.get(key, (None,))[0] == deploy_id:
                del self._waiters[key]
                self._hold(state.id, record.kind, "")
            if not waiter.done():
                waiter.cancel()

    def _hold(self, drone_id: str, kind: str, why: str) -> None:
        """No new build for a drone while it waits to take a payload: it
        takes one only when idle (the build running goes on). Held while a
        deploy of any kind to it is under way (``why``: "" when that one ends)."""
        kinds = self._holds.setdefault(drone_id, {})
        if why:
            kinds[kind] = why
        else:
            kinds.pop(kind, None)
        if not kinds:
            del self._holds[drone_id]
        if self._builds is not None:
            self._builds.hold_for_payload(drone_id, self.holding(drone_id))

    def holding(self, drone_id: str) -> str:
        """Why the drone is held from builds: the deploys under way to it ("": none)."""
        return "; ".join(why for _, why in sorted(self._holds.get(drone_id, {}).items()))

    def _end(
        self, state: DroneState, kind: str, version: int, outcome: str, reason: str, deploy_id: str
    ) -> None:
        self._note(state.id, kind, state=outcome, reason=reason)
        self._events.emit(
            "payload_failed",
            f"{kind} payload version {version} on {state.name}: {reason}",
            drone_id=state.id,
            drone_name=state.name,
            kind=kind,
            version=version,
            state=outcome,
            reason=reason,
            deploy_id=deploy_id,
        )

    # -- what drones say -----------------------------------------------------

    def on_hello(self, state: DroneState) -> None:
        """A drone connected: the versions it runs (Hello.payloads), which
        settle a deploy left in flight by a restart; then the listeners (the
        rollouts: a drone behind gets the current payloads)."""
        for reported in state.payloads:
            current = self._drones.get((state.id, reported.kind))
            if current is None and reported.version == 0:
                continue
            if current is None or current.running_version != reported.version:
                self._note(state.id, reported.kind, running=reported.version, sha256=reported.sha256)
        for kind in KINDS:
            self._settle_orphan(state, kind)
        for listener in self.hello_listeners:
            try:
                listener(state)
            except Exception:
                # The drone's Hello is taken whatever a listener makes of it.
                log.exception("a payloads listener failed on %s's Hello", state.name)

    def _settle_orphan(self, state: DroneState, kind: str) -> None:
        """A deploy of ``kind`` to the drone that the last controller process
        left in flight (start() found it so): its answer lost with the old
        process, or not said yet. The drone runs the version sent: applied.
        Otherwise timed_out, as a deploy without a final answer is: the drone
        may be on it still, or may have failed it, and an answer it sends
        after this Hello (one its stream could not take is said after the
        Welcome) replaces this, as any status does."""
        key = (state.id, kind)
        orphan = self._orphans.pop(key, None)
        record = self._drones.get(key)
        # Only what the last process left (an aborted rollout's deploys are not ours to settle).
        if orphan is None or record is None or record.state not in IN_FLIGHT or record.deploy_id != orphan:
            return
        running = self.running(state, kind)
        if running != record.expected_version:
            why = (
                "no final answer: the controller restarted while it was in flight, "
                f"and the drone runs version {running}"
            )
            self._end(state, kind, record.expected_version, TIMED_OUT, why, record.deploy_id)
            return
        why = "the drone runs it (its answer was lost with the controller's restart)"
        self._note(state.id, kind, state=APPLIED, reason=why)
        self._events.emit(
            EVENTS[APPLIED],
            f"{kind} payload version {running} on {state.name}: applied ({why})",
            drone_id=state.id,
            drone_name=state.name,
            kind=kind,
            version=running,
            reason=why,
            deploy_id=record.deploy_id,
        )

    def running(self, state: DroneState, kind: str) -> int:
        """The version of ``kind`` the drone says it runs (0: what it was installed with)."""
        return next((p.version for p in state.payloads if p.kind == kind), 0)

    def last_outcome(self, drone_id: str, kind: str) -> DronePayloadRecord | None:
        return self._drones.get((drone_id, kind))

    def on_status(self, state: DroneState, status: PayloadStatusData) -> None:
        """A drone's PayloadStatus."""
        key = (state.id, status.kind)
        current = self._drones.get(key)
        entry = self._waiters.get(key)
        ours = entry is not None and (not status.deploy_id or status.deploy_id == entry[0])
        if status.state in (WAITING, FETCHING):
            if ours:
                self._note(state.id, status.kind, state=status.state, reason=status.reason)
            return
        if (
            current is not None
            and current.state == status.state
            and current.deploy_id == status.deploy_id
            and (status.state != APPLIED or current.running_version == status.version)
        ):
            return  # said again (a new stream after the re-exec): once is enough
        running = sha256 = None
        if status.state == APPLIED:
            known = self._versions.get((status.kind, status.version))
            running, sha256 = status.version, known.sha256 if known is not None else ""
            self._set_running(state, status.kind, running, sha256)
        self._note(
            state.id,
            status.kind,
            running=running,
            sha256=sha256,
            state=status.state,
            reason=status.reason,
            deploy_id=status.deploy_id or None,
        )
        said = f": {status.reason}" if status.reason else ""
        self._events.emit(
            EVENTS[status.state],
            f"{status.kind} payload version {status.version} on {state.name}: "
            f"{status.state.replace('_', ' ')}{said}",
            drone_id=state.id,
            drone_name=state.name,
            kind=status.kind,
            version=status.version,
            reason=status.reason,
            deploy_id=status.deploy_id,
        )
        if ours and entry is not None and not entry[1].done():
            entry[1].set_result(status.state)

    def _set_running(self, state: DroneState, kind: str, version: int, sha256: str) -> None:
        others = tuple(p for p in state.payloads if p.kind != kind)
        state.payloads = (*others, PayloadVersionData(kind, version, sha256))

    def _note(
        self,
        drone_id: str,
        kind: str,
        *,
        expected: int | None = None,
        running: int | None = None,
        sha256: str | None = None,
        state: str | None = None,
        reason: str | None = None,
        deploy_id: str | None = None,
    ) -> None:
        key = (drone_id, kind)
        record = self._drones.get(key) or DronePayloadRecord(drone_id, kind)
        changes: dict[str, Any] = {
            "expected_version": expected,
            "running_version": running,
            "sha256": sha256,
            "state": state,
            "reason": reason,
            "deploy_id": deploy_id,
        }
        self._drones[key] = replace(
            record,
            **{name: value for name, value in changes.items() if value is not None},
            updated_at=self._clock.time(),
        )
        self._dirty.add(key)
        self.writer.wake()

    # -- the Fetch service's question, and the drift view ----------------------

    def fetchable(self, drone_id: str | None, kind: str, version: int) -> tuple[Path, int]:
        """The file and size of a payload the calling drone may fetch: a
        version deployed to it (NotFound for an unknown one, PermissionDenied
        for another's)."""
        record = self.get(kind, version)
        mine = self._drones.get((drone_id or "", kind))
        if mine is None or mine.expected_version != version:
            raise PermissionDenied(f"{kind} payload version {version} is not deployed to this drone")
        return self.path(kind, version), record.size

    def drone_versions(self) -> list[DroneVersion]:
        """Every drone's payloads of every kind it has or is to have, by drone name."""
        names = self._fleet.names()
        found: list[DroneVersion] = []
        for (drone_id, kind), r in self._drones.items():
            live = self._fleet.get(drone_id)
            running = r.running_version
            if live is not None:
                running = next((p.version for p in live.payloads if p.kind == kind), running)
            found.append(
                DroneVersion(
                    drone_id,
                    names.get(drone_id, drone_id),
                    kind,
                    r.expected_version,
                    running,
                    r.state,
                    r.reason,
                    r.deploy_id,
                    r.updated_at,
                )
            )
        return sorted(found, key=lambda v: (v.drone, v.drone_id, v.kind))


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise NotFound(f"no payload kind {kind[:40]!r}: the kinds are {', '.join(KINDS)}")


def _place(tmp: Path, final: Path) -> None:
    """Move a checked upload into place, durably (the name is new: versions are never reused)."""
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)
