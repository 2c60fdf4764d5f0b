"""The agent's pid file: how an out-of-band hard restart finds the agent
whatever its process is called.

Written atomically (a reader sees the old pid or the new one, never half a
line) and removed on a clean exit only while it still names this process,
so a second agent's file is never taken away. A restart by exec keeps the
pid, so the file stays right through it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def write(path: Path) -> bool:
    """Write this process's pid to ``path``; False (and a warning) if that
    fails: the pid file helps a hard restart, the agent runs without it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot write the pid file %s: %s", path, exc.strerror or exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False
    return True


def remove(path: Path) -> None:
    """Remove ``path`` if it names this process."""
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass
