"""The admin API key: kept in a file readable by the controller only.

There is no default key. On first start a random one is written to the
key file (mode 0600) and the admin reads it from there; only its hash is
kept in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

MIN_LENGTH = 16


class AdminKeyError(Exception):
    """The key file is unusable."""


def load_or_create(path: Path) -> str:
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        log.warning("created a new admin key in %s", path)
        return key
    except OSError as exc:
        raise AdminKeyError(f"cannot read admin key file {path}: {exc.strerror}") from None
    if len(key) < MIN_LENGTH:
        raise AdminKeyError(f"admin key in {path} is shorter than {MIN_LENGTH} characters")
    return key


class AdminKeys:
    """Checks presented keys in constant time against stored hashes."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._hashes = {name: hashlib.sha256(key.encode()).digest() for name, key in keys.items()}

    def check(self, presented: str | None) -> str | None:
        """The name of the matching key, or None."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for name, stored in self._hashes.items():
            if hmac.compare_digest(digest, stored):
                found = name
        return found
