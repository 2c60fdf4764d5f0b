"""Live admin streams over websockets: ``/ws/events`` and ``/ws/protocol``.

Both need what every admin request needs (a key or a session) and an
allowed Origin (:func:`auth.authorize_websocket`), and take the filters
``drone=`` (name or id) and ``type=`` (comma-separated). Each message is
one JSON text.

- ``/ws/events?since=ID``: events, each the same object as an item of
  ``GET /api/v1/events``. With ``since``, first the events after that id
  (from memory or the database), then live ones: a client that remembers
  the last id it saw resumes without gaps or repeats.
- ``/ws/protocol?sample=N``: control-stream messages, each the same object
  as an entry of ``GET /admin/api/protocol``. With ``sample=N`` only every
  Nth heartbeat of each drone is sent (other message types are never
  sampled): a fleet of 1,000 drones at 1 Hz is 1,000/N messages a second.
  Counting (rather than one per drone per second) keeps the rate
  proportional whatever the heartbeat interval. Which of its heartbeats
  pass depends on the drone (a phase from its id): counted from the
  subscription alone, every drone's would pass in the same interval and
  none in the N - 1 after it, a burst the console could not draw.

Backpressure: the event or protocol log calls a listener that filters and
puts the item into a bounded queue of the connection (``--ws-queue``
items); one writer per connection drains it into the websocket, waiting
while the client is slow (the socket's send buffer is kept small so the
wait starts soon and the client does not fall minutes behind in kernel
buffers). A full queue drops new items and counts them; when the writer
catches up it sends ``{"dropped": N, "after_id": ID}`` (``after_seq`` on
/ws/protocol): N matching items after that one are missing (events can be
fetched again with ``GET /api/v1/events?since=ID``, or by reconnecting
with ``since=ID``). No message with a ``dropped`` key is an item. Neither
the event loop nor any other client ever waits for a slow client.

A stream ends when the client closes it, when its session ends (logout,
expiry, its key removed: close code 1008; an open stream counts as
activity of its session, the absolute lifetime still applies) and when
the controller stops (1001).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from aiohttp import WSCloseCode, web

from swarm.controller.errors import InvalidArgument, Unavailable
from swarm.controller.protolog import ProtocolEntry
from swarm.controller.store.records import EventRecord
from swarm.controller.web.auth import AUTH, Principal, authorize_websocket
from swarm.controller.web.common import DRONE_FILTER, SERVICES, abort_connection, close_websocket
from swarm.controller.web.routes import IntParam, ListParam, Routes
from swarm.controller.web.views.base import dumps
from swarm.controller.web.views.messages import EventsGap, LogData, LogEnd, LogNotice, ProtocolGap
from swarm.controller.web.views.status import EventView, ProtocolEntryView, event_view, protocol_view
from swarm.tasks import race

log = logging.getLogger(__name__)

T = TypeVar("T")
# An item (as the list endpoints show it) or a message of the stream's own.
StreamMessage = EventView | ProtocolEntryView | EventsGap | ProtocolGap | LogData | LogNotice | LogEnd
Send = Callable[[StreamMessage], Awaitable[None]]

CHECK_INTERVAL = 5.0  # seconds between checks that the stream's session is still valid
CLOSE_TIMEOUT = 1.0  # a client that does not answer our close frame in time is cut off
SHUTDOWN_TIMEOUT = 2.0  # for all streams together (the web stop stage has 3 s)
HEARTBEAT = 30.0  # websocket ping interval; a client that does not answer is closed
SEND_BUFFER = 64 * 1024  # SO_SNDBUF of a stream's socket
WRITER_LIMIT = 16 * 1024  # bytes written before aiohttp checks whether to wait for the client
BACKFILL_PAGE = 500
HEARTBEAT_TYPE = "heartbeat"
routes = Routes()
STREAM_TYPES = ListParam("type", "only these types (comma-separated)")
SINCE_ID = IntParam("since", "first the events after this id, then live ones (resume without gaps)", -1, 0)
SAMPLE = IntParam("sample", "send only every Nth heartbeat of each drone (default 1: all)", 1, 1, 1_000_000)
WEBSOCKET = (
    "A websocket (Upgrade request). Needs the admin key or a session cookie, and an allowed Origin "
    "(one of the tier's host names on its own port, or --admin-origins; without Origin only with "
    "X-Admin-Key). Each text message is one JSON object: {item}. A message with a 'dropped' key is "
    "not an item: that many items after after_id/after_seq did not fit the connection's queue "
    "(--ws-queue) of a slow client. Close codes: 1001 controller stopping, 1008 session ended."
)


class Feed(Generic[T]):
    """A connection's bounded queue: ``put`` never blocks and never grows it
    past ``size``; what does not fit is counted, newest first dropped, so
    the gap always follows the items taken with it."""

    def __init__(self, size: int) -> None:
        self._items: deque[T] = deque()
        self._size = size
        self._ready = asyncio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        if len(self._items) >= self._size:
            self.dropped += 1
        else:
            self._items.append(item)
        self._ready.set()

    async def take(self) -> tuple[list[T], int]:
        """Everything queued, and how many were dropped after it."""
        await self._ready.wait()
        self._ready.clear()
        items = list(self._items)
        self._items.clear()
        dropped, self.dropped = self.dropped, 0
        return items, dropped


class Stream:
    """One open websocket: a reader (the client only closes), the pump (the
    writer) and a watcher of its session, until the first of them ends."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, principal: Principal) -> None:
        self.request = request
        self.ws = ws
        self.principal = principal
        self.code: int = WSCloseCode.OK
        self.reason = ""
        self.finished = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self, code: int, reason: str) -> None:
        if not self._stop.is_set():
            self.code, self.reason = code, reason
            self._stop.set()

    async def run(self, pump: Coroutine[Any, Any, None]) -> None:
        name = self.request.path
        try:
            await race(
                self._read(), pump, self._watch(), names=(f"{name}:read", f"{name}:pump", f"{name}:watch")
            )
        except ConnectionError as exc:
            log.debug("%s of %s: client gone (%s)", name, self.principal.name, exc)
        except Exception:
            log.exception("%s of %s failed", name, self.principal.name)
            self.code, self.reason = WSCloseCode.INTERNAL_ERROR, "internal error"
        finally:
            try:
                await self._close()
            finally:
                self.finished.set()

    async def _read(self) -> None:
        async for _message in self.ws:
            pass  # clients have nothing to say; aiohttp answers pings and handles close

    async def _watch(self) -> None:
        auth = self.request.app[AUTH]
        while True:
            now = auth.clock.time()
            expires = auth.expires_at(self.principal, now)
            wait = CHECK_INTERVAL if expires is None else min(CHECK_INTERVAL, look_again(expires - now))
            await auth.clock.wait(self._stop, wait)
            if self._stop.is_set():
                return
            if not auth.still_valid(self.principal, touch=True):
                self.stop(WSCloseCode.POLICY_VIOLATION, "the session has ended")
                return

    async def _close(self) -> None:
        await close_websocket(self.request, self.ws, self.code, self.reason, CLOSE_TIMEOUT)

    def _abort(self) -> None:
        abort_connection(self.request)


