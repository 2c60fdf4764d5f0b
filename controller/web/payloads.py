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
from swarm.controller.web.common import SERVICES, json_response
from swarm.controller.web.healing import KEY_NAME
from swarm.controller.web.parse import json_body
from swarm.controller.web.routes import Body, IntParam, Routes, TextParam
from swarm.controller.web.views.base import Doc, Length
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
        tuple[str, ...], Doc("the drone to deploy to, by name or id (one for now)"), Length(1, 1)
    ]
    rollback: Annotated[
        bool | None, Doc("signed as a rollback: the drone may go down to this version from a newer one")
    ]


def _deploy_request(body: dict[str, object]) -> tuple[list[str], bool]:
    drones = body.get("drones")
    if not isinstance(drones, list) or not all(isinstance(d, str) and d for d in drones):
        raise InvalidArgument("drones must be a list of drone names")
    rollback = body.get("rollback", False)
    if rollback is None:
        rollback = False
    if not isinstance(rollback, bool):
        raise InvalidArgument("rollback must be true or false")
    return [str(d)[:64] for d in drones], rollback


@routes.declare(
    "POST",
    "/admin/api/payloads/{kind}/{version}/deploy",
    DeployView,
    status=202,
    summary="deploy a staged payload version to a drone: it is sent a signed ApplyPayload and applies it "
    "when idle; how it went is in GET /admin/api/drones/versions and the payload_* events",
    params=(PATH_KIND, VERSION),
    body=Body(DeployRequest, required=("drones",)),
    errors=(404, 409),
    notes={
        404: "no such payload version or drone",
        409: "the version is not staged, the drone is not connected, its agent does not take payloads, "
        "it is taking one of this kind already, or payloads are off",
    },
)
async def deploy(request: web.Request) -> web.Response:
    kind, version = _kind_version(request)
    payloads = _payloads(request)
    drones, rollback = _deploy_request(await json_body(request))
    started = payloads.deploy(kind, version, drones, rollback=rollback, by=_by(request))
    return json_response(deploy_view(started), status=202)


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
