"""The config payloads: ``agent-config`` (the agent's TOML file) and
``portage-config`` (a tar of files under etc/portage).

Both go the same way: the files about to be replaced are kept, the new
ones written atomically, then checked (the agent config parses as one;
``emerge --info`` still runs, with the Portage the agent builds with); a
failed check puts the kept files back (and removes the ones that were
new) and says why. A portage-config payload replaces the files it holds
and leaves the others under etc/portage as they are.
"""

from __future__ import annotations

import argparse
import io
import logging
import posixpath
import stat
import tarfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from swarm.agent.config import ENV_PREFIX, AgentConfig
from swarm.config import ConfigError, resolve
from swarm.files import write_atomic

log = logging.getLogger(__name__)

PORTAGE_DIR = "etc/portage"
MAX_FILES = 1000


class ApplyFailed(Exception):
    """Applying or checking failed and the previous files are back; one line saying why."""


@dataclass(frozen=True, slots=True)
class Kept:
    """A file as it was before a payload replaced it (``data`` None: it did not exist)."""

    path: Path
    data: bytes | None
    mode: int


def keep(paths: list[Path]) -> list[Kept]:
    kept = []
    for path in paths:
        try:
            kept.append(Kept(path, path.read_bytes(), stat.S_IMODE(path.stat().st_mode)))
        except FileNotFoundError:
            kept.append(Kept(path, None, 0o644))
    return kept


def restore(kept: list[Kept]) -> None:
    for old in kept:
        if old.data is None:
            old.path.unlink(missing_ok=True)
        else:
            write_atomic(old.path, old.data, old.mode)


def check_agent_config(path: Path) -> None:
    """ApplyFailed unless ``path`` is a usable agent configuration on its own."""
    try:
        resolve(
            AgentConfig,
            argparse.Namespace(),
            env_prefix=ENV_PREFIX,
            default_path=None,
            explicit_path=path,
            environ={},
        )
    except ConfigError as exc:
        raise ApplyFailed(f"the new agent config does not load: {exc}") from None


def apply_agent_config(path: Path, data: bytes) -> None:
    """Replace the agent's config file with ``data`` (blocking); put back, and
    ApplyFailed, if it does not load."""
    kept = keep([path])
    write_atomic(path, data, kept[0].mode)
    try:
        check_agent_config(path)
    except ApplyFailed:
        restore(kept)
        raise


def portage_files(data: bytes) -> list[tuple[str, bytes, int]]:
    """The regular files of a portage-config tar: (path under the prefix, bytes, mode).

    ApplyFailed for anything but directories and regular files under
    etc/portage with relative, plain paths."""
    files: list[tuple[str, bytes, int]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar:
                name = posixpath.normpath(member.name.removeprefix("./"))
                if member.name.startswith("/") or ".." in member.name.split("/"):
                    raise ApplyFailed(f"{member.name!r}: only relative paths without '..'")
                if name != PORTAGE_DIR and not name.startswith(PORTAGE_DIR + "/"):
                    raise ApplyFailed(f"{member.name!r} is not under {PORTAGE_DIR}/")
                if member.isdir():
                    continue
                if not member.isreg():
                    raise ApplyFailed(f"{member.name!r}: only regular files and directories")
                if len(files) >= MAX_FILES:
                    raise ApplyFailed(f"more than {MAX_FILES} files")
                extracted = tar.extractfile(member)
                assert extracted is not None  # a regular file
                files.append((name, extracted.read(), (member.mode & 0o755) | 0o600))
    except tarfile.TarError as exc:
        raise ApplyFailed(f"not a readable tar: {exc}") from None
    if not files:
        raise ApplyFailed(f"no files under {PORTAGE_DIR}/")
    return files


async def apply_portage_config(
    eprefix: str,
    data: bytes,
    check: Callable[[], Awaitable[tuple[bool, str]]],
    offload: Callable[..., Awaitable[object]],
) -> None:
    """Write the tar's files under ``eprefix`` (/ when empty), then ``check``
    (emerge --info); the previous files back and ApplyFailed if it fails.
    ``offload`` runs the blocking parts (asyncio.to_thread)."""
    root = Path(eprefix or "/")
    files = portage_files(data)
    targets = [root / name for name, _, _ in files]
    kept: list[Kept] = await offload(keep, targets)  # type: ignore[assignment]

    def write() -> None:
        for (_, content, mode), target in zip(files, targets, strict=True):
            if target.is_symlink() or (target.exists() and not target.is_file()):
                raise ApplyFailed(f"{target} is not a regular file")
            write_atomic(target, content, mode)

    try:
        await offload(write)
        ok, detail = await check()
    except BaseException:
        await offload(restore, kept)
        raise
    if not ok:
        await offload(restore, kept)
        raise ApplyFailed(
            f"emerge --info fails with the new Portage config ({detail}); the previous files are back"
        )
    log.info("portage-config: %d files written under %s", len(files), root / PORTAGE_DIR)
