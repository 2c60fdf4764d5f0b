"""Proof of life: a Ping to each connected drone every ping_interval.

Pings are spread over the interval (each drone has its own phase) so a
large fleet does not get them all in one burst. Each pass takes only the
drones whose ping is due (``Fleet.pings``), not every drone, and the loop
sleeps until the next one is due (``Schedule.wait_due``): a drone that
connects wakes it, and an idle controller does not poll.

A budget caps the pings a second to the whole fleet (``rate``): a fleet
larger than rate x ping_interval drones has each drone pinged every
drones / rate seconds instead, as Consul spreads its per-node updates
(a rate-scaled interval) so that the servers' cost stops growing with
the cluster. Small fleets keep the interval they were given. Each ping
written costs the controller about what receiving a heartbeat does (a
task, a write with its own TLS record and send): with the budget, 2,000
drones cost 50 of them a second instead of 400 (bench/README.md has
what that and pong-in-heartbeat measured).

What the longer interval would cost is how soon a drone that stops
reading its stream is found (its pings go unanswered while its
heartbeats arrive). So a ping's answer is looked for when its time is up
(``ping_timeout``): a drone that answered waits for its turn, one that
did not is pinged again at once, until it has left ``missed_pings``
unanswered. At 2,000 drones it is unhealthy 15 s after the first ping it
leaves unanswered (15-55 s after it went deaf), where counting at each
turn took three more turns (60-80 s at 100 pings a second). A look
writes nothing: it is a heap entry and a pass's few microseconds.
"""

from __future__ import annotations

import logging
import random

from swarm.clock import SYSTEM, Clock
from swarm.controller.fleet import DroneState, Fleet, Link
from swarm.protocol import PONG_IN_HEARTBEAT, speaks
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)

# The shortest time between two passes (pings due within it go together),
# and the longest the loop sleeps when no ping is due.
TICK = 0.05
IDLE_WAIT = 1.0
# The longest an agent may hold a routine ping for its next heartbeat
# (pong-in-heartbeat), and never more than half the ping timeout: with
# the default 1 s heartbeats a ping waits half a second on average.
HOLD_MAX_S = 2.0
# A ping's answer is looked for this long after its time is up: a pong that
# came in time may still wait in the gateway's inbox (inbox.DELAY).
LOOK_GRACE = 0.1


class Pinger:
    def __init__(self, fleet: Fleet, interval: float, clock: Clock = SYSTEM, *, rate: float = 0.0) -> None:
        self._fleet = fleet
        self._clock = clock
        self._interval = interval
        # Pings a second to the whole fleet at most (0: no budget).
        self._rate = rate
        self._seq = 0
        self._tasks = TaskSet("pinger")
        self.skipped = 0

    async def start(self) -> None:
        self._tasks.spawn(self._loop(), "loop")

    async def stop(self) -> None:
        await self._tasks.close()

    async def _loop(self) -> None:
        schedule = self._fleet.pings
        while True:
            self.tick(await schedule.wait_due(self._clock, TICK, IDLE_WAIT))

    def _send(self, state: DroneState, link: Link, answer_within_ms: int = 0) -> int | None:
        """Send the next ping on ``link``; its seq, or None when the stream's queue is full."""
        self._seq += 1
        sent_at_ns = self._clock.time_ns()
        if not link.ping(self._seq, sent_at_ns, answer_within_ms):
            return None
        self._fleet.on_ping_sent(state, self._seq, sent_at_ns)
        return self._seq

    def _hold_ms(self, state: DroneState) -> int:
        """How long the agent may hold this routine ping for its next
        heartbeat: 0 (a Pong at once) for an agent that does not speak
        pong-in-heartbeat, and for the first ping on a stream, whose answer
        is the proof of life that the healer and the admin wait for. A pong
        is one message fewer to read, which at 1 Hz heartbeats costs half a
        second of round-trip freshness (the measured round trip is not
        changed: the agent says how long it held the ping)."""
        if not speaks(state.features, PONG_IN_HEARTBEAT):
            return 0
        connected = state.connected_at
        if connected is None or state.last_ping_at is None or state.last_ping_at < connected:
            return 0
        return round(min(HOLD_MAX_S, self._fleet.ping_timeout / 2) * 1000)

    def ping_now(self, state: DroneState) -> int | None:
        """Ping one drone at once (an admin asks; answered at once); its seq, or None if not sent."""
        link = state.link
        return None if link is None else self._send(state, link)

    def interval(self) -> float:
        """Seconds from one ping of a drone to its next: the ping interval, or
        longer where the fleet is so large that pinging every drone that
        often would exceed the budget."""
        if self._rate <= 0:
            return self._interval
        return max(self._interval, self._fleet.connected_count() / self._rate)

    def tick(self, now: float) -> None:
        """Ping the connected drones whose next ping (fleet.pings) is due, and
        again those whose last ping went unanswered in its time."""
        fleet = self._fleet
        schedule = fleet.pings
        interval = self.interval()
        look_after = fleet.ping_timeout + LOOK_GRACE
        for drone_id in schedule.take_due(now):
            state = fleet.get(drone_id)
            link = None if state is None else state.link
            if state is None or link is None:
                continue
            if now < state.next_ping_at and state.unanswered == 0:
                # A look at a ping's answer that came: the next ping at its turn.
                schedule.set(drone_id, state.next_ping_at)
                continue
            first = state.last_ping_at is None
            if self._send(state, link, self._hold_ms(state)) is None:
                self.skipped += 1
                fleet.on_ping_unsent(state)
            # First ping soon after connecting, then at a random phase.
            state.next_ping_at = now + (random.uniform(0.5, 1.0) * interval if first else interval)
            look = now + look_after
            if look < state.next_ping_at and state.unanswered <= fleet.missed_pings:
                schedule.set(drone_id, look)
            else:
                schedule.set(drone_id, state.next_ping_at)
