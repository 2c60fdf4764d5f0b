"""Admin endpoints of the healer: out-of-band access per drone, health
history, manual ping/restart/reboot and pausing. Part of the admin tier
(its key middleware guards these too)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Literal

from aiohttp import web

from swarm.controller import access
from swarm.controller.errors import FailedPrecondition, InvalidArgument, Unavailable
from swarm.controller.fleet import DroneState
from swarm.controller.healer import Healer
from swarm.controller.web.common import SERVICES, json_response
from swarm.controller.web.parse import json_body, optional_text
from swarm.controller.web.routes import DRONE_NAME, Body, Routes
from swarm.controller.web.views.base import Doc, plain
from swarm.controller.web.views.fleet import CheckView, DroneType, PingView
from swarm.controller.web.views.healing import (
    AccessReply,
    DroneHealthView,
    HealingView,
    StepView,
    access_settings_view,
    access_view,
    drone_health_view,
    healing_view,
    step_view,
)

# The admin key that made the request (auth.py sets it; the audit trail reads it).
KEY_NAME = web.RequestKey("admin_key_name", str)
HEAL_EVENTS = ("heal_action", "drone_recovered", "drone_alert", "healing_paused", "healing_resumed")
INCIDENTS_SHOWN = 20
HEAL_EVENTS_SHOWN = 50
routes = Routes()


def _healer(request: web.Request) -> Healer:
    healer = request.app[SERVICES].healer
    if healer is None:
        raise FailedPrecondition("the healer is not running")
    return healer


def _drone(request: web.Request) -> DroneState:
    return request.app[SERVICES].fleet.require(request.match_info["name"])


@dataclass(frozen=True, slots=True)
class AccessRequest:
    type: Annotated[DroneType | Literal[""] | None, Doc("overrides the type the drone reports")]
    ssh: Annotated[str | None, Doc("[user@]host[:port] of the drone")]
    host: Annotated[str | None, Doc("[user@]host[:port] of its hypervisor host")]
    vmid: str | None
    reboot: Annotated[str | None, Doc("proxmox-lxc, proxmox-qemu, lxc, libvirt or a command template")]


@routes.declare(
    "PUT",
    "/admin/api/drones/{name}",
    AccessReply,
    summary="set a drone's type override and out-of-band access (replaces them whole)",
    params=(DRONE_NAME,),
    body=Body(AccessRequest),
    errors=(404, 409),
)
async def put_access(request: web.Request) -> web.Response:
    healer = _healer(request)
    state = _drone(request)
    body = await json_body(request)
    record = access.from_api(state.id, body, by=request[KEY_NAME], current=healer.access_of(state.id))
    record = replace(record, healing_paused=healer.access_of(state.id).healing_paused)
    await healer.put_access(record)
    request.app[SERVICES].events.emit(
        "drone_access_changed",
        f"{state.name}: out-of-band access set by {request[KEY_NAME]}",
        drone_id=state.id,
        drone_name=state.name,
        by=request[KEY_NAME],
        access=plain(access_settings_view(record)),
    )
    return json_response(AccessReply(state.name, access_view(record)))


@routes.declare(
    "GET",
    "/admin/api/drones/{name}/health",
    DroneHealthView,
    summary="the drone's ladder level, next action and what it waits for, cool-off, health history "
    "and incidents",
    params=(DRONE_NAME,),
    errors=(404, 409),
)
async def drone_health(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    healer = _healer(request)
    state = _drone(request)
    incidents = await healer.incidents(state.id, INCIDENTS_SHOWN)
    events = await s.events.query(drone_id=state.id, types=HEAL_EVENTS, limit=HEAL_EVENTS_SHOWN)
    return json_response(drone_health_view(healer.status(state, s.clock.time()), incidents, events))


@routes.declare(
    "POST",
    "/admin/api/drones/{name}/ping",
    PingView,
    summary="ping the drone now: round trip, load, disk, emerge and the functional checks",
    params=(DRONE_NAME,),
    errors=(404, 409, 503),
    notes={503: "the drone did not answer in time, or does not read its control stream"},
)
async def ping(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    state = _drone(request)
    if not state.connected or s.pinger is None:
        raise FailedPrecondition(f"{state.name} is {state.status}: no control stream to ping over")
    seq = s.pinger.ping_now(state)
    if seq is None:
        raise Unavailable(f"{state.name} is not reading its control stream (its queue is full)")
    try:
        pong = await s.fleet.wait_pong(state, seq, timeout := s.fleet.ping_timeout)
    except TimeoutError:
        raise Unavailable(f"{state.name} did not answer ping {seq} within {timeout:g}s") from None
    request.app[SERVICES].events.emit(
        "drone_pinged",
        f"{state.name} answered a ping from {request[KEY_NAME]} in {state.ping_latency_ms} ms",
        drone_id=state.id,
        drone_name=state.name,
        by=request[KEY_NAME],
    )
    return json_response(
        PingView(
            drone=state.name,
            seq=seq,
            latency_ms=state.ping_latency_ms,
            load1=pong.load1,
            disk_percent=pong.disk_percent,
            disk_free_bytes=pong.disk_free_bytes,
            emerge_running=pong.emerge_running,
            current_job_id=pong.current_job_id,
            checks=tuple(CheckView(c.name, c.ok, c.detail) for c in pong.checks),
        )
    )


@routes.declare(
    "POST",
    "/admin/api/drones/{name}/restart",
    StepView,
    summary="restart the drone's agent (healing step 1); 409 while another action on the drone "
    "runs or the healing budget is spent",
    params=(DRONE_NAME,),
    errors=(404, 409),
)
async def restart(request: web.Request) -> web.Response:
    result = await _healer(request).restart(_drone(request), request[KEY_NAME])
    return json_response(step_view(request.match_info["name"], result))


@routes.declare(
    "POST",
    "/admin/api/drones/{name}/reboot",
    StepView,
    summary="reboot the drone's container or VM through its host (409 for bare-metal, while "
    "another action on the drone runs, or when the healing budget is spent)",
    params=(DRONE_NAME,),
    errors=(404, 409),
)
async def reboot(request: web.Request) -> web.Response:
    result = await _healer(request).reboot(_drone(request), request[KEY_NAME])
    return json_response(step_view(request.match_info["name"], result))


@routes.declare(
    "GET",
    "/admin/api/healing",
    HealingView,
    summary="whether healing is paused or held by a dark fleet",
    errors=(409,),
)
async def healing(request: web.Request) -> web.Response:
    return _healing_reply(request)


def _healing_reply(request: web.Request) -> web.Response:
    healer = _healer(request)
    s = request.app[SERVICES]
    paused = sorted(state.name for state in s.fleet.all() if healer.access_of(state.id).healing_paused)
    # While drones known before the start are still awaited: none of those is healed yet.
    return json_response(healing_view(healer, paused, healer.startup_grace(s.clock.time())))


@dataclass(frozen=True, slots=True)
class HealingRequest:
    action: Literal["pause", "resume", "override"]
    drone: Annotated[str | None, Doc("pause or resume only this drone (name or id)")]


@routes.declare(
    "POST",
    "/admin/api/healing",
    HealingView,
    summary="pause or resume healing (for the fleet, or one drone), or override the dark-fleet hold",
    body=Body(HealingRequest, required=("action",)),
    errors=(404, 409),
)
async def control_healing(request: web.Request) -> web.Response:
    healer = _healer(request)
    body = await json_body(request)
    action = body.get("action")
    drone = optional_text(body, "drone", max_len=128)
    state = request.app[SERVICES].fleet.require(drone) if drone else None
    if action in ("pause", "resume"):
        await healer.set_paused(action == "pause", request[KEY_NAME], state)
    elif action == "override" and state is None:
        if not healer.override_dark(request[KEY_NAME]):
            raise FailedPrecondition("the fleet is not dark: nothing to override")
    else:
        raise InvalidArgument("action must be pause, resume (optionally with drone) or override")
    return _healing_reply(request)
