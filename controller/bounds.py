"""Bounds per identity on the gateway's streams, and one event per burst.

Whom a bound counts against is the drone of the client certificate (the
TLS layer says it before any message), or with ``--insecure`` the
connection (``context.peer()``). Every bound refuses with
RESOURCE_EXHAUSTED and a message naming the bound and its option:

- *pending*: streams (Connect or Channels.Shell) that have not said Hello
  or Attach yet, per identity and in all (``stream_pending_per_peer``,
  ``stream_pending_total``). Without it, streams that never speak hold a
  slot each for the whole hello timeout.
- *replacements*: a drone has one control stream; a new one replaces the
  old, at most ``stream_replace_max`` times in ``stream_replace_window``
  seconds (sliding). Beyond, the new stream is refused and the one in
  place stays.
- *channel streams*: Channels.Shell calls one drone holds at once, from
  the first frame to the end (``channel_streams_per_drone``).

Refusals and replacements come in bursts (a looping client, a clone): an
event for each would flood the log. ``Bursts`` reports the first of a
burst at once and, if more followed within the window, one summary with
their count when the window ends. The same holds for everything else a
peer can make the controller say: ``PeerEvents`` for the events of its
mistakes (a message that does not parse, a bad Hello, a failed
enrollment), ``BurstLog`` for log lines (a refused certificate, a
malformed HTTP request), a few
each per window and key, then one line with the count. Nothing here runs
per heartbeat: each check is a few dict operations when a stream starts
or ends, or when a peer got something wrong.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swarm.controller.events import EventLog

if TYPE_CHECKING:
    from swarm.controller.authz import Identity

log = logging.getLogger(__name__)

# Windows (and replacement histories) tracked at once; beyond, a burst of a
# new key is not reported (logged once per window instead).
MAX_TRACKED = 4096
# Reports of a peer's mistakes per kind and window before they are only counted.
NOISE_ALLOWANCE = 3
# Seconds over which the refusals of a duplicate agent make one report.
DUPLICATE_WINDOW = 3600.0


def bound_key(identity: Identity, peer: str) -> str:
    """Whom a stream counts against: the certificate's drone, else the connection.
    Drone ids have no ':' and peers always do, so the two never collide."""
    return identity.drone_id or peer


def peer_host(peer: str) -> str:
    """The address of a gRPC peer without its port (``ipv4:10.0.0.5:41234`` ->
    ``ipv4:10.0.0.5``, ``ipv6:[::1]:5000`` -> ``ipv6:[::1]``): a client that
    opens a new connection per attempt still counts as one."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() and ":" in host else peer


def noise_key(identity: Identity | None, peer: str) -> str:
    """Whom what a peer makes us say counts against: the certificate's drone,
    else the peer's address."""
    drone_id = identity.drone_id if identity is not None else None
    return drone_id or peer_host(peer)


class Slots:
    """Streams held per key and in all; ``take`` refuses beyond either cap."""

    __slots__ = ("_held", "_per_key", "_total", "_what", "held_total")

    def __init__(self, what: str, per_key: int, total: int | None = None) -> None:
        self._what = what
        self._per_key = per_key
        self._total = total
        self._held: dict[str, int] = {}
        self.held_total = 0

    def take(self, key: str) -> str | None:
        """Hold a slot for ``key`` (give it back with ``give``), or say why not."""
        held = self._held.get(key, 0)
        if held >= self._per_key:
            return f"{held} {self._what} of {key} are open already (the limit per drone is {self._per_key})"
        if self._total is not None and self.held_total >= self._total:
            return f"{self.held_total} {self._what} are open already (the limit in all is {self._total})"
        self._held[key] = held + 1
        self.held_total += 1
        return None

    def give(self, key: str) -> None:
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)
        self.held_total -= 1

    def held(self, key: str) -> int:
        return self._held.get(key, 0)


class _Burst:
    __slots__ = ("count", "summary", "timer")

    def __init__(self, summary: Callable[[int], None], timer: asyncio.TimerHandle) -> None:
        self.count = 1
        self.summary = summary
        self.timer = timer


class Bursts:
    """One report per key and burst. ``hit`` is True for the first of a burst
    (the caller reports it now), and for the first ``allowance`` of them;
    later hits within ``window`` seconds of the first only count, and when
    the window ends ``summary(more)`` of the latest hit is called with how
    many came beyond the allowance, if any did. The reports of a burst thus
    add up to its hits."""

    def __init__(self, window: float, allowance: int = 1) -> None:
        self.window = window
        self.allowance = allowance
        self._open: dict[Hashable, _Burst] = {}
        self._overflowed = False

    def hit(self, key: Hashable, summary: Callable[[int], None]) -> bool:
        burst = self._open.get(key)
        if burst is not None:
            burst.count += 1
            burst.summary = summary
            return burst.count <= self.allowance
        if len(self._open) >= MAX_TRACKED:
            if not self._overflowed:
                self._overflowed = True
                log.warning("more than %d bursts at once: not reporting new ones", MAX_TRACKED)
            return False
        timer = asyncio.get_running_loop().call_later(self.window, self._end, key)
        self._open[key] = _Burst(summary, timer)
        return True

    def _end(self, key: Hashable) -> None:
        self._overflowed = False
        burst = self._open.pop(key, None)
        if burst is not None and burst.count > self.allowance:
            burst.summary(burst.count - self.allowance)

    def close(self) -> None:
        """Cancel the timers (what a burst still had to report is dropped)."""
        for burst in self._open.values():
            burst.timer.cancel()
        self._open.clear()


