"""Releases on disk: atomic writes, the ``current``/``previous`` links, and
what a crash can leave behind (see the layout in releases.py). Blocking:
call from a thread.

Every write is crash-safe on its own: a file is written beside its final
name, synced and renamed over it; a link is made under a temporary name
and renamed over the old one, so that a reader (a client fetching
``/binhost/current/``) sees the old target or the new one, never none.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from swarm.files import fsync_dir

log = logging.getLogger(__name__)

RELEASES = "releases"
PROMOTIONS = "promotions.json"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.asc"
INDEX = "Packages"
PARTIAL_SUFFIX = ".partial"
DELETING_SUFFIX = ".deleting"
# What a cut or a delete leaves behind when the process dies in the middle.
LEFTOVER_RE = re.compile(r"^\.v[0-9.]+(?:-\d+)?\.(?:partial|deleting)\Z")
# A release's name: vYYYY.MM.DD[-N] (releases.VERSION_RE).
VERSION_RE = re.compile(r"^v[0-9]{4}\.[0-9]{2}\.[0-9]{2}(?:-[1-9][0-9]{0,3})?\Z")


def remove_leftovers(releases: Path) -> list[str]:
    """Remove cuts and deletes a crash interrupted; their names."""
    removed: list[str] = []
    if not releases.is_dir():
        return removed
    for entry in releases.iterdir():
        if LEFTOVER_RE.match(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return sorted(removed)


def read_link(root: Path, name: str) -> str | None:
    """The release a link names (releases/vX), or None."""
    try:
        target = os.readlink(root / name)
    except OSError:
        return None
    version = Path(target).name
    return version if VERSION_RE.match(version) else None


def set_link(root: Path, name: str, version: str | None) -> None:
    """Point ``root/name`` at releases/<version> (or remove it), atomically."""
    link = root / name
    if version is None:
        if link.is_symlink():
            link.unlink()
            fsync_dir(root)
        return
    target = f"{RELEASES}/{version}"
    try:
        if os.readlink(link) == target:
            return
    except OSError:
        pass
    tmp = root / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(root)
