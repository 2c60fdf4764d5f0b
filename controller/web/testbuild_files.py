"""A test build's log and packages on the public tier.

``GET /api/v1/test-build/{id}/log`` (and the admin tier's
``/admin/api/test-builds/{id}/log``, for swarm-cli and the console) is the
build log as the drone streamed it (text); with ``follow=1`` the answer
stays open and goes on as the log grows, until the build has ended and all
of it is sent. The packages of
test builds are served under ``/binhost/test/`` like staging's files, each
answer with an ``X-Build-Swarm-Warning`` header: they are untested and
never released.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from aiohttp import web

from swarm.controller.testbinhost import TEST_PATH, WARNING, WARNING_HEADER
from swarm.controller.testbuilds import FINISHED, TestBuild
from swarm.controller.web import binfiles
from swarm.controller.web.common import SERVICES
from swarm.controller.web.routes import Routes, TextParam
from swarm.controller.web.testbuilds import ID, find_build

public_routes = Routes()
routes = Routes()  # the admin tier's
FOLLOW = TextParam("follow", "1: keep sending as the log grows until the build ends", choices=("0", "1"))
TEXT = "text/plain; charset=utf-8"
CHUNK = 64 * 1024
POLL = 0.25  # seconds between looks at a followed log that did not grow


async def _build(request: web.Request) -> TestBuild:
    _, build = await find_build(request)
    return build


def _log_path(request: web.Request, build: TestBuild) -> Path | None:
    runner = request.app[SERVICES].testrunner
    return runner.log_path(build.build_id) if runner is not None and build.build_id else None


@public_routes.declare(
    "GET",
    "/api/v1/test-build/{id}/log",
    None,
    summary="a test build's build log (text); follow=1 streams it until the build ends",
    params=(ID, FOLLOW),
    errors=(404,),
    content="text/plain",
    notes={404: "no such test build"},
)
@routes.declare(
    "GET",
    "/admin/api/test-builds/{id}/log",
    None,
    summary="a test build's build log (text); follow=1 streams it until the build ends",
    params=(ID, FOLLOW),
    errors=(404,),
    content="text/plain",
    notes={404: "no such test build"},
)
async def build_log(request: web.Request) -> web.StreamResponse:
    build = await _build(request)
    follow = FOLLOW.read(request) == "1"
    path = _log_path(request, build)
    if not follow:
        if path is None or not await asyncio.to_thread(path.is_file):
            return web.Response(text="", content_type="text/plain")  # not started: no log yet
        return web.FileResponse(path, headers={"Content-Type": TEXT})
    response = web.StreamResponse(headers={"Content-Type": TEXT, "Cache-Control": "no-store"})
    await response.prepare(request)
    offset = 0
    while True:
        data = b""
        if path is not None:
            data = await asyncio.to_thread(_read, path, offset)
            offset += len(data)
            if data:
                await response.write(data)
                continue
        if build.state in FINISHED:
            break
        if request.transport is None or request.transport.is_closing():
            return response  # the client went: no reason to wait for the build's end
        await asyncio.sleep(POLL)
        build = await _build(request)
        path = _log_path(request, build)
    await response.write_eof()
    return response


def _read(path: Path, offset: int) -> bytes:
    with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
        fh.seek(offset)
        return fh.read(CHUNK)
    return b""


async def binhost_file(request: web.Request) -> web.StreamResponse:
    """A file of the test binhost (binfiles.served_file says which), with the warning."""
    runner = request.app[SERVICES].testrunner
    assert runner is not None  # the route exists only with test builds
    path = await asyncio.to_thread(
        binfiles.served_file, runner.binhost.pkgdir, request.match_info["tail"], "the test binhost"
    )
    return binfiles.BinhostFile(path, headers={WARNING_HEADER: WARNING})


def install(app: web.Application) -> None:
    """The public tier's: the log route, and the test binhost's files when test builds are on."""
    app.add_routes(public_routes)
    if app[SERVICES].testrunner is not None:
        app.router.add_get(TEST_PATH + "/{tail:.*}", binhost_file)
