"""The release key: a GnuPG key that signs every package of a release (through
Portage, see portage_worker.py) and each release's manifest.

It lives in its own GnuPG home, ``<releases_dir>/gnupg`` (0700), made on
first use (the first cut) with ``gpg --batch`` (ed25519, no passphrase:
the controller signs unattended), or imported at start from an armored
secret key file (``--release-key``). Until then there is no gpg-agent and
staging's packages stay unsigned; the first cut signs them. The
fingerprint of the key in use is kept beside it (``gnupg/release-key.fpr``),
and its public half, armored, in ``<releases_dir>/key.asc`` for clients to
fetch. The drones never hold it.

Every method blocks (it runs gpg): call them from a thread.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from pathlib import Path

from swarm.files import write_atomic

log = logging.getLogger(__name__)

GPG_TIMEOUT = 120.0
FINGERPRINT_FILE = "release-key.fpr"
KEY_ALGO = "ed25519"
SOCKET_PATH_ROOM = 107 - len("/S.gpg-agent.browser")


class SigningError(Exception):
    """The release key cannot be made, imported or used; the message says why."""


class ReleaseKey:
    def __init__(self, root: Path, import_from: Path | None = None) -> None:
        self.home = root / "gnupg"
        self.public_path = root / "key.asc"
        self._import_from = import_from
        self._fingerprint = ""
        self._public = ""

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def public_key(self) -> str:
        """The public key, armored."""
        return self._public

    def gpg(self, *args: str, stdin: bytes | None = None) -> bytes:
        self._home()
        try:
            done = subprocess.run(
                ["gpg", "--homedir", str(self.home), "--batch", "--no-tty", *args],
                input=stdin,
                capture_output=True,
                timeout=GPG_TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            raise SigningError("gpg (GnuPG) is not installed") from None
        except subprocess.TimeoutExpired:
            raise SigningError(f"gpg {args[0]} did not finish in {GPG_TIMEOUT:.0f}s") from None
        if done.returncode != 0:
            text = done.stderr.decode(errors="replace")
            why = " ".join(text.strip().splitlines()[-3:])[:500]
            if "failed to start agent" in text and len(str(self.home)) > SOCKET_PATH_ROOM:
                # gpg-agent's sockets live in the home when /run/user/UID does not
                # exist, and a socket's path is limited to 107 bytes.
                why += f" (the GnuPG home {self.home} is likely too long a path for gpg-agent's sockets)"
            raise SigningError(f"gpg {args[0]} failed: {why}")
        return done.stdout

    def load(self) -> None:
        """Import the key file if one was given, else use the key made
        before if there is one."""
        record = self.home / FINGERPRINT_FILE
        if self._import_from is not None:
            self._use(self._import(self._import_from))
        elif record.exists():
            fingerprint = record.read_text().strip()
            if fingerprint not in self._secret_fingerprints():
                raise SigningError(f"the release key {fingerprint} is missing from {self.home}")
            self._use(fingerprint)

    def ensure(self) -> None:
        """Make the key unless there is one."""
        if not self._fingerprint:
            self._use(self._create())

    def _use(self, fingerprint: str) -> None:
        """Record the key, export its public half, and check that it signs
        without a passphrase."""
        record = self.home / FINGERPRINT_FILE
        if not record.exists() or record.read_text().strip() != fingerprint:
            write_atomic(record, (fingerprint + "\n").encode(), 0o600)
        self._fingerprint = fingerprint
        self._public = self.gpg("--armor", "--export", fingerprint).decode()
        if "BEGIN PGP PUBLIC KEY BLOCK" not in self._public:
            raise SigningError(f"gpg exported no public key for {fingerprint}")
        write_atomic(self.public_path, self._public.encode())
        try:
            self.sign(b"release key check\n")
        except SigningError as exc:
            raise SigningError(
                f"the release key {fingerprint} cannot sign unattended (a passphrase?): {exc}"
            ) from None
        log.info("release key %s (GnuPG home %s)", fingerprint, self.home)

    def _home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)

    def _secret_fingerprints(self) -> list[str]:
        listing = self.gpg("--with-colons", "--list-secret-keys").decode()
        return _primary_fingerprints(listing, "sec")

    def _create(self) -> str:
        user = f"Build Swarm release key <release@{socket.getfqdn() or 'localhost'}>"
        log.info("creating the release key (%s) in %s", KEY_ALGO, self.home)
        before = set(self._secret_fingerprints())
        self.gpg("--passphrase", "", "--quick-gen-key", user, KEY_ALGO, "sign", "never")
        made = [f for f in self._secret_fingerprints() if f not in before]
        if len(made) != 1:
            raise SigningError(f"gpg made {len(made)} keys instead of one")
        return made[0]

    def _import(self, path: Path) -> str:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SigningError(f"cannot read the release key file {path}: {exc.strerror or exc}") from None
        shown = self.gpg("--with-colons", "--import-options", "show-only", "--import", stdin=data).decode()
        secret = _primary_fingerprints(shown, "sec")
        if not secret:
            raise SigningError(
                f"{path} holds no secret key (export one with gpg --armor --export-secret-keys)"
            )
        if len(secret) > 1:
            raise SigningError(f"{path} holds {len(secret)} secret keys; give it exactly one")
        fingerprint = secret[0]
        self.gpg("--import", stdin=data)
        # Imported keys are not trusted by default; Portage verifies only with
        # ultimate trust (see GENTOO_PREFIX.md), here and on the clients.
        self.gpg("--import-ownertrust", stdin=f"{fingerprint}:6:\n".encode())
        self.gpg("--check-trustdb")
        log.info("imported the release key %s from %s", fingerprint, path)
        return fingerprint

    def sign(self, data: bytes) -> bytes:
        """A detached, armored signature of ``data``."""
        return self.gpg(
            "--local-user", self._fingerprint, "--armor", "--detach-sign", "--output", "-", stdin=data
        )

    def close(self) -> None:
        """End the gpg-agent that signing started for this home."""
        if not self.home.is_dir():
            return
        try:
            subprocess.run(
                ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not stop the release key's gpg-agent: %s", exc)


def _primary_fingerprints(colons: str, kind: str) -> list[str]:
    """Fingerprints of the primary keys of ``kind`` (sec, pub) in gpg's --with-colons output."""
    found: list[str] = []
    primary = False
    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] in ("sec", "pub", "ssb", "sub"):
            primary = fields[0] == kind
        elif fields[0] == "fpr" and primary and len(fields) > 9:
            found.append(fields[9])
            primary = False
    return found
