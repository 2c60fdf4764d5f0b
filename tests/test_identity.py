"""The drone id is created once and kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm.agent.identity import IdentityError, load_or_create_drone_id


def test_id_is_created_once_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = load_or_create_drone_id(state)
    assert len(first) == 32 and int(first, 16) >= 0
    assert load_or_create_drone_id(state) == first
    assert (state / "drone-id").read_text().strip() == first
    assert oct(state.stat().st_mode & 0o777) == "0o700"


def test_garbage_id_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "drone-id").write_text("not-an-id\n")
    with pytest.raises(IdentityError, match="remove it"):
        load_or_create_drone_id(tmp_path)
