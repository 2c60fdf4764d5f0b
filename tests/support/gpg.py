"""Real GnuPG for tests: throwaway keys, homes Portage can verify with, and
the end of the gpg-agent a home started (it is a daemon of its own and
outlives whoever ran gpg)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", *args], input=stdin, capture_output=True, check=True
    )
    return done.stdout


def end_agent(home: Path) -> None:
    """Stop the gpg-agent of ``home`` if one runs."""
    if home.is_dir():
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False, capture_output=True)


@contextlib.contextmanager
def gnupg_home(path: Path) -> Iterator[Path]:
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        end_agent(path)


@contextlib.contextmanager
def verify_home() -> Iterator[Path]:
    """A GnuPG home for verification. Portage verifies as nobody:nogroup, who
    cannot enter pytest's 0700 tmp_path: this one lives directly in /tmp.
    readable_by_nobody() once its keys are in."""
    with tempfile.TemporaryDirectory(prefix="swarm-verify-") as tmp, gnupg_home(Path(tmp) / "gnupg") as home:
        os.chmod(tmp, 0o755)
        yield home


def new_key(home: Path, name: str = "Swarm Test") -> str:
    """A throwaway signing key (ed25519, no passphrase) in ``home``; its fingerprint."""
    user = f"{name} <test@example.invalid>"
    gpg(home, "--passphrase", "", "--quick-gen-key", user, "ed25519", "sign", "1d")
    return fingerprints(home)[-1]


def fingerprints(home: Path) -> list[str]:
    listing = gpg(home, "--with-colons", "--list-keys").decode()
    return [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]


def trust(home: Path, public_key: bytes) -> str:
    """Import an armored public key with ultimate trust, as Portage requires; its fingerprint."""
    gpg(home, "--import", stdin=public_key)
    fingerprint = next(
        line.split(":")[9]
        for line in gpg(home, "--with-colons", "--import-options", "show-only", "--import", stdin=public_key)
        .decode()
        .splitlines()
        if line.startswith("fpr:")
    )
    gpg(home, "--import-ownertrust", stdin=f"{fingerprint}:6:\n".encode())
    gpg(home, "--check-trustdb")
    return fingerprint


def readable_by_nobody(home: Path) -> None:
    os.chmod(home, 0o755)
    for name in ("pubring.kbx", "trustdb.gpg"):
        if (home / name).exists():
            os.chmod(home / name, 0o644)
