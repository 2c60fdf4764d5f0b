"""Portage's verification keyring: trusting the release key, and checking with it.

Portage verifies gpkg signatures with ``gpg --homedir
$BINPKG_GPG_VERIFY_GPG_HOME --no-auto-check-trustdb`` and, when run as
root, as ``GPG_VERIFY_USER_DROP:GPG_VERIFY_GROUP_DROP`` (nobody:nogroup);
it accepts a signature only with GOODSIG and TRUST_FULLY or
TRUST_ULTIMATE (portage/gpkg.py, checksum_helper). So the keyring is laid
out as Gentoo's getuto lays out /etc/portage/gnupg:

- the directory 0755 and its pubring.kbx and trustdb.gpg 0644, so that
  the drop user can read them; gpg.conf says ``no-permission-warning``
  (the drop user reads a home it does not own);
- a local trust key of this machine (ultimately trusted, being its own
  secret key), its passphrase in ``pass`` (0600) and its fingerprint in
  ``mykeyid``: the names getuto uses, so getuto and swarm-upgrade can
  share one keyring (on a machine where getuto made it, its key signs);
- the release key imported and locally signed (lsign) by that key, which
  makes it fully valid: TRUST_FULLY without handing it ultimate trust;
- the trust database checked after each change, since Portage does not.

The manifest's detached signature is checked the same way, as the same
user, and must come from the fingerprint ``trust`` pinned: another key in
the keyring (Gentoo's, on a shared keyring) does not sign our releases.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import secrets
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from swarm.cli.upgrade_errors import EXIT_FAILED, EXIT_UNTRUSTED, UpgradeError

log = logging.getLogger(__name__)

GPG = "gpg"
GPG_TIMEOUT = 120.0
LOCAL_KEY_UID = "Portage Local Trust Key (local signing only) <portage@localhost>"
GPG_CONF = "no-greeting\nno-permission-warning\n"
AGENT_CONF = "disable-scdaemon\n"
# What Portage's verify command passes besides the home and the files (make.globals).
VERIFY_OPTIONS = ("--batch", "--no-tty", "--no-auto-check-trustdb", "--no-permission-warning")


@dataclass(frozen=True, slots=True)
class KeyInfo:
    fingerprint: str
    uids: tuple[str, ...]


def spaced(fingerprint: str) -> str:
    """A fingerprint as gpg shows it: groups of four."""
    return " ".join(fingerprint[i : i + 4] for i in range(0, len(fingerprint), 4))


def _gpg_result(
    argv: Sequence[str], stdin: bytes | None, user: tuple[int, int] | None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            timeout=GPG_TIMEOUT,
            check=False,
            user=None if user is None else user[0],
            group=None if user is None else user[1],
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UpgradeError(f"{argv[0]} failed: {exc}") from None


def _run(argv: Sequence[str], *, stdin: bytes | None = None, user: tuple[int, int] | None = None) -> bytes:
    """Run gpg; its stdout, or UpgradeError with its last words."""
    done = _gpg_result(argv, stdin, user)
    if done.returncode != 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise UpgradeError(f"gpg: {last[0]}")
    return done.stdout


def inspect_key(armored: bytes) -> KeyInfo:
    """Fingerprint and user ids of an armored public key, importing it nowhere."""
    with tempfile.TemporaryDirectory(prefix="swarm-upgrade-") as home:
        try:
            listing = _run(
                [
                    GPG,
                    "--homedir",
                    home,
                    "--batch",
                    "--with-colons",
                    "--import-options",
                    "show-only",
                    "--import",
                ],
                stdin=armored,
            ).decode(errors="replace")
        except UpgradeError:
            raise UpgradeError(
                "the controller's release key is not an OpenPGP public key", EXIT_UNTRUSTED
            ) from None
        finally:
            subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False)
    primaries = [line for line in listing.splitlines() if line.startswith("pub:")]
    if len(primaries) != 1:
        raise UpgradeError(
            f"the controller's key.asc holds {len(primaries)} keys, not one release key", EXIT_UNTRUSTED
        )
    lines = listing.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("pub:"))
    fingerprint = next(line.split(":")[9] for line in lines[start:] if line.startswith("fpr:"))
    uids = tuple(line.split(":")[9] for line in lines if line.startswith("uid:"))
    return KeyInfo(fingerprint.upper(), uids)


@dataclass(frozen=True, slots=True)
class Keyring:
    home: Path
    verify_user: str = "nobody"  # "" when Portage keeps root's identity
    verify_group: str = "nogroup"

    # -- who Portage verifies as -------------------------------------------------

    def portage_identity(self) -> tuple[int, int] | None:
        """uid and gid Portage drops to for verification, when it runs as root (as we do)."""
        if os.geteuid() != 0 or not self.verify_user:
            return None
        try:
            uid = pwd.getpwnam(self.verify_user).pw_uid
            gid = grp.getgrnam(self.verify_group).gr_gid if self.verify_group else os.getgid()
        except KeyError as exc:
            raise UpgradeError(
                f"Portage verifies as {self.verify_user}:{self.verify_group}: no {exc}"
            ) from None
        return uid, gid

    def _gpg(self, *args: str) -> list[str]:
        return [GPG, "--homedir", str(self.home), "--batch", "--no-tty", *args]

    # -- trust -------------------------------------------------------------------

    def local_key(self) -> str | None:
        try:
            return (self.home / "mykeyid").read_text().strip() or None
        except FileNotFoundError:
            return None

    def ensure(self) -> bool:
        """Create the keyring and its local trust key where missing; True when the key was made."""
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o755)
        for name, content in (("gpg.conf", GPG_CONF), ("gpg-agent.conf", AGENT_CONF)):
            path = self.home / name
            if not path.exists():
                path.write_text(content)
                os.chmod(path, 0o644)
        if self.local_key() and (self.home / "pass").exists():
            return False
        passfile = self.home / "pass"
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
        status = _run(
            self._gpg(
                "--pinentry-mode",
                "loopback",
                "--passphrase-file",
                str(passfile),
                "--status-fd",
                "1",
                "--quick-gen-key",
                LOCAL_KEY_UID,
                "ed25519",
                "cert",
                "never",
            )
        ).decode()
        created = [line.split()[3] for line in status.splitlines() if line.startswith("[GNUPG:] KEY_CREATED")]
        if not created:
            raise UpgradeError(f"gpg made no local trust key in {self.home}")
        (self.home / "mykeyid").write_text(created[0] + "\n")
        os.chmod(self.home / "mykeyid", 0o644)
        return True

    def trust(self, armored: bytes, fingerprint: str) -> None:
        """Import the release key and sign it locally with the local trust key."""
        local = self.local_key()
        if local is None:
            raise UpgradeError(f"{self.home} has no local trust key (mykeyid): ensure() it first")
        try:
            _run(self._gpg("--import"), stdin=armored)
            _run(
                self._gpg(
                    "--yes",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase-file",
                    str(self.home / "pass"),
                    "--default-key",
                    local,
                    "--quick-lsign-key",
                    fingerprint,
                )
            )
            _run(self._gpg("--check-trustdb"))
        finally:
            # The agent that held the local key for the signature lives in this home.
            subprocess.run(
                ["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True, check=False
            )
        for name in ("pubring.kbx", "trustdb.gpg"):
            if (self.home / name).exists():
                os.chmod(self.home / name, 0o644)
        os.chmod(self.home, 0o755)

    def validity(self, fingerprint: str) -> str:
        """The key's validity as Portage's verifying user sees it: 'f' full, 'u' ultimate...

        Fails when that user cannot read the keyring (a directory above it
        closed to others): Portage could not verify anything either.
        """
        try:
            listing = _run(
                self._gpg("--no-permission-warning", "--with-colons", "--list-keys", fingerprint),
                user=self.portage_identity(),
            ).decode(errors="replace")
        except UpgradeError as exc:
            who = f"{self.verify_user}:{self.verify_group}" if self.portage_identity() else "this user"
            raise UpgradeError(
                f"Portage verifies as {who}, who cannot read the release key in {self.home} ({exc}); "
                "every directory above it must be open to others (o+x)",
                EXIT_FAILED,
            ) from None
        pub = next((line for line in listing.splitlines() if line.startswith("pub:")), "")
        return pub.split(":")[1] if pub else ""

    # -- verification --------------------------------------------------------------

    def verify_detached(self, data: bytes, signature: bytes, fingerprint: str, what: str) -> None:
        """Check ``signature`` over ``data`` as Portage checks a gpkg's, and that the
        trusted release key ``fingerprint`` made it. UpgradeError(3) saying why not."""
        with _readable_file(signature) as sig_path:
            argv = [GPG, "--homedir", str(self.home), *VERIFY_OPTIONS, "--status-fd", "1"]
            done = _gpg_result([*argv, "--verify", sig_path, "-"], data, self.portage_identity())
        status = done.stdout.decode(errors="replace").splitlines()
        problem = signature_problem(status, fingerprint)
        if problem or done.returncode != 0:
            raise UpgradeError(f"{what}: {problem or 'gpg could not verify it'}", EXIT_UNTRUSTED)


def signature_problem(status: Sequence[str], fingerprint: str) -> str:
    """What is wrong with a signature from gpg's --status-fd lines ("" when nothing)."""
    words = {
        line.split()[1]: line.split()[2:]
        for line in status
        if line.startswith("[GNUPG:] ") and len(line.split()) > 1
    }
    if "BADSIG" in words:
        return "BAD signature (the file or its signature was changed)"
    if "NO_PUBKEY" in words or "ERRSIG" in words:
        return "signed by an unknown key, not the trusted release key"
    if "EXPKEYSIG" in words or "REVKEYSIG" in words:
        return "signed by an expired or revoked key"
    if "NODATA" in words or "GOODSIG" not in words or "VALIDSIG" not in words:
        return "no valid signature"
    valid = words["VALIDSIG"]
    primary = (valid[9] if len(valid) > 9 else valid[0]).upper()
    if primary != fingerprint.upper():
        return f"signed by {spaced(primary)}, not the trusted release key {spaced(fingerprint)}"
    if "TRUST_FULLY" not in words and "TRUST_ULTIMATE" not in words:
        return "signed by the release key, but the keyring does not trust it (run swarm-upgrade trust)"
    return ""


@contextlib.contextmanager
def _readable_file(content: bytes) -> Iterator[str]:
    """A temporary file anyone may read (gpg may run as nobody), as Portage writes its .sig."""
    fd, path = tempfile.mkstemp(prefix="swarm-upgrade-", suffix=".asc")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.chmod(path, 0o644)
        yield path
    finally:
        os.unlink(path)
