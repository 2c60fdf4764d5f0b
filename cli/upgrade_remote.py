"""The controller's public tier as swarm-upgrade reads it (no key, read-only).

- ``/releases/key.asc``: the release key;
- ``/api/v1/releases``: the releases and which one is current;
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
from swarm.cli.upgrade_errors import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, UpgradeError

log = logging.getLogger(__name__)

TIMEOUT = 30.0
# manifest.json of 100,000 packages is some 40 MB; nothing we read is larger.
MAX_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class ReleaseSummary:
    version: str
    standing: str  # "current", "previous" or ""
    package_count: int | None
    promoted_at: float | None


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
                raise UpgradeError(f"{url}: not found on the controller", EXIT_FAILED) from None
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

    def packages_index(self, version: str) -> str:
        return self.fetch(f"/binhost/releases/{version}/Packages").decode(errors="replace")

    def releases(self) -> list[ReleaseSummary]:
        """Newest first, as /api/v1/releases lists them."""
        raw = self.fetch("/api/v1/releases")
        try:
            return parse_releases(json.loads(raw))
        except (ValueError, TypeError, KeyError) as exc:
            raise UpgradeError(f"{self.url}/api/v1/releases: unexpected answer ({exc})") from None

    def current(self) -> str:
        current = next((r.version for r in self.releases() if r.standing == "current"), None)
        if current is None:
            raise UpgradeError(f"the controller at {self.url} has no current release (none promoted yet)")
        return current


def parse_releases(body: Any) -> list[ReleaseSummary]:
    items = body["releases"] if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise ValueError("no list of releases")
    current = body.get("current") if isinstance(body, dict) else None
    found = []
    for item in items:
        manifest = item.get("manifest") if isinstance(item.get("manifest"), dict) else item
        version = str(item.get("version") or manifest["version"])
        standing = item.get("standing") or ("current" if version == current else "")
        count = item.get("package_count", manifest.get("package_count"))
        found.append(
            ReleaseSummary(
                version=version,
                standing=str(standing),
                package_count=int(count) if isinstance(count, int) else None,
                promoted_at=item.get("promoted_at"),
            )
        )
    return found
