"""What both web tiers share: JSON errors, query parsing, serialisers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from swarm.clock import iso
from swarm.controller.errors import SwarmError
from swarm.controller.fleet import DroneState
from swarm.controller.services import Services
from swarm.controller.store.records import EventRecord

# The parsers live in parse.py; auth.py takes json_body from here.
from swarm.controller.web.parse import json_body as json_body
from swarm.controller.web.parse import query_int, query_list, query_since, query_value

log = logging.getLogger(__name__)

SERVICES = web.AppKey("services", Services)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": {"status": status, "message": message}}, status=status, headers=headers)


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


def node_json(state: DroneState, now: float) -> dict[str, Any]:
    detector = state.detector
    return {
        "id": state.id,
        "name": state.name,
        "status": state.status,
        "connected": state.connected,
        "drone_type": state.drone_type,
        "drone_type_reason": state.drone_type_reason,
        "cores": state.cores,
        "network": state.network,
        "hostname": state.hostname,
        "agent_version": state.agent_version,
        "protocol_revision": state.protocol_revision or None,
        "features": list(state.features),
        "payload_version": state.payload_version,
        "heartbeat_interval_ms": state.heartbeat_interval_ms,
        "first_seen_at": iso(state.first_seen_at),
        "last_seen_at": iso(state.last_seen_at),
        "last_heartbeat_at": iso(state.last_heartbeat_at),
        "last_ping_at": iso(state.last_ping_at),
        "last_pong_at": iso(state.last_pong_at),
        "ping_latency_ms": state.ping_latency_ms,
        "phi": round(detector.phi(now), 3) if detector is not None and state.connected else None,
        "load": [round(state.load1, 2), round(state.load5, 2), round(state.load15, 2)],
        "cpu_pct": round(state.cpu_percent, 1),
        "mem_pct": round(state.memory_percent, 1),
        "disk_pct": round(state.disk_percent, 1),
        "disk_free_bytes": state.disk_free_bytes,
        "emerge_running": state.emerge_running,
        "current_job_id": state.current_job_id or None,
    }


def event_json(event: EventRecord) -> dict[str, Any]:
    return {
        "id": event.id,
        "ts": iso(event.ts),
        "type": event.type,
        "message": event.message,
        "drone_id": event.drone_id,
        "drone_name": event.drone_name,
        "data": event.data,
    }


def now() -> float:
    return time.time()


ADMIN_ONLY_PREFIXES = ("admin_", "shell_")
ADMIN_ONLY_TYPES = frozenset({"drone_exec", "drone_access_changed", "drone_pinged"})


def admin_only(event_type: str) -> bool:
    """Audit events the public tier does not show."""
    return event_type.startswith(ADMIN_ONLY_PREFIXES) or event_type in ADMIN_ONLY_TYPES


async def events_page(request: web.Request, *, public: bool) -> dict[str, Any]:
    """GET .../events: since=, limit=, drone=, type=. Page on last_id, which
    also counts events the public tier leaves out."""
    s = request.app[SERVICES]
    after_id, since_ts = query_since(request)
    limit = query_int(request, "limit", 100, 1, 1000)
    drone = query_value(request, "drone")
    drone_id = s.fleet.require(drone).id if drone else None
    types = tuple(sorted(query_list(request, "type")))
    found = await s.events.query(
        after_id=after_id, since_ts=since_ts, limit=limit, drone_id=drone_id, types=types
    )
    shown = [e for e in found if not (public and admin_only(e.type))]
    return {"events": [event_json(e) for e in shown], "last_id": s.events.last_id}


async def activity_page(request: web.Request) -> dict[str, Any]:
    """GET .../activity: window=, buckets=. Event counts per time bucket, up to now
    (both tiers: counts say nothing an admin-only event would)."""
    s = request.app[SERVICES]
    window = query_int(request, "window", 86400, 60, 7 * 86400)
    buckets = query_int(request, "buckets", 96, 1, 1440)
    width = window / buckets
    end = now()
    start = end - window
    counts = await s.events.activity(start, width, buckets)
    return {
        "window_s": window,
        "bucket_s": width,
        "start": iso(start),
        "end": iso(end),
        "total": sum(counts),
        "buckets": [{"start": iso(start + i * width), "count": c} for i, c in enumerate(counts)],
    }


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
