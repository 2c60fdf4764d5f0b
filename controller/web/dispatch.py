"""Admin controls of which drones get work: drain (finish the current job,
take no more) and ground (no work until ungrounded; also ends a grounding
by the circuit breaker). Each is an audit event naming the key, and they
outlive a controller restart.

``POST /admin/api/drones/{name}/drain|undrain|ground|unground`` answer
``{"drone", "dispatch"}``; 409 if the drone is in that state already.
"""

from __future__ import annotations

from aiohttp import web

from swarm.controller.web.buildviews import dispatch_views, queue_of
from swarm.controller.web.common import SERVICES, json_response, now
from swarm.controller.web.healing import KEY_NAME

routes = web.RouteTableDef()


async def _hold(request: web.Request, action: str) -> web.Response:
    s = request.app[SERVICES]
    queue = queue_of(s)
    state = s.fleet.require(request.match_info["name"])
    by = request[KEY_NAME]
    if action in ("drain", "undrain"):
        await queue.drain(state, by, on=action == "drain")
    else:
        await queue.ground(state, by, on=action == "ground")
    return json_response({"drone": state.name, "dispatch": dispatch_views(s, now(), admin=True)(state.id)})


@routes.post("/admin/api/drones/{name}/drain")
async def drain(request: web.Request) -> web.Response:
    return await _hold(request, "drain")


@routes.post("/admin/api/drones/{name}/undrain")
async def undrain(request: web.Request) -> web.Response:
    return await _hold(request, "undrain")


@routes.post("/admin/api/drones/{name}/ground")
async def ground(request: web.Request) -> web.Response:
    return await _hold(request, "ground")


@routes.post("/admin/api/drones/{name}/unground")
async def unground(request: web.Request) -> web.Response:
    return await _hold(request, "unground")
