"""Views of releases (controller/releases.py): the list both tiers show, a
release with its manifest, the diff between two, and the admin tier's
promotion history."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Literal

from swarm.clock import iso
from swarm.controller.release_schedule import ScheduleStatus
from swarm.controller.releases import (
    VERSION_RE,
    Promotion,
    Release,
    ReleaseDiff,
    ReleasePackage,
    Repository,
)
from swarm.controller.web.views.base import Doc, Format, Pattern, Range, Timestamp

Count = Annotated[int, Range(0)]
Bytes = Annotated[int, Range(0)]
Version = Annotated[str, Pattern(VERSION_RE), Doc("vYYYY.MM.DD, then vYYYY.MM.DD-1, -2 for more on one day")]
# A time that always exists (a release's cut), as ISO 8601 UTC with milliseconds.
Time = Annotated[str, Format("date-time")]
PROMOTIONS_SHOWN = 50
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")


def _time(ts: float) -> str:
    shown = iso(ts)
    assert shown is not None
    return shown


@dataclass(frozen=True, slots=True)
class ReleaseSummaryView:
    version: Version
    created_at: Time
    notes: str
    package_count: Count
    total_size: Annotated[Bytes, Doc("bytes of its packages")]
    current: Annotated[bool, Doc("the release clients get at /binhost/current/")]
    previous: Annotated[bool, Doc("the release a rollback of the current one goes back to")]
    promoted_at: Annotated[Timestamp, Doc("the last time it was promoted (null if never)")]
    sessions: Annotated[tuple[str, ...], Doc("the build sessions its packages came from")]


def summary_view(release: Release) -> ReleaseSummaryView:
    m = release.manifest
    return ReleaseSummaryView(
        version=m.version,
        created_at=_time(m.created_at),
        notes=m.notes,
        package_count=m.package_count,
        total_size=m.total_size,
        current=release.standing == "current",
        previous=release.standing == "previous",
        promoted_at=iso(release.promoted_at),
        sessions=m.sessions,
    )


@dataclass(frozen=True, slots=True)
class ReleasesView:
    """Releases, newest first, and which of them clients get."""

    current: Annotated[Version | None, Doc("the release at /binhost/current/ (null before a promote)")]
    previous: Version | None
    releases: tuple[ReleaseSummaryView, ...]


def releases_view(releases: Iterable[Release], current: str | None, previous: str | None) -> ReleasesView:
    return ReleasesView(current, previous, tuple(summary_view(r) for r in releases))


@dataclass(frozen=True, slots=True)
class PromotionView:
    version: Version
    action: Literal["promote", "rollback", "auto-promote"]
    at: Time
    by: Annotated[str, Doc('who: "admin:NAME", "schedule", ...')]


@dataclass(frozen=True, slots=True)
class PendingPromotionView:
    version: Version
    cut_at: Time
    promote_at: Annotated[
        Time, Doc("when it is promoted unless an admin promotes, rolls back or deletes first")
    ]


@dataclass(frozen=True, slots=True)
class ReleaseScheduleView:
    """--release-schedule and --auto-promote-after, and where they stand."""

    schedule: Annotated[str, Doc('"weekly:sun:03:00" or "daily:HH:MM"')]
    next_cut_at: Annotated[
        Timestamp, Doc("the next slot (a slot that passed while a session runs: that one)")
    ]
    waiting_since: Annotated[Timestamp, Doc("a slot passed and its cut waits for the running session")]
    auto_promote_after: Annotated[
        float | None, Range(0), Doc("seconds from a scheduled cut to its promotion (null: never)")
    ]
    pending: Annotated[PendingPromotionView | None, Doc("the scheduled cut waiting for its promotion")]


def schedule_view(status: ScheduleStatus) -> ReleaseScheduleView:
    pending = status.pending
    return ReleaseScheduleView(
        schedule=status.schedule,
        next_cut_at=iso(status.next_cut_at),
        waiting_since=iso(status.waiting_since),
        auto_promote_after=status.auto_promote_after,
        pending=None
        if pending is None
        else PendingPromotionView(pending.version, _time(pending.cut_at), _time(pending.promote_at)),
    )


@dataclass(frozen=True, slots=True)
class AdminReleasesView(ReleasesView):
    """The public list, the promotions and rollbacks that made it so, and the schedule."""

    promotions: Annotated[tuple[PromotionView, ...], Doc(f"newest first, at most {PROMOTIONS_SHOWN}")]
    schedule: Annotated[ReleaseScheduleView | None, Doc("null without --release-schedule")]
    next_version: Annotated[
        Version | None, Doc("the name a cut made now gets (never one used before, even if deleted)")
    ]


def admin_releases_view(
    releases: Iterable[Release],
    current: str | None,
    previous: str | None,
    promotions: list[Promotion],
    schedule: ScheduleStatus | None = None,
    next_version: str | None = None,
) -> AdminReleasesView:
    shown = reversed(promotions[-PROMOTIONS_SHOWN:])
    listed = releases_view(releases, current, previous)
    return AdminReleasesView(
        listed.current,
        listed.previous,
        listed.releases,
        promotions=tuple(PromotionView(p.version, p.action, _time(p.at), p.by) for p in shown),
        schedule=None if schedule is None else schedule_view(schedule),
        next_version=next_version,
    )


@dataclass(frozen=True, slots=True)
class ReleasePackageView:
    cpv: str
    slot: str
    path: Annotated[str, Doc("relative to the release's directory, as in its Packages index")]
    build_id: Annotated[str, Doc('the swarm build that produced it ("" if unknown)')]
    drone: Annotated[str, Doc('the drone that built it ("" if unknown)')]
    sha256: Annotated[str, Pattern(SHA256_RE)]
    size: Bytes
    use: Annotated[str, Doc("enabled USE flags, space-separated")]


def package_view(p: ReleasePackage) -> ReleasePackageView:
    return ReleasePackageView(p.cpv, p.slot, p.path, p.build_id, p.drone, p.sha256, p.size, p.use)


@dataclass(frozen=True, slots=True)
class RepositoryView:
    name: str
    revision: Annotated[str, Doc('the tree\'s git commit ("" when not a git checkout)')]
    snapshot_time: Annotated[Timestamp, Doc("metadata/timestamp.chk of the tree, if it has one")]


def repository_view(r: Repository) -> RepositoryView:
    return RepositoryView(r.name, r.revision, iso(r.snapshot_time))


@dataclass(frozen=True, slots=True)
class ReleaseView(ReleaseSummaryView):
    """A release with its manifest (manifest.json, signed beside it as manifest.json.asc)."""

    profile: Annotated[str, Doc("the Portage profile its packages were built for")]
    repository: RepositoryView
    kernel: Annotated[str, Doc('cpv of the kernel package ("" when there is none)')]
    signing_key: Annotated[str, Doc("fingerprint of the key that signed its packages and manifest")]
    packages: Annotated[tuple[ReleasePackageView, ...], Doc("sorted by cpv")]


def release_view(release: Release) -> ReleaseView:
    s = summary_view(release)
    m = release.manifest
    return ReleaseView(
        s.version,
        s.created_at,
        s.notes,
        s.package_count,
        s.total_size,
        s.current,
        s.previous,
        s.promoted_at,
        s.sessions,
        profile=m.profile,
        repository=repository_view(m.repository),
        kernel=m.kernel,
        signing_key=m.signing_key,
        packages=tuple(package_view(p) for p in m.packages),
    )


@dataclass(frozen=True, slots=True)
class PackageChangeView:
    before: ReleasePackageView
    after: ReleasePackageView


@dataclass(frozen=True, slots=True)
class ReleaseDiffView:
    """What changes going from ``older`` to ``newer``: packages keyed by category/name and slot."""

    older: Version
    newer: Version
    added: tuple[ReleasePackageView, ...]
    removed: tuple[ReleasePackageView, ...]
    changed: Annotated[tuple[PackageChangeView, ...], Doc("another version, or the same one rebuilt")]


def diff_view(d: ReleaseDiff) -> ReleaseDiffView:
    return ReleaseDiffView(
        d.older,
        d.newer,
        tuple(package_view(p) for p in d.added),
        tuple(package_view(p) for p in d.removed),
        tuple(PackageChangeView(package_view(c.before), package_view(c.after)) for c in d.changed),
    )


@dataclass(frozen=True, slots=True)
class ReleaseDeletedView:
    deleted: Version