def look_again(left: float) -> float:
    """When a stream looks at its session again, ``left`` seconds before the session
    would end: halfway, so that the look (activity) comes before an idle timeout
    shorter than CHECK_INTERVAL, and soon after the absolute lifetime ends."""
    return max(0.05, left / 2)


class Streams:
    """The open streams of the admin tier, closed when it shuts down."""

    def __init__(self) -> None:
        self._open: set[Stream] = set()
        self.closing = False

    def __len__(self) -> int:
        return len(self._open)

    def counts(self) -> dict[str, int]:
        """Open streams by route (``/ws/logs/drones/{drone}`` counts every drone's together)."""
        counts: dict[str, int] = {}
        for stream in self._open:
            resource = stream.request.match_info.route.resource
            path = resource.canonical if resource is not None else stream.request.path
            counts[path] = counts.get(path, 0) + 1
        return counts

    async def serve(self, stream: Stream, pump: Coroutine[Any, Any, None]) -> None:
        self._open.add(stream)
        try:
            await stream.run(pump)
        finally:
            self._open.discard(stream)

    async def close_all(self, timeout: float) -> None:
        self.closing = True
        streams = list(self._open)
        for stream in streams:
            stream.stop(WSCloseCode.GOING_AWAY, "controller stopping")
        if not streams:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*(s.finished.wait() for s in streams)), timeout)
        except TimeoutError:
            log.warning("%d websocket stream(s) still open %.1fs after shutdown began", len(self), timeout)


STREAMS = web.AppKey("admin_streams", Streams)


def install(app: web.Application) -> None:
    """Serve the streams on ``app`` (the admin tier) and close them on shutdown."""
    app[STREAMS] = Streams()
    app.add_routes(routes)
    app.on_shutdown.append(_shutdown)


async def _shutdown(app: web.Application) -> None:
    await app[STREAMS].close_all(SHUTDOWN_TIMEOUT)


