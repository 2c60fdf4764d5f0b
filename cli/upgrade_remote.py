"""The controller's public tier as swarm-upgrade reads it (no key, read-only).

- ``/releases/key.asc``: the release key;
- ``/api/v1/releases``: the releases and which one is current;
- ``/api/v1/binrepos.conf?network=N&release=vX``: the binhosts that hold
  a release, the network's first (upgrade_binhosts);
- ``/binhost/releases/{v}/``: a release as Portage reads it, with its
  ``manifest.json`` and ``manifest.json.asc`` beside the ``Packages`` index.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from swarm import __version__
from swarm.cli.upgrade_binhosts import answer_path
from swarm.cli.upgrade_errors import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, UpgradeError
from swarm.cli.upgrade_manifest import VERSION_RE

log = logging.getLogger(__name__)

TIMEOUT = 30.0
# manifest.json of 100,000 packages is some 40 MB; nothing we read is larger.
MAX_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class Listing:
    """What /api/v1/releases says: the current release, the one before, all of them."""

    current: str | None
    previous: str | None
    versions: tuple[str, ...]  # newest first


class Missing(UpgradeError):
    """HTTP 404 from the controller."""


def check_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UpgradeError(
            f"not an http(s) URL: {url!r} (the controller's public tier, e.g. http://host:8100)", EXIT_USAGE
        )
    return url.rstrip("/")


class PublicTier:
    def __init__(self, url: str) -> None:
        self.url = check_url(url)

    def release_url(self, version: str) -> str:
        """The release's binhost directory, as binrepos.conf's sync-uri."""
        return f"{self.url}/binhost/releases/{version}/"

    def fetch(self, path: str) -> bytes:
        url = self.url + path
        request = urllib.request.Request(url, headers={"User-Agent": f"swarm-upgrade/{__version__}"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                body: bytes = response.read(MAX_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                raise Missing(f"{url}: not found on the controller", EXIT_FAILED) from None
            raise UpgradeError(f"{url}: HTTP {exc.code} {exc.reason}", EXIT_UNREACHABLE) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UpgradeError(
                f"cannot reach the controller at {self.url}: {reason}", EXIT_UNREACHABLE
            ) from None
        if len(body) > MAX_BYTES:
            raise UpgradeError(f"{url}: larger than {MAX_BYTES >> 20} MB, refused")
        return body

    def key(self) -> bytes:
        return self.fetch("/releases/key.asc")

    def manifest(self, version: str) -> tuple[bytes, bytes]:
        """manifest.json of a release and its detached signature (unverified)."""
        base = f"/binhost/releases/{version}/manifest.json"
        try:
            manifest = self.fetch(base)
        except UpgradeError as exc:
            if exc.code == EXIT_FAILED:
                raise UpgradeError(f"the controller has no release {version}") from None
            raise
        return manifest, self.fetch(base + ".asc")

    def binrepos(self, version: str, network: str) -> str | None:
        """The controller's binrepos.conf answer for ``version`` on ``network``
        (unverified: read by upgrade_binhosts); None from a controller without
        one (before binhosts by network), whose own binhost is then the only one."""
        try:
            return self.fetch(answer_path(version, network)).decode(errors="replace")
        except Missing:
            return None

    def packages_index(self, version: str) -> str:
        return self.fetch(f"/binhost/releases/{version}/Packages").decode(errors="replace")

    def releases(self) -> Listing:
        raw = self.fetch("/api/v1/releases")
        try:
            return parse_listing(json.loads(raw))
        except (ValueError, TypeError, KeyError) as exc:
            raise UpgradeError(f"{self.url}/api/v1/releases: unexpected answer ({exc})") from None

    def current(self) -> str:
        current = self.releases().current
        if current is None:
            raise UpgradeError(f"the controller at {self.url} has no current release (none promoted yet)")
        return current


def parse_listing(body: Any) -> Listing:
    """/api/v1/releases: {"current": v|null, "previous": v|null, "releases": [{"version": v, ...}]}."""
    if not isinstance(body, dict) or not isinstance(body.get("releases"), list):
        raise ValueError("no list of releases")
    current, previous = body.get("current"), body.get("previous")
    for name, value in (("current", current), ("previous", previous)):
        if value is not None and not (isinstance(value, str) and VERSION_RE.match(value)):
            raise ValueError(f"{name} is not a release version: {value!r}")
    versions = tuple(str(item["version"]) for item in body["releases"])
    return Listing(current, previous, versions)
