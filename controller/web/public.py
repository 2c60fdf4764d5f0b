"""The public tier: read-only status API, the staging binhost's files and
the status page (public_page.py). Nothing here reveals a secret, and
nothing changes state but asking for a test build, with a token
(web/testbuilds.py)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from swarm.controller.scheduler import JOB_STATES
from swarm.controller.services import Services
from swarm.controller.staging import STAGING_PATH
from swarm.controller.web import (
    binfiles,
    binhosts,
    hosts,
    openapi,
    public_page,
    releases,
    testbuild_files,
    testbuilds,
)
from swarm.controller.web.buildviews import public_dispatch
from swarm.controller.web.common import (
    BUCKETS,
    EVENT_PARAMS,
    SERVICES,
    WINDOW,
    Handler,
    activity_page,
    events_page,
    json_errors,
    json_response,
)
from swarm.controller.web.parse import strict_input
from swarm.controller.web.routes import IntParam, Routes, TextParam, path_param
from swarm.controller.web.views import summary
from swarm.controller.web.views.builds import (
    HistoryView,
    JobsPage,
    SessionsView,
    build_view,
    job_view,
    session_view,
)
from swarm.controller.web.views.fleet import NodeReply, NodesView, node_view
from swarm.controller.web.views.status import (
    ActivityView,
    EventsPage,
    HealthView,
    StatusView,
)

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WRITE = ("POST", testbuilds.SUBMIT_PATH)
routes = Routes()
NODE_NAME = path_param("name", "drone name or id")


@web.middleware
async def read_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Its one write: asking for a test build, with a token (web/testbuilds.py).
    if request.method not in READ_METHODS and (request.method, request.path) != WRITE:
        raise web.HTTPMethodNotAllowed(
            request.method, sorted(READ_METHODS - {"OPTIONS"}), text="the public API is read-only"
        )
    return await handler(request)


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


@routes.declare(
    "GET",
    "/api/v1/health",
    HealthView,
    summary="controller health from memory (never waits for the database; 200 also when degraded): "
    "status and its reasons, drone counts, fleet availability and mean time to recovery (24 h)",
)
async def health(request: web.Request) -> web.Response:
    return json_response(summary.health_view(_services(request)))


@routes.declare("GET", "/api/v1/status", StatusView, summary="swarm summary")
async def status(request: web.Request) -> web.Response:
    return json_response(summary.status_view(_services(request)))


@routes.declare("GET", "/api/v1/nodes", NodesView, summary="all drones with live state")
async def nodes(request: web.Request) -> web.Response:
    s = _services(request)
    t = s.clock.time()
    dispatch = public_dispatch(s, t)
    return json_response(NodesView(tuple(node_view(d, t, dispatch) for d in s.fleet.all())))


@routes.declare(
    "GET",
    "/api/v1/nodes/{name}",
    NodeReply,
    summary="one drone, by name or id",
    params=(NODE_NAME,),
    errors=(404,),
)
async def node(request: web.Request) -> web.Response:
    s = _services(request)
    state = s.fleet.require(NODE_NAME.read(request) or "")
    t = s.clock.time()
    return json_response(NodeReply(node_view(state, t, public_dispatch(s, t))))


@routes.declare(
    "GET",
    "/api/v1/events",
    EventsPage,
    summary="events in ascending id order (the admin tier's audit trail left out)",
    params=EVENT_PARAMS,
    errors=(404,),
)
async def events(request: web.Request) -> web.Response:
    # The admin tier's audit trail (logins and their addresses, commands run
    # on drones, shells) is the admins' own (GET /admin/api/events).
    return json_response(await events_page(request, public=True))


@routes.declare(
    "GET", "/api/v1/activity", ActivityView, summary="event counts per time bucket", params=(WINDOW, BUCKETS)
)
async def activity(request: web.Request) -> web.Response:
    return json_response(await activity_page(request))


HISTORY_LIMIT = IntParam("limit", "at most this many builds", default=100, lo=1, hi=1000)


@routes.declare(
    "GET", "/api/v1/history", HistoryView, summary="finished builds, newest first", params=(HISTORY_LIMIT,)
)
async def history(request: web.Request) -> web.Response:
    s = _services(request)
    limit = HISTORY_LIMIT.read(request)
    if s.builds is None:
        return json_response(HistoryView(()))
    names = s.fleet.names()
    return json_response(HistoryView(tuple(build_view(b, names) for b in await s.builds.history(limit))))


@routes.declare("GET", "/api/v1/sessions", SessionsView, summary="build sessions with progress counts")
async def sessions(request: web.Request) -> web.Response:
    s = _services(request)
    if s.builds is None:
        return json_response(SessionsView(()))
    queue = s.builds
    return json_response(SessionsView(tuple(session_view(queue, x) for x in queue.newest_sessions())))


JOB_STATE = TextParam("state", "only jobs in this state", choices=JOB_STATES)
JOBS_LIMIT = IntParam("limit", "at most this many jobs", default=500, lo=1, hi=5000)


@routes.declare(
    "GET",
    "/api/v1/queue",
    JobsPage,
    summary="jobs, most critical first",
    params=(JOB_STATE, JOBS_LIMIT),
)
async def queue(request: web.Request) -> web.Response:
    s = _services(request)
    state = JOB_STATE.read(request)
    limit = JOBS_LIMIT.read(request)
    if s.builds is None:
        return json_response(JobsPage((), 0))
    found, total = s.builds.find_jobs(states=frozenset({state} if state else ()), limit=limit)
    names = s.fleet.names()
    return json_response(JobsPage(tuple(job_view(j, names) for j in found), total))


@routes.declare("GET", "/api/v1/openapi.json", None, summary="this document")
async def openapi_doc(request: web.Request) -> web.Response:
    return json_response(openapi.public_document())


async def staging_file(request: web.Request) -> web.StreamResponse:
    """A file of the staging binhost (binfiles.served_file says which are served)."""
    staging = _services(request).staging
    assert staging is not None  # the route exists only with staging
    path = await asyncio.to_thread(
        binfiles.served_file, staging.pkgdir, request.match_info["tail"], "the staging binhost"
    )
    return binfiles.BinhostFile(path)


def create_app(services: Services) -> web.Application:
    config = services.config
    app = web.Application(middlewares=[json_errors, hosts.check_host, read_only, strict_input])
    app[SERVICES] = services
    app[hosts.HOSTS] = hosts.HostPolicy.for_tier(config, config.bind, public=True)
    app.add_routes(routes)
    app.add_routes(public_page.routes)  # the status page: pages, outside the OpenAPI document
    app.add_routes(releases.public_routes)
    app.add_routes(binhosts.public_routes)
    app.add_routes(testbuilds.public_routes)
    app.add_routes(releases.files)  # the release key and binhosts: outside the OpenAPI document
    binfiles.install(app, config.binhost_senders)
    if services.staging is not None:
        # Read-only files for stock Portage clients (binrepos.conf sync-uri).
        app.router.add_get(STAGING_PATH + "/{tail:.*}", staging_file)
    testbuild_files.install(app)  # a test build's log, and the test binhost (with a warning)
    return app
