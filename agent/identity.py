"""The drone's stable identity, created once and kept in the state dir."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

ID_FILE = "drone-id"
ID_RE = re.compile(r"^[0-9a-f]{32}\Z")


class IdentityError(Exception):
    """The state dir holds an id we cannot use."""


def load_or_create_drone_id(state_dir: Path) -> str:
    path = state_dir / ID_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        pass
    else:
        if not ID_RE.match(text):
            raise IdentityError(
                f"{path} does not hold a drone id (32 hex digits); remove it to make a new one"
            )
        return text
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    drone_id = uuid.uuid4().hex
    tmp = path.with_suffix(".tmp")
    tmp.write_text(drone_id + "\n")
    # Two agents started at once on one state dir must agree on one id:
    # link() fails if another won the race, and then we read theirs.
    try:
        os.link(tmp, path)
    except FileExistsError:
        return load_or_create_drone_id(state_dir)
    finally:
        tmp.unlink(missing_ok=True)
    return drone_id
