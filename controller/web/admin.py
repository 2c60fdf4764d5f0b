"""The admin tier: authenticated API for people and swarm-cli.

Every request needs ``X-Admin-Key``. This tier binds to 127.0.0.1 unless
the admin says otherwise.
"""

from __future__ import annotations

from aiohttp import web

from swarm.clock import iso
from swarm.controller.adminkey import AdminKeys
from swarm.controller.errors import NotFound, Unauthenticated
from swarm.controller.services import Services
from swarm.controller.web import openapi
from swarm.controller.web.common import SERVICES, Handler, json_errors, json_response, query_int

KEYS = web.AppKey("admin_keys", AdminKeys)
KEY_NAME = "admin_key_name"
routes = web.RouteTableDef()


@web.middleware
async def require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    name = request.app[KEYS].check(request.headers.get("X-Admin-Key"))
    if name is None:
        raise Unauthenticated("missing or wrong X-Admin-Key")
    request[KEY_NAME] = name
    return await handler(request)


@routes.get("/admin/api/whoami")
async def whoami(request: web.Request) -> web.Response:
    return json_response({"key": request[KEY_NAME]})


@routes.get("/admin/api/protocol")
async def protocol(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    after = query_int(request, "after", 0, 0, 2**62)
    limit = query_int(request, "limit", 200, 1, 5000)
    drone_id = None
    if request.query.get("drone"):
        state = s.fleet.find(request.query["drone"])
        if state is None:
            raise NotFound(f"no drone named {request.query['drone'][:64]!r}")
        drone_id = state.id
    kinds = frozenset(t for t in request.query.get("type", "").split(",") if t)
    entries = s.protolog.entries(after_seq=after, limit=limit, drone_id=drone_id, kinds=kinds)
    return json_response(
        {
            "entries": [
                {
                    "seq": e.seq,
                    "ts": iso(e.ts),
                    "direction": e.direction,
                    "drone_id": e.drone_id,
                    "type": e.type,
                    "size": e.size,
                }
                for e in entries
            ],
            "last_seq": s.protolog.last_seq,
        }
    )


@routes.get("/admin/api/openapi.json")
async def openapi_doc(request: web.Request) -> web.Response:
    return json_response(openapi.admin_document())


def create_app(services: Services, keys: AdminKeys) -> web.Application:
    app = web.Application(middlewares=[json_errors, require_key])
    app[SERVICES] = services
    app[KEYS] = keys
    app.add_routes(routes)
    return app
