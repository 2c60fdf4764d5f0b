"""Admin endpoints of the healer: out-of-band access per drone, health
history, manual ping/restart/reboot and pausing. Part of the admin tier
(its key middleware guards these too)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web

from swarm.controller import access
from swarm.controller.errors import FailedPrecondition, InvalidArgument, Unavailable
from swarm.controller.fleet import DroneState
from swarm.controller.healer import Healer, StepResult, incident_json
from swarm.controller.web.common import SERVICES, json_response, now
from swarm.controller.web.parse import json_body, optional_text

KEY_NAME = "admin_key_name"
HEAL_EVENTS = ("heal_action", "drone_recovered", "drone_alert", "healing_paused", "healing_resumed")
routes = web.RouteTableDef()


def _healer(request: web.Request) -> Healer:
    healer = request.app[SERVICES].healer
    if healer is None:
        raise FailedPrecondition("the healer is not running")
    return healer


def _drone(request: web.Request) -> DroneState:
    return request.app[SERVICES].fleet.require(request.match_info["name"])


def step_json(result: StepResult) -> dict[str, Any]:
    data: dict[str, Any] = {"level": result.level, "done": result.done, "detail": result.detail}
    if result.command is not None:
        data |= {
            "exit_code": result.command.exit_code,
            "output": result.command.output,
            "duration_s": round(result.command.duration, 3),
            "timed_out": result.command.timed_out,
        }
    return data


@routes.put("/admin/api/drones/{name}")
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
        access={k: v for k, v in access.as_json(record).items() if k in access.FIELDS},
    )
    return json_response({"drone": state.name, "access": access.as_json(record)})


@routes.get("/admin/api/drones/{name}/health")
async def drone_health(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    healer = _healer(request)
    state = _drone(request)
    incidents = await s.runner.call(s.runner.store.list_incidents, drone_id=state.id, limit=20)
    events = await s.events.query(drone_id=state.id, types=HEAL_EVENTS, limit=50)
    return json_response(
        {
            **healer.status(state, now()),
            "incidents": [incident_json(i) for i in incidents],
            "events": [{"ts": e.ts, "type": e.type, "message": e.message} for e in events],
        }
    )


@routes.post("/admin/api/drones/{name}/ping")
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
        {
            "drone": state.name,
            "seq": seq,
            "latency_ms": state.ping_latency_ms,
            "load1": pong.load1,
            "disk_percent": pong.disk_percent,
            "disk_free_bytes": pong.disk_free_bytes,
            "emerge_running": pong.emerge_running,
            "current_job_id": pong.current_job_id,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in pong.checks],
        }
    )


@routes.post("/admin/api/drones/{name}/restart")
async def restart(request: web.Request) -> web.Response:
    result = await _healer(request).restart(_drone(request), request[KEY_NAME])
    return json_response({"drone": request.match_info["name"], **step_json(result)})


@routes.post("/admin/api/drones/{name}/reboot")
async def reboot(request: web.Request) -> web.Response:
    result = await _healer(request).reboot(_drone(request), request[KEY_NAME])
    return json_response({"drone": request.match_info["name"], **step_json(result)})


@routes.get("/admin/api/healing")
async def healing(request: web.Request) -> web.Response:
    return _healing_json(request)


def _healing_json(request: web.Request) -> web.Response:
    healer = _healer(request)
    fleet = request.app[SERVICES].fleet
    return json_response(
        {
            "paused": healer.paused,
            "fleet_dark": healer.dark,
            "paused_drones": sorted(
                state.name for state in fleet.all() if healer.access_of(state.id).healing_paused
            ),
            "settings": healer.settings_json(),
            # While drones known before the start are still awaited: none of those is healed yet.
            "startup_grace": healer.startup_grace_json(now()),
        }
    )


@routes.post("/admin/api/healing")
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
    return _healing_json(request)
