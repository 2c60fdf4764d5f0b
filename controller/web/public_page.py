"""The public status page on the public tier (files of the ``swarm.console`` package).

- ``/``: console/public/index.html
- ``/public/<file>``: its script, stylesheet and icon
- ``/common/<file>``: the modules it shares with the admin console (the
  activity waveform)

Nothing else of the console is served here: the admin console (``/app``),
its libraries (``/vendor``) and the login page stay on the admin tier. The
files go out with the admin tier's headers (console.serve): no-cache,
nosniff and a strict Content-Security-Policy without ``'unsafe-inline'``.
These routes are pages, not API: they stay out of the public OpenAPI
document, which covers the API routes only (public.py, releases.py).
"""

from __future__ import annotations

from aiohttp import web

from swarm.controller.web.console import serve

routes = web.RouteTableDef()


@routes.get("/")
async def status_page(request: web.Request) -> web.StreamResponse:
    return serve("public", "index.html")


@routes.get("/public/{name:.+}")
async def public_asset(request: web.Request) -> web.StreamResponse:
    return serve("public", request.match_info["name"])


@routes.get("/common/{name:.+}")
async def common_asset(request: web.Request) -> web.StreamResponse:
    return serve("common", request.match_info["name"])
