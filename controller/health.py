"""Failure detection: a phi-accrual detector per drone, and the monitor
that turns silence into ``suspect`` and then ``offline``.

Phi accrual (Hayashibara et al., as in Cassandra and Akka) learns each
drone's own heartbeat rhythm: phi grows with silence measured against the
mean and spread of that drone's recent intervals, so a drone on a slow
Tailscale link is judged by its own jitter, not by a fixed timeout. With
the defaults a drone beating steadily every T seconds is suspect after
about 2.5 T of silence.
"""

from __future__ import annotations

import logging
import math
from array import array
from typing import TYPE_CHECKING

from swarm.clock import SYSTEM, Clock
from swarm.tasks import TaskSet

if TYPE_CHECKING:
    from swarm.controller.fleet import DroneState, Fleet

log = logging.getLogger(__name__)

WINDOW = 100
# Accepted pause and smallest spread, as shares of the drone's interval:
# even a perfectly regular drone is allowed a missed beat before suspicion.
PAUSE_SHARE = 0.5
MIN_STD_SHARE = 0.2
# The shortest time between two looks (deadlines within it are judged
# together), and the longest the monitor sleeps when none is due.
TICK = 0.1
IDLE_WAIT = 1.0
# A drone whose rhythm was erratic (phi's deadline far out) is still suspect
# before it is offline: at the latest halfway through the offline silence.
SUSPECT_BY = 0.5
LN10 = math.log(10)


def _phi(y: float) -> float:
    """-log10 of the logistic approximation of P(X > y) for X ~ N(0, 1).

    P = 1 / (1 + e^z), so phi = log10(1 + e^z), worked so that neither a
    long silence (huge z) nor an early beat (very negative z) overflows."""
    z = y * (1.5976 + 0.070566 * y * y)
    if z > 0:
        return (z + math.log1p(math.exp(-z))) / LN10
    return math.log1p(math.exp(z)) / LN10


def y_for_phi(threshold: float) -> float:
    lo, hi = -10.0, 40.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _phi(mid) < threshold:
            lo = mid
        else:
            hi = mid
    return hi


class PhiAccrual:
    __slots__ = ("_count", "_intervals", "_min_std", "_next", "_pause", "_sum", "_sumsq", "last")

    def __init__(self, expected_interval: float, now: float) -> None:
        # The latest WINDOW intervals, a ring of 32-bit floats (a tenth of a
        # microsecond for a second's interval): one per drone, and 0.4 KB
        # where doubles took 0.8 and a deque of float objects 3.5 KB.
        self._intervals = array("f", bytes(4 * WINDOW))
        self._next = 0  # where the next interval goes
        self._count = 0  # intervals in the ring
        self._pause = expected_interval * PAUSE_SHARE
        self._min_std = expected_interval * MIN_STD_SHARE
        self._sum = 0.0
        self._sumsq = 0.0
        self.last = now
        self._add(expected_interval)

    def _add(self, interval: float) -> None:
        index = self._next
        if self._count == WINDOW:
            old = self._intervals[index]
            self._sum -= old
            self._sumsq -= old * old
        else:
            self._count += 1
        self._intervals[index] = interval
        # The sums take the interval as kept, so that it leaves them exactly.
        interval = self._intervals[index]
        self._next = (index + 1) % WINDOW
        self._sum += interval
        self._sumsq += interval * interval

    def heartbeat(self, now: float) -> None:
        self._add(max(0.0, now - self.last))
        self.last = now

    def beat(self, now: float, y_threshold: float) -> float:
        """``heartbeat(now)``, then ``deadline(y_threshold)``, in one call:
        this runs for every heartbeat of every drone, and the four calls and
        their attribute lookups cost as much as the arithmetic (a third of
        the fleet's own work per heartbeat, in a profile at 2,000 drones)."""
        interval = now - self.last
        if interval < 0.0:
            interval = 0.0
        intervals, index = self._intervals, self._next
        total, squares = self._sum, self._sumsq
        count = self._count
        if count == WINDOW:
            old = intervals[index]
            total -= old
            squares -= old * old
        else:
            count = self._count = count + 1
        intervals[index] = interval
        interval = intervals[index]  # as kept (32 bits), so that it leaves the sums exactly
        self._next = index + 1 if index + 1 < WINDOW else 0
        total += interval
        squares += interval * interval
        self._sum, self._sumsq, self.last = total, squares, now
        mean = total / count
        variance = squares / count - mean * mean
        std = math.sqrt(variance) if variance > 0.0 else 0.0
        return now + mean + self._pause + y_threshold * (std if std > self._min_std else self._min_std)

    def _stats(self) -> tuple[float, float]:
        n = self._count
        mean = self._sum / n
        variance = max(0.0, self._sumsq / n - mean * mean)
        return mean + self._pause, max(math.sqrt(variance), self._min_std)

    def phi(self, now: float) -> float:
        mean, std = self._stats()
        return _phi((now - self.last - mean) / std)

    def deadline(self, y_threshold: float) -> float:
        """When phi will cross the threshold whose y is given, if silence lasts."""
        mean, std = self._stats()
        return self.last + mean + y_threshold * std


