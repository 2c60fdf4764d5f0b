"""The fleet: every drone the controller knows, with its live state.

Live state is kept in memory and changed only on the event loop; the
database gets it in batches (``persist.NodeWriter``). A drone has at most
one control stream: a second stream claiming the same drone id replaces
the first, which is closed, if it comes from the same agent process (a
reconnect, a renewed certificate) or the first went silent (left
half-open by a process that is gone). A second *live* agent process
(``duplicate``: a cloned machine, a copied state directory) is refused by
the gateway instead, so two of them cannot take the drone from each other
in turns.

Status: ``online`` while heartbeats arrive and every functional check in
the latest Pong passes, ``unhealthy`` while heartbeats arrive but a check
fails, ``suspect`` when heartbeats stop (HealthMonitor), ``offline``
without a stream. Silence wins over checks: a drone that stops beating is
suspect, then offline, whatever it last said about itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields, replace
from typing import Any, Protocol

from swarm.clock import SYSTEM, Clock
from swarm.controller.channel_frames import ChannelRequest
from swarm.controller.domain import CheckData, HeartbeatData, HelloData, PayloadVersionData, PongData
from swarm.controller.errors import NotFound
from swarm.controller.events import EventLog
from swarm.controller.health import PhiAccrual
from swarm.controller.schedule import Deadlines, Schedule
from swarm.controller.store.records import NodeLive, NodeRecord

log = logging.getLogger(__name__)

NODE_FIELDS = tuple(f.name for f in fields(NodeRecord))
# The stored figures a heartbeat brings: DroneState keeps the latest
# heartbeat as it came (``beat``) instead of copying them one by one.
FIGURES = tuple(f.name for f in fields(HeartbeatData))
OWN_FIELDS = tuple(name for name in NODE_FIELDS if name not in FIGURES)
# A NodeRecord's fields of a DroneState, in order, read in C: the whole fleet
# is written every persist interval, and getattr one by one cost as much as
# the rest of building its NodeRecords.
RECORD_VALUES = operator.attrgetter(*(name if name in OWN_FIELDS else f"beat.{name}" for name in NODE_FIELDS))
# The same for the columns that heartbeats and pongs change (NodeLive):
# most persist intervals write only these.
LIVE_VALUES = operator.attrgetter(
    *(name if name in OWN_FIELDS else f"beat.{name}" for name in NodeLive._fields)
)
# Reads a heartbeat's figures from the bytes that came (serde.read_heartbeat_bytes).
BeatReader = Callable[[bytes], HeartbeatData]
ONLINE, UNHEALTHY, SUSPECT, OFFLINE = "online", "unhealthy", "suspect", "offline"
STATUSES = (ONLINE, UNHEALTHY, SUSPECT, OFFLINE)
# Heartbeats arrive: the drone's own checks decide between these two.
BEATING = (ONLINE, UNHEALTHY)
# The check a drone fails while it leaves the controller's pings unanswered
# (it reads no more of its stream, or its event loop is stuck).
PINGS_CHECK = "pings"
# Pings a pong may still answer: more than a healthy drone ever has in flight
# within the ping timeout.
PINGS_REMEMBERED = 16


class Link(Protocol):
    """The core's view of a drone's control stream (gateway.DroneSession,
    which builds the messages through serde). Each verb queues its message
    and returns False, sending nothing, when the drone is not keeping up
    (the stream's queue is full)."""

    drone_id: str
    peer: str

    def ping(self, seq: int, sent_at_ns: int, answer_within_ms: int = 0) -> bool:
        """A Ping; with ``answer_within_ms``, the agent may answer it in a
        heartbeat sent within that time (only for agents that speak
        pong-in-heartbeat)."""
        ...

    def start_build(
        self,
        job_id: str,
        build_id: str,
        cpv: str,
        timeout_s: int,
        binhost_url: str,
        test_build: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> bool:
        """A StartBuild (``test_build``: into the agent's scratch PKGDIR, for agents
        with test-builds; ``env``: emerge's extra environment)."""
        ...

    def cancel_build(self, build_id: str, reason: str) -> bool: ...

    def restart_service(self, reason: str) -> bool: ...

    def open_channel(self, channel_id: str, request: ChannelRequest) -> bool:
        """Ask the agent to open a channel (channels.py); False if it is not keeping up."""
        ...

    def apply_payload(self, meta: bytes, signature: bytes, confirm_within_s: int) -> bool:
        """An ApplyPayload: ``meta`` the signed PayloadMeta's bytes (payloads.py)."""
        ...

    def close(self, code: str, details: str) -> None: ...


class DroneState:
    """Mutable live state of one drone: a NodeRecord's fields (the latest
    heartbeat's figures as it came, in ``beat``) plus the link."""

    __slots__ = (
        *OWN_FIELDS,
        "_beat",
        "unread_beat",
        "read_beat",
        "link",
        "detector",
        "suspect_at",
        "interval",
        "ping_seq",
        "next_ping_at",
        "unanswered",
        "pings_out",
        "connected_at",
        "checks",
        "checks_at",
        "instance_id",
        "process_started_at",
        "drone_type_reason",
        "protocol_revision",
        "features",
        "payloads",
    )

    # The NodeRecord fields, declared for the type checker (set in __init__).
    id: str
    name: str
    drone_type: str
    cores: int
    network: str
    hostname: str
    agent_version: str
    payload_version: str
    heartbeat_interval_ms: int
    status: str
    first_seen_at: float
    last_seen_at: float | None
    last_heartbeat_at: float | None
    last_ping_at: float | None
    last_pong_at: float | None
    ping_latency_ms: float | None

    def __init__(self, record: NodeRecord) -> None:
        for name in OWN_FIELDS:
            setattr(self, name, getattr(record, name))
        # The latest heartbeat's figures (before the first, as last stored),
        # or its bytes as they came, and what reads them (the fleet's, given
        # when the drone connects; see ``beat``).
        self._beat = HeartbeatData(*[getattr(record, name) for name in FIGURES])
        self.unread_beat: bytes | None = None
        self.read_beat: BeatReader = _no_reader
        self.link: Link | None = None
        self.detector: PhiAccrual | None = None
        self.suspect_at = 0.0
        self.interval = record.heartbeat_interval_ms / 1000
        self.ping_seq = 0
        self.next_ping_at = 0.0
        # Pings sent (or due but not sendable) since the last timely pong.
        self.unanswered = 0
        # The latest pings sent, seq -> their sent_at: a pong must echo one exactly.
        self.pings_out: dict[int, int] = {}
        self.connected_at: float | None = None
        # From the latest Pong (empty until the first one on a stream).
        self.checks: tuple[CheckData, ...] = ()
        self.checks_at: float | None = None
        # From the Hello: random per agent process, and when that process started.
        self.instance_id = ""
        self.process_started_at: float | None = None
        # Why the agent says drone_type (its detection's evidence); not stored:
        # the next Hello says it again.
        self.drone_type_reason = ""
        # From the Hello, not stored either: the protocol revision and what
        # the agent speaks (swarm.protocol); () until it connects, or from
        # an agent that predates feature lists.
        self.protocol_revision = 0
        self.features: tuple[str, ...] = ()
        # From the Hello (or a PayloadStatus since): the version of each
        # payload kind it runs; () until it connects, or from an older agent.
        self.payloads: tuple[PayloadVersionData, ...] = ()

    @property
    def beat(self) -> HeartbeatData:
        """The latest heartbeat's figures, read from its bytes when first asked
        for: a drone beats every second, and the API and the database ask
        every few seconds at most, so most heartbeats are never read."""
        unread = self.unread_beat
        if unread is not None:
            self._beat = self.read_beat(unread)
            self.unread_beat = None
        return self._beat

    @beat.setter
    def beat(self, figures: HeartbeatData) -> None:
        self._beat = figures
        self.unread_beat = None

    # The figures of the latest heartbeat, read where a NodeRecord has them.
    @property
    def load1(self) -> float:
        return self.beat.load1

    @property
    def load5(self) -> float:
        return self.beat.load5

    @property
    def load15(self) -> float:
        return self.beat.load15

    @property
    def cpu_percent(self) -> float:
        return self.beat.cpu_percent

    @property
    def memory_percent(self) -> float:
        return self.beat.memory_percent

    @property
    def disk_percent(self) -> float:
        return self.beat.disk_percent

    @property
    def disk_free_bytes(self) -> int:
        return self.beat.disk_free_bytes

    @property
    def emerge_running(self) -> bool:
        return self.beat.emerge_running

    @property
    def current_job_id(self) -> str:
        return self.beat.current_job_id

    @property
    def failing(self) -> tuple[CheckData, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def record(self) -> NodeRecord:
        return NodeRecord(*RECORD_VALUES(self))

    def detector_last(self) -> float:
        return self.detector.last if self.detector is not None else 0.0

    @property
    def connected(self) -> bool:
        return self.link is not None


def _nothing_pending() -> None:
    pass


def _no_reader(raw: bytes) -> HeartbeatData:
    raise TypeError("a heartbeat's bytes were given to a fleet without a reader (Fleet.read_beat)")


class Fleet:
    def __init__(
        self,
        events: EventLog,
        *,
        y_threshold: float,
        ping_timeout: float = 5.0,
        missed_pings: int = 3,
        clock: Clock = SYSTEM,
    ) -> None:
        self._events = events
        self.clock = clock
        self._y = y_threshold
        # A pong later than this answers nothing and measures nothing.
        self.ping_timeout = ping_timeout
        self.missed_pings = missed_pings
        self._drones: dict[str, DroneState] = {}
        self._connected: dict[str, DroneState] = {}
        # Ids whose whole row is to be written (a new drone, its identity or
        # status changed), and those whose heartbeats or pongs changed only
        # the live columns (NodeLive), written every persist interval.
        self.dirty: set[str] = set()
        self.live_dirty: set[str] = set()
        # Ids of ``dirty`` written at once, not with the live figures every
        # persist interval.
        self.urgent_ids: set[str] = set()
        self.urgent = asyncio.Event()
        # When each connected drone's silence is next to be judged
        # (HealthMonitor) and when it is next to be pinged (Pinger): they
        # look at the drones whose time has come, not at every drone.
        self.silence = Deadlines()
        self.pings = Schedule()
        # The longest silence, in heartbeat intervals, before a beating drone
        # is looked at whatever its detector expects (set by HealthMonitor).
        self.look_within = math.inf
        # Told of every status change (drone, old, new), synchronously.
        self.watchers: list[Callable[[DroneState, str, str], None]] = []
        # Pongs someone is waiting for (an admin's ping), by (drone id, seq).
        self._pong_waiters: dict[tuple[str, int], asyncio.Future[PongData]] = {}
        # Hands over what drones said that is read but not yet taken (the
        # gateway's inbox): silence is judged after it (HealthMonitor).
        self.take_pending: Callable[[], None] = _nothing_pending
        # Reads the figures of a heartbeat given as the bytes that came (set
        # by the gateway, which passes those).
        self.read_beat: BeatReader = _no_reader

    # -- views ---------------------------------------------------------

    def __len__(self) -> int:
        return len(self._drones)

    def all(self) -> list[DroneState]:
        return sorted(self._drones.values(), key=lambda s: (s.name, s.id))

    def states(self) -> list[DroneState]:
        """Every drone, in no particular order (all() sorts, for people)."""
        return list(self._drones.values())

    def connected(self) -> Iterator[DroneState]:
        # Callers may change states while iterating: iterate a copy.
        return iter(list(self._connected.values()))

    def connected_count(self) -> int:
        return len(self._connected)

    def get(self, drone_id: str) -> DroneState | None:
        return self._drones.get(drone_id)

    def find(self, key: str) -> DroneState | None:
        """By id, else by name (a connected drone wins a name clash)."""
        state = self._drones.get(key)
        if state is not None:
            return state
        named = [s for s in self._drones.values() if s.name == key]
        named.sort(key=lambda s: (not s.connected, -(s.last_seen_at or 0)))
        return named[0] if named else None

    def require(self, key: str) -> DroneState:
        """By id or name, or NotFound for the API."""
        state = self.find(key)
        if state is None:
            raise NotFound(f"no drone named {key[:64]!r}")
        return state

    def names(self) -> dict[str, str]:
        """Drone id to name, for showing ids as people know them."""
        return {state.id: state.name for state in self._drones.values()}

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for state in self._drones.values():
            counts[state.status] = counts.get(state.status, 0) + 1
        return counts

    # -- lifecycle -----------------------------------------------------

    def load(self, records: Iterable[NodeRecord]) -> None:
        """Known drones from the database; none has a stream yet."""
        for record in records:
            state = DroneState(record)
            if state.status != OFFLINE:
                state.status = OFFLINE
                self.dirty.add(state.id)
            self._drones[state.id] = state

    def duplicate(self, hello: HelloData) -> DroneState | None:
        """The drone, if its stream in place belongs to a live agent process
        other than the one saying ``hello``; None if the Hello may take the
        drone's stream over."""
        state = self._drones.get(hello.drone_id)
        if state is None or state.link is None:
            return None
        if not hello.instance_id or not state.instance_id or hello.instance_id == state.instance_id:
            return None  # the same process, or one too old to tell
        if self.clock.time() >= state.suspect_at:
            return None  # silent: its process may well be gone, the new one takes over
        return state

    def attach(self, hello: HelloData, link: Link, *, announce: bool = True) -> DroneState:
        """The drone's stream is now ``link``; one it had is closed (ABORTED).
        ``announce=False`` leaves out the drone_replaced event of a
        replacement (the gateway reports a burst of them as one)."""
        now = self.clock.time()
        state = self._drones.get(hello.drone_id)
        if state is None:
            state = DroneState(NodeRecord(id=hello.drone_id, name=hello.name, first_seen_at=now))
            self._drones[state.id] = state
        old_link = state.link
        previous_name = state.name
        state.name = hello.name
        state.cores = hello.cores
        state.drone_type = hello.drone_type
        state.drone_type_reason = hello.drone_type_reason
        state.network = hello.network
        state.hostname = hello.hostname
        state.agent_version = hello.agent_version
        state.payload_version = hello.payload_version
        state.heartbeat_interval_ms = hello.heartbeat_interval_ms
        state.beat = replace(state.beat, current_job_id=hello.current_job_id)
        new_process = not hello.instance_id or hello.instance_id != state.instance_id
        if old_link is None or new_process:
            # A stream after a gap, or another process: checks unknown until its first Pong.
            state.checks, state.checks_at = (), None
        state.instance_id = hello.instance_id
        state.process_started_at = hello.process_started_at
        state.protocol_revision = hello.protocol_revision
        state.features = hello.features
        state.payloads = hello.payloads
        state.interval = hello.heartbeat_interval_ms / 1000
        state.detector = PhiAccrual(state.interval, now)
        state.suspect_at = state.detector.deadline(self._y)
        state.read_beat = self.read_beat
        state.link = link
        state.connected_at = now
        state.last_seen_at = now
        state.unanswered = 0
        state.pings_out.clear()
        # Ping at once: the first pong is the proof of life the healer waits for.
        state.next_ping_at = now
        self.pings.set(state.id, now)
        self.silence.set(state.id, state.suspect_at)
        self._connected[state.id] = state
        self._write_soon(state)
        if old_link is not None:
            old_link.close("ABORTED", f"replaced by a newer connection from {link.peer}")
            if announce:
                self._events.emit(
                    "drone_replaced",
                    f"{state.name}: a new stream from {link.peer} replaced the one from {old_link.peer}",
                    drone_id=state.id,
                    drone_name=state.name,
                    old_peer=old_link.peer,
                    new_peer=link.peer,
                    replaced=1,
                )
            self._settle(state, "reconnected" + (" (a new agent process)" if new_process else ""))
        else:
            old_status, state.status = state.status, ONLINE
            for watcher in self.watchers:
                watcher(state, old_status, ONLINE)
            renamed = f" (was {previous_name})" if previous_name != hello.name else ""
            self._events.emit(
                "drone_connected",
                f"{state.name} connected from {link.peer}{renamed}",
                drone_id=state.id,
                drone_name=state.name,
                peer=link.peer,
                drone_type=state.drone_type,
                agent_version=state.agent_version,
                protocol_revision=state.protocol_revision,
                features=list(state.features),
            )
        return state

    def rename(self, state: DroneState, name: str) -> None:
        state.name = name
        self._write_soon(state)

    def _write_soon(self, state: DroneState) -> None:
        """Its identity or status changed: written at once, not with the live
        figures every persist interval."""
        self.dirty.add(state.id)
        self.urgent_ids.add(state.id)
        self.urgent.set()

    def detach(self, link: Link, reason: str) -> None:
        state = self._drones.get(link.drone_id)
        if state is None or state.link is not link:
            return  # replaced by a newer stream: nothing changed for the drone
        state.link = None
        state.connected_at = None
        self._connected.pop(state.id, None)
        self.silence.discard(state.id)
        self.pings.discard(state.id)
        self._set_status(state, OFFLINE, "drone_disconnected", reason)

    def _set_status(self, state: DroneState, status: str, event: str, reason: str, **data: Any) -> None:
        old = state.status
        state.status = status
        self._write_soon(state)
        self._events.emit(
            event,
            f"{state.name}: {old} -> {status}: {reason}",
            drone_id=state.id,
            drone_name=state.name,
            old_status=old,
            new_status=status,
            reason=reason,
            **data,
        )
        for watcher in self.watchers:
            watcher(state, old, status)

    def _settle(self, state: DroneState, reason: str) -> None:
        """Online or unhealthy, as the latest checks say, for a drone whose
        heartbeats arrive (or have just resumed)."""
        failing = state.failing
        if failing:
            if state.status != UNHEALTHY:
                why = "; ".join(f"{c.name}: {c.detail}" if c.detail else c.name for c in failing)
                self._set_status(
                    state,
                    UNHEALTHY,
                    "drone_unhealthy",
                    why if state.status == ONLINE else f"{reason}; failing {why}",
                    failing=[{"name": c.name, "detail": c.detail} for c in failing],
                )
        elif state.status != ONLINE:
            event = "drone_healthy" if state.status == UNHEALTHY else "drone_online"
            self._set_status(state, ONLINE, event, reason)

    # -- traffic -------------------------------------------------------

    def on_heartbeat(self, state: DroneState, hb: HeartbeatData | bytes, at: float | None = None) -> None:
        """A heartbeat that came ``at`` (the clock's time; default now): its
        figures, or the bytes that came, kept unread (``read_beat`` reads
        them when they are asked for)."""
        now = self.clock.time() if at is None else at
        state.last_seen_at = now
        state.last_heartbeat_at = now
        if isinstance(hb, bytes):
            state.unread_beat = hb  # read by the reader it got when it connected
        else:
            state.beat = hb
        detector = state.detector
        if detector is not None:
            suspect_at = state.suspect_at = detector.beat(now, self._y)
            # Its look is put off to when it could be suspect, on every beat
            # (a store into the table: schedule.Deadlines).
            latest = now + self.look_within * state.interval
            self.silence.set(state.id, suspect_at if suspect_at < latest else latest)
        self.live_dirty.add(state.id)
        if state.status == SUSPECT:
            self._settle(state, "heartbeats resumed")

    def on_pong(self, state: DroneState, pong: PongData, at_ns: int | None = None) -> float | None:
        """Take a pong that came ``at_ns`` (the clock's, default now); returns
        its ping's round trip in ms, None if it matches no recent ping."""
        now_ns = self.clock.time_ns() if at_ns is None else at_ns
        age = now_ns - pong.sent_at_ns
        if state.pings_out.get(pong.seq) != pong.sent_at_ns or not 0 <= age <= self.ping_timeout * 1e9:
            log.debug("%s: pong %d answers no recent ping (%.1f s old)", state.name, pong.seq, age / 1e9)
            return None
        del state.pings_out[pong.seq]  # answered once
        state.unanswered = 0
        state.last_pong_at = now_ns / 1e9
        state.last_seen_at = state.last_pong_at
        # A pong that waited for a heartbeat: the round trip is the rest.
        state.ping_latency_ms = round((age - min(pong.held_ns, age)) / 1e6, 3)
        state.checks = pong.checks
        state.checks_at = state.last_pong_at
        self.live_dirty.add(state.id)
        if state.status in BEATING:
            self._settle(state, "all checks pass")
        waiter = self._pong_waiters.pop((state.id, pong.seq), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(pong)
        return state.ping_latency_ms

    async def wait_pong(self, state: DroneState, seq: int, timeout: float) -> PongData:
        """The pong answering ping ``seq`` (register before the ping can be
        answered: call it right after sending); TimeoutError if none comes."""
        key = (state.id, seq)
        waiter: asyncio.Future[PongData] = asyncio.get_running_loop().create_future()
        self._pong_waiters[key] = waiter
        answered = asyncio.Event()
        waiter.add_done_callback(lambda _: answered.set())
        try:
            if not await self.clock.wait(answered, timeout):
                raise TimeoutError(f"no pong to ping {seq} within {timeout:g}s")
            return waiter.result()
        finally:
            self._pong_waiters.pop(key, None)

    def on_ping_sent(self, state: DroneState, seq: int, sent_at_ns: int) -> None:
        state.ping_seq = seq
        state.last_ping_at = sent_at_ns / 1e9
        state.pings_out[seq] = sent_at_ns
        while len(state.pings_out) > PINGS_REMEMBERED:
            del state.pings_out[next(iter(state.pings_out))]
        self._count_unanswered(state)

    def on_ping_unsent(self, state: DroneState) -> None:
        """A ping was due but the stream's queue is full: it counts as unanswered."""
        self._count_unanswered(state)

    def _count_unanswered(self, state: DroneState) -> None:
        """Before each ping: if the last ``missed_pings`` went unanswered, the
        drone fails the pings check (unhealthy, no jobs, healed) until it
        answers one in time. Heartbeats alone do not prove that it reads."""
        if (
            state.unanswered >= self.missed_pings
            and state.status in BEATING
            and not any(c.name == PINGS_CHECK for c in state.failing)
        ):
            detail = f"{state.unanswered} pings in a row unanswered"
            state.checks = (*state.checks, CheckData(PINGS_CHECK, False, detail))
            self._settle(state, detail)
        state.unanswered += 1

    def mark_suspect(self, state: DroneState, silent_for: float) -> None:
        self._set_status(
            state,
            SUSPECT,
            "drone_suspect",
            f"no heartbeat for {silent_for:.1f}s (interval {state.interval:g}s)",
        )

    def silence_offline(self, state: DroneState, silent_for: float) -> None:
        link = state.link
        reason = f"no heartbeat for {silent_for:.1f}s"
        if link is not None:
            link.close("UNAVAILABLE", reason)
            self.detach(link, reason)

    def take_dirty(self, urgent_only: bool = False) -> list[NodeRecord]:
        """The whole rows to write: the urgent ones, or all that are due."""
        ids = self.urgent_ids if urgent_only else self.dirty
        records = [self._drones[i].record() for i in ids if i in self._drones]
        # A whole row has the live columns too.
        self.live_dirty.difference_update(ids)
        if urgent_only:
            self.dirty.difference_update(ids)
        else:
            self.dirty.clear()
        self.urgent_ids.clear()
        return records

    def take_live(self) -> list[NodeLive]:
        """The live columns to write of drones whose rows are otherwise
        unchanged (take_dirty first: it takes its drones out of these)."""
        ids, self.live_dirty = self.live_dirty, set()
        drones = self._drones
        return [NodeLive._make(LIVE_VALUES(drones[i])) for i in ids if i in drones]
