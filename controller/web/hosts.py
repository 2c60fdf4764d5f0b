"""The names each web tier answers to, and the browser origins the admin
tier accepts.

A DNS-rebinding page (``http://evil.example:8093`` whose name the attacker
then points at 127.0.0.1) reaches a tier with ``Host: evil.example:8093``
and ``Origin: http://evil.example:8093``; comparing Origin with the
request's own Host accepts it. So each tier answers only to names it was
given: ``localhost``, ``127.0.0.1``, ``::1``, the host's name and FQDN,
the tier's bind address (every address of the host's interfaces when it
binds to all of them), ``--tls-names``, the hosts of ``--admin-origins``,
the host of ``--public-url`` (public tier), and ``--allowed-hosts``. A
request naming another host gets 421, a malformed Host 400, both in the
JSON error shape; a request without Host (HTTP/1.0; browsers always send
one) is let through. Only the name is compared, not the port: a reverse
proxy may keep its own.

An admin-tier ``Origin`` is allowed when it is one of ``--admin-origins``,
or ``SCHEME://NAME[:PORT]`` with NAME one of the tier's names, and SCHEME
and PORT those the request came in on (its socket, not its Host header).
"""

from __future__ import annotations

import logging
import socket
import urllib.parse
from dataclasses import dataclass

from aiohttp import web

from swarm.controller.config import ControllerConfig
from swarm.controller.errors import InvalidArgument
from swarm.controller.web.common import Handler
from swarm.controller.web.hostname import normalize, split_host

log = logging.getLogger(__name__)

WILDCARDS = frozenset({"", "0.0.0.0", "::"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def interface_addresses() -> list[str]:
    """Every address of the host's network interfaces."""
    # Here, not at the top: only a tier bound to every address asks, and
    # psutil is some 20 ms of a controller's start otherwise.
    import psutil

    return [
        a.address.split("%")[0]
        for addresses in psutil.net_if_addrs().values()
        for a in addresses
        if a.family in (socket.AF_INET, socket.AF_INET6)
    ]


def _url_host(url: str) -> str | None:
    try:
        return urllib.parse.urlsplit(url).hostname
    except ValueError:
        return None


def tier_names(config: ControllerConfig, bind: str, *, public: bool) -> frozenset[str]:
    """The names a tier bound to ``bind`` answers to (see the module's docstring)."""
    names: list[str] = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    names += interface_addresses() if bind in WILDCARDS else [bind]
    names += [n.strip() for n in config.tls_names.split(",")]
    names += [h for h in (_url_host(o) for o in config.admin_origin_list) if h]
    if public and config.public_url:
        names += [h for h in [_url_host(config.public_url)] if h]
    names += config.allowed_host_list
    return frozenset(n for n in (normalize(x) for x in names if x) if n)


@dataclass(frozen=True, slots=True)
class HostPolicy:
    names: frozenset[str]
    origins: frozenset[str]  # --admin-origins, as scheme://host[:port] in lower case

    @classmethod
    def for_tier(cls, config: ControllerConfig, bind: str, *, public: bool) -> HostPolicy:
        return cls(tier_names(config, bind, public=public), frozenset(config.admin_origin_list))

    def allows_host(self, header: str | None) -> bool:
        """Whether a request with this Host header is for this tier;
        InvalidArgument if the header is malformed."""
        if header is None:
            return True
        name = split_host(header)
        if name is None:
            raise InvalidArgument("malformed Host header")
        return name in self.names

    def allows_origin(self, origin: str, scheme: str, port: int | None) -> bool:
        """Whether a browser page at ``origin`` may act on this tier, for a
        request that came in over ``scheme`` to local ``port``."""
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins:
            return True
        try:
            parts = urllib.parse.urlsplit(origin)
            origin_port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return False
        if parts.scheme != scheme or origin_port != port or port is None:
            return False
        if parts.path or parts.query or parts.fragment or "@" in parts.netloc or parts.hostname is None:
            return False
        return normalize(parts.hostname) in self.names


HOSTS = web.AppKey("host_policy", HostPolicy)


def local_port(request: web.Request) -> int | None:
    """The port of the socket the request came in on."""
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    return int(sockname[1]) if isinstance(sockname, tuple) and len(sockname) >= 2 else None


@web.middleware
async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer only requests whose Host is one of the tier's names (421)."""
    if not request.app[HOSTS].allows_host(request.headers.get("Host")):
        raise web.HTTPMisdirectedRequest(
            text="this controller does not answer to that host name: use one it knows, "
            "or add it with --allowed-hosts"
        )
    return await handler(request)
