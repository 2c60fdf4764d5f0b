"""Which binhosts a client takes a release from: the controller's answer.

``GET /api/v1/binrepos.conf?network=N&release=vX`` (the network swarm-upgrade
``trust --network`` remembered; without one, ``?release=vX`` alone: every
mirror as a fallback) answers a binrepos.conf with one pinned section per
binhost that holds the release, ``[swarm-vX-NAME]`` with ``sync-uri =
URL/releases/vX/`` and a ``priority``: the mirrors of the network first,
then the others, then the controller.

The answer is read, not copied: each section must be a pinned section of
that release with an http(s) sync-uri, and swarm-upgrade writes the entries
itself, each with ``verify-signature = true`` whatever the answer said. A
mirror is not trusted: Portage verifies every gpkg against the release key,
and swarm-upgrade checks each fetched file against the signed manifest,
wherever it came from.

Priorities are swarm-upgrade's, in the answer's order (its priorities,
highest first): ``PRIORITY`` for the first, one less for each next one, so
all of them stay above a stock install's binhosts (gentoobinhost.conf) and
the answer's order decides among them. Portage fetches a package from the
binhost of the highest priority that lists it, and from the next one when
that binhost cannot be reached. The controller's own URL for the release is
added last when the answer does not name it, so an answer of mirrors alone
still falls back to the controller.
"""

from __future__ import annotations

import configparser
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from swarm.cli.upgrade_errors import EXIT_USAGE, UpgradeError

REPO_PREFIX = "swarm-"
# Above any binhost of a stock install: the release decides when it has a package.
PRIORITY = 9999
# As controller/binhosts.py (tests/test_upgrade_parts.py keeps them in step):
# a target's name, and a network's name as drones report it.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}\Z")
NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# A section (and Portage's download cache) of ours: swarm-vX, or swarm-vX-NAME
# for one binhost of vX. A version's -N is digits, a name starts with a letter.
SECTION_RE = re.compile(
    r"^swarm-(?P<version>v[0-9]{4}\.[0-9]{2}\.[0-9]{2}(?:-[1-9][0-9]{0,3})?)(?:-(?P<name>[a-z][a-z0-9-]{0,31}))?\Z"
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One binrepos.conf section of a release."""

    section: str  # swarm-vX or swarm-vX-NAME
    sync_uri: str
    priority: int

    @property
    def binhost(self) -> str:
        """The binhost's name as the controller calls it ("controller" for the plain swarm-vX)."""
        match = SECTION_RE.match(self.section)
        return (match["name"] if match else None) or "controller"

    def render(self) -> str:
        # Portage's parser interpolates %(...)s: a % of a URL is written doubled.
        uri = self.sync_uri.replace("%", "%%")
        return f"[{self.section}]\nsync-uri = {uri}\npriority = {self.priority}\nverify-signature = true\n"


def section_version(section: str) -> str | None:
    """The release a section (or download cache) of ours is for; None if it is not ours."""
    match = SECTION_RE.match(section)
    return match["version"] if match else None


def check_network(network: str) -> str:
    if not NETWORK_RE.match(network):
        raise UpgradeError(
            f"not a network name: {network!r} (letters, digits, '.', '_', '-'; as a drone reports it)",
            EXIT_USAGE,
        )
    return network


def answer_path(version: str, network: str) -> str:
    query = {"network": network, "release": version} if network else {"release": version}
    return "/api/v1/binrepos.conf?" + urllib.parse.urlencode(query)


def _http_url(value: str) -> bool:
    parsed = urllib.parse.urlsplit(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc) and not any(c.isspace() for c in value)


def _parser(text: str) -> configparser.ConfigParser:
    """binrepos.conf read as Portage reads it (%% is %); configparser.Error if it cannot be."""
    parser = configparser.ConfigParser(default_section="\x00")
    parser.read_string(text)
    return parser


def parse_answer(text: str, version: str) -> list[tuple[str, str, int]]:
    """The answer's sections as (section, sync-uri, priority), in its order;
    ValueError or configparser.Error saying what is wrong with it."""
    parser = _parser(text)
    found = []
    for section in parser.sections():
        match = SECTION_RE.match(section)
        if match is None or match["version"] != version or match["name"] is None:
            raise ValueError(f"[{section}] is not a section of {version} (swarm-{version}-NAME)")
        uri = parser[section].get("sync-uri", "")
        if not _http_url(uri):
            raise ValueError(f"[{section}] has no http(s) sync-uri")
        try:
            priority = int(parser[section].get("priority", "0"))
        except ValueError:
            raise ValueError(f"[{section}] has a priority that is not a number") from None
        found.append((section, uri, priority))
    return found


def entries(answer: Sequence[tuple[str, str, int]], version: str, controller_uri: str) -> list[Entry]:
    """The sections swarm-upgrade writes for ``version``: the answer's, by its
    priority (highest first, its order among equals), then the controller's
    own unless the answer names it."""
    ranked = sorted(enumerate(answer), key=lambda item: (-item[1][2], item[0]))
    uris = [uri for _i, (_section, uri, _priority) in ranked]
    if controller_uri.rstrip("/") not in {uri.rstrip("/") for uri in uris}:
        ranked.append((len(answer), (REPO_PREFIX + version, controller_uri, 0)))
    return [Entry(section, uri, PRIORITY - rank) for rank, (_i, (section, uri, _p)) in enumerate(ranked)]


def read_entries(text: str) -> list[Entry]:
    """The entries of ours in binrepos.conf text (swarm-upgrade's own file or block)."""
    try:
        parser = _parser(text)
    except configparser.Error:
        return []
    found = []
    for section in parser.sections():
        if SECTION_RE.match(section):
            try:
                uri, priority = parser[section].get("sync-uri", ""), int(parser[section].get("priority", "0"))
            except (configparser.Error, ValueError):
                uri, priority = "", 0
            found.append(Entry(section, uri, priority))
    return found
