"""The admin tier: authenticated API for people and swarm-cli.

Every request but the login needs ``X-Admin-Key`` or a browser session
(auth.py, which also checks CSRF tokens and websocket origins). This tier
binds to 127.0.0.1 unless the admin says otherwise.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToDict

from swarm.agent.config import ENROLL_PORT
from swarm.clock import iso
from swarm.controller import access
from swarm.controller.adminkey import KeyStore
from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from swarm.controller.scheduler import JOB_STATES
from swarm.controller.services import Services
from swarm.controller.store.records import TokenRecord
from swarm.controller.trust import Trust
from swarm.controller.web import (
    auth,
    console,
    dispatch,
    healing,
    hosts,
    logs,
    metrics,
    openapi,
    public,
    shells,
    streams,
)
from swarm.controller.web.buildviews import build_json, dispatch_views, job_json, queue_of, session_json
from swarm.controller.web.common import (
    SERVICES,
    activity_page,
    events_page,
    json_errors,
    json_response,
    node_json,
    now,
)
from swarm.controller.web.parse import (
    check_text,
    json_body,
    optional_text,
    query_int,
    query_list,
    query_value,
    strict_input,
    whole_number,
)

BUILD_ID_RE = re.compile(r"b-[0-9a-f]{12}")
QUEUE_BODY = 1024 * 1024  # up to 1,000 atoms with their versions and USE flags
KEY_NAME = healing.KEY_NAME
routes = web.RouteTableDef()


@routes.get("/admin/api/status")
async def status(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    held = None if s.healer is None else {"paused": s.healer.paused, "fleet_dark": s.healer.dark}
    return json_response({**public.status_json(s), "healing": held})


@routes.get("/admin/api/health")
async def health(request: web.Request) -> web.Response:
    """The public health and what lies behind it: the database runner's
    state, the event backlog, the data disk. From memory, as the public one."""
    s = request.app[SERVICES]
    store = s.runner.status()
    failure = store.failure
    own = s.selfcheck
    disk = own.health.disk if own is not None else None
    return json_response(
        {
            **public.health_json(s, admin=True),
            "store": {
                "failure": None
                if failure is None
                else {
                    "message": failure.message,
                    "connection_lost": failure.lost,
                    "since": iso(failure.at),
                    "last_at": iso(failure.last_at),
                },
                "busy_s": round(store.busy_for, 3),
                "waiting": store.waiting,
            },
            "events": {
                "pending": s.events.pending,
                "pending_limit": s.events.pending_limit,
                "dropped": s.events.dropped,
            },
            "disk": None
            if disk is None or own is None
            else {
                "path": disk.path,
                "free_mb": round(disk.free / 2**20, 1),
                "total_mb": round(disk.total / 2**20, 1),
                "min_free_mb": round(own.settings.disk_min_free / 2**20, 1),
            },
        }
    )


@routes.get("/admin/api/events")
async def events(request: web.Request) -> web.Response:
    return json_response(await events_page(request, public=False))


@routes.get("/admin/api/activity")
async def activity(request: web.Request) -> web.Response:
    return json_response(await activity_page(request))


@routes.get("/admin/api/whoami")
async def whoami(request: web.Request) -> web.Response:
    return json_response({"key": request[KEY_NAME]})


@routes.get("/admin/api/protocol")
async def protocol(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    after = query_int(request, "after", 0, 0, 2**62)
    limit = query_int(request, "limit", 200, 1, 5000)
    drone = query_value(request, "drone")
    drone_id = s.fleet.require(drone).id if drone else None
    kinds = query_list(request, "type")
    entries = s.protolog.entries(after_seq=after, limit=limit, drone_id=drone_id, kinds=kinds)
    return json_response(
        {
            "entries": [streams.protocol_json(e) for e in entries],
            "last_seq": s.protolog.last_seq,
            "unknown_fields": dict(s.protolog.unknown_fields),
        }
    )


@routes.get("/admin/api/protocol/{seq}")
async def protocol_message(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    seq = whole_number(request.match_info["seq"], "seq", 0, 2**62)
    found = s.protolog.message(seq)
    if found is None:
        raise NotFound(f"protocol message {seq} is not in the buffer (it keeps the newest ones)")
    entry, message = found
    decoded = None if message is None else MessageToDict(message, preserving_proto_field_name=True)
    names = s.fleet.names()
    return json_response(
        {**streams.protocol_json(entry), "drone": names.get(entry.drone_id), "message": decoded}
    )


def _trust(request: web.Request) -> Trust:
    trust = request.app[SERVICES].trust
    if trust is None:
        raise FailedPrecondition("the controller runs with --insecure: there is no enrollment")
    return trust


def token_json(t: TokenRecord, now: float) -> dict[str, Any]:
    state = (
        "revoked"
        if t.revoked_at is not None
        else "used"
        if t.used_at is not None
        else "expired"
        if t.expires_at <= now
        else "active"
    )
    return {
        "id": t.id,
        "name": t.name,
        "state": state,
        "created_at": iso(t.created_at),
        "expires_at": iso(t.expires_at),
        "created_by": t.created_by,
        "used_at": iso(t.used_at),
        "used_by": t.used_by,
        "revoked_at": iso(t.revoked_at),
    }


@routes.post("/admin/api/tokens")
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
    return json_response(
        {
            **token_json(new.record, now()),
            "token": new.token,
            "ca_pin": trust.ca.pin,
            "enroll_port": s.enroll_port,
            "command": command,
        },
        status=201,
    )


@routes.get("/admin/api/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    tokens = await _trust(request).list_tokens()
    t = now()
    return json_response({"tokens": [token_json(x, t) for x in tokens]})


@routes.delete("/admin/api/tokens/{id}")
async def revoke_token(request: web.Request) -> web.Response:
    token_id = request.match_info["id"]
    await _trust(request).revoke_token(token_id, request[KEY_NAME])
    return json_response({"revoked": token_id})


@routes.get("/admin/api/drones")
async def drones(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    t = now()
    dispatch = dispatch_views(s, t, admin=True)
    return json_response(
        {
            "drones": [
                {
                    **node_json(d, t),
                    "enrolled": s.trust.enrolled(d.id) if s.trust is not None else None,
                    "dispatch": dispatch(d.id),
                    "ssh_access": _ssh_access(s, d.id),
                }
                for d in s.fleet.all()
            ]
        }
    )


def _ssh_access(s: Services, drone_id: str) -> str | None:
    """Whether a shell or command can reach the drone without its agent: ssh, local, or None."""
    ssh = s.healer.access_of(drone_id).ssh if s.healer is not None else ""
    return None if not ssh else "local" if ssh == access.LOCAL else "ssh"


@routes.post("/admin/api/drones/{name}/revoke")
async def revoke_drone(request: web.Request) -> web.Response:
    trust = _trust(request)
    key = request.match_info["name"]
    state = request.app[SERVICES].fleet.find(key)
    drone_id = state.id if state is not None else key
    if state is None and not trust.enrolled(key):
        raise NotFound(f"no drone named {key[:64]!r}")
    count = await trust.revoke_drone(drone_id, request[KEY_NAME])
    return json_response({"drone": drone_id, "certificates": count})


@routes.post("/admin/api/drones/{name}/rename")
async def rename_drone(request: web.Request) -> web.Response:
    trust = _trust(request)
    state = request.app[SERVICES].fleet.require(request.match_info["name"])
    body = await json_body(request)
    new_name = check_text(body.get("name"), "name (the drone's new name)", max_len=64)
    old = await trust.rename(state.id, new_name, request[KEY_NAME])
    return json_response({"drone": state.id, "name": new_name, "old_name": old})


@routes.post("/admin/api/queue")
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
    if len(atoms) > 1000:
        raise InvalidArgument("at most 1000 atoms per request")
    for atom in atoms:
        check_text(atom, "an atom", max_len=500)
    name = optional_text(body, "session", max_len=128)
    session, added = await q.queue(atoms, name=name, by=request[KEY_NAME])
    names = s.fleet.names()
    return json_response(
        {"session": session_json(q, session), "jobs": [job_json(q, j, names) for j in added]}, status=201
    )


@routes.post("/admin/api/control")
async def control(request: web.Request) -> web.Response:
    q = queue_of(request.app[SERVICES])
    body = await json_body(request)
    action = body.get("action")
    if not isinstance(action, str):
        raise InvalidArgument("action must be one of start, stop, pause, resume, reset")
    session_id = optional_text(body, "session", max_len=128)
    session = q.control(action, session_id, request[KEY_NAME])
    return json_response({"session": session_json(q, session)})


# The console reads only its own origin (CSP connect-src 'self'), so the
# public tier's sessions and queue have admin twins; the queue one narrows
# thousands of jobs down to what a page shows.
@routes.get("/admin/api/sessions")
async def sessions(request: web.Request) -> web.StreamResponse:
    return await public.sessions(request)


@routes.get("/admin/api/queue")
async def jobs(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    q = queue_of(s)
    session_id = query_value(request, "session")
    pool = list(q.jobs.values())
    if session_id:
        if session_id not in q.sessions:
            raise NotFound(f"no session {session_id[:40]!r}")
        pool = q.session_jobs(q.sessions[session_id])
    states = query_list(request, "state")
    if not states <= set(JOB_STATES):
        raise InvalidArgument(f"state must be among {', '.join(JOB_STATES)}")
    text = (query_value(request, "q", max_len=200) or "").strip().lower()
    limit = query_int(request, "limit", 500, 1, 5000)
    names = s.fleet.names()
    found = [
        j
        for j in pool
        if (not states or j.state in states)
        and (not text or text in f"{j.cpv} {j.id} {names.get(j.drone_id or '', '')}".lower())
    ]
    found.sort(key=lambda j: (-j.priority, j.created_at, j.id))
    return json_response({"jobs": [job_json(q, j, names) for j in found[:limit]], "total": len(found)})


@routes.get("/admin/api/jobs/{id}")
async def job(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    q = queue_of(s)
    found = q.job(request.match_info["id"])
    names = s.fleet.names()
    builds = await s.runner.call(s.runner.store.list_builds, job_id=found.id, limit=20)
    return json_response(
        {"job": job_json(q, found, names, why=True), "builds": [build_json(b, names) for b in builds]}
    )


@routes.get("/admin/api/jobs/{id}/log")
async def job_log(request: web.Request) -> web.StreamResponse:
    s = request.app[SERVICES]
    q = queue_of(s)
    found = q.job(request.match_info["id"])
    build_id = query_value(request, "build") or found.build_id
    if build_id is None:
        latest = await s.runner.call(s.runner.store.list_builds, job_id=found.id, limit=1)
        build_id = latest[0].id if latest else None
    if build_id is None or s.build_logs is None:
        raise NotFound(f"job {found.id} has no build log yet")
    path = s.build_logs.log_path(build_id)
    if not BUILD_ID_RE.fullmatch(build_id) or not path.exists():
        raise NotFound(f"no log for build {build_id[:40]!r}")
    return web.FileResponse(path, headers={"Content-Type": "text/plain; charset=utf-8"})


@routes.get("/admin/api/openapi.json")
async def openapi_doc(request: web.Request) -> web.Response:
    return json_response(openapi.admin_document())


def create_app(services: Services, keys: KeyStore) -> web.Application:
    config = services.config
    app = web.Application(
        middlewares=[json_errors, hosts.check_host, console.login_redirect, auth.authenticate, strict_input]
    )
    app[SERVICES] = services
    app[hosts.HOSTS] = hosts.HostPolicy.for_tier(config, config.admin_bind, public=False)
    app[auth.AUTH] = auth.AdminAuth(
        keys, auth.AuthSettings.from_config(config), services.events, app[hosts.HOSTS]
    )
    app.add_routes(routes)
    app.add_routes(healing.routes)
    app.add_routes(shells.routes)
    app.add_routes(logs.routes)
    app.add_routes(dispatch.routes)
    app.add_routes(auth.routes)
    app.add_routes(console.routes)
    app.add_routes(metrics.routes)
    streams.install(app)
    return app
