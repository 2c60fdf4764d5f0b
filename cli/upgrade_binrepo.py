"""The binrepos.conf entries of the release a machine follows.

One entry per binhost that holds the release (upgrade_binhosts: the
controller's answer for this machine's network), each named after the
release and the binhost (``[swarm-v2026.12.05-lan-mirror]``; the
controller's own ``[swarm-v2026.12.05]``), so each release and binhost gets
a download cache of its own (``var/cache/binhost/<name>``): a client never
mixes one release's Packages index with another's files.
``verify-signature = true`` makes Portage verify every gpkg from each.

binrepos.conf is a directory on a current Gentoo (gentoobinhost.conf in
it): the entries are a file of ours there, ``swarm-upgrade.conf``. Where it
is one file, they are a block between marker lines in it, and the rest of
the file is left as it was. A missing one becomes a directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from swarm.cli.upgrade_binhosts import REPO_PREFIX, Entry, read_entries, section_version
from swarm.files import write_atomic

OWN_FILE = "swarm-upgrade.conf"
BEGIN = "# BEGIN swarm-upgrade: the release this machine follows (swarm-upgrade rewrites this block)"
END = "# END swarm-upgrade"
__all__ = ["REPO_PREFIX", "BinreposConf", "Entry", "Snapshot"]


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

    def entries(self) -> list[Entry]:
        """The entries of ours as they are now (none: no release followed)."""
        try:
            text = self.target.read_text()
        except FileNotFoundError:
            return []
        if self.target == self.path:
            text = _block(text) or ""
        return read_entries(text)

    def followed(self) -> str | None:
        """The release the entries point at now, if there is one."""
        versions = [section_version(e.section) for e in self.entries()]
        return next((v for v in versions if v), None)

    def point_at(self, version: str, entries: Sequence[Entry]) -> Snapshot:
        """Point the entries at ``version``'s binhosts; what was there before, to restore on failure."""
        target = self.target
        made_dir = None if self.path.exists() else self.path
        try:
            before: bytes | None = target.read_bytes()
        except FileNotFoundError:
            before = None
        if not entries or any(section_version(e.section) != version for e in entries):
            raise ValueError(f"entries of another release than {version}: {entries}")
        body = "".join(e.render() for e in entries)
        text = (
            f"# Written by swarm-upgrade (apply, rollback): the release this machine follows, {version},\n"
            "# from each binhost that holds it, the nearest first.\n" + body
        )
        if target == self.path:
            text = _replace_block((before or b"").decode(), f"{BEGIN}\n{body}{END}\n")
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
