"""The public tier: read-only status API, the staging binhost's files and
the status page (public_page.py). Nothing here changes state or reveals a
secret."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from swarm import __version__
from swarm.clock import iso
from swarm.controller.fleet import DroneState
from swarm.controller.selfcheck import SelfHealth
from swarm.controller.services import Services
from swarm.controller.staging import STAGING_PATH
from swarm.controller.web import hosts, openapi, public_page
from swarm.controller.web.buildviews import build_json, dispatch_views, job_json, session_json
from swarm.controller.web.common import (
    SERVICES,
    Handler,
    activity_page,
    events_page,
    json_errors,
    json_response,
    node_json,
    now,
)
from swarm.controller.web.parse import query_int, query_value, strict_input

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
routes = web.RouteTableDef()


@web.middleware
async def read_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in READ_METHODS:
        raise web.HTTPMethodNotAllowed(
            request.method, sorted(READ_METHODS - {"OPTIONS"}), text="the public API is read-only"
        )
    return await handler(request)


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


@routes.get("/api/v1/health")
async def health(request: web.Request) -> web.Response:
    return json_response(health_json(_services(request)))


def health_json(s: Services, *, admin: bool = False) -> dict[str, Any]:
    """The controller's health, from memory only: whatever the database
    does, this answers at once (selfcheck.py looks in the background).
    Also the start of the admin tier's /admin/api/health, whose reasons
    keep the details (the driver's words, the data path)."""
    t = now()
    own = s.selfcheck.health if s.selfcheck is not None else SelfHealth()
    return {
        "status": own.status,
        "reasons": [
            {"code": p.code, "message": p.message if admin else p.public, "since": iso(p.since)}
            for p in own.problems
        ],
        "checked_at": iso(own.checked_at),
        "version": __version__,
        "uptime_s": round(t - s.started_at, 3),
        "database": s.backend,
        "drones": s.fleet.counts(),
        "fleet": s.healer.figures() if s.healer is not None else None,
    }


@routes.get("/api/v1/status")
async def status(request: web.Request) -> web.Response:
    return json_response(status_json(_services(request)))


def status_json(s: Services) -> dict[str, Any]:
    """The swarm summary (also the admin tier's /admin/api/status)."""
    counts = s.fleet.counts()
    online = [d for d in s.fleet.all() if d.connected]
    return {
        "controller": {
            "version": __version__,
            "started_at": iso(s.started_at),
            "uptime_s": round(now() - s.started_at, 3),
        },
        "drones": {"total": len(s.fleet), **counts},
        "cores_online": sum(d.cores for d in online),
        "emerge_running": len([d for d in online if d.emerge_running]),
        "session": session_json(s.builds, current)
        if s.builds and (current := s.builds.latest_session())
        else None,
        "last_event_id": s.events.last_id,
    }


def _node(state: DroneState, t: float, dispatch: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:
    """A drone's live state, with its proof of life: the functional checks of
    its latest Pong and which agent process it is."""
    return {
        **node_json(state, t),
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in state.checks],
        "checks_at": iso(state.checks_at),
        "instance_id": state.instance_id or None,
        "process_started_at": iso(state.process_started_at),
        "dispatch": dispatch(state.id),
    }


@routes.get("/api/v1/nodes")
async def nodes(request: web.Request) -> web.Response:
    s = _services(request)
    t = now()
    dispatch = dispatch_views(s, t, admin=False)
    return json_response({"nodes": [_node(d, t, dispatch) for d in s.fleet.all()]})


@routes.get("/api/v1/nodes/{name}")
async def node(request: web.Request) -> web.Response:
    s = _services(request)
    state = s.fleet.require(request.match_info["name"])
    t = now()
    return json_response({"node": _node(state, t, dispatch_views(s, t, admin=False))})


@routes.get("/api/v1/events")
async def events(request: web.Request) -> web.Response:
    # The admin tier's audit trail (logins and their addresses, commands run
    # on drones, shells) is the admins' own (GET /admin/api/events).
    return json_response(await events_page(request, public=True))


@routes.get("/api/v1/activity")
async def activity(request: web.Request) -> web.Response:
    return json_response(await activity_page(request))


@routes.get("/api/v1/history")
async def history(request: web.Request) -> web.Response:
    s = _services(request)
    limit = query_int(request, "limit", 100, 1, 1000)
    if s.builds is None:
        return json_response({"history": []})
    builds = await s.runner.call(s.runner.store.list_builds, limit=limit, finished=True)
    names = s.fleet.names()
    return json_response({"history": [build_json(b, names) for b in builds]})


@routes.get("/api/v1/sessions")
async def sessions(request: web.Request) -> web.Response:
    s = _services(request)
    if s.builds is None:
        return json_response({"sessions": []})
    queue = s.builds
    live = sorted(queue.sessions.values(), key=lambda x: x.created_at, reverse=True)
    return json_response({"sessions": [session_json(queue, x) for x in live]})


@routes.get("/api/v1/queue")
async def queue(request: web.Request) -> web.Response:
    s = _services(request)
    if s.builds is None:
        return json_response({"jobs": []})
    q = s.builds
    names = s.fleet.names()
    state = query_value(request, "state")
    jobs = [j for j in q.jobs.values() if state is None or j.state == state]
    jobs.sort(key=lambda j: (-j.priority, j.created_at, j.id))
    limit = query_int(request, "limit", 500, 1, 5000)
    return json_response({"jobs": [job_json(q, j, names) for j in jobs[:limit]], "total": len(jobs)})


@routes.get("/api/v1/openapi.json")
async def openapi_doc(request: web.Request) -> web.Response:
    return json_response(openapi.public_document())


def create_app(services: Services) -> web.Application:
    config = services.config
    app = web.Application(middlewares=[json_errors, hosts.check_host, read_only, strict_input])
    app[SERVICES] = services
    app[hosts.HOSTS] = hosts.HostPolicy.for_tier(config, config.bind, public=True)
    app.add_routes(routes)
    app.add_routes(public_page.routes)  # the status page: pages, outside the OpenAPI document
    if services.staging is not None:
        # Read-only files for stock Portage clients (binrepos.conf sync-uri).
        app.router.add_static(STAGING_PATH, services.staging.pkgdir, follow_symlinks=False, show_index=False)
    return app
