"""Releases over HTTP (controller/releases.py is the core).

Admin tier (``routes``): list, cut, show, diff, promote, roll back and
delete; every change names the admin who made it (``admin:NAME``) in the
core's event and in promotions.json. Public tier (``public_routes``, read
only): the list (also as ``/releases.json``, which the status page reads),
one release, a diff; and outside the OpenAPI document, like the staging
binhost's files (``files``): the release key at ``/releases/key.asc`` and
each release's files for stock Portage clients at
``/binhost/releases/{v}/`` and ``/binhost/current/``.

``current`` is read from its symlink at each request, so a promote or a
rollback is what the next request gets. Only a release the core lists is
served (never a cut in progress, ``.vX.partial``, nor one being deleted),
and only regular files inside it: no listing, no hidden file, no ``..``,
no symlink out (binfiles.served_file; resolving a path stats files: it
runs in a thread). The files go out as binfiles.BinhostFile: Range,
If-Modified-Since and ETag answered as Portage, wget and curl expect.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from aiohttp import web

from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound
from swarm.controller.releases import VERSION_RE, Releases
from swarm.controller.web.binfiles import BinhostFile, served_file
from swarm.controller.web.common import SERVICES, json_response
from swarm.controller.web.healing import KEY_NAME
from swarm.controller.web.parse import check_text, json_body
from swarm.controller.web.routes import Body, Routes, TextParam
from swarm.controller.web.views.base import Doc, Length
from swarm.controller.web.views.releases import (
    AdminReleasesView,
    ReleaseDeletedView,
    ReleaseDiffView,
    ReleaseSummaryView,
    ReleasesView,
    ReleaseView,
    admin_releases_view,
    diff_view,
    release_view,
    releases_view,
    summary_view,
)

log = logging.getLogger(__name__)

MAX_NOTES = 4000  # characters
RELEASES_PATH = "/binhost/releases"
CURRENT_PATH = "/binhost/current"
KEY_PATH = "/releases/key.asc"
ABOUT_VERSION = "a release version, vYYYY.MM.DD or vYYYY.MM.DD-N"
VERSION = TextParam("version", ABOUT_VERSION, where="path", max_len=20, pattern=VERSION_RE)
A = TextParam("a", f"the release diffed from: {ABOUT_VERSION}", where="path", max_len=20, pattern=VERSION_RE)
B = TextParam("b", f"the release diffed to: {ABOUT_VERSION}", where="path", max_len=20, pattern=VERSION_RE)
NOT_FOUND = "no such release"
# What ``current`` names changes with a promote: a cache asks again each
# time (the ETag makes that a 304). A release's own files never change, and
# its name is never given to other contents, even once it is deleted.
REVALIDATE = {"Cache-Control": "no-cache"}
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
OFF = "releases are off: they are cut from the staging binhost (start the controller with --portage-eprefix)"

routes = Routes()  # the admin tier's
public_routes = Routes()
files = web.RouteTableDef()  # the public tier's, outside its OpenAPI document


def _releases(request: web.Request) -> Releases | None:
    return request.app[SERVICES].releases


def _changing(request: web.Request) -> Releases:
    """The releases, for a change (409 when the controller has none)."""
    releases = _releases(request)
    if releases is None:
        raise FailedPrecondition(OFF)
    return releases


def _by(request: web.Request) -> str:
    return f"admin:{request[KEY_NAME]}"


def _version(request: web.Request, param: TextParam = VERSION) -> str:
    """A version from the path (400 when malformed), known or not."""
    version = param.read(request)
    assert version is not None  # a path parameter is always there
    return version


def _listing(releases: Releases | None) -> ReleasesView:
    if releases is None:
        return releases_view((), None, None)
    return releases_view(releases.list_all(), releases.current(), releases.previous())


def _show(request: web.Request) -> ReleaseView:
    version = _version(request)
    releases = _releases(request)
    if releases is None:
        raise NotFound(f"{NOT_FOUND}: {version} ({OFF})")
    return release_view(releases.get(version))


def _diff(request: web.Request) -> ReleaseDiffView:
    a, b = _version(request, A), _version(request, B)
    releases = _releases(request)
    if releases is None:
        raise NotFound(f"{NOT_FOUND}: {a} ({OFF})")
    return diff_view(releases.diff(a, b))


# -- the admin tier --------------------------------------------------------------------


@routes.declare(
    "GET",
    "/admin/api/releases",
    AdminReleasesView,
    summary="releases, newest first; which is current and previous; the promotions and rollbacks; "
    "the release schedule",
)
async def admin_list(request: web.Request) -> web.Response:
    releases = _releases(request)
    if releases is None:
        return json_response(admin_releases_view((), None, None, []))
    schedule = request.app[SERVICES].release_schedule
    view = admin_releases_view(
        releases.list_all(),
        releases.current(),
        releases.previous(),
        releases.promotions(),
        schedule.status() if schedule is not None else None,
        releases.next_version(),
    )
    return json_response(view)


@dataclass(frozen=True, slots=True)
class CutRequest:
    notes: Annotated[str | None, Doc("what the release is for (shown with it)"), Length(0, MAX_NOTES)]
    force: Annotated[bool | None, Doc("cut even when nothing changed since the newest release")]


def _cut_request(body: dict[str, object]) -> tuple[str, bool]:
    notes = body.get("notes")
    if notes is None or (isinstance(notes, str) and not notes.strip()):
        notes = ""
    else:
        notes = check_text(notes, "notes", max_len=MAX_NOTES, lines=True)
    force = body.get("force", False)
    if force is None:
        force = False
    if not isinstance(force, bool):
        raise InvalidArgument("force must be true or false")
    return notes, force


@routes.declare(
    "POST",
    "/admin/api/releases",
    ReleaseSummaryView,
    status=201,
    summary="cut a release from the staging binhost: the next version of today, its packages "
    "hard-linked and signed",
    body=Body(CutRequest),
    errors=(409,),
    notes={
        409: "refused, and the message says why: a session is running, the last session needs packages "
        "that failed or staging lacks, nothing changed since the newest release (unless force), "
        "or releases are off (no --portage-eprefix)"
    },
)
async def cut(request: web.Request) -> web.Response:
    releases = _changing(request)
    notes, force = _cut_request(await json_body(request))
    release = await releases.cut(notes=notes, force=force, by=_by(request))
    return json_response(summary_view(release), status=201)


@routes.declare(
    "GET",
    "/admin/api/releases/{version}",
    ReleaseView,
    summary="a release and its manifest (as /api/v1/releases/{version})",
    params=(VERSION,),
    errors=(404,),
)
async def admin_show(request: web.Request) -> web.Response:
    return json_response(_show(request))


@routes.declare(
    "GET",
    "/admin/api/releases/{a}/diff/{b}",
    ReleaseDiffView,
    summary="what changes from release a to release b: packages added, removed and changed",
    params=(A, B),
    errors=(404,),
)
async def admin_diff(request: web.Request) -> web.Response:
    return json_response(_diff(request))


@routes.declare(
    "POST",
    "/admin/api/releases/{version}/promote",
    ReleaseSummaryView,
    summary="make the release current (what /binhost/current/ serves); the current one becomes previous",
    params=(VERSION,),
    errors=(404, 409),
    notes={409: "releases are off (no --portage-eprefix), or the core refused (the message says why)"},
)
async def promote(request: web.Request) -> web.Response:
    version = _version(request)
    release = await _changing(request).promote(version, by=_by(request))
    return json_response(summary_view(release))


@routes.declare(
    "POST",
    "/admin/api/releases/{version}/rollback",
    ReleaseSummaryView,
    summary="roll the current release back: the release promoted before it is current again "
    "(answered with that one); {version} must be the current release",
    params=(VERSION,),
    errors=(404, 409),
    notes={409: "{version} is not the current release, there is nothing to go back to, or releases are off"},
)
async def rollback(request: web.Request) -> web.Response:
    version = _version(request)
    release = await _changing(request).rollback(version, by=_by(request))
    return json_response(summary_view(release))


@routes.declare(
    "DELETE",
    "/admin/api/releases/{version}",
    ReleaseDeletedView,
    summary="delete a release (never the current or the previous one)",
    params=(VERSION,),
    errors=(404, 409),
    notes={409: "the release is current or previous, or releases are off"},
)
async def delete(request: web.Request) -> web.Response:
    version = _version(request)
    await _changing(request).delete(version, by=_by(request))
    return json_response(ReleaseDeletedView(version))


# -- the public tier -------------------------------------------------------------------


@public_routes.declare(
    "GET",
    "/api/v1/releases",
    ReleasesView,
    summary="releases, newest first, and which is current (empty when none was cut)",
)
async def public_list(request: web.Request) -> web.Response:
    return json_response(_listing(_releases(request)))


@public_routes.declare(
    "GET",
    "/releases.json",
    ReleasesView,
    summary="as /api/v1/releases (the status page reads it; 200 with an empty list when none was cut)",
)
async def releases_json(request: web.Request) -> web.Response:
    return json_response(_listing(_releases(request)))


@public_routes.declare(
    "GET",
    "/api/v1/releases/{version}",
    ReleaseView,
    summary="a release and its manifest: every package with its checksum, the profile, the repository, "
    "the kernel and the signing key's fingerprint",
    params=(VERSION,),
    errors=(404,),
)
async def public_show(request: web.Request) -> web.Response:
    return json_response(_show(request))


@public_routes.declare(
    "GET",
    "/api/v1/releases/{a}/diff/{b}",
    ReleaseDiffView,
    summary="what changes from release a to release b: packages added, removed and changed",
    params=(A, B),
    errors=(404,),
)
async def public_diff(request: web.Request) -> web.Response:
    return json_response(_diff(request))


# -- files: the release key and the releases' binhosts ------------------------------------


@files.get(KEY_PATH)
async def public_key(request: web.Request) -> web.Response:
    releases = _releases(request)
    if releases is None:
        raise NotFound(f"no release key: {OFF}")
    armored = releases.public_key()
    if not armored:
        raise NotFound("no release key yet: the first cut makes it (or start with --release-key)")
    return web.Response(text=armored, content_type="text/plain", charset="utf-8")


def _files_of(request: web.Request) -> Releases:
    releases = _releases(request)
    if releases is None:
        raise NotFound(f"{NOT_FOUND}: {OFF}")
    return releases


def _directory(releases: Releases, version: str) -> Path:
    """A listed release's directory: a version's name, in the core's list
    (so neither a cut in progress nor one being deleted), or NotFound."""
    if not VERSION_RE.fullmatch(version):
        raise NotFound(f"{NOT_FOUND}: {version[:40]!r}")
    return releases.path(version)


@files.get(RELEASES_PATH + "/{version}/{tail:.*}")
async def release_file(request: web.Request) -> web.StreamResponse:
    base = _directory(_files_of(request), request.match_info["version"])
    path = await asyncio.to_thread(served_file, base, request.match_info["tail"], f"release {base.name}")
    return BinhostFile(path, headers=IMMUTABLE)


@files.get(CURRENT_PATH + "/{tail:.*}")
async def current_file(request: web.Request) -> web.StreamResponse:
    releases = _files_of(request)
    # The core sets this once the link is written: a promote or rollback is served from the next request.
    version = releases.current()
    if version is None:
        raise NotFound("no release is current yet (none was promoted)")
    base = _directory(releases, version)
    path = await asyncio.to_thread(served_file, base, request.match_info["tail"], f"release {version}")
    return BinhostFile(path, headers=REVALIDATE)
