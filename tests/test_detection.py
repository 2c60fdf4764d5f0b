"""Phi-accrual failure detection, the monitor and the pinger that act on
it (their loops driven by a clock the test moves), and reconnect backoff."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

import pytest

from swarm.backoff import Backoff
from swarm.controller.events import EventLog
from swarm.controller.fleet import OFFLINE, ONLINE, SUSPECT, UNHEALTHY, Fleet
from swarm.controller.health import TICK, HealthMonitor, PhiAccrual, y_for_phi
from swarm.controller.pinger import Pinger
from swarm.controller.serde import HeartbeatData, PongData
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore

from fakes.clock import ManualClock
from support.links import connect

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


def test_jittery_drone_gets_more_slack_than_a_steady_one() -> None:
    rng = random.Random(7)
    steady = PhiAccrual(1.0, 0.0)
    jittery = PhiAccrual(1.0, 0.0)
    s_last = beat(steady, 0.0, [1.0] * 100)
    j_last = beat(jittery, 0.0, [rng.uniform(0.4, 1.6) for _ in range(100)])
    assert jittery.deadline(Y8) - j_last > steady.deadline(Y8) - s_last + 0.3


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


def fleet_on(clock: ManualClock, tmp_path: Path, **options: float) -> Fleet:
    events = EventLog(StoreRunner(SqlStore(f"sqlite:///{tmp_path}/unused.db")), buffer=100, retention=100)
    return Fleet(events, y_threshold=y_for_phi(8.0), clock=clock, **options)  # type: ignore[arg-type]


def test_the_monitor_finds_a_silent_drone_suspect_then_offline_by_its_clock(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = ManualClock()
        fleet = fleet_on(clock, tmp_path)
        monitor = HealthMonitor(fleet, suspect_phi=8.0, offline_after_intervals=10, clock=clock)
        await monitor.start()
        try:
            state, link = connect(fleet, "quiet")
            for seq in range(30):  # beating steadily every second (its interval)
                await clock.advance(1.0)
                fleet.on_heartbeat(state, HeartbeatData(seq, clock.time(), 0, 0, 0, 0, 0, 0, 0, False, ""))
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
        finally:
            await monitor.stop()

    asyncio.run(scenario())


def test_the_pinger_pings_once_per_interval_and_unanswered_pings_make_a_drone_unhealthy(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        clock = ManualClock()
        fleet = fleet_on(clock, tmp_path, missed_pings=3)
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
