"""Payload rollouts over HTTP (controller/rollout.py is the core), admin
tier only: list, show, pause, resume, abort, roll back. A rollout starts
with POST /admin/api/payloads/{kind}/{version}/deploy (web/payloads.py)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from swarm.controller.rollout import Rollout, Rollouts
from swarm.controller.web.common import json_response
from swarm.controller.web.payloads import OFF, _by, _rollouts
from swarm.controller.web.routes import Routes, TextParam
from swarm.controller.web.views.rollouts import RolloutsView, RolloutView, rollout_view, rollouts_view

ROLLOUT_ID = TextParam(
    "id",
    "a rollout id (r- and 12 hex digits)",
    where="path",
    max_len=14,
    pattern=re.compile(r"r-[0-9a-f]{12}"),
)

routes = Routes()


@routes.declare(
    "GET",
    "/admin/api/rollouts",
    RolloutsView,
    summary="payload rollouts, newest first: each one's plan, strategy and every drone's progress",
    errors=(409,),
    notes={409: OFF},
)
async def listing(request: web.Request) -> web.Response:
    return json_response(rollouts_view(_rollouts(request).all()))


def _id(request: web.Request) -> str:
    rollout_id = ROLLOUT_ID.read(request)
    assert rollout_id is not None  # a path parameter is always there
    return rollout_id


@routes.declare(
    "GET",
    "/admin/api/rollouts/{id}",
    RolloutView,
    summary="one payload rollout",
    params=(ROLLOUT_ID,),
    errors=(404, 409),
    notes={409: OFF},
)
async def show(request: web.Request) -> web.Response:
    return json_response(rollout_view(_rollouts(request).get(_id(request))))


Verb = Callable[[Rollouts, str, str], Awaitable[Rollout]]


async def _act(request: web.Request, verb: Verb) -> web.Response:
    rollout = await verb(_rollouts(request), _id(request), _by(request))
    return json_response(rollout_view(rollout))


@routes.declare(
    "POST",
    "/admin/api/rollouts/{id}/pause",
    RolloutView,
    summary="pause a running rollout: the batch under way ends, the next does not start",
    params=(ROLLOUT_ID,),
    errors=(404, 409),
    notes={409: "it is not running, or payloads are off"},
)
async def pause(request: web.Request) -> web.Response:
    return await _act(request, lambda r, i, by: r.pause(i, by=by))


@routes.declare(
    "POST",
    "/admin/api/rollouts/{id}/resume",
    RolloutView,
    summary="resume a paused rollout (a restart pauses one too) where it was; the next batch starts at once",
    params=(ROLLOUT_ID,),
    errors=(404, 409),
    notes={409: "it is not paused, or payloads are off"},
)
async def resume(request: web.Request) -> web.Response:
    return await _act(request, lambda r, i, by: r.resume(i, by=by))


@routes.declare(
    "POST",
    "/admin/api/rollouts/{id}/abort",
    RolloutView,
    summary="abort a running or paused rollout: no drone is sent it any more; those that took it keep it",
    params=(ROLLOUT_ID,),
    errors=(404, 409),
    notes={409: "it is over already, or payloads are off"},
)
async def abort(request: web.Request) -> web.Response:
    return await _act(request, lambda r, i, by: r.abort(i, by=by))


@routes.declare(
    "POST",
    "/admin/api/rollouts/{id}/rollback",
    RolloutView,
    status=202,
    summary="roll back a rollout that is paused, aborted, failed or done: each drone that took the version "
    "is deployed the one it ran before, signed as a rollback (rollout_rolled_back says how it went)",
    params=(ROLLOUT_ID,),
    errors=(404, 409),
    notes={409: "it is running (pause or abort it first), rolled back already, or payloads are off"},
)
async def rollback(request: web.Request) -> web.Response:
    rollout = await _rollouts(request).rollback(_id(request), by=_by(request))
    return json_response(rollout_view(rollout), status=202)
