"""The admin console's files on the admin tier (the ``swarm.console`` package).

- ``/login`` and ``/login/<file>``: the login page and its own small
  assets; the only files open without a session (auth.OPEN_PATHS and
  auth.OPEN_PREFIXES). A browser that already has a session is sent on
  to the console.
- ``/``: the console; ``/app/<file>`` its modules and stylesheets;
  ``/common/<file>`` the modules it shares with the public page (the
  public tier serves those too); ``/vendor/<file>`` the libraries
  ``make console`` copied from npm (xterm.js, its fit addon). All need the admin session like any admin
  request; a page load without one is redirected to ``/login``
  (:func:`login_redirect`), an asset is refused with 401.

Only names made of letters, digits, ``.``, ``-`` and ``_`` (in folders of
such names) with a known suffix are served, from inside their folder.
Every answer says ``Cache-Control: no-cache`` (a browser revalidates, so
an upgraded controller never runs yesterday's script), ``nosniff`` and a
Content-Security-Policy that allows scripts from this origin only, and no
inline script. Styles allow ``'unsafe-inline'`` on the console page alone:
xterm.js's DOM renderer writes its theme and cell size into ``<style>``
elements it creates.
"""

from __future__ import annotations

import importlib.resources
import logging
import re
from pathlib import Path

from aiohttp import web

from swarm.controller.errors import Unauthenticated, Unavailable
from swarm.controller.web.auth import AUTH, COOKIE, Sessions
from swarm.controller.web.common import Handler

log = logging.getLogger(__name__)

LOGIN_PAGE = "/login"
CONSOLE_PAGE = "/"
PAGES = frozenset({CONSOLE_PAGE})  # pages a browser loads: without a session they go to the login
NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}){0,3}\Z")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
}
_POLICY = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
STRICT_CSP = f"{_POLICY}; style-src 'self'"
CONSOLE_CSP = f"{_POLICY}; style-src 'self' 'unsafe-inline'"
routes = web.RouteTableDef()


def console_dir() -> Path:
    """The console's files: the ``swarm.console`` package (console/ in a checkout)."""
    root = importlib.resources.files("swarm.console")
    if not isinstance(root, Path):
        raise RuntimeError(f"swarm.console is not a folder on disk: {root}")
    return root


def asset_path(folder: Path, name: str) -> Path:
    """The file ``name`` inside ``folder``, or HTTPNotFound."""
    if not NAME_RE.match(name) or ".." in name or Path(name).suffix not in CONTENT_TYPES:
        raise web.HTTPNotFound()
    path = folder / name
    try:
        resolved = path.resolve(strict=True)
    except OSError:
        raise web.HTTPNotFound() from None
    if not resolved.is_file() or not resolved.is_relative_to(folder.resolve()):
        raise web.HTTPNotFound()
    return resolved


def serve(folder: str, name: str, policy: str = STRICT_CSP) -> web.FileResponse:
    path = asset_path(console_dir() / folder, name)
    return web.FileResponse(
        path,
        headers={
            "Content-Type": CONTENT_TYPES[path.suffix],
            "Cache-Control": "no-cache",
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


@web.middleware
async def login_redirect(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A page load without a session goes to the login page (API calls and
    assets keep their 401). The fragment (the console's route) survives
    the redirect: browsers carry it over."""
    try:
        return await handler(request)
    except Unauthenticated:
        if request.method in ("GET", "HEAD") and request.path in PAGES:
            return _see_other(LOGIN_PAGE)
        raise


def _has_session(request: web.Request) -> bool:
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return False
    auth = request.app[AUTH]
    session = auth.sessions.find(Sessions.digest(session_id), auth.clock.time(), touch=False)
    return session is not None and auth.keys.holds(session.key_hash)


@routes.get(LOGIN_PAGE)
async def login_page(request: web.Request) -> web.StreamResponse:
    if _has_session(request):
        return _see_other(CONSOLE_PAGE)
    return serve("login", "index.html")


@routes.get(LOGIN_PAGE + "/{name:.+}")
async def login_asset(request: web.Request) -> web.StreamResponse:
    return serve("login", request.match_info["name"])


@routes.get(CONSOLE_PAGE)
async def console_page(request: web.Request) -> web.StreamResponse:
    if not (console_dir() / "vendor" / "xterm.mjs").is_file():
        raise Unavailable("the console's libraries are not built: run `make console` in the checkout")
    return serve("app", "index.html", CONSOLE_CSP)


@routes.get("/app/{name:.+}")
async def app_asset(request: web.Request) -> web.StreamResponse:
    return serve("app", request.match_info["name"])


@routes.get("/common/{name:.+}")
async def common_asset(request: web.Request) -> web.StreamResponse:
    """Modules the public page shares (the activity waveform): public-safe code, behind the session here."""
    return serve("common", request.match_info["name"])


@routes.get("/vendor/{name:.+}")
async def vendor_asset(request: web.Request) -> web.StreamResponse:
    return serve("vendor", request.match_info["name"])
