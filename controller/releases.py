"""Releases: dated, immutable, signed snapshots of the staging binhost.

This module is the contract the web tier, swarm-cli, the console, the
release schedule and swarm-upgrade are written against. Layout on disk
(``ControllerConfig.releases_dir``, on the same filesystem as staging so
that a cut hard-links instead of copying)::

    <releases_dir>/
      releases/v2026.12.05/          one release, never changed once here
        Packages                     its own Portage index
        manifest.json                see Manifest below
        manifest.json.asc            detached armored signature of manifest.json
        <cat>/<pn>/<file>.gpkg.tar   hard links to staging's signed gpkgs
      releases/.v2026.12.05.partial/ a cut in progress; removed at start
      current -> releases/vX         symlink, replaced by rename (atomic)
      previous -> releases/vY        symlink, replaced by rename (atomic)
      promotions.json                every promote and rollback, oldest first
      gnupg/                         the release key's GnuPG home (0700)
      key.asc                        its public half, armored

Served read-only on the public tier: ``/binhost/releases/{v}/``,
``/binhost/current/``, ``/releases.json``, ``/releases/key.asc``,
``/api/v1/releases[/{v}]`` and ``/api/v1/releases/{a}/diff/{b}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# vYYYY.MM.DD, then vYYYY.MM.DD-1, -2 ... for more on one day.
VERSION_RE = re.compile(r"^v\d{4}\.\d{2}\.\d{2}(?:-[1-9]\d{0,3})?\Z")
MANIFEST_FORMAT = 1

Standing = Literal["current", "previous", ""]


@dataclass(frozen=True, slots=True)
class ReleasePackage:
    cpv: str  # category/package-version, as Portage writes it
    slot: str  # SLOT from the index ("0" when the index has none)
    path: str  # relative to the release directory, as in its Packages index
    build_id: str  # the swarm build that produced it ("" if staged before records)
    drone: str  # name of the drone that built it ("" when unknown)
    sha256: str
    size: int
    use: str  # USE as in the index: space-separated enabled flags


@dataclass(frozen=True, slots=True)
class Repository:
    name: str
    revision: str  # git commit of the tree, "" when it is not a git checkout
    snapshot_time: float | None  # metadata/timestamp.chk, seconds since the epoch


@dataclass(frozen=True, slots=True)
class Manifest:
    """manifest.json, field for field (plus ``format``: MANIFEST_FORMAT)."""

    version: str
    created_at: float  # seconds since the epoch
    notes: str
    sessions: tuple[str, ...]  # ids of the build sessions its packages came from
    profile: str  # the controller prefix's Portage profile
    repository: Repository
    kernel: str  # cpv of the kernel package when there is one, else ""
    packages: tuple[ReleasePackage, ...]  # sorted by cpv
    total_size: int
    signing_key: str  # fingerprint of the key that signed the gpkgs and this manifest

    @property
    def package_count(self) -> int:
        return len(self.packages)


@dataclass(frozen=True, slots=True)
class Release:
    manifest: Manifest
    standing: Standing  # "current", "previous" or ""
    promoted_at: float | None  # the last time it was promoted, if ever

    @property
    def version(self) -> str:
        return self.manifest.version


@dataclass(frozen=True, slots=True)
class Promotion:
    """One line of promotions.json."""

    version: str
    action: Literal["promote", "rollback", "auto-promote"]
    at: float
    by: str  # who: an admin ("admin:NAME"), "schedule", ...


@dataclass(frozen=True, slots=True)
class PackageChange:
    before: ReleasePackage
    after: ReleasePackage


@dataclass(frozen=True, slots=True)
class ReleaseDiff:
    """Packages keyed by category/name and slot."""

    older: str
    newer: str
    added: tuple[ReleasePackage, ...]
    removed: tuple[ReleasePackage, ...]
    changed: tuple[PackageChange, ...]  # another version, or the same one rebuilt


class Releases:
    """Cuts, lists, promotes, rolls back and prunes releases.

    Every failure a caller can act on raises a ``swarm.controller.errors``
    class with the reason: FailedPrecondition (409) for a refused cut,
    promote, rollback or delete; NotFound (404) for an unknown version;
    InvalidArgument (400) for a malformed one. Each action is an event
    (release_cut, release_promoted, release_rolled_back, release_deleted,
    release_pruned) naming who did it.
    """

    async def start(self) -> None:
        """Remove partial cuts left by a crash, repair a dangling link, load
        or create the release key."""
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def list_all(self) -> list[Release]:
        """Newest first."""
        raise NotImplementedError

    def get(self, version: str) -> Release:
        raise NotImplementedError

    def current(self) -> str | None:
        raise NotImplementedError

    def previous(self) -> str | None:
        raise NotImplementedError

    def promotions(self) -> list[Promotion]:
        raise NotImplementedError

    def diff(self, older: str, newer: str) -> ReleaseDiff:
        raise NotImplementedError

    def public_key(self) -> str:
        """The release key, armored (what /releases/key.asc serves)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    async def cut(self, *, notes: str, force: bool, by: str) -> Release:
        """Snapshot staging into the next version of today.

        Refused (FailedPrecondition) while a session runs, when the last
        session needed a package staging lacks or that failed, and when
        nothing changed since the newest release unless ``force``.
        """
        raise NotImplementedError

    async def promote(self, version: str, *, by: str, action: str = "promote") -> Release:
        """Make ``version`` current; the release that was current becomes previous."""
        raise NotImplementedError

    async def rollback(self, version: str, *, by: str) -> Release:
        """``version`` must be current (a guard against a repeated click):
        the release promoted before it becomes current again. Returns it."""
        raise NotImplementedError

    async def delete(self, version: str, *, by: str) -> None:
        """Never current or previous (FailedPrecondition)."""
        raise NotImplementedError

    async def prune(self, keep: int, *, by: str) -> list[str]:
        """Delete the oldest releases beyond ``keep``, never current or
        previous; the versions deleted."""
        raise NotImplementedError
