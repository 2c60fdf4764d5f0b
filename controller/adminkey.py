"""Admin API keys: several, each with a name for the audit trail, stored hashed.

Two files, both mode 0600 and written by the controller only:

- the keys file (``--admin-keys-file``, default ``DATA_DIR/admin-keys``):
  one key per line, ``NAME:scrypt$N$r$p$SALT$HASH`` (salt and hash in
  unpadded base64url); blank lines and ``#`` comments are ignored.
- the admin key file (``--admin-key-file``, default ``DATA_DIR/admin.key``):
  the plain key named ``admin``. A fresh controller (no keys yet) writes a
  random one there so the admin can read it; the controller itself keeps
  only its hash. The admin may delete the file once the key is copied. If
  the file exists it is authoritative for ``admin``: writing another key
  into it and restarting rotates that key, as before keys were hashed.

Why scrypt: keys made here are 256 random bits, which no hash makes
guessable, but an admin may write a key of their own into admin.key (16
characters at least), and a leaked keys file must not make such a key
cheap to guess. scrypt is in the standard library, salted per key and
memory-hard (N=2^14, r=8, p=1 is 16 MiB and ~60 ms per guess, the
interactive-login parameters of RFC 7914); PBKDF2 is not memory-hard and
argon2 is not in the standard library. Checks run in threads, at most two
at a time, so the event loop never waits on one. A key that verified once
is remembered for the life of the process as an HMAC-SHA256 under a
random per-process secret (never the key itself), so an API client pays
scrypt once rather than per request; wrong keys pay it every time, which
the per-address limiter in web/auth.py bounds. Every comparison of
digests is constant-time (hmac.compare_digest).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

MIN_LENGTH = 16
MAX_LENGTH = 1024
ADMIN = "admin"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")  # \Z: "$" also matches before a final newline
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_MAXMEM = 64 * 2**20
CHECK_SLOTS = 2


class AdminKeyError(Exception):
    """A key file is unusable."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    name: str
    hash: str  # scrypt$N$r$p$SALT$HASH; unique per key (random salt), so it also identifies it


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_key(key: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        key.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    scheme, n, r, p, salt, digest = encoded.split("$")
    if scheme != "scrypt":
        raise ValueError(f"unknown hash scheme {scheme[:20]!r}")
    values = int(n), int(r), int(p)
    if not (2 <= values[0] <= 2**20 and values[0] & (values[0] - 1) == 0 and 1 <= values[1] <= 32):
        raise ValueError("scrypt parameters out of range")
    if not 1 <= values[2] <= 16:
        raise ValueError("scrypt parameters out of range")
    return values[0], values[1], values[2], _unb64(salt), _unb64(digest)


def verify_hash(key: str, encoded: str) -> bool:
    """Whether ``key`` matches the stored hash (constant-time comparison)."""
    n, r, p, salt, expected = _parse_hash(encoded)
    digest = hashlib.scrypt(key.encode(), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=len(expected))
    return hmac.compare_digest(digest, expected)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidArgument(
            "a key name is 1-64 characters: letters, digits and . _ @ - (not first), e.g. ci or alice"
        )
    return name


def read_keys(path: Path) -> list[StoredKey]:
    keys: list[StoredKey] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, encoded = line.partition(":")
        try:
            if not sep or not NAME_RE.match(name):
                raise ValueError("expected NAME:HASH")
            _parse_hash(encoded)
        except ValueError as exc:
            raise AdminKeyError(f"{path} line {number}: {exc}") from None
        if any(k.name == name for k in keys):
            raise AdminKeyError(f"{path} line {number}: key {name!r} is listed twice")
        keys.append(StoredKey(name, encoded))
    return keys


def write_keys(path: Path, keys: list[StoredKey]) -> None:
    """Replace the keys file atomically (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# Build Swarm admin keys: NAME:scrypt$N$r$p$SALT$HASH (written by the controller)\n")
        fh.writelines(f"{k.name}:{k.hash}\n" for k in keys)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_or_create(path: Path) -> str:
    """The plain key in the admin key file, written with a random key if missing."""
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
    if len(key) > MAX_LENGTH or any(c.isspace() for c in key):
        raise AdminKeyError(f"admin key in {path} must be one word of at most {MAX_LENGTH} characters")
    return key


def prepare(keys_path: Path, admin_key_path: Path) -> list[StoredKey]:
    """The stored keys at start, after bringing ``admin`` in line with the
    admin key file (blocking: file I/O and scrypt; run it in a thread)."""
    try:
        keys = read_keys(keys_path) if keys_path.exists() else []
    except OSError as exc:
        raise AdminKeyError(f"cannot read admin keys file {keys_path}: {exc.strerror}") from None
    if not keys or admin_key_path.exists():
        plain = load_or_create(admin_key_path)
        current = next((k for k in keys if k.name == ADMIN), None)
        if current is None or not verify_hash(plain, current.hash):
            keys = [k for k in keys if k.name != ADMIN] + [StoredKey(ADMIN, hash_key(plain))]
            write_keys(keys_path, keys)
            log.info("the key in %s is stored hashed in %s as %r", admin_key_path, keys_path, ADMIN)
    return keys


def _match(presented: str, keys: list[StoredKey]) -> StoredKey | None:
    for key in keys:
        if verify_hash(presented, key.hash):
            return key
    return None


class KeyStore:
    """The admin keys of a running controller: checks, adds and removes them.

    Holds only hashes: the scrypt hashes of the file, and HMACs under a
    random per-process secret of keys that verified."""

    def __init__(self, path: Path, admin_key_path: Path, keys: list[StoredKey]) -> None:
        self.path = path
        self.admin_key_path = admin_key_path
        self._keys = list(keys)
        self._secret = secrets.token_bytes(32)
        self._verified: dict[bytes, StoredKey] = {}
        self._slots = asyncio.Semaphore(CHECK_SLOTS)
        self._write = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, admin_key_path: Path) -> KeyStore:
        return cls(path, admin_key_path, await asyncio.to_thread(prepare, path, admin_key_path))

    def names(self) -> list[str]:
        return [k.name for k in self._keys]

    def holds(self, key_hash: str) -> bool:
        """Whether the key with this stored hash is still valid (not removed)."""
        return any(hmac.compare_digest(k.hash, key_hash) for k in self._keys)

    async def check(self, presented: str | None) -> StoredKey | None:
        """The stored key ``presented`` matches, or None."""
        if not presented or len(presented) > MAX_LENGTH:
            return None
        tag = hmac.new(self._secret, presented.encode(), hashlib.sha256).digest()
        # A dict lookup is not constant-time, but its key is an HMAC under a
        # secret the client does not know: its timing tells nothing.
        known = self._verified.get(tag)
        if known is not None:
            return known
        async with self._slots:
            known = self._verified.get(tag)  # another request may have verified it meanwhile
            if known is not None:
                return known
            found = await asyncio.to_thread(_match, presented, list(self._keys))
        if found is not None and found in self._keys:
            self._verified[tag] = found
            return found
        return None

    async def add(self, name: str) -> str:
        """Make a new random key named ``name``; returns it (shown once, stored hashed)."""
        check_name(name)
        key = secrets.token_urlsafe(32)
        encoded = await asyncio.to_thread(hash_key, key)
        async with self._write:
            if name in self.names():
                raise FailedPrecondition(f"there is already a key named {name!r}; remove it first")
            keys = [*self._keys, StoredKey(name, encoded)]
            await asyncio.to_thread(write_keys, self.path, keys)
            self._keys = keys
        log.info("admin key %r added", name)
        return key

    async def remove(self, name: str) -> None:
        async with self._write:
            if name not in self.names():
                raise NotFound(f"no admin key named {name[:64]!r}")
            if len(self._keys) == 1:
                raise FailedPrecondition("that is the last admin key: add another one first")
            keys = [k for k in self._keys if k.name != name]
            await asyncio.to_thread(write_keys, self.path, keys)
            self._keys = keys
            self._verified = {t: k for t, k in self._verified.items() if k.name != name}
            if name == ADMIN:
                # Otherwise the next start would bring it back from the file.
                await asyncio.to_thread(self.admin_key_path.unlink, True)
        log.info("admin key %r removed", name)
