"""What both web tiers share: JSON replies and errors, the event pages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from swarm.clock import iso
from swarm.controller.errors import SwarmError
from swarm.controller.services import Services

# The parsers live in parse.py; auth.py takes json_body from here.
from swarm.controller.web.parse import MAX_TIME_TEXT, query_since
from swarm.controller.web.parse import json_body as json_body
from swarm.controller.web.routes import IntParam, ListParam, TextParam
from swarm.controller.web.views.base import ErrorBody, ErrorView, dumps
from swarm.controller.web.views.status import ActivityView, BucketView, EventsPage, event_view

log = logging.getLogger(__name__)

SERVICES = web.AppKey("services", Services)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(view: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A reply: a view (views/) as JSON."""
    return web.Response(text=dumps(view), status=status, content_type="application/json", headers=headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(ErrorView(ErrorBody(status, message)), status=status, headers=headers)


def http_error(exc: BaseException) -> web.Response:
    """The one mapping from exceptions to HTTP answers; no traceback leaves."""
    if isinstance(exc, web.HTTPException):
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate", "retry-after")
        }
        return error_response(
            exc.status,
            exc.reason if exc.text is None or exc.text.startswith(f"{exc.status}:") else exc.text,
            headers,
        )
    if isinstance(exc, SwarmError) and type(exc) is not SwarmError:
        return error_response(exc.http_status, exc.message)
    return error_response(500, "internal error")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPNotFound:
        return error_response(404, f"no such endpoint: {request.path[:200]}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error(exc)
    except SwarmError as exc:
        return http_error(exc)
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return http_error(exc)
    return response


ADMIN_ONLY_PREFIXES = ("admin_", "shell_")
# binhost_saved and binhost_deleted name the admin and a mirror's ssh destination;
# a payload's upload, staging and deploy name the admin; the test-build token
# events name the admin and the token's user and limits.
ADMIN_ONLY_TYPES = frozenset(
    {
        "drone_exec",
        "drone_access_changed",
        "drone_pinged",
        "binhost_saved",
        "binhost_deleted",
        "test_build_token_created",
        "test_build_token_revoked",
        "payload_uploaded",
        "payload_staged",
        "payload_deploy_started",
    }
)


def admin_only(event_type: str) -> bool:
    """Audit events the public tier does not show."""
    return event_type.startswith(ADMIN_ONLY_PREFIXES) or event_type in ADMIN_ONLY_TYPES


# Parameters the event and activity routes of both tiers share.
SINCE = TextParam(
    "since",
    "an event id (exclusive) or an ISO 8601 time (inclusive); without it, the newest events",
    max_len=MAX_TIME_TEXT,
)
EVENTS_LIMIT = IntParam("limit", "at most this many events", default=100, lo=1, hi=1000)
DRONE_FILTER = TextParam("drone", "only this drone (name or id)")
EVENT_TYPES = ListParam("type", "only these event types (comma-separated)")
EVENT_PARAMS = (SINCE, EVENTS_LIMIT, DRONE_FILTER, EVENT_TYPES)
WINDOW = IntParam("window", "seconds back from now", default=86400, lo=60, hi=7 * 86400)
BUCKETS = IntParam("buckets", "number of buckets", default=96, lo=1, hi=1440)


async def events_page(request: web.Request, *, public: bool) -> EventsPage:
    """GET .../events: since=, limit=, drone=, type=. Page on last_id, which
    also counts events the public tier leaves out."""
    s = request.app[SERVICES]
    after_id, since_ts = query_since(request)
    limit = EVENTS_LIMIT.read(request)
    drone = DRONE_FILTER.read(request)
    drone_id = s.fleet.require(drone).id if drone else None
    types = tuple(sorted(EVENT_TYPES.read(request)))
    found = await s.events.query(
        after_id=after_id, since_ts=since_ts, limit=limit, drone_id=drone_id, types=types
    )
    shown = tuple(event_view(e) for e in found if not (public and admin_only(e.type)))
    return EventsPage(shown, s.events.last_id)


async def activity_page(request: web.Request) -> ActivityView:
    """GET .../activity: window=, buckets=. Event counts per time bucket, up to now
    (both tiers: counts say nothing an admin-only event would)."""
    s = request.app[SERVICES]
    window = WINDOW.read(request)
    buckets = BUCKETS.read(request)
    width = window / buckets
    end = s.clock.time()
    start = end - window
    counts = await s.events.activity(start, width, buckets)
    return ActivityView(
        window_s=window,
        bucket_s=width,
        start=iso(start),
        end=iso(end),
        total=sum(counts),
        buckets=tuple(BucketView(iso(start + i * width), c) for i, c in enumerate(counts)),
    )


def abort_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


async def close_websocket(
    request: web.Request, ws: web.WebSocketResponse, code: int, message: str, timeout: float
) -> None:
    """Close with a close frame, or cut the connection off if the client
    cannot take one in time."""
    if ws.closed:
        return
    try:
        await asyncio.wait_for(ws.close(code=code, message=message.encode()[:120]), timeout)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        # Not our cancellation: aiohttp shares one drain waiter between a
        # websocket's writers, and a writer cancelled while the client read
        # nothing took it down with it. That client cannot take a close frame.
        abort_connection(request)
    except (TimeoutError, ConnectionError):
        abort_connection(request)  # a client that reads nothing cannot take a close frame either
