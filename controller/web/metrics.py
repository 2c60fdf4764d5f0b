"""``GET /metrics``: the controller's Prometheus metrics (controller/metrics.py).

On the admin tier it is authenticated like every admin request: a scraper
sends the admin key as ``Authorization: Bearer KEY`` (Prometheus's
``authorization`` setting) or as ``X-Admin-Key``. With ``--metrics-port``
the controller also serves it, and nothing else, without authentication
on a listener of its own bound to the admin bind address, for scrapers on
a trusted network. That listener answers only to the admin tier's host
names (web/hosts.py): a DNS-rebinding page cannot read it either.

The text is prometheus-client's own: the Prometheus text format, or
OpenMetrics when the scraper asks for it in Accept (Prometheus does),
gzipped when it accepts that.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import hdrs, web

from swarm.controller.errors import NotFound
from swarm.controller.services import Services
from swarm.controller.web import hosts
from swarm.controller.web.common import SERVICES, json_errors
from swarm.controller.web.parse import strict_input
from swarm.controller.web.streams import STREAMS

PATH = "/metrics"
# The terminal websocket: its clients are the shell sessions with a viewer attached.
SSH_ENDPOINT = "/ws/ssh/{drone}"
routes = web.RouteTableDef()


@routes.get(PATH)
async def metrics(request: web.Request) -> web.StreamResponse:
    found = request.app[SERVICES].metrics
    if found is None:
        raise NotFound("this controller keeps no metrics")
    accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
    body, headers = await found.scrape(accept, request.headers.get(hdrs.ACCEPT_ENCODING, ""))
    return web.Response(body=body, headers=headers)


def websocket_clients(app: web.Application) -> Callable[[], dict[str, int]]:
    """Open websockets of the admin tier ``app`` by endpoint (every one of
    its websocket routes, 0 when none is open), read when scraped."""
    endpoints = [r.canonical for r in app.router.resources() if r.canonical.startswith("/ws/")]

    def count() -> dict[str, int]:
        counts = dict.fromkeys(endpoints, 0)
        counts.update(app[STREAMS].counts())
        shells = app[SERVICES].shells
        if shells is not None:
            counts[SSH_ENDPOINT] = sum(1 for s in shells.sessions() if s.state == "attached")
        return counts

    return count


def create_app(services: Services) -> web.Application:
    """The ``--metrics-port`` listener: /metrics and nothing else, without authentication."""
    config = services.config
    app = web.Application(middlewares=[json_errors, hosts.check_host, strict_input])
    app[SERVICES] = services
    app[hosts.HOSTS] = hosts.HostPolicy.for_tier(config, config.admin_bind, public=False)
    app.add_routes(routes)
    return app
