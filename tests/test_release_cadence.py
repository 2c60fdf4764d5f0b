"""--release-schedule and --auto-promote-after: the slots they name, and
the clear error a typo gets when the controller starts."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from swarm.controller.config import ControllerConfig
from swarm.controller.release_cadence import parse_duration, parse_schedule

pytestmark = pytest.mark.timeout(30)


def local(text: str) -> float:
    """A local time like '2026-12-06 03:00' as seconds since the epoch."""
    return datetime.fromisoformat(text).timestamp()


def test_a_weekly_slot_is_that_day_and_time_of_each_week() -> None:
    sunday = parse_schedule("weekly:Sun:03:00")  # 2026-12-06 is a Sunday
    assert sunday.next_after(local("2026-12-05 17:00")) == local("2026-12-06 03:00")
    assert sunday.next_after(local("2026-12-06 03:00")) == local("2026-12-13 03:00")  # strictly after
    assert sunday.next_after(local("2026-12-06 02:59:59")) == local("2026-12-06 03:00")
    assert sunday.last_at_or_before(local("2026-12-06 03:00")) == local("2026-12-06 03:00")
    assert sunday.last_at_or_before(local("2026-12-13 02:00")) == local("2026-12-06 03:00")


def test_a_daily_slot_is_each_day_at_that_time() -> None:
    daily = parse_schedule("daily:3:30")
    assert daily.next_after(local("2026-12-05 03:29")) == local("2026-12-05 03:30")
    assert daily.next_after(local("2026-12-05 03:30")) == local("2026-12-06 03:30")
    assert daily.last_at_or_before(local("2026-12-05 03:29")) == local("2026-12-04 03:30")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("weekly:sunday:03:00", "is not weekly:DAY:HH:MM or daily:HH:MM"),
        ("weekly:xyz:03:00", "'xyz' is not a day"),
        ("daily:24:00", "is not a time of day"),
        ("daily:03:60", "is not a time of day"),
        ("hourly:05", "is not weekly:DAY:HH:MM"),
        ("daily:0300", "is not weekly:DAY:HH:MM"),
    ],
)
def test_a_malformed_schedule_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_schedule(text)


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "15m", "24h", "2d", "1w", "1.5h")] == [
        90,
        90,
        900,
        86400,
        172800,
        604800,
        5400,
    ]
    for bad in ("", "1y", "-1h", "0", "h", "24 hours"):
        with pytest.raises(ValueError, match="auto_promote_after"):
            parse_duration(bad)


def test_the_config_checks_both_options() -> None:
    config = ControllerConfig(
        release_schedule="weekly:sun:03:00", auto_promote_after="24h", portage_eprefix=Path("/var/lib/x")
    )
    assert config.release_cadence is not None and config.release_cadence.weekday == 6
    assert config.auto_promote_seconds == 86400
    assert ControllerConfig().release_cadence is None and ControllerConfig().auto_promote_seconds is None
    with pytest.raises(ValueError, match="needs release_schedule"):
        ControllerConfig(auto_promote_after="24h", portage_eprefix=Path("/var/lib/x"))
    with pytest.raises(ValueError, match="needs portage_eprefix"):
        ControllerConfig(release_schedule="daily:03:00")


def test_the_controller_refuses_to_start_with_a_bad_schedule() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "swarm.controller.main", "--release-schedule", "weekly:sun:3am"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "swarm-controller: release_schedule: 'weekly:sun:3am' is not weekly:DAY:HH:MM or daily:HH:MM "
        "(e.g. weekly:sun:03:00, daily:03:00)"
    ]