class HealthMonitor:
    """Marks silent drones suspect, and offline after a longer silence.

    Each look is only at the drones whose deadline has passed, when the
    earliest has (``Deadlines.wait_due``): the fleet sets one when a drone
    connects and each heartbeat puts it off (the drone's suspect deadline),
    so a drone that beats is never looked at; after a look the monitor
    sets the next (the offline deadline of a suspect drone)."""

    def __init__(
        self, fleet: Fleet, *, suspect_phi: float, offline_after_intervals: float, clock: Clock = SYSTEM
    ) -> None:
        self._fleet = fleet
        self._clock = clock
        self.y_threshold = y_for_phi(suspect_phi)
        self._offline_after = offline_after_intervals
        # A beating drone's look, put off by each heartbeat, is never later than this.
        fleet.look_within = SUSPECT_BY * offline_after_intervals
        self._tasks = TaskSet("health")

    async def start(self) -> None:
        self._tasks.spawn(self._loop(), "monitor")

    async def stop(self) -> None:
        await self._tasks.close()

    async def _loop(self) -> None:
        schedule = self._fleet.silence
        while True:
            self.check(await schedule.wait_due(self._clock, TICK, IDLE_WAIT))

    def check(self, now: float) -> None:
        """Judge the connected drones whose deadline (fleet.silence) has come."""
        fleet = self._fleet
        schedule = fleet.silence
        taken = False
        for drone_id in schedule.take_due(now):
            state = fleet.get(drone_id)
            if state is None or state.link is None:
                continue
            suspect, offline, silent = self._verdict(state, now)
            if (suspect or offline) and not taken:
                # What was read but not yet taken (the gateway's inbox) first:
                # a heartbeat there is not silence. Only then: taking the inbox
                # at every look (a suspect drone's, each tick) would cut its
                # batches short.
                fleet.take_pending()
                taken = True
                if state.link is None:
                    continue
                suspect, offline, silent = self._verdict(state, now)
            if suspect:
                # Silence wins over what the drone last said of its checks. A
                # look that came after the offline silence (a starved controller)
                # finds it suspect first all the same: a silent drone's history
                # must not depend on how late the loop ran.
                fleet.mark_suspect(state, silent)
            if offline:
                fleet.silence_offline(state, silent)
            if state.link is not None:
                schedule.earlier(state.id, self._deadline(state))

    def _verdict(self, state: DroneState, now: float) -> tuple[bool, bool, float]:
        """Whether a look at ``now`` makes the drone suspect, and offline; and its silence."""
        silent = now - state.detector_last()
        bound = self._offline_after * state.interval
        offline = silent > bound
        suspect = state.status in ("online", "unhealthy") and (
            offline or now > state.suspect_at or silent > SUSPECT_BY * bound
        )
        return suspect, offline, silent

    def _deadline(self, state: DroneState) -> float:
        """The earliest time at which ``check`` could change the drone, if it stays silent."""
        last, bound = state.detector_last(), self._offline_after * state.interval
        if state.status in ("online", "unhealthy"):
            return min(state.suspect_at, last + SUSPECT_BY * bound)
        return last + bound
