"""Admin API keys: several, each with a name for the audit trail, stored hashed.

Two files, both mode 0600 and written by the controller only:

- the keys file (``--admin-keys-file``, default ``DATA_DIR/admin-keys``):
  one key per line, ``NAME:sha256$DIGEST`` (the SHA-256 of the key in
  unpadded base64url); blank lines and ``#`` comments are ignored. Lines
  ``NAME:scrypt$N$r$p$SALT$HASH`` written by earlier versions are still
  read (see Upgrades).
- the admin key file (``--admin-key-file``, default ``DATA_DIR/admin.key``):
  the plain key named ``admin``. A fresh controller (no keys yet) writes a
  random one there so the admin can read it; the controller itself keeps
  only its hash. The admin may delete the file once the key is copied. If
  the file exists it is authoritative for ``admin``: writing another key
  into it and restarting rotates that key.

Every key is a long random value: the controller makes 256-bit ones
(``secrets.token_urlsafe(32)``), and a key an admin writes into admin.key
is refused at start (one line saying why, exit code 1) unless it has at
least 32 printable ASCII characters, no space, and at least 10 distinct
ones (:func:`weakness`): as long as what ``openssl rand -hex 16`` prints.

Why plain SHA-256 and not a password hash (scrypt, which this module used
before) nor an HMAC under a secret of the controller's:

- Stretching protects secrets a person can remember. Against a key of 128
  random bits or more it buys nothing: an attacker holding the hash still
  has to search 2^127 values on average. What it did cost was ours to pay:
  scrypt is ~60 ms and 16 MiB per check, so every wrong key cost that, and
  1,000 wrong keys from 100 addresses took 3 minutes of both cores. SHA-256
  of a key is a microsecond, a wrong key costs what a right one does, and
  the check runs inline on the event loop.
- An HMAC's secret would protect a leaked keys file only if the secret did
  not leak with it, yet it would live in the same data directory and the
  same backups; and losing it would void every key at once.
- Checking is one digest and one dict lookup whatever the number of keys.
  The lookup's timing depends on the digest of what the client sent, which
  the client cannot steer towards a stored digest (that would take a
  preimage), so it tells nothing; a found entry is compared again with
  hmac.compare_digest.

Upgrades: a key still in the scrypt form matches no SHA-256 entry, so a
presented key that matches none is checked against the scrypt lines, in
threads, two at a time (:meth:`KeyStore.check_legacy`), but only while
web/auth.py's limiter allows a failed check: its budget of wrong keys,
per address and for all addresses, bounds this slow path. A scrypt key
that verifies is rewritten in the SHA-256 form (when it passes
:func:`weakness`; else it stays scrypt, with a warning) and is fast from
then on; ``admin`` is rewritten at start when admin.key holds it. So an
upgrade locks no one out, and leaves no slow path once each old key has
been used once.
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
from swarm.files import write_atomic

log = logging.getLogger(__name__)

MIN_LENGTH = 32
MIN_DISTINCT = 10
MAX_LENGTH = 1024
ADMIN = "admin"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")  # \Z: "$" also matches before a final newline
FAST = "sha256$"
LEGACY = "scrypt$"
SCRYPT_MAXMEM = 64 * 2**20
CHECK_SLOTS = 2


class AdminKeyError(Exception):
    """A key file is unusable."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    name: str
    hash: str  # sha256$DIGEST, or scrypt$... from an earlier version; unique per key, so it identifies it

    @property
    def legacy(self) -> bool:
        return self.hash.startswith(LEGACY)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_key(key: str) -> str:
    """The stored form of a key (callers pass printable ASCII only)."""
    return FAST + _b64(hashlib.sha256(key.encode("ascii")).digest())


def new_key() -> str:
    """A random key of 256 bits (43 characters)."""
    return secrets.token_urlsafe(32)


def weakness(key: str) -> str | None:
    """Why ``key`` may not be an admin key, or None if it may."""
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        return "it must be one word of printable ASCII characters"
    if len(key) > MAX_LENGTH:
        return f"it is longer than {MAX_LENGTH} characters"
    if len(key) < MIN_LENGTH:
        return f"it has {len(key)} characters, at least {MIN_LENGTH} are needed"
    if len(set(key)) < MIN_DISTINCT:
        return f"it repeats a few characters ({len(set(key))} distinct, at least {MIN_DISTINCT} are needed)"
    return None


