"""Host names and addresses as the web tiers' allow-list compares them
(web/hosts.py). Standard library only, so that config.py can check names."""

from __future__ import annotations

import ipaddress
import re

LABELS_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\Z")


def normalize(name: str) -> str | None:
    """A host name or address as compared (lower case, no trailing dot, an
    IPv6 address without brackets and compressed), or None if malformed."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    name = name.removesuffix(".")
    return name if len(name) <= 253 and LABELS_RE.match(name) else None


def split_host(header: str) -> str | None:
    """The name in a Host header (``name``, ``name:port``, ``[v6]:port``), or None if malformed."""
    header = header.strip()
    if header.startswith("["):
        inside, bracket, rest = header[1:].partition("]")
        if not bracket or ":" not in inside:
            return None
        if rest and not (rest.startswith(":") and _port_ok(rest[1:])):
            return None
        return normalize(inside)
    name, colon, port = header.partition(":")
    if colon and not _port_ok(port):
        return None
    return normalize(name)


def _port_ok(port: str) -> bool:
    return port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535