class Replacements:
    """How often each drone's control stream may be replaced: ``limit``
    times in any ``window`` seconds."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._times: dict[str, deque[float]] = {}

    def allow(self, drone_id: str) -> float:
        """0 if a replacement may happen now (and counts it), else the seconds until one may."""
        now = self._clock()
        times = self._times.get(drone_id)
        if times is None:
            if len(self._times) >= MAX_TRACKED:
                self._prune(now)
            times = self._times[drone_id] = deque(maxlen=self.limit)
        elif len(times) == self.limit and now - times[0] < self.window:
            return self.window - (now - times[0])
        times.append(now)
        return 0.0

    def _prune(self, now: float) -> None:
        for drone_id in [d for d, t in self._times.items() if now - t[-1] >= self.window]:
            del self._times[drone_id]


class Refusals:
    """``protocol_error`` events for refused streams, one per burst per
    identity and bound: the first refusal at once, then the burst's count."""

    def __init__(self, events: EventLog, bursts: Bursts) -> None:
        self._events = events
        self._bursts = bursts

    def note(self, bound: str, key: str, drone_id: str | None, peer: str, reason: str) -> None:
        window = self._bursts.window

        def summary(more: int) -> None:
            self._events.emit(
                "protocol_error",
                f"{peer}: {more} more streams refused within {window:g}s: {reason}",
                drone_id=drone_id,
                peer=peer,
                bound=bound,
                refused=more,
            )

        if self._bursts.hit((bound, key), summary):
            log.warning("refused a stream of %s (%s): %s", key, peer, reason)
            self._events.emit(
                "protocol_error", f"{peer}: {reason}", drone_id=drone_id, peer=peer, bound=bound, refused=1
            )


class PeerEvents:
    """Events about what a peer got wrong, a few per ``kind`` and peer (its
    certificate's drone, else its address) per window, then one with how
    many more came: a looping or hostile client cannot flood the event log
    (nor the log, which gets a line per event)."""

    def __init__(self, events: EventLog, bursts: Bursts) -> None:
        self._events = events
        self._bursts = bursts

    def emit(
        self, type: str, kind: str, key: str, message: str, *, drone_id: str | None, peer: str, **data: Any
    ) -> None:
        window = self._bursts.window

        def summary(more: int) -> None:
            self._events.emit(
                type,
                f"{peer}: {more} more like this within {window:g}s; the latest: {message}",
                drone_id=drone_id,
                peer=peer,
                repeated=more,
                **data,
            )

        if self._bursts.hit((type, kind, key), summary):
            self._events.emit(type, f"{peer}: {message}", drone_id=drone_id, peer=peer, repeated=1, **data)


class BurstLog:
    """Log lines a peer can trigger, on the gRPC side and the web tiers'
    connections alike: the first ``bursts.allowance`` per key and window,
    then one line with how many more there were. A client that loops (or
    an attacker) cannot fill the disk: a burst that never ends costs a few
    lines a window."""

    def __init__(self, logger: logging.Logger, bursts: Bursts) -> None:
        self._log = logger
        self._bursts = bursts

    def note(self, key: Hashable, level: int, message: str, *args: object) -> None:
        window = self._bursts.window

        def summary(more: int) -> None:
            self._log.log(level, "%d more like this within %gs; the latest: " + message, more, window, *args)

        if self._bursts.hit(key, summary):
            self._log.log(level, message, *args)

    def warning(self, kind: str, key: str, message: str, *args: object) -> None:
        self.note(("log", kind, key), logging.WARNING, message, *args)

    def close(self) -> None:
        """Cancel the pending summaries (at stop: what they would have said is dropped)."""
        self._bursts.close()


@dataclass(frozen=True, slots=True)
class BoundSettings:
    """The caps (controller options of the same names, with ``stream_`` /
    ``channel_`` prefixes as in config.py)."""

    pending_per_peer: int = 8
    pending_total: int = 1000
    replace_max: int = 3
    replace_window: float = 10.0
    channel_streams_per_drone: int = 24


class StreamBounds:
    """The bounds the gateway and the channels service share (one per controller)."""

    def __init__(self, events: EventLog, settings: BoundSettings) -> None:
        self.settings = settings
        self.bursts = Bursts(settings.replace_window)
        self.pending = Slots(
            "streams waiting to say Hello or Attach", settings.pending_per_peer, settings.pending_total
        )
        self.channels = Slots("channel streams", settings.channel_streams_per_drone)
        self.replacements = Replacements(settings.replace_max, settings.replace_window)
        self.refusals = Refusals(events, self.bursts)
        # What peers get wrong: a few reports per peer and kind, then a count.
        self.noise = Bursts(settings.replace_window, allowance=NOISE_ALLOWANCE)
        self.peer_events = PeerEvents(events, self.noise)
        # Another agent process on a drone's identity: one report (and alert)
        # per drone per DUPLICATE_WINDOW, however often the clone retries.
        self.duplicates = Bursts(DUPLICATE_WINDOW)

    def close(self) -> None:
        self.bursts.close()
        self.noise.close()
        self.duplicates.close()