def _parse_scrypt(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    scheme, n, r, p, salt, digest = encoded.split("$")
    if scheme + "$" != LEGACY:
        raise ValueError(f"unknown hash scheme {scheme[:20]!r}")
    values = int(n), int(r), int(p)
    if not (2 <= values[0] <= 2**20 and values[0] & (values[0] - 1) == 0 and 1 <= values[1] <= 32):
        raise ValueError("scrypt parameters out of range")
    if not 1 <= values[2] <= 16:
        raise ValueError("scrypt parameters out of range")
    return values[0], values[1], values[2], _unb64(salt), _unb64(digest)


def _check_hash(encoded: str) -> None:
    if encoded.startswith(FAST):
        if len(_unb64(encoded[len(FAST) :])) != hashlib.sha256().digest_size:
            raise ValueError("a sha256 digest is 32 bytes")
    elif encoded.startswith(LEGACY):
        _parse_scrypt(encoded)
    else:
        raise ValueError(f"unknown hash scheme {encoded.partition('$')[0][:20]!r}")


def verify_scrypt(key: str, encoded: str) -> bool:
    """Whether ``key`` matches a stored scrypt hash (slow: run it in a thread)."""
    n, r, p, salt, expected = _parse_scrypt(encoded)
    digest = hashlib.scrypt(
        key.encode("ascii"), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=len(expected)
    )
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
            _check_hash(encoded)
        except ValueError as exc:
            raise AdminKeyError(f"{path} line {number}: {exc}") from None
        if any(k.name == name for k in keys):
            raise AdminKeyError(f"{path} line {number}: key {name!r} is listed twice")
        if any(k.hash == encoded for k in keys):
            raise AdminKeyError(f"{path} line {number}: the same key is listed twice")
        keys.append(StoredKey(name, encoded))
    return keys


def write_keys(path: Path, keys: list[StoredKey]) -> None:
    """Replace the keys file atomically (mode 0600)."""
    lines = ["# Build Swarm admin keys: NAME:sha256$DIGEST (written by the controller)\n"]
    lines += [f"{k.name}:{k.hash}\n" for k in keys]
    write_atomic(path, "".join(lines).encode(), 0o600)


def read_key_file(path: Path) -> str | None:
    """The key in the admin key file (None if there is none); AdminKeyError if it is weak."""
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not text"
        raise AdminKeyError(f"cannot read admin key file {path}: {reason}") from None
    why = weakness(key)
    if why is not None:
        raise AdminKeyError(
            f"the admin key in {path} is refused: {why}; write a random one "
            f"(openssl rand -hex 32 > {path}) or delete the file for a new one"
        )
    return key


def load_or_create(path: Path) -> str:
    """The plain key in the admin key file, written with a random key if missing."""
    key = read_key_file(path)
    if key is not None:
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    log.warning("created a new admin key in %s", path)
    return key


def prepare(keys_path: Path, admin_key_path: Path) -> list[StoredKey]:
    """The stored keys at start, after bringing ``admin`` in line with the
    admin key file (blocking: file I/O; run it in a thread)."""
    try:
        keys = read_keys(keys_path) if keys_path.exists() else []
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not text"
        raise AdminKeyError(f"cannot read admin keys file {keys_path}: {reason}") from None
    if not keys or admin_key_path.exists():
        stored = hash_key(load_or_create(admin_key_path))
        current = next((k for k in keys if k.name == ADMIN), None)
        if current is None or current.hash != stored:
            keys = [k for k in keys if k.name != ADMIN and k.hash != stored] + [StoredKey(ADMIN, stored)]
            write_keys(keys_path, keys)
            log.info("the key in %s is stored hashed in %s as %r", admin_key_path, keys_path, ADMIN)
    legacy = [k.name for k in keys if k.legacy]
    if legacy:
        log.info(
            "admin keys %s are still in the scrypt form of an earlier version: each is converted "
            "to the fast form when it is first used",
            ", ".join(legacy),
        )
    return keys


def _match_scrypt(presented: str, keys: list[StoredKey]) -> StoredKey | None:
    for key in keys:
        if verify_scrypt(presented, key.hash):
            return key
    return None


class KeyStore:
    """The admin keys of a running controller: checks, adds and removes them.

    Holds only hashes: the SHA-256 of each key (and the scrypt hashes of
    keys from an earlier version that have not been used since)."""

    def __init__(self, path: Path, admin_key_path: Path, keys: list[StoredKey]) -> None:
        self.path = path
        self.admin_key_path = admin_key_path
        self._keys = list(keys)
        self._by_hash = {k.hash: k for k in keys if not k.legacy}
        self._slots = asyncio.Semaphore(CHECK_SLOTS)
        self._write = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, admin_key_path: Path) -> KeyStore:
        return cls(path, admin_key_path, await asyncio.to_thread(prepare, path, admin_key_path))

    def _replace(self, keys: list[StoredKey]) -> None:
        self._keys = keys
        self._by_hash = {k.hash: k for k in keys if not k.legacy}

    def names(self) -> list[str]:
        return [k.name for k in self._keys]

    def named(self, name: str) -> StoredKey | None:
        return next((k for k in self._keys if k.name == name), None)

    def holds(self, key_hash: str) -> bool:
        """Whether the key with this stored hash is still valid (not removed)."""
        return any(hmac.compare_digest(k.hash, key_hash) for k in self._keys)

    @property
    def has_legacy(self) -> bool:
        """Whether some key is still in the slow scrypt form."""
        return any(k.legacy for k in self._keys)

    def find(self, presented: str | None) -> StoredKey | None:
        """The key ``presented`` is, by its SHA-256 (fast: microseconds), or None."""
        if not presented or len(presented) > MAX_LENGTH or not presented.isascii():
            return None
        digest = hash_key(presented)
        found = self._by_hash.get(digest)
        return found if found is not None and hmac.compare_digest(found.hash, digest) else None

    async def check_legacy(self, presented: str) -> StoredKey | None:
        """The scrypt-hashed key ``presented`` matches, or None (slow: only
        when the limiter allows a failed check). A match is converted to the
        fast form; the key returned is the converted one."""
        legacy = [k for k in self._keys if k.legacy]
        if not legacy or not presented or len(presented) > MAX_LENGTH or not presented.isascii():
            return None
        async with self._slots:
            found = self.find(presented)  # converted while this request waited
            if found is not None:
                return found
            matched = await asyncio.to_thread(_match_scrypt, presented, legacy)
        if matched is None:
            return None
        return await self._convert(matched, presented)

    async def _convert(self, key: StoredKey, presented: str) -> StoredKey | None:
        why = weakness(presented)
        async with self._write:
            if key not in self._keys:
                return self.find(presented)  # removed meanwhile, or converted by another request
            if why is not None:
                log.warning("admin key %r is weak (%s): replace it with a new one", key.name, why)
                return key
            fast = StoredKey(key.name, hash_key(presented))
            keys = [fast if k == key else k for k in self._keys]
            await asyncio.to_thread(write_keys, self.path, keys)
            self._replace(keys)
        log.info("admin key %r converted from scrypt to the fast form", key.name)
        return fast

    async def add(self, name: str) -> str:
        """Make a new random key named ``name``; returns it (shown once, stored hashed)."""
        check_name(name)
        key = new_key()
        async with self._write:
            if name in self.names():
                raise FailedPrecondition(f"there is already a key named {name!r}; remove it first")
            keys = [*self._keys, StoredKey(name, hash_key(key))]
            await asyncio.to_thread(write_keys, self.path, keys)
            self._replace(keys)
        log.info("admin key %r added", name)
        return key

    async def remove(self, name: str) -> str | None:
        """Remove the key ``name``. Returns what became of the admin key file
        (None: it does not hold this key): ``deleted`` when it held this key,
        which the next start would otherwise bring back; ``kept`` when it
        holds another key, which becomes ``admin`` at the next start."""
        async with self._write:
            key = self.named(name)
            if key is None:
                raise NotFound(f"no admin key named {name[:64]!r}")
            if len(self._keys) == 1:
                raise FailedPrecondition("that is the last admin key: add another one first")
            keys = [k for k in self._keys if k.name != name]
            await asyncio.to_thread(write_keys, self.path, keys)
            self._replace(keys)
            action = await asyncio.to_thread(self._settle_key_file, key) if name == ADMIN else None
        log.info("admin key %r removed", name)
        return action

    def _settle_key_file(self, key: StoredKey) -> str | None:
        try:
            held: str | None = self.admin_key_path.read_text().strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            held = None
        same = (
            held is not None
            and held.isascii()
            and (verify_scrypt(held, key.hash) if key.legacy else hash_key(held) == key.hash)
        )
        if not same:
            log.info("%s holds another key than the removed one: it stays", self.admin_key_path)
            return "kept"
        self.admin_key_path.unlink(missing_ok=True)
        log.info("deleted %s: it held the removed key %r", self.admin_key_path, key.name)
        return "deleted"
