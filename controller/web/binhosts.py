"""Binhost targets over HTTP (controller/binhosts.py is the core, the
mirror service behind ``services.mirrors`` pushes and checks them).

Admin tier (``routes``): the targets with their states, one target, set
one (a whole replacement, validated: 400 with the reason), delete one
(never the local one: 409), push the current release to one mirror or to
every one now (202: the pushes run on), and the binrepos.conf answer.
Public tier (``public_routes``): the targets without destinations or
error details, and ``/api/v1/binrepos.conf?network=NAME|drone=NAME
[&release=vX]``: the file stock Portage reads, the machine's network's
mirrors first (controller/binrepos.py).

The mirror service (``services.mirrors``) runs whenever releases do;
without releases the local target holds nothing, the mirrors are
``unknown`` (or ``disabled``), and there is no binrepos.conf to give (409).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from aiohttp import web

from swarm.controller import binrepos
from swarm.controller.binhosts import (
    LOCAL_NAME,
    NAME_RE,
    NETWORK_RE,
    BinhostTarget,
    BinhostTargets,
    Kind,
    MirrorState,
    local_state,
    unseen_state,
)
from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound
from swarm.controller.releasefiles import VERSION_RE
from swarm.controller.services import Services
from swarm.controller.web.common import SERVICES, json_response
from swarm.controller.web.healing import KEY_NAME
from swarm.controller.web.parse import json_body
from swarm.controller.web.routes import Body, Routes, TextParam
from swarm.controller.web.views.base import Doc
from swarm.controller.web.views.binhosts import (
    BinhostDeletedView,
    BinhostsView,
    BinhostView,
    Networks,
    Priority,
    PublicBinhostsView,
    SyncStartedView,
    binhost_view,
    public_binhost_view,
)

NAME = TextParam(
    "name",
    "a binhost's name: a lowercase letter, then lowercase letters, digits or '-'",
    where="path",
    max_len=32,
    pattern=NAME_RE,
)
NETWORK = TextParam(
    "network", "a network's name, as drones report it (lan, tailscale, ...)", max_len=64, pattern=NETWORK_RE
)
DRONE = TextParam("drone", "a drone's name or id: the network it reports", max_len=128)
RELEASE = TextParam(
    "release",
    "a release version, vYYYY.MM.DD or vYYYY.MM.DD-N (pinned; default: the current one)",
    max_len=20,
    pattern=VERSION_RE,
)
TEXT = "text/plain"
NO_MIRRORS = "releases are off (start the controller with --portage-eprefix): no release to push to mirrors"
routes = Routes()  # the admin tier's
public_routes = Routes()


def _targets(request: web.Request) -> BinhostTargets:
    targets = request.app[SERVICES].binhosts
    if targets is None:
        raise FailedPrecondition("binhost targets are not loaded")
    return targets


def _by(request: web.Request) -> str:
    return f"admin:{request[KEY_NAME]}"


def _name(request: web.Request) -> str:
    name = NAME.read(request)
    assert name is not None  # a path parameter is always there
    return name


def _current(s: Services) -> str | None:
    return s.releases.current() if s.releases is not None else None


def _states(s: Services, targets: BinhostTargets) -> dict[str, MirrorState]:
    if s.mirrors is not None:
        return s.mirrors.states()
    # The mirror service runs whenever releases do: without it there is no release to hold.
    states = {LOCAL_NAME: local_state(None, ())}
    for t in targets.list():
        if t.name != LOCAL_NAME:
            states[t.name] = unseen_state(t.name, "unknown" if t.enabled else "disabled")
    return states


def _state(states: dict[str, MirrorState], name: str) -> MirrorState:
    # A target saved a moment ago may not be in the mirror service's states yet.
    return states.get(name) or unseen_state(name)


def _view(s: Services, targets: BinhostTargets, target: BinhostTarget) -> BinhostView:
    return binhost_view(target, targets.url_of(target), _state(_states(s, targets), target.name))


# -- the admin tier ---------------------------------------------------------------------


@routes.declare(
    "GET",
    "/admin/api/binhosts",
    BinhostsView,
    summary="binhost targets (the controller's own first, then the mirrors by name) and how each stands",
    errors=(409,),
)
async def admin_list(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    targets = _targets(request)
    states = _states(s, targets)
    views = tuple(binhost_view(t, targets.url_of(t), _state(states, t.name)) for t in targets.list())
    return json_response(BinhostsView(_current(s), views))


@routes.declare(
    "GET",
    "/admin/api/binhosts/{name}",
    BinhostView,
    summary="one binhost target and how it stands",
    params=(NAME,),
    errors=(404, 409),
)
async def admin_show(request: web.Request) -> web.Response:
    targets = _targets(request)
    return json_response(_view(request.app[SERVICES], targets, targets.get(_name(request))))


@dataclass(frozen=True, slots=True)
class BinhostRequest:
    kind: Annotated[Kind | None, Doc(f"local (only {LOCAL_NAME}, the default for it) or rsync (the default)")]
    url: Annotated[
        str | None, Doc(f"public base URL, http(s), no credentials ({LOCAL_NAME}: empty = its own)")
    ]
    destination: Annotated[str | None, Doc("rsync: [user@]host[:port]:/absolute/path")]
    networks: Networks | None
    priority: Priority | None
    enabled: Annotated[bool | None, Doc(f"false: never pushed to nor answered ({LOCAL_NAME} stays enabled)")]


@routes.declare(
    "PUT",
    "/admin/api/binhosts/{name}",
    BinhostView,
    summary="add or replace a binhost target whole (a field left out takes its default); the mirror "
    "service pushes the current release to a new or changed mirror",
    params=(NAME,),
    body=Body(BinhostRequest),
    errors=(409,),
)
async def put(request: web.Request) -> web.Response:
    targets = _targets(request)
    name = _name(request)
    body = await json_body(request)
    target = await targets.put(name, body, by=_by(request))
    return json_response(_view(request.app[SERVICES], targets, target))


@routes.declare(
    "DELETE",
    "/admin/api/binhosts/{name}",
    BinhostDeletedView,
    summary=f"delete a binhost target (never {LOCAL_NAME}); what was pushed to the mirror stays there",
    params=(NAME,),
    errors=(404, 409),
    notes={409: f"{LOCAL_NAME} is the controller's own binhost"},
)
async def delete(request: web.Request) -> web.Response:
    target = await _targets(request).delete(_name(request), by=_by(request))
    return json_response(BinhostDeletedView(target.name))


async def _sync(request: web.Request, name: str | None) -> web.Response:
    s = request.app[SERVICES]
    if name is not None:
        _targets(request).get(name)  # 404 before "off"
    if s.mirrors is None:
        raise FailedPrecondition(NO_MIRRORS)
    started = await s.mirrors.sync(name, by=_by(request))
    return json_response(SyncStartedView(tuple(started)), status=202)


@routes.declare(
    "POST",
    "/admin/api/binhosts/{name}/sync",
    SyncStartedView,
    status=202,
    summary="push the current release to this mirror now (not awaited: see its status and progress)",
    params=(NAME,),
    errors=(404, 409),
    notes={409: "no release is current, the target is local or disabled, or releases are off"},
)
async def sync_one(request: web.Request) -> web.Response:
    return await _sync(request, _name(request))


@routes.declare(
    "POST",
    "/admin/api/binhosts/sync",
    SyncStartedView,
    status=202,
    summary="push the current release to every enabled mirror now (not awaited)",
    errors=(409,),
    notes={409: "no release is current, or releases are off"},
)
async def sync_all(request: web.Request) -> web.Response:
    return await _sync(request, None)


# -- binrepos.conf ------------------------------------------------------------------------


def binrepos_text(request: web.Request) -> str:
    """The answer for the query's network (or drone's) and release."""
    s = request.app[SERVICES]
    targets = _targets(request)
    network, drone, release = NETWORK.read(request), DRONE.read(request), RELEASE.read(request)
    if network is not None and drone is not None:
        raise InvalidArgument("give network or drone, not both")
    if drone is not None:
        state = s.fleet.find(drone)
        if state is None:
            raise NotFound(f"no drone {drone[:64]!r}")
        network = state.network or None
    if release is not None:
        if s.releases is None:
            raise NotFound(f"no release {release}: releases are off")
        s.releases.get(release)  # NotFound when unknown
    elif _current(s) is None:
        raise FailedPrecondition("no release is current yet (none was promoted)")
    # Past the checks above releases are on, and the mirror service runs whenever they are.
    assert s.mirrors is not None
    usable = s.mirrors.usable(release)
    states = s.mirrors.states()
    chosen = {t.name for t, _ in usable}
    left_out = [
        (t.name, _state(states, t.name).status) for t in targets.list() if t.enabled and t.name not in chosen
    ]
    return binrepos.render(
        [(targets.resolved(t), state) for t, state in usable],
        network=network,
        release=release,
        now=s.clock.time(),
        left_out=left_out,
    )


BINREPOS_SUMMARY = (
    "binrepos.conf for stock Portage: the binhosts serving the network (or the drone's) first, the "
    "others as fallback; with release, pinned to it (default: the current one); neither network nor "
    "drone: every binhost as fallback. Stale and unreachable mirrors are left out"
)
BINREPOS_ERRORS = (404, 409)
BINREPOS_NOTES = {404: "no such drone, or no such release", 409: "no release is current yet"}


@routes.declare(
    "GET",
    "/admin/api/binrepos.conf",
    None,
    summary=BINREPOS_SUMMARY + " (as /api/v1/binrepos.conf)",
    params=(NETWORK, DRONE, RELEASE),
    errors=BINREPOS_ERRORS,
    content=TEXT,
    notes=BINREPOS_NOTES,
)
async def admin_binrepos(request: web.Request) -> web.Response:
    return web.Response(text=binrepos_text(request), content_type=TEXT, charset="utf-8")


# -- the public tier ---------------------------------------------------------------------


@public_routes.declare(
    "GET",
    "/api/v1/binhosts",
    PublicBinhostsView,
    summary="enabled binhosts: where each is, the networks it serves, whether it serves the current release",
)
async def public_list(request: web.Request) -> web.Response:
    s = request.app[SERVICES]
    targets = s.binhosts
    if targets is None:
        return json_response(PublicBinhostsView(_current(s), ()))
    states = _states(s, targets)
    views = tuple(
        public_binhost_view(t, targets.url_of(t), _state(states, t.name)) for t in targets.list() if t.enabled
    )
    return json_response(PublicBinhostsView(_current(s), views))


@public_routes.declare(
    "GET",
    "/api/v1/binrepos.conf",
    None,
    summary=BINREPOS_SUMMARY,
    params=(NETWORK, DRONE, RELEASE),
    errors=BINREPOS_ERRORS,
    content=TEXT,
    notes=BINREPOS_NOTES,
)
async def public_binrepos(request: web.Request) -> web.Response:
    return web.Response(
        text=binrepos_text(request), content_type=TEXT, charset="utf-8", headers={"Cache-Control": "no-cache"}
    )