def json_websocket(request: web.Request) -> web.WebSocketResponse:
    if request.app[STREAMS].closing:
        raise Unavailable("the controller is stopping")
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT, timeout=CLOSE_TIMEOUT, max_msg_size=4096, writer_limit=WRITER_LIMIT
    )
    if not ws.can_prepare(request).ok:
        raise InvalidArgument(f"{request.path} is a websocket: send an Upgrade request")
    return ws


async def open_json(request: web.Request, ws: web.WebSocketResponse) -> Send:
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    await ws.prepare(request)

    async def send(item: StreamMessage) -> None:
        await ws.send_str(dumps(item))

    return send


def _filters(request: web.Request) -> tuple[str | None, frozenset[str]]:
    s = request.app[SERVICES]
    drone = DRONE_FILTER.read(request)
    drone_id = s.fleet.require(drone).id if drone else None
    return drone_id, STREAM_TYPES.read(request)


@routes.declare(
    "GET",
    "/ws/events",
    None,
    summary="live events",
    description=WEBSOCKET.format(item="an event, as the items of GET /api/v1/events"),
    params=(DRONE_FILTER, STREAM_TYPES, SINCE_ID),
    errors=(404,),
    websocket=True,
)
async def ws_events(request: web.Request) -> web.StreamResponse:
    principal = await authorize_websocket(request)
    s = request.app[SERVICES]
    drone_id, types = _filters(request)
    since = SINCE_ID.read(request)
    ws = json_websocket(request)
    feed: Feed[EventRecord] = Feed(s.config.ws_queue)

    def listen(event: EventRecord) -> None:
        if (drone_id is None or event.drone_id == drone_id) and (not types or event.type in types):
            feed.put(event)

    unsubscribe = s.events.subscribe(listen)
    try:
        # Subscribed before the backfill: nothing falls between the two.
        live_from = s.events.last_id
        send = await open_json(request, ws)

        async def pump() -> None:
            last = live_from
            if since >= 0:
                last = min(since, live_from)
                while last < live_from:
                    page = await s.events.query(
                        after_id=last, limit=BACKFILL_PAGE, drone_id=drone_id, types=tuple(types)
                    )
                    older = [e for e in page if e.id <= live_from]  # newer ones come from the feed
                    for event in older:
                        await send(event_view(event))
                        last = event.id
                    if len(older) < BACKFILL_PAGE:
                        break
                last = max(last, live_from)
            while True:
                events, dropped = await feed.take()
                for event in events:
                    if event.id > last:
                        await send(event_view(event))
                        last = event.id
                if dropped:
                    await send(EventsGap(dropped, last))

        await request.app[STREAMS].serve(Stream(request, ws, principal), pump())
    finally:
        unsubscribe()
    return ws


@routes.declare(
    "GET",
    "/ws/protocol",
    None,
    summary="live control-stream messages",
    description=WEBSOCKET.format(item="a protocol entry, as the entries of GET /admin/api/protocol"),
    params=(DRONE_FILTER, STREAM_TYPES, SAMPLE),
    errors=(404,),
    websocket=True,
)
async def ws_protocol(request: web.Request) -> web.StreamResponse:
    principal = await authorize_websocket(request)
    s = request.app[SERVICES]
    drone_id, kinds = _filters(request)
    sample = SAMPLE.read(request)
    ws = json_websocket(request)
    feed: Feed[ProtocolEntry] = Feed(s.config.ws_queue)
    heartbeats: dict[str, int] = {}  # per drone; drones are a bounded set (enrolled, authenticated)

    def listen(entry: ProtocolEntry) -> None:
        if (drone_id is not None and entry.drone_id != drone_id) or (kinds and entry.type not in kinds):
            return
        if sample > 1 and entry.type == HEARTBEAT_TYPE:
            seen = heartbeats.get(entry.drone_id)
            if seen is None:
                seen = zlib.crc32(entry.drone_id.encode()) % sample
            heartbeats[entry.drone_id] = seen + 1
            if seen % sample:
                return
        feed.put(entry)

    unsubscribe = s.protolog.subscribe(listen)
    try:
        send = await open_json(request, ws)

        async def pump() -> None:
            last = s.protolog.last_seq
            while True:
                entries, dropped = await feed.take()
                for entry in entries:
                    await send(protocol_view(entry))
                    last = entry.seq
                if dropped:
                    await send(ProtocolGap(dropped, last))

        await request.app[STREAMS].serve(Stream(request, ws, principal), pump())
    finally:
        unsubscribe()
    return ws
