"""The binrepos.conf entry of the release a machine follows.

One entry, named after the release (``[swarm-v2026.12.05]``), so each
release gets a download cache of its own (``var/cache/binhost/<name>``):
a client never mixes one release's Packages index with another's files.
``verify-signature = true`` makes Portage verify every gpkg from it.

binrepos.conf is a directory on a current Gentoo (gentoobinhost.conf in
it): the entry is a file of ours there, ``swarm-upgrade.conf``. Where it
is one file, the entry is a block between marker lines in it, and the
rest of the file is left as it was. A missing one becomes a directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from swarm.files import write_atomic

OWN_FILE = "swarm-upgrade.conf"
BEGIN = "# BEGIN swarm-upgrade: the release this machine follows (swarm-upgrade rewrites this block)"
END = "# END swarm-upgrade"
REPO_PREFIX = "swarm-"
# Above any binhost of a stock install: the release decides when it has a package.
PRIORITY = 9999
SECTION_RE = re.compile(r"^\[(swarm-v[^\]]+)\]\s*$", re.MULTILINE)


def repo_name(version: str) -> str:
    return REPO_PREFIX + version


def entry(version: str, sync_uri: str) -> str:
    return f"[{repo_name(version)}]\nsync-uri = {sync_uri}\npriority = {PRIORITY}\nverify-signature = true\n"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A file as it was before a change: restore() puts it back."""

    path: Path
    content: bytes | None  # None: it did not exist
    made_dir: Path | None = None  # binrepos.conf/ when it was made for the entry

    def restore(self) -> None:
        if self.content is None:
            self.path.unlink(missing_ok=True)
        else:
            write_atomic(self.path, self.content)
        if self.made_dir is not None and self.made_dir.is_dir() and not any(self.made_dir.iterdir()):
            self.made_dir.rmdir()


class BinreposConf:
    def __init__(self, portage_config: Path) -> None:
        self.path = portage_config / "binrepos.conf"

    @property
    def target(self) -> Path:
        """The file the entry lives in."""
        return self.path / OWN_FILE if self.path.is_dir() or not self.path.exists() else self.path

    def followed(self) -> str | None:
        """The release the entry points at now, if there is one."""
        try:
            text = self.target.read_text()
        except FileNotFoundError:
            return None
        if self.target == self.path:
            text = _block(text) or ""
        match = SECTION_RE.search(text)
        return match[1].removeprefix(REPO_PREFIX) if match else None

    def point_at(self, version: str, sync_uri: str) -> Snapshot:
        """Point the entry at ``version``; what was there before, to restore on failure."""
        target = self.target
        made_dir = None if self.path.exists() else self.path
        try:
            before: bytes | None = target.read_bytes()
        except FileNotFoundError:
            before = None
        text = "# Written by swarm-upgrade (apply, rollback): the release this machine follows.\n" + entry(
            version, sync_uri
        )
        if target == self.path:
            text = _replace_block((before or b"").decode(), f"{BEGIN}\n{entry(version, sync_uri)}{END}\n")
        write_atomic(target, text.encode())
        return Snapshot(target, before, made_dir)


def _block(text: str) -> str | None:
    start = text.find(BEGIN)
    end = text.find(END, start)
    return text[start:end] if start >= 0 and end >= 0 else None


def _replace_block(text: str, block: str) -> str:
    start = text.find(BEGIN)
    end = text.find(END, start)
    if start >= 0 and end >= 0:
        stop = text.find("\n", end)
        return text[:start] + block + (text[stop + 1 :] if stop >= 0 else "")
    return text + ("" if not text or text.endswith("\n") else "\n") + ("\n" if text else "") + block
