"""The binhosts a drone pulls a build's dependencies from (StartBuild's binhost_url).

The staging binhost always: it holds what this session built and no
release has yet. Before it, the current release on every usable binhost
(binhosts.MirrorsAPI.usable) that serves the drone's network, so that a
drone on the Tailscale side fetches what the release already has from
the mirror beside it instead of over the slow link.

The agent sets the answer as PORTAGE_BINHOST, a space-separated list.
Portage turns PORTAGE_BINHOST into binrepos with a priority each, the
first entry the highest (portage.binrepo.config: the list is walked
reversed, counting up), and takes a package the several list from the
repo of the highest priority. So: the network's binhosts first, by their
own priority (higher first, then by name), staging last. Which build of a
version Portage picks does not depend on priority (the newest BUILD_TIME
wins), so a dependency rebuilt in staging still wins over the release's
older build of it; staging serves what only it has.

A release is pinned (``URL/releases/vX/``), not ``URL/current/``: a
mirror switching its ``current`` during a build cannot hand the drone an
index of one release and the files of another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from swarm.controller.binhosts import BinhostTarget, MirrorState
from swarm.controller.binrepos import ordered

log = logging.getLogger(__name__)


def portage_binhost(
    staging_url: str,
    network: str,
    usable: Sequence[tuple[BinhostTarget, MirrorState]],
    url_of: Callable[[BinhostTarget], str],
) -> str:
    """PORTAGE_BINHOST for a drone on ``network`` ("" for none: staging only).
    ``url_of``: a target's public base URL (BinhostTargets.url_of: the local
    target's "" is the controller's own binhost)."""
    near = [
        (target, state)
        for target, state in ordered(usable, network)
        if network and network in target.networks and state.release is not None
    ]
    urls = [f"{url_of(target).rstrip('/')}/releases/{state.release}/" for target, state in near]
    return " ".join([*urls, staging_url])
