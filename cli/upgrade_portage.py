"""The client's Portage: where it keeps things, and running its tools.

swarm-upgrade asks Portage itself (``portageq envvar``) where the
configuration, the installed-package database and the verification keyring
are, so make.conf, ``ROOT`` and a prefix's EPREFIX mean what they mean to
emerge. ``--eprefix`` sets ``PORTAGE_OVERRIDE_EPREFIX`` for every Portage
tool it runs (a Gentoo prefix, or Portage from PyPI laid out as one).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from swarm.cli.upgrade_errors import EXIT_USAGE, UpgradeError

log = logging.getLogger(__name__)

# Portage refuses an unsigned gpkg and verifies every signature with this
# on, whatever binrepos.conf and make.conf say; the minus undoes a
# binpkg-ignore-signature of make.conf for these runs.
VERIFY_FEATURES = "binpkg-request-signature -binpkg-ignore-signature"
# What is asked of portageq, in one call (a Python start and a config load).
SITE_VARIABLES = (
    "EROOT",
    "PORTAGE_CONFIGROOT",
    "BINPKG_GPG_VERIFY_GPG_HOME",
    "GPG_VERIFY_USER_DROP",
    "GPG_VERIFY_GROUP_DROP",
)
PORTAGEQ_TIMEOUT = 120.0


def find_tool(name: str) -> list[str]:
    """argv to start a Portage tool: the one beside this Python (a venv with
    Portage from PyPI) first, else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return [sys.executable, str(beside)]
    found = shutil.which(name)
    if found is None:
        raise UpgradeError(f"{name} not found on PATH: is Portage installed?", EXIT_USAGE)
    return [found]


@dataclass(frozen=True, slots=True)
class Site:
    """One Portage installation as its own configuration describes it."""

    eprefix: str  # "" for a whole system
    eroot: Path  # ROOT + EPREFIX: what is installed, and our state
    config_root: Path  # PORTAGE_CONFIGROOT (+ EPREFIX): etc/portage lives here
    gnupg_home: Path  # BINPKG_GPG_VERIFY_GPG_HOME: the keyring Portage verifies with
    verify_user: str  # Portage verifies as this user when run as root ("" keeps root)
    verify_group: str

    @property
    def portage_config(self) -> Path:
        return self.config_root / "etc" / "portage"

    @property
    def vdb(self) -> Path:
        return self.eroot / "var" / "db" / "pkg"

    @property
    def world_file(self) -> Path:
        return self.eroot / "var" / "lib" / "portage" / "world"

    @property
    def state_dir(self) -> Path:
        return self.eroot / "var" / "lib" / "swarm-upgrade"

    @property
    def config_file(self) -> Path:
        return self.config_root / "etc" / "swarm-upgrade.conf"

    @property
    def binhost_cache(self) -> Path:
        """Where Portage keeps what it fetched from a binrepos.conf repo (its default location)."""
        return Path(self.eprefix or "/") / "var" / "cache" / "binhost"

    @property
    def whole_system(self) -> bool:
        return self.eroot == Path("/")

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment Portage tools run with: ours, plus the prefix and ``extra``."""
        return tool_env(self.eprefix, extra)


def tool_env(eprefix: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if eprefix:
        env["PORTAGE_OVERRIDE_EPREFIX"] = eprefix
    # Colour codes would garble what we capture and print again.
    env["NOCOLOR"] = "true"
    env.update(extra or {})
    return env


def parse_envvar_output(text: str) -> dict[str, str]:
    """``portageq envvar -v A B`` prints A='value' lines (shell-quoted when needed)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, quoted = line.partition("=")
        if sep and name.isidentifier():
            words = shlex.split(quoted) if quoted else [""]
            values[name] = words[0] if words else ""
    return values


def load_site(eprefix: str) -> Site:
    """Ask Portage where things are for the installation at ``eprefix``."""
    if eprefix and not Path(eprefix, "etc", "portage").is_dir():
        raise UpgradeError(f"{eprefix} is not a Gentoo prefix (no etc/portage in it)", EXIT_USAGE)
    argv = [*find_tool("portageq"), "envvar", "-v", *SITE_VARIABLES]
    try:
        done = subprocess.run(
            argv,
            env=tool_env(eprefix),
            capture_output=True,
            text=True,
            timeout=PORTAGEQ_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UpgradeError(f"portageq failed: {exc}") from None
    values = parse_envvar_output(done.stdout)
    missing = [name for name in ("EROOT", "PORTAGE_CONFIGROOT") if not values.get(name)]
    if done.returncode != 0 or missing:
        why = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise UpgradeError(f"portageq could not read the Portage configuration: {why[0]}")
    eroot = Path(values["EROOT"])
    config_root = Path(values["PORTAGE_CONFIGROOT"])
    # make.globals names /etc/portage/gnupg without EPREFIX when Portage is
    # not installed into the prefix (from PyPI): ours is inside the prefix then.
    home = values.get("BINPKG_GPG_VERIFY_GPG_HOME") or str(config_root / "etc/portage/gnupg")
    return Site(
        eprefix=eprefix.rstrip("/"),
        eroot=eroot,
        config_root=config_root,
        gnupg_home=Path(home),
        verify_user=values.get("GPG_VERIFY_USER_DROP", "nobody"),
        verify_group=values.get("GPG_VERIFY_GROUP_DROP", "nogroup"),
    )


def emerge(site: Site, args: Sequence[str]) -> int:
    """Run emerge with signature verification forced on; its output goes to ours."""
    print(f"$ emerge {shlex.join(args)}", flush=True)
    # --ask=n: an EMERGE_DEFAULT_OPTS --ask must not wait for a keyboard here.
    argv = [*find_tool("emerge"), "--ask=n", *args]
    features = f"{os.environ.get('FEATURES', '')} {VERIFY_FEATURES}".strip()
    try:
        done = subprocess.run(
            argv, env=site.env({"FEATURES": features}), stdin=subprocess.DEVNULL, check=False
        )
    except OSError as exc:
        raise UpgradeError(f"cannot run emerge: {exc}") from None
    return done.returncode


def verify_gpkgs(site: Site, paths: Sequence[Path]) -> list[str]:
    """Portage's verification of each gpkg (swarm.cli.upgrade_verify_gpkg); the refusals."""
    argv = [sys.executable, "-m", "swarm.cli.upgrade_verify_gpkg", *map(str, paths)]
    features = f"{os.environ.get('FEATURES', '')} {VERIFY_FEATURES}".strip()
    try:
        done = subprocess.run(
            argv,
            env=site.env({"FEATURES": features}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise UpgradeError(f"cannot run Portage's gpkg verification: {exc}") from None
    if done.returncode not in (0, 1):
        raise UpgradeError(f"Portage's gpkg verification could not run (exit {done.returncode})")
    for line in done.stdout.splitlines():
        print(f"    {line}")
    return [
        line.split(":", 1)[0].removeprefix("refused ")
        for line in done.stdout.splitlines()
        if line.startswith("refused ")
    ]
