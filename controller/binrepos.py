"""binrepos.conf answers: which binhosts a machine on a network should
use, in the file stock Portage reads (``/etc/portage/binrepos.conf``).

One section per usable target (``MirrorsAPI.usable()``): the targets that
serve the machine's network first, then every other one as a fallback;
within each group by the target's priority (higher first), then by name.
``[swarm-NAME]`` follows the promoted release (``URL/current/``); with a
release pinned, ``[swarm-vX-NAME]`` names that release's directory
(``URL/releases/vX/``), so a pinned client and a following one keep
separate caches (Portage keeps each repository's index under
``var/cache/binhost/SECTION``).

How Portage orders them (portage/binrepo/config.py and
dbapi/bintree.py, Portage 3.0): the sections are sorted by (priority,
name) ascending and read in reverse, so the highest ``priority`` is read
first, and a package instance (cpv and build id) the first repository
listed is kept: a later repository's copy of it is skipped. So higher
priority is preferred; between equal priorities the name later in the
alphabet would win. The answer therefore numbers ``priority`` itself, by
its position (the first section gets the highest number, the last 1):
Portage's order is exactly the order written, and the targets' own
priorities (0-999, shown in each section's comment) only rank them
within their group. A repository whose index cannot be fetched is left
out by Portage for that run, so the next one serves.

Every section has ``verify-signature = true``: a mirror is not trusted,
the release key is. Values are written with ``%`` doubled, since
Portage's parser interpolates ``%(...)s``; the URLs were validated when
saved (no whitespace, no control characters: nothing starts a new line).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from swarm.clock import iso
from swarm.controller.binhosts import BinhostTarget, MirrorState

SECTION_PREFIX = "swarm"


def section(target: BinhostTarget, release: str | None) -> str:
    """The section name of a target: its repository name on the client."""
    if release is None:
        return f"{SECTION_PREFIX}-{target.name}"
    return f"{SECTION_PREFIX}-{release}-{target.name}"


def sync_uri(target: BinhostTarget, release: str | None) -> str:
    """``URL/current/`` or ``URL/releases/vX/`` (the url resolved: the local
    target's default filled in by the caller)."""
    base = target.url.rstrip("/")
    return f"{base}/current/" if release is None else f"{base}/releases/{release}/"


def ordered(
    entries: Iterable[tuple[BinhostTarget, MirrorState]], network: str | None
) -> list[tuple[BinhostTarget, MirrorState]]:
    """The network's targets first, then the rest; each group by priority
    (higher first), then name."""

    def key(entry: tuple[BinhostTarget, MirrorState]) -> tuple[bool, int, str]:
        target = entry[0]
        serves = network is not None and network in target.networks
        return (not serves, -target.priority, target.name)

    return sorted(entries, key=key)


def _value(text: str) -> str:
    return text.replace("%", "%%")


def render(
    entries: Iterable[tuple[BinhostTarget, MirrorState]],
    *,
    network: str | None,
    release: str | None = None,
    now: float,
    left_out: Sequence[tuple[str, str]] = (),
) -> str:
    """binrepos.conf for a machine on ``network`` (None: no network known,
    every target a fallback). ``entries``: usable (target, state) pairs,
    their urls resolved. ``release``: pinned (None: the current one).
    ``left_out``: (name, status) of the enabled targets not usable, named
    in the header so an admin reading the file sees why."""
    chosen = ordered(entries, network)
    lines = [
        "# binrepos.conf from Build Swarm: binhosts of the swarm, nearest first",
        f"# made {iso(now)}",
        f"# network: {network}: its binhosts first, then the others as fallback"
        if network
        else "# network: none given: every binhost as a fallback",
        f"# release: {release} (pinned)" if release else "# release: the current one (follows promotions)",
    ]
    if left_out:
        named = ", ".join(f"{name} ({status})" for name, status in left_out)
        lines.append(f"# left out (not serving this release now): {named}")
    if not chosen:
        lines.append("# no binhost serves it now")
    lines.append("# Portage reads the highest priority first; packages are verified against the release key.")
    for position, (target, state) in enumerate(chosen):
        serves = "serves " + ", ".join(target.networks) if target.networks else "serves every network"
        lines += [
            "",
            f"[{section(target, release)}]",
            f"# {target.kind}, {serves}, priority {target.priority} as set, {state.status}",
            f"sync-uri = {_value(sync_uri(target, release))}",
            f"priority = {len(chosen) - position}",
            "verify-signature = true",
        ]
    return "\n".join(lines) + "\n"
