"""The admin tier: authenticated API for people and swarm-cli.

Every request but the login needs ``X-Admin-Key`` or a browser session
(auth.py, which also checks CSRF tokens and websocket origins). This tier
binds to 127.0.0.1 unless the admin says otherwise.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Annotated, Literal

from aiohttp import web

from swarm.agent.config import ENROLL_PORT
from swarm.controller import access, serde
from swarm.controller.adminkey import KeyStore
from swarm.controller.domain import NAME_RE
from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from swarm.controller.scheduler import JOB_STATES
from swarm.controller.services import Services
from swarm.controller.trust import MAX_TTL, MIN_TTL, Trust
from swarm.controller.web import (
    auth,
    binhosts,
    console,
    dispatch,
    healing,
    hosts,
    logs,
    metrics,
    openapi,
    payloads,
    public,
    releases,
    rollouts,
    shells,
    streams,
    testbuild_files,
    testbuilds,
)
from swarm.controller.web.buildviews import admin_dispatch, queue_of
from swarm.controller.web.common import (
    BUCKETS,
    DRONE_FILTER,
    EVENT_PARAMS,
    SERVICES,
    WINDOW,
    activity_page,
    events_page,
    json_errors,
    json_response,
)
from swarm.controller.web.parse import check_text, json_body, optional_text, strict_input
from swarm.controller.web.routes import DRONE_NAME, Body, IntParam, ListParam, Routes, TextParam, path_param
from swarm.controller.web.views import summary
from swarm.controller.web.views.admin import (
    NewTokenView,
    TokenRevokedView,
    TokensView,
    WhoamiView,
    new_token_view,
    token_view,
)
from swarm.controller.web.views.base import Doc, Length, Pattern, Range
from swarm.controller.web.views.builds import (
    JobDetailView,
    JobsPage,
    QueuedView,
    SessionReply,
    SessionsView,
    build_view,
    job_view,
    job_why_view,
    session_view,
)
from swarm.controller.web.views.fleet import DroneRenamedView, DroneRevokedView, DronesView, drone_view
from swarm.controller.web.views.status import (
    ActivityView,
    AdminHealthView,
    AdminStatusView,
    EventsPage,
    ProtocolMessageView,
    ProtocolPage,
    protocol_view,
)

BUILD_ID_RE = re.compile(r"b-[0-9a-f]{12}")
QUEUE_BODY = 1024 * 1024  # up to 1,000 atoms with their versions and USE flags
MAX_ATOMS = 1000
MAX_ATOM = 500  # characters
MAX_SESSION_NAME = 128
KEY_NAME = healing.KEY_NAME
routes = Routes()


@routes.declare(
    "GET",
    "/admin/api/status",
    AdminStatusView,
    summary="the swarm summary of /api/v1/status, and whether healing is paused or held",
)
async def status(request: web.Request) -> web.Response:
    return json_response(summary.admin_status_view(request.app[SERVICES]))


@routes.declare(
    "GET",
    "/admin/api/health",
    AdminHealthView,
    summary="the public health and what lies behind it: the database's state as the store runner "
    "sees it, the event backlog, the data disk (from memory, as the public one)",
)
async def health(request: web.Request) -> web.Response:
    return json_response(summary.admin_health_view(request.app[SERVICES]))


@routes.declare(
    "GET",
    "/admin/api/events",
    EventsPage,
    summary="every event, the admin tier's audit trail included",
    params=EVENT_PARAMS,
    errors=(404,),
)
async def events(request: web.Request) -> web.Response:
    return json_response(await events_page(request, public=False))


@routes.declare(
    "GET",
    "/admin/api/activity",
    ActivityView,
    summary="event counts per time bucket, as /api/v1/activity (the console's waveform)",
    params=(WINDOW, BUCKETS),
)
async def activity(request: web.Request) -> web.Response:
    return json_response(await activity_page(request))


@routes.declare("GET", "/admin/api/whoami", WhoamiView, summary="check the admin key")
async def whoami(request: web.Request) -> web.Response:
    return json_response(WhoamiView(request[KEY_NAME]))


AFTER = IntParam("after", "only entries after this seq", default=0, lo=0, hi=2**62)
PROTOCOL_LIMIT = IntParam("limit", "at most this many entries", default=200, lo=1, hi=5000)
MESSAGE_TYPES = ListParam("type", "only these message types (comma-separated)")
SEQ = IntParam("seq", "the entry's seq", lo=0, hi=2**62, where="path")


@routes.declare(
    "GET",
    "/admin/api/protocol",
    ProtocolPage,
    summary="recent control-stream messages, oldest first",
    params=(AFTER, PROTOCOL_LIMIT, DRONE_FILTER, MESSAGE_TYPES),
    errors=(404,),
)
async def protocol(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    after = AFTER.read(request)
    limit = PROTOCOL_LIMIT.read(request)
    drone = DRONE_FILTER.read(request)
    drone_id = s.fleet.require(drone).id if drone else None
    kinds = MESSAGE_TYPES.read(request)
    entries = s.protolog.entries(after_seq=after, limit=limit, drone_id=drone_id, kinds=kinds)
    return json_response(
        ProtocolPage(
            tuple(protocol_view(e) for e in entries), s.protolog.last_seq, dict(s.protolog.unknown_fields)
        )
    )


@routes.declare(
    "GET",
    "/admin/api/protocol/{seq}",
    ProtocolMessageView,
    summary="one control-stream message decoded (protobuf as JSON), while it is in the buffer",
    params=(SEQ,),
    errors=(404,),
)
async def protocol_message(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    seq = SEQ.read(request)
    found = s.protolog.message(seq)
    if found is None:
        raise NotFound(f"protocol message {seq} is not in the buffer (it keeps the newest ones)")
    entry, message = found
    decoded = None if message is None else serde.logged_message(entry.direction, message)
    e = protocol_view(entry)
    return json_response(
        ProtocolMessageView(
            e.seq,
            e.ts,
            e.direction,
            e.drone_id,
            e.type,
            e.size,
            e.latency_ms,
            e.unknown_fields,
            drone=s.fleet.names().get(entry.drone_id),
            message=decoded,
        )
    )


def _trust(request: web.Request) -> Trust:
    trust = request.app[SERVICES].trust
    if trust is None:
        raise FailedPrecondition("the controller runs with --insecure: there is no enrollment")
    return trust


@dataclass(frozen=True, slots=True)
class TokenRequest:
    ttl: Annotated[float | None, Doc("seconds (default 3600)"), Range(MIN_TTL, MAX_TTL)]
    name: Annotated[str | None, Doc("only this drone name may use it"), Pattern(NAME_RE)]


@routes.declare(
    "POST",
    "/admin/api/tokens",
    NewTokenView,
    status=201,
    summary="create a one-time join token (409 when --join-tokens-max are live: unused, "
    "unrevoked and unexpired)",
    body=Body(TokenRequest),
    errors=(409,),
)
async def create_token(request: web.Request) -> web.Response:
    trust = _trust(request)
    body = await json_body(request)
    ttl = body.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)):
        raise InvalidArgument("ttl must be a number of seconds")
    name = optional_text(body, "name", max_len=64)
    new = await trust.create_token(None if ttl is None else float(ttl), name, request[KEY_NAME])
    s = request.app[SERVICES]
    host = socket.getfqdn()
    command = (
        f"swarm-agent enroll --controller {host}:{s.grpc_port} --token {new.token} --ca-pin {trust.ca.pin}"
    )
    if s.enroll_port != ENROLL_PORT:
        command += f" --enroll-address {host}:{s.enroll_port}"
    if new.record.name:
        command += f" --name {new.record.name}"
    view = new_token_view(new.record, s.clock.time(), new.token, trust.ca.pin, s.enroll_port, command)
    return json_response(view, status=201)


@routes.declare(
    "GET",
    "/admin/api/tokens",
    TokensView,
    summary="join tokens, newest first (never their secrets)",
    errors=(409,),
)
async def list_tokens(request: web.Request) -> web.Response:
    tokens = await _trust(request).list_tokens()
    t = request.app[SERVICES].clock.time()
    return json_response(TokensView(tuple(token_view(x, t) for x in tokens)))


TOKEN_ID = path_param("id", "token id")


@routes.declare(
    "DELETE",
    "/admin/api/tokens/{id}",
    TokenRevokedView,
    summary="revoke an unused join token",
    params=(TOKEN_ID,),
    errors=(404, 409),
)
async def revoke_token(request: web.Request) -> web.Response:
    token_id = request.match_info["id"]
    await _trust(request).revoke_token(token_id, request[KEY_NAME])
    return json_response(TokenRevokedView(token_id))


@routes.declare("GET", "/admin/api/drones", DronesView, summary="drones with live state and enrollment")
async def drones(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    t = s.clock.time()
    dispatch = admin_dispatch(s, t)
    return json_response(
        DronesView(
            tuple(
                drone_view(
                    d,
                    t,
                    s.trust.enrolled(d.id) if s.trust is not None else None,
                    dispatch(d.id),
                    _ssh_access(s, d.id),
                )
                for d in s.fleet.all()
            )
        )
    )


def _ssh_access(s: Services, drone_id: str) -> Literal["ssh", "local"] | None:
    """Whether a shell or command can reach the drone without its agent: ssh, local, or None."""
    ssh = s.healer.access_of(drone_id).ssh if s.healer is not None else ""
    return None if not ssh else "local" if ssh == access.LOCAL else "ssh"


@routes.declare(
    "POST",
    "/admin/api/drones/{name}/revoke",
    DroneRevokedView,
    summary="revoke a drone's certificates and end its streams",
    params=(DRONE_NAME,),
    errors=(404, 409),
)
async def revoke_drone(request: web.Request) -> web.Response:
    trust = _trust(request)
    key = request.match_info["name"]
    state = request.app[SERVICES].fleet.find(key)
    drone_id = state.id if state is not None else key
    if state is None and not trust.enrolled(key):
        raise NotFound(f"no drone named {key[:64]!r}")
    count = await trust.revoke_drone(drone_id, request[KEY_NAME])
    return json_response(DroneRevokedView(drone_id, count))


@dataclass(frozen=True, slots=True)
class RenameRequest:
    name: Annotated[str, Doc("the drone's new name"), Pattern(NAME_RE)]


@routes.declare(
    "POST",
    "/admin/api/drones/{name}/rename",
    DroneRenamedView,
    summary="bind a new name to an enrolled drone (its agent's Hello cannot rename it)",
    params=(DRONE_NAME,),
    body=Body(RenameRequest, required=("name",)),
    errors=(404, 409),
)
async def rename_drone(request: web.Request) -> web.Response:
    trust = _trust(request)
    state = request.app[SERVICES].fleet.require(request.match_info["name"])
    body = await json_body(request)
    new_name = check_text(body.get("name"), "name (the drone's new name)", max_len=64)
    old = await trust.rename(state.id, new_name, request[KEY_NAME])
    return json_response(DroneRenamedView(state.id, new_name, old))


@dataclass(frozen=True, slots=True)
class QueueRequest:
    atoms: Annotated[
        tuple[Annotated[str, Length(1, MAX_ATOM)], ...], Doc("package atoms"), Length(1, MAX_ATOMS)
    ]
    session: Annotated[str | None, Doc("a name for the session"), Length(1, MAX_SESSION_NAME)]


@routes.declare(
    "POST",
    "/admin/api/queue",
    QueuedView,
    status=201,
    summary="queue packages: resolved with their dependencies into jobs of a session",
    body=Body(QueueRequest, required=("atoms",)),
    errors=(404, 409, 503),
    notes={503: "the database takes no writes now (the message says why)"},
)
async def queue_packages(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    problem = s.selfcheck.writes_failing() if s.selfcheck is not None else None
    if problem is not None:
        # Jobs taken now could not be saved: say so rather than accept them.
        raise Unavailable(f"nothing queued: the database takes no writes now ({problem.message})")
    q = queue_of(s)
    body = await json_body(request, max_size=QUEUE_BODY)
    atoms = body.get("atoms", body.get("packages"))
    if isinstance(atoms, str):
        atoms = check_text(atoms, "atoms", max_len=100_000, lines=True).split()
    if not isinstance(atoms, list) or not atoms or not all(isinstance(a, str) and a.strip() for a in atoms):
        raise InvalidArgument("atoms must be a non-empty list of package atoms")
    if len(atoms) > MAX_ATOMS:
        raise InvalidArgument(f"at most {MAX_ATOMS} atoms per request")
    for atom in atoms:
        check_text(atom, "an atom", max_len=MAX_ATOM)
    name = optional_text(body, "session", max_len=MAX_SESSION_NAME)
    session, added = await q.queue(atoms, name=name, by=request[KEY_NAME])
    names = s.fleet.names()
    view = QueuedView(session_view(q, session), tuple(job_view(j, names) for j in added))
    return json_response(view, status=201)


@dataclass(frozen=True, slots=True)
class ControlRequest:
    action: Literal["start", "stop", "pause", "resume", "reset"]
    session: Annotated[str | None, Doc("the session (default: the current one)")]


@routes.declare(
    "POST",
    "/admin/api/control",
    SessionReply,
    summary="start, stop, pause, resume or reset a session (default: the current one)",
    body=Body(ControlRequest, required=("action",)),
    errors=(404, 409),
)
async def control(request: web.Request) -> web.Response:
    q = queue_of(request.app[SERVICES])
    body = await json_body(request)
    action = body.get("action")
    if not isinstance(action, str):
        raise InvalidArgument("action must be one of start, stop, pause, resume, reset")
    session_id = optional_text(body, "session", max_len=128)
    session = q.control(action, session_id, request[KEY_NAME])
    return json_response(SessionReply(session_view(q, session)))


# The console reads only its own origin (CSP connect-src 'self'), so the
# public tier's sessions and queue have admin twins; the queue one narrows
# thousands of jobs down to what a page shows.
@routes.declare(
    "GET",
    "/admin/api/sessions",
    SessionsView,
    summary="build sessions with progress counts, as /api/v1/sessions",
)
async def sessions(request: web.Request) -> web.StreamResponse:
    return await public.sessions(request)


SESSION = TextParam("session", "only the jobs of this session")
JOB_STATES_PARAM = ListParam("state", "only jobs in these states (comma-separated)", choices=JOB_STATES)
TEXT = TextParam("q", "only jobs whose package, id or drone contains this", max_len=200)


@routes.declare(
    "GET",
    "/admin/api/queue",
    JobsPage,
    summary="jobs, most critical first, as /api/v1/queue; narrowed by session, states and text",
    params=(SESSION, JOB_STATES_PARAM, TEXT, public.JOBS_LIMIT),
    errors=(404, 409),
)
async def jobs(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    q = queue_of(s)
    states = JOB_STATES_PARAM.read(request)
    found, total = q.find_jobs(
        states=states,
        session_id=SESSION.read(request),
        text=TEXT.read(request) or "",
        limit=public.JOBS_LIMIT.read(request),
    )
    names = s.fleet.names()
    return json_response(JobsPage(tuple(job_view(j, names) for j in found), total))


JOB_ID = path_param("id", "job id")


@routes.declare(
    "GET",
    "/admin/api/jobs/{id}",
    JobDetailView,
    summary="a job, why it is not running, and its builds",
    params=(JOB_ID,),
    errors=(404, 409),
)
async def job(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    q = queue_of(s)
    found = q.job(request.match_info["id"])
    names = s.fleet.names()
    builds = await q.builds_of(found, 20)
    detail = job_why_view(found, names, q.why(found))
    return json_response(JobDetailView(detail, tuple(build_view(b, names) for b in builds)))


BUILD = TextParam("build", "a specific build id")


@routes.declare(
    "GET",
    "/admin/api/jobs/{id}/log",
    None,
    summary="the build log of the job's current or latest build (text)",
    params=(JOB_ID, BUILD),
    errors=(404, 409),
    content="text/plain",
    notes={404: "no log", 409: "builds are off (no --portage-eprefix)"},
)
async def job_log(request: web.Request) -> web.StreamResponse:
    s = request.app[SERVICES]
    q = queue_of(s)
    found = q.job(request.match_info["id"])
    build_id = BUILD.read(request) or await q.log_build_id(found)
    if build_id is None or s.build_logs is None:
        raise NotFound(f"job {found.id} has no build log yet")
    path = s.build_logs.log_path(build_id)
    if not BUILD_ID_RE.fullmatch(build_id) or not path.exists():
        raise NotFound(f"no log for build {build_id[:40]!r}")
    return web.FileResponse(path, headers={"Content-Type": "text/plain; charset=utf-8"})


@routes.declare("GET", "/admin/api/openapi.json", None, summary="this document")
async def openapi_doc(request: web.Request) -> web.Response:
    return json_response(openapi.admin_document())


def api_routes() -> tuple[Routes, ...]:
    """The admin tier's API: served by create_app and documented by
    openapi.admin_operations from this one list, so neither can miss a module."""
    return (
        routes,
        healing.routes,
        shells.routes,
        logs.routes,
        dispatch.routes,
        releases.routes,
        binhosts.routes,
        testbuilds.routes,
        payloads.routes,
        rollouts.routes,
        testbuild_files.routes,  # a test build's log
        auth.routes,
        metrics.routes,
        streams.routes,  # served by streams.install, which also closes them on shutdown
    )


def create_app(services: Services, keys: KeyStore) -> web.Application:
    config = services.config
    app = web.Application(
        middlewares=[json_errors, hosts.check_host, console.login_redirect, auth.authenticate, strict_input]
    )
    app[SERVICES] = services
    app[hosts.HOSTS] = hosts.HostPolicy.for_tier(config, config.admin_bind, public=False)
    app[auth.AUTH] = auth.AdminAuth(
        keys, auth.AuthSettings.from_config(config), services.events, app[hosts.HOSTS], services.clock
    )
    for table in api_routes():
        if table is not streams.routes:
            app.add_routes(table)
    streams.install(app)
    app.add_routes(console.routes)  # the console's pages: not the API, not documented
    return app
