"""Views of binhost targets (controller/binhosts.py): what an admin set
and how each stands (the console's Binhosts page is written against
BinhostView), and the public tier's list, without destinations or errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from swarm.clock import iso
from swarm.controller.binhosts import (
    NAME_RE,
    NETWORK_RE,
    PRIORITY_MAX,
    BinhostTarget,
    Kind,
    MirrorState,
    PushProgress,
    Status,
)
from swarm.controller.releasefiles import VERSION_RE
from swarm.controller.web.views.base import Doc, Format, Pattern, Range, Timestamp

Name = Annotated[str, Pattern(NAME_RE)]
Network = Annotated[str, Pattern(NETWORK_RE)]
Version = Annotated[str, Pattern(VERSION_RE)]
Count = Annotated[int, Range(0)]
Priority = Annotated[int, Range(0, PRIORITY_MAX), Doc("higher preferred among targets of equal standing")]
Url = Annotated[str, Doc("the public base URL clients fetch from (the local target's resolved)")]
Networks = Annotated[tuple[Network, ...], Doc("networks it serves first; none: a fallback for every network")]


@dataclass(frozen=True, slots=True)
class ProgressView:
    release: Version
    started_at: Annotated[str, Format("date-time")]
    files_total: Count
    files_done: Count
    bytes_sent: Count


def progress_view(p: PushProgress | None) -> ProgressView | None:
    if p is None:
        return None
    started = iso(p.started_at)
    assert started is not None
    return ProgressView(p.release, started, p.files_total, p.files_done, p.bytes_sent)


@dataclass(frozen=True, slots=True)
class BinhostView:
    """A target as the admin set it and as it stands."""

    name: Name
    kind: Kind
    url: Url
    url_set: Annotated[bool, Doc("false: the controller's own default URL (PUBLIC_URL/binhost)")]
    destination: Annotated[str, Doc('rsync: [user@]host[:port]:/path ("" for the local target)')]
    networks: Networks
    priority: Priority
    enabled: bool
    updated_at: Timestamp
    updated_by: Annotated[str, Doc('who set it: "admin:NAME", "config file" ("" for the default)')]
    status: Status
    release: Annotated[Version | None, Doc("the release its current names, as last seen")]
    releases: Annotated[tuple[Version, ...], Doc("every release it holds, as last seen")]
    synced_at: Annotated[Timestamp, Doc("the end of the last successful push")]
    checked_at: Annotated[Timestamp, Doc("the last health check")]
    error: Annotated[str, Doc('why it is stale or unreachable ("" otherwise)')]
    bytes_sent: Annotated[Count, Doc("by the last push")]
    files_sent: Annotated[Count, Doc("files the last push transferred")]
    progress: Annotated[ProgressView | None, Doc("the push under way (null when none)")]


def binhost_view(target: BinhostTarget, url: str, state: MirrorState) -> BinhostView:
    return BinhostView(
        name=target.name,
        kind=target.kind,
        url=url,
        url_set=bool(target.url),
        destination=target.destination,
        networks=target.networks,
        priority=target.priority,
        enabled=target.enabled,
        updated_at=iso(target.updated_at) if target.updated_at else None,
        updated_by=target.updated_by,
        status=state.status,
        release=state.release,
        releases=state.releases,
        synced_at=iso(state.synced_at),
        checked_at=iso(state.checked_at),
        error=state.error,
        bytes_sent=state.bytes_sent,
        files_sent=state.files_sent,
        progress=progress_view(state.progress),
    )


@dataclass(frozen=True, slots=True)
class BinhostsView:
    current: Annotated[Version | None, Doc("the release every mirror should hold (null before a promote)")]
    binhosts: Annotated[tuple[BinhostView, ...], Doc("the local target first, then by name")]


@dataclass(frozen=True, slots=True)
class PublicBinhostView:
    """A binhost as the public sees it: where to fetch from and whether it serves."""

    name: Name
    kind: Kind
    url: Url
    networks: Networks
    priority: Priority
    status: Status
    release: Annotated[Version | None, Doc("the release its current names, as last seen")]
    synced_at: Timestamp
    checked_at: Timestamp


def public_binhost_view(target: BinhostTarget, url: str, state: MirrorState) -> PublicBinhostView:
    return PublicBinhostView(
        name=target.name,
        kind=target.kind,
        url=url,
        networks=target.networks,
        priority=target.priority,
        status=state.status,
        release=state.release,
        synced_at=iso(state.synced_at),
        checked_at=iso(state.checked_at),
    )


@dataclass(frozen=True, slots=True)
class PublicBinhostsView:
    current: Annotated[Version | None, Doc("the promoted release (null before a promote)")]
    binhosts: Annotated[
        tuple[PublicBinhostView, ...], Doc("enabled targets: the local one first, then by name")
    ]


@dataclass(frozen=True, slots=True)
class BinhostDeletedView:
    name: Name


@dataclass(frozen=True, slots=True)
class SyncStartedView:
    started: Annotated[tuple[Name, ...], Doc("the mirrors whose push started (not awaited)")]
