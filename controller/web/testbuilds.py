"""Test builds over HTTP (controller/testbuilds.py is the core).

Public tier (``public_routes``): ``POST /api/v1/test-build``, the public
tier's one write (a test-build token as a bearer token; an Origin, if
sent, must be the tier's own; the body at most 64 KiB), a build and the
recent builds, without who is mailed or called back.
Admin tier (``routes``): the builds with their notifications, cancel,
and the tokens: made (the secret shown once), listed, revoked.

Without Portage (no --portage-eprefix) there are no test builds: the
write answers 409, the lists are empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from aiohttp import web

from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from swarm.controller.services import Services
from swarm.controller.testbuild_rules import (
    MAX_ATOM,
    MAX_EMAIL,
    MAX_USE,
    MAX_WEBHOOK,
    Rate,
    check_user,
    retry_after,
)
from swarm.controller.testbuilds import (
    BUILD_PREFIX,
    MAX_BURST,
    MAX_QUEUED_PER_TOKEN,
    STATES,
    TEST_BINHOST_PATH,
    TOKEN_PREFIX,
    TestBuild,
    TestBuildRefused,
    TestBuilds,
)
from swarm.controller.web.common import SERVICES, error_response, json_response
from swarm.controller.web.healing import KEY_NAME
from swarm.controller.web.hosts import HOSTS, local_port
from swarm.controller.web.parse import json_body
from swarm.controller.web.routes import Body, IntParam, Routes, TextParam
from swarm.controller.web.views.base import Doc, Length, Range
from swarm.controller.web.views.testbuilds import (
    AdminTestBuildsPage,
    AdminTestBuildView,
    NewTestBuildTokenView,
    SubmittedView,
    TestBuildsPage,
    TestBuildTokensPage,
    TestBuildTokenView,
    TestBuildView,
    admin_build_view,
    build_view,
    new_token_view,
    submitted_view,
    token_view,
)

SUBMIT_PATH = "/api/v1/test-build"
NO_TEST_BUILDS = "test builds are off: the controller runs without Portage (--portage-eprefix)"
routes = Routes()  # the admin tier's
public_routes = Routes()

ID = TextParam("id", "a test build's id (tb-...)", where="path", max_len=40)
TOKEN_ID = TextParam("id", "a test-build token's id (tbt-...)", where="path", max_len=40)
LIMIT = IntParam("limit", "at most this many builds, newest first", default=50, lo=1, hi=1000)
STATE = TextParam("state", "only builds in this state", choices=STATES)


@dataclass(frozen=True, slots=True)
class SubmitBody:
    package: Annotated[
        str, Length(1, MAX_ATOM), Doc("a plain atom: category/name or =category/name-version[-rN]")
    ]
    notify: Annotated[str, Length(0, MAX_EMAIL), Doc("an email address to mail the result to")]
    webhook: Annotated[str, Length(0, MAX_WEBHOOK), Doc("an http(s) URL to POST the result's JSON to")]
    use: Annotated[tuple[str, ...], Length(0, MAX_USE), Doc('USE flags the admin allows: "foo", "-bar"')]


@dataclass(frozen=True, slots=True)
class NewTokenBody:
    user: Annotated[str, Length(1, 64), Doc("who holds it: shown with every build it asks for")]
    rate: Annotated[str, Doc("requests per period: 5/h (s, m, h or d)")]
    burst: Annotated[int, Range(1, MAX_BURST), Doc("requests at once (default: the rate's count)")]
    max_queued: Annotated[int, Range(1, MAX_QUEUED_PER_TOKEN), Doc("its builds queued at once (default 3)")]


DEFAULT_MAX_QUEUED = 3


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


def _queue(request: web.Request) -> TestBuilds:
    queue = _services(request).testbuilds
    if queue is None:
        raise FailedPrecondition(NO_TEST_BUILDS)
    return queue


def _base(s: Services) -> str:
    """The test binhost's URL, for the packages' links."""
    local = s.binhosts.local_url if s.binhosts is not None else ""
    if local:
        return local.rstrip("/") + TEST_BINHOST_PATH.removeprefix("/binhost")
    return TEST_BINHOST_PATH


def _build_id(request: web.Request) -> str:
    value = ID.read(request) or ""
    if not value.startswith(BUILD_PREFIX):
        raise NotFound(f"no test build {value[:40]!r}")
    return value


async def find_build(request: web.Request) -> tuple[TestBuilds, TestBuild]:
    """The test build the path's ``id`` names, with its queue: NotFound if
    there is none (or the controller runs no test builds)."""
    build_id = _build_id(request)
    queue = _services(request).testbuilds
    build = await queue.get(build_id) if queue is not None else None
    if queue is None or build is None:
        raise NotFound(f"no test build {build_id[:40]!r}")
    return queue, build


async def _recent(request: web.Request) -> tuple[TestBuilds, list[TestBuild]] | None:
    """The builds a list asks for (``limit``, ``state``), newest first, with
    their queue; None when the controller runs no test builds."""
    limit = LIMIT.read(request)
    state = STATE.read(request)
    queue = _services(request).testbuilds
    if queue is None:
        return None
    return queue, await queue.recent(limit, state)  # type: ignore[arg-type]  # one of STATES


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else ""


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TestBuildRefused(400, f"{key} must be a string")
    return value


def _refused(exc: TestBuildRefused) -> web.Response:
    headers: dict[str, str] = {}
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="test builds"'
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(retry_after(exc.retry_after_s))
    return error_response(exc.http_status, exc.message, headers)


@public_routes.declare(
    "POST",
    SUBMIT_PATH,
    SubmittedView,
    status=202,
    summary="ask for a test build of one package (Authorization: Bearer TOKEN); its packages are "
    "never released",
    body=Body(SubmitBody, required=("package",)),
    errors=(401, 403, 409, 429),
    notes={
        400: "not a plain package atom, unknown or masked in the swarm's tree, USE not allowed, "
        "a bad email address or webhook",
        401: "no test-build token, an unknown one or a revoked one",
        403: "an Origin other than this tier's",
        409: NO_TEST_BUILDS,
        429: "this token's rate or queued cap, or the global queued cap, is reached (see Retry-After)",
    },
)
async def submit(request: web.Request) -> web.Response:
    origin = request.headers.get("Origin")
    if origin is not None and not request.app[HOSTS].allows_origin(
        origin, request.scheme, local_port(request)
    ):
        raise PermissionDenied("cross-origin request refused")
    queue = _queue(request)
    try:
        secret = _bearer(request)
        queue.check_token(secret)  # before the body: a stranger gets 401 whatever they send
        body = await json_body(request, curl_d=True)
        unknown = set(body) - {"package", "notify", "webhook", "use"}
        if unknown:
            raise TestBuildRefused(400, f"unknown field {sorted(unknown)[0][:40]!r}")
        package, use = body.get("package"), body.get("use", [])
        if not isinstance(package, str):
            raise TestBuildRefused(400, "package must be a string: category/name or =category/name-version")
        if not isinstance(use, list) or not all(isinstance(flag, str) for flag in use):
            raise TestBuildRefused(400, 'use must be a list of USE flags, like ["foo", "-bar"]')
        done = await queue.submit(
            secret,
            package,
            notify_email=_text(body, "notify"),
            webhook_url=_text(body, "webhook"),
            use=tuple(use),
        )
    except TestBuildRefused as exc:
        return _refused(exc)
    return json_response(submitted_view(done, f"{SUBMIT_PATH}/{done.build.id}"), status=202)


@public_routes.declare(
    "GET", SUBMIT_PATH + "/{id}", TestBuildView, summary="one test build", params=(ID,), errors=(404,)
)
async def one(request: web.Request) -> web.Response:
    queue, build = await find_build(request)
    return json_response(build_view(queue, build, _base(_services(request))))


@public_routes.declare(
    "GET",
    "/api/v1/test-builds",
    TestBuildsPage,
    summary="recent test builds, newest first (no tokens, emails or webhooks)",
    params=(LIMIT, STATE),
)
async def recent(request: web.Request) -> web.Response:
    listed = await _recent(request)
    if listed is None:
        return json_response(TestBuildsPage(()))
    queue, found = listed
    base = _base(_services(request))
    return json_response(TestBuildsPage(tuple(build_view(queue, b, base) for b in found)))


# -- admin tier ---------------------------------------------------------------


def _by(request: web.Request) -> str:
    return f"admin:{request[KEY_NAME]}"


@routes.declare(
    "GET",
    "/admin/api/test-builds",
    AdminTestBuildsPage,
    summary="test builds, newest first, with who asked and where the result goes",
    params=(LIMIT, STATE),
)
async def admin_list(request: web.Request) -> web.Response:
    listed = await _recent(request)
    if listed is None:
        return json_response(AdminTestBuildsPage(()))
    queue, found = listed
    base = _base(_services(request))
    return json_response(AdminTestBuildsPage(tuple(admin_build_view(queue, b, base) for b in found)))


@routes.declare(
    "GET",
    "/admin/api/test-builds/{id}",
    AdminTestBuildView,
    summary="one test build, with who asked and where the result goes",
    params=(ID,),
    errors=(404,),
)
async def admin_one(request: web.Request) -> web.Response:
    queue, build = await find_build(request)
    return json_response(admin_build_view(queue, build, _base(_services(request))))


@routes.declare(
    "POST",
    "/admin/api/test-builds/{id}/cancel",
    AdminTestBuildView,
    summary="cancel a test build: a queued one at once; a running one is stopped on its drone "
    "(it shows running until the drone says it stopped)",
    params=(ID,),
    errors=(404, 409),
    notes={409: "it has finished already, or test builds are off"},
)
async def cancel(request: web.Request) -> web.Response:
    s = _services(request)
    queue = _queue(request)
    build = await queue.cancel(_build_id(request), _by(request))
    return json_response(admin_build_view(queue, build, _base(s)))


@routes.declare(
    "GET", "/admin/api/test-build-tokens", TestBuildTokensPage, summary="test-build tokens, newest first"
)
async def tokens(request: web.Request) -> web.Response:
    queue = _services(request).testbuilds
    found = await queue.tokens() if queue is not None else []
    return json_response(TestBuildTokensPage(tuple(token_view(t) for t in found)))


@routes.declare(
    "POST",
    "/admin/api/test-build-tokens",
    NewTestBuildTokenView,
    status=201,
    summary="make a test-build token for a user; its secret is in this answer only",
    body=Body(NewTokenBody, required=("user", "rate")),
    errors=(409,),
    notes={409: NO_TEST_BUILDS},
)
async def create_token(request: web.Request) -> web.Response:
    queue = _queue(request)
    body = await json_body(request)
    unknown = set(body) - {"user", "rate", "burst", "max_queued"}
    if unknown:
        raise InvalidArgument(f"unknown field {sorted(unknown)[0][:40]!r}")
    user = check_user(body.get("user"))
    rate = Rate.parse(body.get("rate"))
    burst = _whole(body.get("burst", rate.count), "burst")
    max_queued = _whole(body.get("max_queued", DEFAULT_MAX_QUEUED), "max_queued")
    info, secret = await queue.create_token(user, rate, burst, max_queued, _by(request))
    return json_response(new_token_view(info, secret), status=201)


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what} must be a whole number")
    return value


@routes.declare(
    "DELETE",
    "/admin/api/test-build-tokens/{id}",
    TestBuildTokenView,
    summary="revoke a test-build token: refused from now on, still listed (its queued builds stay)",
    params=(TOKEN_ID,),
    errors=(404,),
)
async def revoke_token(request: web.Request) -> web.Response:
    queue = _services(request).testbuilds
    token_id = TOKEN_ID.read(request) or ""
    if queue is None or not token_id.startswith(TOKEN_PREFIX):
        raise NotFound(f"no test-build token {token_id[:40]!r}")
    return json_response(token_view(await queue.revoke_token(token_id, _by(request))))
