"""Phi-accrual failure detection, the monitor and the pinger that act on
it (their loops driven by a clock the test moves), and reconnect backoff."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import math
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from swarm.backoff import Backoff
from swarm.controller.domain import CheckData, HeartbeatData, HelloData, PongData
from swarm.controller.events import EventLog
from swarm.controller.fleet import OFFLINE, ONLINE, SUSPECT, UNHEALTHY, DroneState, Fleet
from swarm.controller.health import TICK, WINDOW, HealthMonitor, PhiAccrual, y_for_phi
from swarm.controller.pinger import Pinger
from swarm.controller.schedule import COMPACT_MIN, Deadlines, Schedule
from swarm.controller.store.records import NodeLive, NodeRecord
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore

from fakes.clock import ManualClock, counting
from fakes.links import FakeLink, connect

pytestmark = pytest.mark.timeout(30)

Y8 = y_for_phi(8.0)


def beat(detector: PhiAccrual, start: float, intervals: list[float]) -> float:
    now = start
    for gap in intervals:
        now += gap
        detector.heartbeat(now)
    return now


def test_regular_drone_is_suspect_after_about_three_intervals() -> None:
    for interval in (0.25, 1.0, 5.0):
        detector = PhiAccrual(interval, 0.0)
        last = beat(detector, 0.0, [interval] * 50)
        silence = detector.deadline(Y8) - last
        assert 2.2 * interval <= silence <= 3.0 * interval, (interval, silence)
        assert detector.phi(last + silence) == pytest.approx(8.0, abs=0.01)


def test_beat_is_heartbeat_then_deadline_in_one_call() -> None:
    """The fleet's fused call keeps the detector exactly where the two calls would."""
    rng = random.Random(3)
    apart, fused = PhiAccrual(1.0, 0.0), PhiAccrual(1.0, 0.0)
    now = 0.0
    for i in range(3 * WINDOW):
        now += rng.uniform(0.2, 1.8) if i % 7 else 0.0  # now and then two at once
        apart.heartbeat(now)
        assert fused.beat(now, Y8) == pytest.approx(apart.deadline(Y8), abs=1e-9)
        assert fused.phi(now + 1.5) == apart.phi(now + 1.5)


def test_jittery_drone_gets_more_slack_than_a_steady_one() -> None:
    rng = random.Random(7)
    steady = PhiAccrual(1.0, 0.0)
    jittery = PhiAccrual(1.0, 0.0)
    s_last = beat(steady, 0.0, [1.0] * 100)
    j_last = beat(jittery, 0.0, [rng.uniform(0.4, 1.6) for _ in range(100)])
    assert jittery.deadline(Y8) - j_last > steady.deadline(Y8) - s_last + 0.3


def test_only_the_latest_window_of_intervals_counts() -> None:
    """A drone that was jittery and then beats steadily for a whole window
    is judged like one that was always steady: old intervals leave the ring."""
    rng = random.Random(3)
    was_jittery = PhiAccrual(1.0, 0.0)
    last = beat(was_jittery, 0.0, [rng.uniform(0.2, 3.0) for _ in range(2 * WINDOW + 7)])
    before = was_jittery.deadline(Y8) - last
    last = beat(was_jittery, last, [1.0] * WINDOW)
    steady = PhiAccrual(1.0, 0.0)
    s_last = beat(steady, 0.0, [1.0] * WINDOW)
    assert was_jittery.deadline(Y8) - last == pytest.approx(steady.deadline(Y8) - s_last)
    assert before > was_jittery.deadline(Y8) - last + 1.0


def test_phi_grows_with_silence_and_never_overflows() -> None:
    detector = PhiAccrual(1.0, 0.0)
    last = beat(detector, 0.0, [1.0] * 20)
    values = [detector.phi(last + t) for t in (0.0, 1.0, 2.0, 3.0, 10.0, 1e6)]
    assert values == sorted(values)
    assert values[0] < 1 and values[-1] > 1e6


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    backoff = Backoff(initial=0.5, cap=30.0)
    assert [backoff.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.ceiling(10_000) == 30.0
    rng = random.Random(1)
    delays = [backoff.delay(3, rng) for _ in range(2000)]
    assert 0 <= min(delays) < 0.2 and 3.8 < max(delays) <= 4.0
    assert 1.8 < sum(delays) / len(delays) < 2.2  # uniform: mean is half the ceiling


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=0, cap=1)
    with pytest.raises(ValueError):
        Backoff(initial=5, cap=1)


