"""When scheduled releases are cut, and how long a scheduled cut waits to
be promoted: the two options' text, checked when the controller starts.

A slot is in the controller's local time (what an admin reads on its
clock): ``weekly:sun:03:00`` or ``daily:03:00``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as daytime

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SCHEDULE_RE = re.compile(r"^(?:weekly:(?P<day>[a-z]{3}):|daily:)(?P<hour>\d{1,2}):(?P<minute>\d{2})\Z")
DURATION_RE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>[smhdw]?)\Z")
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, slots=True)
class Cadence:
    """A slot in local time: every day, or one day of the week (0 is Monday)."""

    text: str
    hour: int
    minute: int
    weekday: int | None = None

    def _slot_on(self, day: date) -> float | None:
        if self.weekday is not None and day.weekday() != self.weekday:
            return None
        return datetime.combine(day, daytime(self.hour, self.minute)).timestamp()

    def next_after(self, ts: float) -> float:
        """The first slot strictly after ``ts``."""
        today = datetime.fromtimestamp(ts).date()
        for offset in range(9):
            slot = self._slot_on(today + timedelta(days=offset))
            if slot is not None and slot > ts:
                return slot
        raise AssertionError("a weekly slot comes within 8 days")

    def last_at_or_before(self, ts: float) -> float:
        """The latest slot at or before ``ts``."""
        today = datetime.fromtimestamp(ts).date()
        for offset in range(9):
            slot = self._slot_on(today - timedelta(days=offset))
            if slot is not None and slot <= ts:
                return slot
        raise AssertionError("a weekly slot comes within 8 days")


def parse_schedule(text: str) -> Cadence:
    """``weekly:DAY:HH:MM`` or ``daily:HH:MM`` (local time); ValueError saying what is wrong."""
    value = text.strip().lower()
    match = SCHEDULE_RE.match(value)
    if match is None:
        raise ValueError(
            f"release_schedule: {text[:60]!r} is not weekly:DAY:HH:MM or daily:HH:MM "
            "(e.g. weekly:sun:03:00, daily:03:00)"
        )
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        raise ValueError(f"release_schedule: {match['hour']}:{match['minute']} is not a time of day")
    day = match["day"]
    if day is not None and day not in WEEKDAYS:
        raise ValueError(f"release_schedule: {day!r} is not a day ({', '.join(WEEKDAYS)})")
    return Cadence(value, hour, minute, None if day is None else WEEKDAYS.index(day))


def parse_duration(text: str, name: str = "auto_promote_after") -> float:
    """'90', '90s', '15m', '24h', '2d', '1w' -> seconds; ValueError when malformed or not positive."""
    match = DURATION_RE.match(text.strip().lower())
    if match is None:
        raise ValueError(f"{name}: {text[:40]!r} is not a duration (e.g. 30m, 24h, 2d)")
    seconds = float(match["number"]) * DURATION_UNITS[match["unit"]]
    if seconds <= 0:
        raise ValueError(f"{name} must be positive")
    return seconds
