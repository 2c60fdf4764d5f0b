"""A small real filesystem for the controller's data dir, to fill up: a
24 MiB tmpfs (mounting needs root; without it the test is skipped)."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.procs import wait_for

SIZE_MB = 24


@pytest.fixture(scope="module")
def small_disk() -> Iterator[Path]:
    """A 24 MiB tmpfs, mounted for the module and removed after it."""
    mountpoint = Path(tempfile.mkdtemp(prefix="swarm-small-disk-"))
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        mountpoint.rmdir()
        pytest.skip(f"cannot mount a small tmpfs (root needed): {result.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        mountpoint.rmdir()


def fill(disk: Path, database: Path) -> Path:
    """Fill the disk up; returns the filler file (unlink it to free the disk).
    The WAL of the SQLite ``database`` is emptied first: SQLite reuses a WAL's
    space after a checkpoint, and small writes that fit in it would still
    succeed (truthfully: health then says disk_low only). Emptied, any
    write needs new space, as a busy database soon does."""
    conn = sqlite3.connect(database, timeout=5)
    try:
        # Busy (1) while the controller is in a write: try again.
        wait_for(
            lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0,
            what="the WAL emptied",
        )
    finally:
        conn.close()
    filler = disk / "filler"
    # Unbuffered: a buffered file kept what the full disk refused and wrote
    # it again on close, outside the suppress (ENOSPC from the test, now and then).
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        chunk = b"\0" * 65536
        while True:
            out.write(chunk)
    return filler