def fleet_on(
    clock: ManualClock,
    tmp_path: Path,
    y_threshold: float = Y8,
    ping_timeout: float = 5.0,
    missed_pings: int = 3,
) -> tuple[Fleet, EventLog]:
    """A fleet on ``clock``, and its events (kept in memory: the store is never opened)."""
    events = EventLog(StoreRunner(SqlStore(f"sqlite:///{tmp_path}/unused.db")), buffer=100, retention=100)
    fleet = Fleet(
        events, y_threshold=y_threshold, ping_timeout=ping_timeout, missed_pings=missed_pings, clock=clock
    )
    return fleet, events


@contextlib.asynccontextmanager
async def monitoring(fleet: Fleet, clock: ManualClock) -> AsyncIterator[HealthMonitor]:
    """The health monitor on ``clock`` (the defaults: phi 8, offline after 10 intervals), running."""
    monitor = HealthMonitor(fleet, suspect_phi=8.0, offline_after_intervals=10, clock=clock)
    await monitor.start()
    try:
        yield monitor
    finally:
        await monitor.stop()


def test_the_monitor_finds_a_silent_drone_suspect_then_offline_by_its_clock(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = ManualClock()
        fleet, _events = fleet_on(clock, tmp_path)
        async with monitoring(fleet, clock):
            state, link = connect(fleet, "quiet")
            for _ in range(30):  # beating steadily every second (its interval)
                await clock.advance(1.0)
                fleet.on_heartbeat(state, HeartbeatData())
                assert state.status == ONLINE
            last = clock.time()
            # Silent from here: suspect at its detector's deadline (about 2.5 intervals), not before.
            assert 2.2 <= state.suspect_at - last <= 3.0
            await clock.advance(state.suspect_at - last - 0.05)
            assert state.status == ONLINE
            await clock.advance(0.05 + TICK + 0.01)  # a tick of the monitor past the deadline
            assert state.status == SUSPECT
            await clock.advance(last + 10 - clock.time() - 0.05)
            assert state.status == SUSPECT and link.closed is None
            await clock.advance(0.05 + TICK + 0.01)
            assert state.status == OFFLINE and link.closed is not None
            assert link.closed[0] == "UNAVAILABLE" and link.closed[1].startswith("no heartbeat for 10.")

    asyncio.run(scenario())


def test_an_erratic_drone_is_suspect_halfway_to_offline_at_the_latest(tmp_path: Path) -> None:
    """Beats that came in bunches (a starved machine) spread phi's deadline
    past the offline silence; the drone is still suspect before offline."""

    async def scenario() -> None:
        clock = ManualClock()
        fleet, events = fleet_on(clock, tmp_path)
        async with monitoring(fleet, clock):
            state, _link = connect(fleet, "erratic")
            for gap in [0.05, 0.05, 0.05, 3.0, 0.05, 0.05, 4.0] * 4:
                await clock.advance(gap)
                fleet.on_heartbeat(state, HeartbeatData())
            last = clock.time()
            assert state.suspect_at - last > 9  # phi alone would wait till nearly offline
            await clock.advance(5.0 - 0.05)
            assert state.status == ONLINE
            await clock.advance(0.05 + TICK + 0.01)
            assert state.status == SUSPECT
            await clock.advance(last + 10 + TICK + 0.01 - clock.time())
            assert state.status == OFFLINE
            found = events.recent(after_id=None, since_ts=None, limit=100, drone_id=state.id, types=())
            assert [e.type for e in found or []][-2:] == ["drone_suspect", "drone_disconnected"]

    asyncio.run(scenario())


def test_the_pinger_pings_once_per_interval_and_unanswered_pings_make_a_drone_unhealthy(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        clock = ManualClock()
        fleet, _events = fleet_on(clock, tmp_path, missed_pings=3)
        pinger = Pinger(fleet, 5.0, clock)
        await pinger.start()
        try:
            state, _link = connect(fleet, "deaf")
            connected = clock.time()
            pinged: list[float] = []
            for _ in range(int(21 / 0.05)):  # 21 s in steps of the pinger's tick
                await clock.advance(0.05)
                if state.last_ping_at is not None and (not pinged or state.last_ping_at > pinged[-1]):
                    pinged.append(state.last_ping_at)
            offsets = [round(t - connected, 2) for t in pinged]
            # Its first ping (when it answered the one at connect) is due at once, then one per interval.
            assert (
                offsets[0] < 0.1 + 1e-6
                and [round(b - a, 2) for a, b in itertools.pairwise(offsets)] == [5.0] * 4
            )
            # The fourth ping after three unanswered: unhealthy, failing the pings check.
            assert state.status == UNHEALTHY
            assert [(c.name, c.detail) for c in state.failing] == [("pings", "3 pings in a row unanswered")]
            assert pinger.skipped == 0
            sent = state.pings_out[state.ping_seq]
            await clock.advance(0.02)  # answered later: the round trip is measured by the fleet's clock
            fleet.on_pong(state, PongData(state.ping_seq, sent, False, "", 0.0, 1.0, 1))
            assert state.status == ONLINE
            assert state.ping_latency_ms == pytest.approx((clock.time_ns() - sent) / 1e6)
        finally:
            await pinger.stop()

    asyncio.run(scenario())


def test_the_ping_budget_stretches_the_interval_of_a_large_fleet_only(tmp_path: Path) -> None:
    """A budget of 4 pings a second: 6 drones pinged every 2 s (3 a second)
    keep that interval; 20 drones (10 a second at 2 s) are pinged every
    20 / 4 = 5 s instead."""

    async def pinged(drones: int) -> tuple[float, list[float], float]:
        """The interval, the gaps seen between a drone's pings, pings a second."""
        clock = ManualClock()
        fleet, _events = fleet_on(clock, tmp_path)
        pinger = Pinger(fleet, 2.0, clock, rate=4.0)
        await pinger.start()
        try:
            states = [connect(fleet, f"d{i}x")[0] for i in range(drones)]
            seen: dict[str, list[float]] = {s.id: [] for s in states}
            for _ in range(int(30 / 0.05)):
                await clock.advance(0.05)
                for s in states:
                    at = s.last_ping_at
                    if at is not None and (not seen[s.id] or at > seen[s.id][-1]):
                        seen[s.id].append(at)
                    sent = s.pings_out.get(s.ping_seq)
                    if sent is not None:  # each drone answers at once
                        fleet.on_pong(s, PongData(s.ping_seq, sent, False, "", 0.0, 1.0, 1))
            gaps = {round(b - a, 2) for t in seen.values() for a, b in itertools.pairwise(t[1:])}
            return pinger.interval(), sorted(gaps), sum(len(t) for t in seen.values()) / 30
        finally:
            await pinger.stop()

    interval, gaps, _rate = asyncio.run(pinged(6))
    assert interval == 2.0 and gaps == [2.0]  # 3 pings a second: within the budget
    interval, gaps, rate = asyncio.run(pinged(20))
    assert interval == 5.0 and gaps == [5.0]  # 20 / 4: every 5 s, not every 2
    assert rate <= 4.0 + 20 / 30  # the budget, give or take each drone's first ping


def test_a_drone_that_leaves_a_budgeted_ping_unanswered_is_pinged_again_when_its_time_is_up(
    tmp_path: Path,
) -> None:
    """20 drones on a budget of 2 pings a second: every 10 s each, where a
    pong has 5 s. The answering drones are pinged at their turn only (the
    look at their answer writes nothing). One goes deaf: it is pinged again
    as each ping's time is up, and is unhealthy 15 s after the first ping
    it left, where waiting for its turns took 30; then it waits for its
    turns again."""

    async def scenario() -> None:
        clock = ManualClock()
        fleet, _events = fleet_on(clock, tmp_path, ping_timeout=5.0, missed_pings=3)
        pinger = Pinger(fleet, 2.0, clock, rate=2.0)
        await pinger.start()
        try:
            states = [connect(fleet, f"d{i}x")[0] for i in range(20)]
            deaf = states[0]
            seen: dict[str, list[float]] = {s.id: [] for s in states}
            deaf_since: float | None = None
            unhealthy_at: float | None = None
            for step in range(int(80 / 0.05)):
                await clock.advance(0.05)
                if step == int(32 / 0.05):  # no ping nor look falls then
                    deaf_since = clock.time()
                for s in states:
                    at = s.last_ping_at
                    if at is not None and (not seen[s.id] or at > seen[s.id][-1]):
                        seen[s.id].append(at)
                    sent = s.pings_out.get(s.ping_seq)
                    if sent is not None and (s is not deaf or deaf_since is None):
                        fleet.on_pong(s, PongData(s.ping_seq, sent, False, "", 0.0, 1.0, 1))
                if unhealthy_at is None and deaf.status == UNHEALTHY:
                    unhealthy_at = clock.time()
            assert pinger.interval() == 10.0
            gaps = {round(b - a, 1) for s in states[1:] for a, b in itertools.pairwise(seen[s.id][1:])}
            assert gaps == {10.0}, "a drone that answers is pinged at its turn only"
            assert deaf_since is not None and unhealthy_at is not None
            left = [t for t in seen[deaf.id] if t > deaf_since]
            # Its first ping after it went deaf, three more as their time is up, then its turns.
            assert [round(b - a, 1) for a, b in itertools.pairwise(left)][:5] == [5.1, 5.1, 5.1, 10.0, 10.0]
            assert unhealthy_at == pytest.approx(left[3], abs=0.06)
            assert [(c.name, c.detail) for c in deaf.failing] == [("pings", "3 pings in a row unanswered")]
            assert left[0] - deaf_since <= 10.0
        finally:
            await pinger.stop()

    asyncio.run(scenario())


def test_an_idle_pinger_and_monitor_sleep_until_a_drone_is_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither loop polls: with no drone they take no pass at all, a drone
    that connects wakes the pinger at once, and a steadily beating drone
    gets a ping pass per ping and no look at all: its heartbeats put its
    silence deadline off before it comes."""

    async def scenario() -> None:
        clock = ManualClock()
        fleet, _events = fleet_on(clock, tmp_path)
        pinger = Pinger(fleet, 5.0, clock)
        monitor = HealthMonitor(fleet, suspect_phi=8.0, offline_after_intervals=10, clock=clock)
        passes: dict[str, list[float]] = {"ping": [], "look": []}
        monkeypatch.setattr(pinger, "tick", counting(passes["ping"], pinger.tick))
        monkeypatch.setattr(monitor, "check", counting(passes["look"], monitor.check))
        await pinger.start()
        await monitor.start()
        try:
            await clock.advance(60.0)
            assert passes == {"ping": [], "look": []}, "no drone, no pass"
            state, link = connect(fleet, "steady")
            connected = clock.time()
            await clock.advance(0.0)  # no time passes: the connect itself woke the pinger
            assert passes["ping"] == [connected] and len(link.sent) == 1
            for _ in range(30):
                await clock.advance(1.0)
                fleet.on_heartbeat(state, HeartbeatData())
                sent = state.pings_out.get(state.ping_seq)
                if sent is not None:  # each ping answered
                    fleet.on_pong(state, PongData(state.ping_seq, sent, False, "", 0.0, 1.0, 1))
            assert state.status == ONLINE
            # A pass per ping (every 5 s), where the fixed tick made 20 a second.
            assert len(passes["ping"]) == 1 + 6 and len(link.sent) == 1 + 6
            # Heartbeats put the deadline off without waking the monitor: at
            # most a pass that wakes as it was put off (nothing due), not one
            # per old deadline (every 2.5 s or so) nor ten a second.
            assert len(passes["look"]) <= 2, passes["look"]
        finally:
            await pinger.stop()
            await monitor.stop()

    asyncio.run(scenario())


def test_a_look_after_the_offline_silence_still_finds_the_drone_suspect_first(tmp_path: Path) -> None:
    """A starved controller's monitor can wake past both deadlines at once:
    the silent drone's history is the same, suspect and then offline."""
    clock = ManualClock()
    fleet, events = fleet_on(clock, tmp_path)
    monitor = HealthMonitor(fleet, suspect_phi=8.0, offline_after_intervals=10, clock=clock)
    state, link = connect(fleet, "late")
    fleet.on_heartbeat(state, HeartbeatData())
    assert state.status == ONLINE
    monitor.check(clock.time() + 60)
    assert state.status == OFFLINE and link.closed is not None
    found = events.recent(after_id=None, since_ts=None, limit=100, drone_id=state.id, types=())
    assert [e.type for e in found or []][-2:] == ["drone_suspect", "drone_disconnected"]
    # A drone already suspect is not made suspect again on its way offline.
    again, _link = connect(fleet, "quiet")
    fleet.on_heartbeat(again, HeartbeatData())
    monitor.check(clock.time() + 5)
    assert again.status == SUSPECT
    monitor.check(clock.time() + 60)
    assert again.status == OFFLINE
    found = events.recent(after_id=None, since_ts=None, limit=100, drone_id=again.id, types=())
    assert [e.type for e in found or []].count("drone_suspect") == 1


def test_fleet_unhealthy_while_beating_suspect_when_silent(tmp_path: Path) -> None:
    clock = ManualClock()
    fleet, events = fleet_on(clock, tmp_path, y_threshold=2.0)
    monitor = HealthMonitor(fleet, suspect_phi=8.0, offline_after_intervals=1000, clock=clock)
    hello = HelloData("d" * 32, "drone", 2, "lxc", "lan", "test", 1000, "host", "", "", "i" * 32, 1.7e9)
    link = FakeLink(hello.drone_id)
    state: DroneState = fleet.attach(hello, link)
    assert (state.instance_id, state.process_started_at) == ("i" * 32, 1.7e9)

    def pong(*checks: CheckData) -> None:
        sent = clock.time_ns()
        fleet.on_ping_sent(state, state.ping_seq + 1, sent)
        fleet.on_pong(state, PongData(state.ping_seq, sent, False, "", 0.0, 1.0, 1, checks))

    def beat() -> None:
        fleet.on_heartbeat(state, HeartbeatData())

    good = CheckData("emerge", True, "Portage 3")
    bad = CheckData("cache_disk", False, "1 MiB free")
    pong(good)
    assert state.status == ONLINE
    pong(good, bad)
    assert state.status == UNHEALTHY and state.failing == (bad,)
    monitor.check(clock.time() + 60)  # a minute of silence
    assert state.status == SUSPECT
    pong(good)  # a pong is no heartbeat: silence still wins
    assert state.status == SUSPECT
    pong(good, bad)
    beat()
    assert state.status == UNHEALTHY
    pong(good)
    assert state.status == ONLINE
    # The same process on a new stream (certificate renewal) keeps its checks;
    # a new process starts with none.
    pong(bad)
    fleet.attach(hello, FakeLink(hello.drone_id))
    assert state.status == UNHEALTHY and state.checks == (bad,)
    fleet.attach(
        dataclasses.replace(hello, instance_id="n" * 32, process_started_at=1.8e9), FakeLink(hello.drone_id)
    )
    assert state.status == ONLINE and not state.checks and state.instance_id == "n" * 32

    found = events.recent(after_id=None, since_ts=None, limit=100, drone_id=state.id, types=())
    assert found is not None
    transitions = [
        (e.type, e.data["old_status"], e.data["new_status"]) for e in found if "new_status" in e.data
    ]
    assert transitions == [
        ("drone_unhealthy", ONLINE, UNHEALTHY),
        ("drone_suspect", UNHEALTHY, SUSPECT),
        ("drone_unhealthy", SUSPECT, UNHEALTHY),
        ("drone_healthy", UNHEALTHY, ONLINE),
        ("drone_unhealthy", ONLINE, UNHEALTHY),
        ("drone_healthy", UNHEALTHY, ONLINE),
    ]
    first = next(e for e in found if e.type == "drone_unhealthy")
    assert first.data["failing"] == [{"name": "cache_disk", "detail": "1 MiB free"}]
    assert first.message == "drone: online -> unhealthy: cache_disk: 1 MiB free"


def test_unanswered_pings_make_a_beating_drone_unhealthy_and_late_pongs_count_for_nothing(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    fleet, events = fleet_on(clock, tmp_path, y_threshold=2.0, ping_timeout=1.0, missed_pings=2)
    hello = HelloData("d" * 32, "drone", 2, "lxc", "lan", "test", 1000, "host", "", "", "i" * 32, 1.7e9)
    state: DroneState = fleet.attach(hello, FakeLink(hello.drone_id))
    good = CheckData("emerge", True, "Portage 3")

    def answer(seq: int, sent_at_ns: int) -> float | None:
        return fleet.on_pong(state, PongData(seq, sent_at_ns, False, "", 0.0, 1.0, 1, (good,)))

    now = clock.time_ns()
    fleet.on_ping_sent(state, 1, now - 3 * 10**9)
    fleet.on_ping_unsent(state)  # its queue was full: unanswered too
    assert state.status == ONLINE
    fleet.on_ping_sent(state, 2, now - int(1.5e9))
    assert state.status == UNHEALTHY
    assert [c.name for c in state.failing] == ["pings"]
    assert answer(2, now - int(1.5e9)) is None  # too late: no latency, still unhealthy
    assert state.status == UNHEALTHY and state.ping_latency_ms is None
    fleet.on_ping_sent(state, 3, now)
    # A pong must echo a ping really sent: not a made-up seq or time.
    assert answer(0, now) is None
    assert answer(3, now + 1) is None
    assert state.status == UNHEALTHY
    assert answer(3, now) == 0.0  # answered in the instant it was sent, by the fleet's clock
    assert state.status == ONLINE and state.failing == ()
    assert answer(3, now) is None, "a ping is answered once"
    found = events.recent(after_id=None, since_ts=None, limit=100, drone_id=state.id, types=()) or []
    reasons = [e.message for e in found if "new_status" in e.data]
    assert reasons == [
        "drone: online -> unhealthy: pings: 2 pings in a row unanswered",
        "drone: unhealthy -> online: all checks pass",
    ]


def test_a_drone_state_writes_back_what_it_was_loaded_with_and_then_its_latest_heartbeat(
    tmp_path: Path,
) -> None:
    """DroneState keeps a heartbeat's figures as the HeartbeatData that came
    (no copy); its NodeRecord has each field in its place."""
    values: dict[str, Any] = {}
    for i, f in enumerate(dataclasses.fields(NodeRecord)):
        kind = str(f.type)
        values[f.name] = (
            True
            if kind == "bool"
            else i
            if kind == "int"
            else i + 0.5
            if "float" in kind
            else f"{f.name}-{i}"
        )
    loaded = NodeRecord(**values)
    state = DroneState(loaded)
    assert state.record() == loaded
    beat = HeartbeatData(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7, False, "b-job")
    events = EventLog(StoreRunner(SqlStore(f"sqlite:///{tmp_path}/unused.db")), buffer=100, retention=100)
    fleet = Fleet(events, y_threshold=2.0)
    fleet.on_heartbeat(state, beat)
    assert state.beat is beat
    written = state.record()
    assert dataclasses.asdict(written) == {
        **values,
        **dataclasses.asdict(beat),
        "last_seen_at": written.last_heartbeat_at,
        "last_heartbeat_at": written.last_heartbeat_at,
    }
    assert written.last_heartbeat_at is not None and written.last_heartbeat_at > 1e9


def test_a_schedule_gives_each_key_once_at_its_latest_deadline_earliest_first() -> None:
    schedule = Schedule()
    schedule.set("a", 5.0)
    schedule.set("b", 2.0)
    schedule.set("c", 3.0)
    schedule.set("b", 4.0)  # moved later: its entry at 2.0 counts for nothing
    schedule.earlier("c", 9.0)  # not earlier: kept at 3.0
    schedule.earlier("a", 1.0)
    schedule.set("gone", 0.5)
    schedule.discard("gone")
    assert schedule.take_due(0.9) == []
    assert schedule.take_due(3.0) == ["a", "c"]  # at or before now
    assert (schedule.at("a"), schedule.at("b"), len(schedule)) == (float("inf"), 4.0, 1)
    assert schedule.take_due(100.0) == ["b"]
    assert schedule.take_due(100.0) == [] and len(schedule) == 0
    # Moving one deadline again and again keeps the heap bounded.
    for i in range(10 * COMPACT_MIN):
        schedule.set("busy", 1000.0 + i)
    assert len(schedule._heap) <= 3 * COMPACT_MIN
    assert schedule.take_due(1e9) == ["busy"]


def test_a_deadline_table_gives_each_key_once_at_its_latest_deadline_earliest_first() -> None:
    table = Deadlines()
    table.set("a", 5.0)
    table.set("b", 2.0)
    table.set("c", 3.0)
    table.set("b", 4.0)  # moved later: 2.0 is gone
    table.earlier("c", 9.0)  # not earlier: kept at 3.0
    table.earlier("a", 1.0)
    table.set("gone", 0.5)
    table.discard("gone")
    assert table.next_due() == 1.0
    assert table.take_due(0.9) == []
    assert table.take_due(3.0) == ["a", "c"]  # at or before now, earliest first
    assert (table.at("a"), table.at("b"), table.at("gone"), len(table)) == (math.inf, 4.0, math.inf, 1)
    assert table.take_due(100.0) == ["b"]
    assert table.take_due(100.0) == [] and len(table) == 0 and table.next_due() == math.inf
    table.earlier("a", 7.0)  # taken: no deadline, so any is earlier
    assert table.take_due(7.0) == ["a"]
    # Keys that come and go reuse the slots of those gone: the table holds
    # as many as were there at once.
    for i in range(100):
        table.set(f"drone-{i}", 50.0 + i)
        table.discard(f"drone-{i}")
    assert len(table._at) <= 5 and table.next_due() == math.inf


def test_a_drone_that_resumes_and_falls_silent_again_is_suspect_at_its_new_deadline(tmp_path: Path) -> None:
    """The monitor looks only at drones whose deadline has come: the one it
    set after marking a drone suspect (the offline deadline, far off) must
    not hide the sooner suspect deadline of its resumed heartbeats."""

    async def scenario() -> None:
        clock = ManualClock()
        fleet, _events = fleet_on(clock, tmp_path)
        monitor = HealthMonitor(fleet, suspect_phi=8.0, offline_after_intervals=30, clock=clock)
        await monitor.start()
        try:
            state, link = connect(fleet, "flaky")
            other, gone = connect(fleet, "gone")
            fleet.detach(gone, "test")
            await clock.advance(state.suspect_at - clock.time() + TICK + 0.01)
            assert state.status == SUSPECT and other.status == OFFLINE
            fleet.on_heartbeat(state, HeartbeatData())
            assert state.status == ONLINE
            last = clock.time()
            await clock.advance(state.suspect_at - last - 0.05)
            assert state.status == ONLINE
            await clock.advance(0.05 + TICK + 0.01)
            assert state.status == SUSPECT and link.closed is None
            assert clock.time() - last < 15, "well before the 30 s offline deadline"
        finally:
            await monitor.stop()

    asyncio.run(scenario())


def test_the_monitors_look_is_never_after_the_suspect_deadline_of_a_beating_drone(tmp_path: Path) -> None:
    """Each heartbeat puts the drone's look at its suspect deadline: through
    irregular beats (ones that push the deadline back, ones that bring it
    forward), suspicion and recovery, the monitor's next look stays at or
    before that deadline, and a drone that then falls silent is suspect by
    it."""

    async def scenario() -> None:
        clock = ManualClock()
        fleet, _events = fleet_on(clock, tmp_path)
        monitor = HealthMonitor(fleet, suspect_phi=8.0, offline_after_intervals=30, clock=clock)
        await monitor.start()
        rng = random.Random(15)
        # A silence of 6 s (suspect, then back), steady beats until that
        # interval leaves the detector's window (its deadline comes sooner
        # then: the spread falls), then bursts of early beats and late ones.
        gaps = [6.0] + [1.0] * (WINDOW + 5)
        gaps += [rng.choice((1.0, 0.05, 0.1, 1.6, 3.0)) for _ in range(100)]
        sooner = 0
        try:
            state, _link = connect(fleet, "irregular")
            for gap in gaps:
                await clock.advance(gap)
                before = state.suspect_at
                fleet.on_heartbeat(state, HeartbeatData())
                sooner += state.suspect_at < before
                assert state.status == ONLINE, "a heartbeat settles a suspect drone"
                assert fleet.silence.at(state.id) <= state.suspect_at
            assert sooner > 0, "some beats brought the deadline forward"
            last = clock.time()
            await clock.advance(state.suspect_at - last + TICK + 0.01)
            assert state.status == SUSPECT
        finally:
            await monitor.stop()

    asyncio.run(scenario())


def test_heartbeats_and_pongs_are_written_as_live_columns_and_changes_of_status_as_rows(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    fleet, _events = fleet_on(clock, tmp_path)
    state, link = connect(fleet, "steady")
    assert [r.id for r in fleet.take_dirty(urgent_only=True)] == [state.id]  # a new drone: its whole row
    assert fleet.take_dirty() == [] and fleet.take_live() == []
    beat = HeartbeatData(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7, True, "job-1")
    fleet.on_heartbeat(state, beat)
    assert fleet.take_dirty() == []
    (live,) = fleet.take_live()
    assert live == NodeLive(
        state.id,
        state.last_seen_at,
        state.last_heartbeat_at,
        state.last_ping_at,
        state.last_pong_at,
        state.ping_latency_ms,
        *dataclasses.astuple(beat),
    )
    assert fleet.take_live() == []
    fleet.on_heartbeat(state, beat)
    fleet.detach(link, "test")  # a change of status: the whole row, live columns included
    assert [r.status for r in fleet.take_dirty()] == [OFFLINE]
    assert fleet.take_live() == []


def test_a_heartbeats_bytes_are_read_once_and_only_when_its_figures_are_asked_for(tmp_path: Path) -> None:
    """The gateway hands the fleet a heartbeat as the bytes that came: the
    drone's figures are read from the latest of them when asked for, once,
    and what was never asked for is never read."""
    clock = ManualClock()
    fleet, _events = fleet_on(clock, tmp_path)
    read: list[bytes] = []

    def reader(raw: bytes) -> HeartbeatData:
        read.append(raw)
        return HeartbeatData(load1=float(len(raw)), current_job_id=raw.decode())

    fleet.read_beat = reader
    state, _link = connect(fleet, "lazy")
    fleet.on_heartbeat(state, b"first")
    fleet.on_heartbeat(state, b"second!")
    assert read == [] and state.last_heartbeat_at == clock.time()
    assert (state.load1, state.current_job_id) == (7.0, "second!")
    assert state.record().load1 == 7.0 and fleet.take_live()[0].current_job_id == "second!"
    assert read == [b"second!"], "the latest only, and once"
    fleet.on_heartbeat(state, HeartbeatData(load1=1.5))  # figures given as such replace unread bytes
    fleet.on_heartbeat(state, b"third")
    state.beat = HeartbeatData(load1=2.5)  # as the Hello does
    assert state.load1 == 2.5 and read == [b"second!"]


def test_the_monitor_takes_what_was_read_before_it_judges_silence(tmp_path: Path) -> None:
    """A heartbeat read before the drone's suspect deadline but still in the
    inbox when the monitor looks keeps the drone online. A look at a drone
    that beats leaves the inbox alone (its batch is not cut short)."""
    clock = ManualClock()
    fleet, _events = fleet_on(clock, tmp_path)
    monitor = HealthMonitor(fleet, suspect_phi=8.0, offline_after_intervals=10, clock=clock)
    state, _link = connect(fleet, "read-late")
    fleet.on_heartbeat(state, HeartbeatData())
    first_deadline = state.suspect_at
    pending: list[float] = []
    takes = 0

    def take_pending() -> None:
        nonlocal takes
        takes += 1
        while pending:
            fleet.on_heartbeat(state, HeartbeatData(), pending.pop())

    fleet.take_pending = take_pending
    # It beat since: the look at its first deadline finds it well.
    fleet.on_heartbeat(state, HeartbeatData(), clock.time() + 1.0)
    monitor.check(first_deadline + 0.001)
    assert state.status == ONLINE and takes == 0
    # Its next heartbeat waits in the inbox when its deadline comes.
    deadline = state.suspect_at
    pending.append(deadline - 0.01)
    monitor.check(deadline + 0.001)
    assert state.status == ONLINE and not pending and takes == 1
    # Without a heartbeat waiting, the same look finds it suspect.
    monitor.check(state.suspect_at + 0.001)
    assert state.status == SUSPECT
