"""The client's address, behind reverse proxies the admin trusts.

``X-Forwarded-For`` is a list that every proxy appends its peer to, so
only its right end is written by proxies; anything to the left of the
first hop that is not one of ours may be the client's own invention. The
client is therefore the rightmost address that is not a trusted proxy,
and the header counts only when the TCP peer itself is a trusted proxy
(``--trusted-proxies``, none by default). Otherwise the client is the TCP
peer, whatever the header says: anyone can send one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
UNKNOWN = "unknown"


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses or CIDR networks; ValueError names a bad one."""
    networks: list[Network] = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item[:60]!r} is not an address or a network like 10.0.0.0/8") from None
    return tuple(networks)


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address in network for network in networks)


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client of a request from ``peer`` with these X-Forwarded-For headers."""
    hop = _address(peer) if peer else None
    if hop is None:
        return peer or UNKNOWN
    if not trusted or not _trusted(hop, trusted):
        return str(hop)
    entries = [e for header in forwarded_for for e in header.split(",")]
    for entry in reversed(entries):
        address = _address(entry)
        if address is None:
            # Garbage that a trusted hop passed on: the client is that hop as far as we can tell.
            break
        hop = address
        if not _trusted(hop, trusted):
            break
    return str(hop)
