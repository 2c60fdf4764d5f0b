"""The builder drops Portage's cached binhost indexes before each build.

emerge asks for a binhost's index with If-Modified-Since = the cached
copy's TIMESTAMP + 5 s, so a dependency staged a moment before looks
absent and is built again from source (seen by bench/schedule.py). The
cache goes; the rest of the prefix stays.
"""

from __future__ import annotations

from pathlib import Path

from swarm.agent.builder import BINHOST_CACHE, forget_binhost_indexes


def test_cached_binhost_indexes_go_and_nothing_else(tmp_path: Path) -> None:
    cached = tmp_path / BINHOST_CACHE / "127.0.0.1" / "binhost" / "staging" / "Packages"
    cached.parent.mkdir(parents=True)
    cached.write_text("TIMESTAMP: 1\n")
    kept = tmp_path / "var" / "cache" / "edb" / "mtimedb"
    kept.write_text("{}")
    forget_binhost_indexes(str(tmp_path))
    assert not (tmp_path / BINHOST_CACHE).exists()
    assert kept.read_text() == "{}"
    forget_binhost_indexes(str(tmp_path))  # nothing cached: nothing to do, no error
