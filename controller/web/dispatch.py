"""Admin controls of which drones get work: drain (finish the current job,
take no more) and ground (no work until ungrounded; also ends a grounding
by the circuit breaker). Each is an audit event naming the key, and they
outlive a controller restart.

``POST /admin/api/drones/{name}/drain|undrain|ground|unground`` answer
``{"drone", "dispatch"}``; 409 if the drone is in that state already.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from swarm.controller.web.buildviews import admin_dispatch, queue_of
from swarm.controller.web.common import SERVICES, json_response
from swarm.controller.web.healing import KEY_NAME
from swarm.controller.web.routes import DRONE_NAME, Handler, Routes
from swarm.controller.web.views.fleet import HoldView

routes = Routes()


async def _hold(request: web.Request, action: str) -> web.Response:
    s = request.app[SERVICES]
    queue = queue_of(s)
    state = s.fleet.require(request.match_info["name"])
    by = request[KEY_NAME]
    if action in ("drain", "undrain"):
        await queue.drain(state, by, on=action == "drain")
    else:
        await queue.ground(state, by, on=action == "ground")
    return json_response(HoldView(state.name, admin_dispatch(s, s.clock.time())(state.id)))


def _declare(action: str, summary: str) -> Callable[[Handler], Handler]:
    return routes.declare(
        "POST",
        f"/admin/api/drones/{{name}}/{action}",
        HoldView,
        summary=summary,
        params=(DRONE_NAME,),
        errors=(404, 409),
        notes={409: "the drone is in that state already, or builds are off"},
    )


@_declare("drain", "drain a drone: it finishes its jobs and gets no more (survives a restart)")
async def drain(request: web.Request) -> web.Response:
    return await _hold(request, "drain")


@_declare("undrain", "put a drained drone back in the rotation")
async def undrain(request: web.Request) -> web.Response:
    return await _hold(request, "undrain")


@_declare("ground", "ground a drone: no jobs until ungrounded (survives a restart)")
async def ground(request: web.Request) -> web.Response:
    return await _hold(request, "ground")


@_declare("unground", "let a grounded drone fly again, also one grounded by its circuit breaker")
async def unground(request: web.Request) -> web.Response:
    return await _hold(request, "unground")
