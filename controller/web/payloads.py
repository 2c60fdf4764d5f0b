"""Payloads over HTTP (controller/payloads.py is the core), admin tier only.

An upload is the payload's bytes as the request body, as they are
(``curl --data-binary @file``), with its kind and notes in the query; it
is read as it comes, never whole in memory, and refused past
``--payload-max-bytes`` (413). Every change names the admin who made it
(``admin:NAME``) in the core's event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from aiohttp import web

from swarm.controller.errors import FailedPrecondition, InvalidArgument, TooLarge
from swarm.controller.payloads import MAX_NOTES, Payloads
from swarm.controller.rollout import MAX_DRONES_NAMED, Rollouts, Strategy, Target
from swarm.controller.web.common import SERVICES, json_response
from swarm.controller.web.healing import KEY_NAME
from swarm.controller.web.parse import check_text, json_body, seconds
from swarm.controller.web.routes import Body, IntParam, Routes, TextParam
from swarm.controller.web.views.base import Doc, Length, Range
from swarm.controller.web.views.payloads import (
    DeployView,
    DroneVersionsView,
    PayloadsView,
    PayloadView,
    deploy_view,
    drone_versions_view,
    payload_view,
    payloads_view,
)
from swarm.controller.web.views.rollouts import RolloutView, rollout_view
from swarm.payloadsig import KINDS

OFF = "payloads are off: they need the drones' certificates (the controller runs with --insecure)"
READ_BLOCK = 256 * 1024
ABOUT_KIND = ", ".join(KINDS)
KIND = TextParam("kind", f"the payload's kind: {ABOUT_KIND}", choices=KINDS)
NOTES = TextParam("notes", "what the payload is for (shown with it)", max_len=MAX_NOTES // 4)
PATH_KIND = TextParam("kind", f"the payload's kind: {ABOUT_KIND}", where="path", choices=KINDS)
VERSION = IntParam("version", "the payload's version", lo=1, hi=2**62, where="path")

routes = Routes()


def _payloads(request: web.Request) -> Payloads:
    payloads = request.app[SERVICES].payloads
    if payloads is None:
        raise FailedPrecondition(OFF)
    return payloads


def _rollouts(request: web.Request) -> Rollouts:
    rollouts = request.app[SERVICES].rollouts
    if rollouts is None:
        raise FailedPrecondition(OFF)
    return rollouts


def _by(request: web.Request) -> str:
    return f"admin:{request[KEY_NAME]}"


def _kind_version(request: web.Request) -> tuple[str, int]:
    kind = PATH_KIND.read(request)
    assert kind is not None  # a path parameter is always there
    return kind, VERSION.read(request)


@routes.declare(
    "GET",
    "/admin/api/payloads",
    PayloadsView,
    summary="payload versions uploaded, by kind, newest first; the payload key's public half",
    params=(KIND,),
    errors=(409,),
    notes={409: OFF},
)
async def listing(request: web.Request) -> web.Response:
    payloads = _payloads(request)
    return json_response(payloads_view(payloads.uploaded(KIND.read(request)), payloads.public_key))


@routes.declare(
    "POST",
    "/admin/api/payloads",
    PayloadView,
    status=201,
    summary="upload a payload (the request body, as it is) as the next version of its kind",
    description="agent: a wheel or sdist of build-swarm (make dist); agent-config: an agent.toml the "
    "agent starts with; portage-config: a tar of files under etc/portage (no links, devices or '..').",
    params=(KIND, NOTES),
    upload="application/octet-stream",
    errors=(409,),
    notes={
        400: "no kind, or the payload is not what its kind must be (the message says why)",
        413: "the payload is larger than --payload-max-bytes",
        409: OFF,
    },
)
async def upload(request: web.Request) -> web.Response:
    payloads = _payloads(request)
    kind = KIND.read(request)
    if kind is None:
        raise InvalidArgument(f"kind is required: {ABOUT_KIND}")
    notes = NOTES.read(request) or ""
    length = request.content_length
    if length is not None and length > payloads.settings.max_bytes:
        raise TooLarge(f"a payload may have at most {payloads.settings.max_bytes} bytes")
    record = await payloads.upload(
        kind, request.content.iter_chunked(READ_BLOCK), notes=notes, by=_by(request)
    )
    return json_response(payload_view(record), status=201)


@routes.declare(
    "GET",
    "/admin/api/payloads/{kind}/{version}",
    PayloadView,
    summary="one payload version",
    params=(PATH_KIND, VERSION),
    errors=(404, 409),
    notes={409: OFF},
)
async def show(request: web.Request) -> web.Response:
    kind, version = _kind_version(request)
    return json_response(payload_view(_payloads(request).get(kind, version)))


@routes.declare(
    "POST",
    "/admin/api/payloads/{kind}/{version}/stage",
    PayloadView,
    summary="stage a payload version: it may then be deployed",
    params=(PATH_KIND, VERSION),
    errors=(404, 409),
    notes={409: "it is staged or deployed already, or payloads are off"},
)
async def stage(request: web.Request) -> web.Response:
    kind, version = _kind_version(request)
    record = await _payloads(request).stage(kind, version, by=_by(request))
    return json_response(payload_view(record))


@dataclass(frozen=True, slots=True)
class DeployRequest:
    drones: Annotated[
        tuple[str, ...],
        Doc("the drones to deploy to, by name or id; one alone, without a strategy, is a plain deploy"),
        Length(1, MAX_DRONES_NAMED),
    ]
    network: Annotated[str | None, Doc("a rollout to this network's drones")]
    all: Annotated[bool | None, Doc("a rollout to every drone")]
    canary: Annotated[int | None, Range(0, MAX_DRONES_NAMED), Doc("drones deployed first, alone (default 1)")]
    batch: Annotated[int | None, Range(1, MAX_DRONES_NAMED), Doc("drones in each batch after (default 5)")]
    pause_s: Annotated[float | None, Range(0, 86400), Doc("seconds between batches (default 0)")]
    gate_timeout_s: Annotated[
        float | None,
        Range(1, 86400),
        Doc("seconds a drone has to apply it and be online, healthy and running it (default 600)"),
    ]
    auto_rollback: Annotated[bool | None, Doc("a failure rolls back the drones that took it (default true)")]
    rollback: Annotated[
        bool | None, Doc("signed as a rollback: the drone may go down to this version from a newer one")
    ]


STRATEGY_KEYS = ("network", "all", "canary", "batch", "pause_s", "gate_timeout_s", "auto_rollback")
KNOWN_KEYS = frozenset((*STRATEGY_KEYS, "drones", "rollback"))


def _flag(body: dict[str, object], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidArgument(f"{key} must be true or false")
    return value


def _count(body: dict[str, object], key: str, default: int, lo: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= MAX_DRONES_NAMED:
        raise InvalidArgument(f"{key} must be a whole number from {lo} to {MAX_DRONES_NAMED}")
    return value


def _deploy_request(body: dict[str, object]) -> tuple[list[str], bool]:
    drones = body.get("drones", [])
    if not isinstance(drones, list) or not all(isinstance(d, str) and d for d in drones):
        raise InvalidArgument("drones must be a list of drone names")
    if len(drones) > MAX_DRONES_NAMED:
        raise InvalidArgument(f"name at most {MAX_DRONES_NAMED} drones")
    unknown = sorted(set(body) - KNOWN_KEYS)
    if unknown:
        raise InvalidArgument(
            f"unknown field {unknown[0][:40]!r}: the fields are {', '.join(sorted(KNOWN_KEYS))}"
        )
    return [str(d)[:64] for d in drones], _flag(body, "rollback", False)


def _rollout_request(body: dict[str, object], drones: list[str]) -> tuple[Target, Strategy]:
    network = body.get("network")
    if network is not None:
        network = check_text(network, "network", max_len=64)
    target = Target(_flag(body, "all", False), network or "", tuple(drones))
    defaults = Strategy()
    strategy = Strategy(
        canary=_count(body, "canary", defaults.canary, 0),
        batch=_count(body, "batch", defaults.batch, 1),
        pause_s=defaults.pause_s
        if body.get("pause_s") is None
        else seconds(body["pause_s"], "pause_s", 0, 86400),
        gate_timeout_s=(
            defaults.gate_timeout_s
            if body.get("gate_timeout_s") is None
            else seconds(body["gate_timeout_s"], "gate_timeout_s", 1, 86400)
        ),
        auto_rollback=_flag(body, "auto_rollback", defaults.auto_rollback),
    )
    return target, strategy


@routes.declare(
    "POST",
    "/admin/api/payloads/{kind}/{version}/deploy",
    DeployView | RolloutView,
    status=202,
    summary="deploy a staged payload version: to one drone (a DeployView), or as a rollout (a RolloutView) "
    "to every drone (all), a network or the drones named, canaries first, then batches, each drone "
    "through a health gate",
    description="A body with one drone and none of network, all, canary, batch, pause_s, gate_timeout_s "
    "and auto_rollback is a plain deploy: the drone is sent a signed ApplyPayload and applies it when "
    "idle; how it went is in GET /admin/api/drones/versions and the payload_* events. Anything else is a "
    "rollout (GET /admin/api/rollouts/{id}, the rollout_* events): a drone that fails its gate stops it "
    "and, with auto_rollback, the drones that took the version go back to the one they ran.",
    params=(PATH_KIND, VERSION),
    body=Body(DeployRequest),
    errors=(404, 409),
    notes={
        404: "no such payload version or drone",
        409: "the version is not staged, the drone is not connected, its agent does not take payloads, "
        "it is taking one of this kind already, a rollout of this kind is under way, no drone is left "
        "to deploy to, or payloads are off",
    },
)
async def deploy(request: web.Request) -> web.Response:
    kind, version = _kind_version(request)
    payloads = _payloads(request)
    body = await json_body(request)
    drones, rollback = _deploy_request(body)
    if len(drones) == 1 and not any(body.get(key) is not None for key in STRATEGY_KEYS):
        started = payloads.deploy(kind, version, drones, rollback=rollback, by=_by(request))
        return json_response(deploy_view(started), status=202)
    target, strategy = _rollout_request(body, drones)
    rollout = await _rollouts(request).create(
        kind, version, target, strategy, rollback=rollback, by=_by(request)
    )
    return json_response(rollout_view(rollout), status=202)


@routes.declare(
    "GET",
    "/admin/api/drones/versions",
    DroneVersionsView,
    summary="each drone's payloads: the version deployed to it against the version it runs (drift)",
    errors=(409,),
    notes={409: OFF},
)
async def versions(request: web.Request) -> web.Response:
    return json_response(drone_versions_view(_payloads(request).drone_versions()))
