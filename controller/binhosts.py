"""Binhost targets: where promoted releases are published, and which one
each machine should use.

This module is the contract the mirror pusher (mirrors.py), the web tier,
swarm-cli, the console, swarm-upgrade and the build queue are written
against (issue 17).

A target is either the controller's own binhost (kind ``local``, named
``controller``: always there, served by the public tier at
``PUBLIC_URL/binhost``, holding every release) or a mirror (kind
``rsync``) the controller pushes releases to over SSH + rsync. Each
target has a public ``url`` that clients fetch from, the ``networks`` it
serves (the names drones report as their network: ``lan``,
``tailscale``...; none means "nobody in particular", a fallback for all)
and a ``priority`` (0-999, higher preferred among targets of equal
standing).

Layout on a mirror (its destination directory), the same as the
controller's ``RELEASES_DIR``, so the same URLs work on both::

    <path>/releases/vX/            a copy of the release (unchanged files
                                   hard-linked to the previous release's
                                   with rsync --link-dest)
    <path>/releases/.vX.partial/   a push in progress
    <path>/current -> releases/vX  switched by rename once the copy is verified

so a client uses ``URL/current/`` (what is promoted) or
``URL/releases/vX/`` (a release pinned, swarm-upgrade's way).

Targets come from the admin API (``PUT /admin/api/binhosts/{name}``,
stored in the database table ``binhost_targets``) and from an optional
TOML file of ``[binhosts.NAME]`` tables applied at every start
(``--binhosts-file``), as drone access does (access.py). Everything is
validated when saved: a bad value is InvalidArgument with the reason, and
no shell string is ever built from these values without quoting (the
destination goes through oob.SshTarget and a strict path pattern).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

LOCAL_NAME = "controller"
KINDS = ("local", "rsync")
Kind = Literal["local", "rsync"]
# A target's name: its section in binrepos.conf answers, its directory in
# Portage's binhost cache on clients.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}\Z")
# A network's name, as drones report it (agent config ``network``).
NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
PRIORITY_MAX = 999
# The absolute directory on a mirror: no '..', no characters a shell or
# rsync would read as anything but a path (it is quoted anyway).
PATH_RE = re.compile(r"^/(?:[A-Za-z0-9._+-]+/?)*\Z")

# How a mirror stands; the local target is always "healthy".
#   unknown      not checked since the controller started
#   healthy      serves the current release, checks pass
#   syncing      a push is running (it still serves what it held)
#   stale        holds an older release than current (a push failed or waits for a retry)
#   unreachable  the last health check could not reach it (HTTP or checksums failed)
#   disabled     enabled = false: never pushed to, never in an answer
Status = Literal["unknown", "healthy", "syncing", "stale", "unreachable", "disabled"]
STATUSES: tuple[Status, ...] = ("unknown", "healthy", "syncing", "stale", "unreachable", "disabled")


@dataclass(frozen=True, slots=True)
class BinhostTarget:
    """One binhost, as the admin set it."""

    name: str
    kind: Kind
    url: str  # public base URL (http or https); local: "" means PUBLIC_URL/binhost
    destination: str = ""  # rsync only: [user@]host[:port]:/absolute/path
    networks: tuple[str, ...] = ()
    priority: int = 0
    enabled: bool = True
    updated_at: float = 0.0
    updated_by: str = ""


@dataclass(frozen=True, slots=True)
class PushProgress:
    """A push under way."""

    release: str
    started_at: float
    files_total: int
    files_done: int
    bytes_sent: int


@dataclass(frozen=True, slots=True)
class MirrorState:
    """What the controller knows of a target right now."""

    name: str
    status: Status
    release: str | None  # the release its ``current`` names, as last seen
    releases: tuple[str, ...]  # every release it holds, as last seen
    synced_at: float | None  # the end of the last successful push
    checked_at: float | None  # the last health check
    error: str  # why it is stale or unreachable ("" otherwise)
    bytes_sent: int  # by the last push (rsync's own count)
    files_sent: int  # files the last push transferred
    progress: PushProgress | None  # while syncing


class MirrorsAPI(Protocol):
    """What mirrors.Mirrors offers the web tier, swarm-cli's handlers, the
    build queue and binrepos.conf answers."""

    def states(self) -> dict[str, MirrorState]:
        """Every target's state, by name (the local one included)."""
        ...

    async def sync(self, name: str | None, *, by: str) -> list[str]:
        """Push the current release now to one mirror (or every enabled
        mirror when None); returns the names whose push started. Does not
        wait for the pushes. FailedPrecondition (409) when no release is
        current, the target is local or disabled; NotFound for an unknown
        name."""
        ...

    def usable(self, release: str | None = None) -> list[tuple[BinhostTarget, MirrorState]]:
        """Targets a client may use for ``release`` (None: the current
        one): enabled, and local or healthy and holding it. Stale and
        unreachable mirrors drop out until they catch up."""
        ...
