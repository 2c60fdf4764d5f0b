"""Phi-accrual failure detection and reconnect backoff."""

from __future__ import annotations

import random

import pytest

from swarm.backoff import Backoff
from swarm.controller.health import WINDOW, PhiAccrual, y_for_phi

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
