"""Lay out a Gentoo prefix in which Portage from PyPI runs real ``emerge``.

``PORTAGE_OVERRIDE_EPREFIX=<root>`` makes ``<root>`` the whole Gentoo
installation: configuration in ``<root>/etc/portage``, installed files under
``<root>/usr``, the installed-package database in ``<root>/var/db/pkg``
(see ../shared/GENTOO_PREFIX.md). A prefix has one of three roles:

``drone``
    builds from the ebuild repository with ``FEATURES=buildpkg`` into its own
    PKGDIR (``var/cache/binpkgs``); with a binhost URL it can also pull
    already-built dependencies with ``emerge --getbinpkg``.
``client``
    installs only binary packages from a binhost URL (``binrepos.conf`` with
    ``sync-uri``), verifying gpkg signatures against a GnuPG home, or not at
    all (``verify-signature = false``) when none is given. Without a URL,
    binrepos.conf is left to whoever manages it (``swarm-upgrade apply``).
``controller``
    only the repository and the profile, so that ``emerge --pretend`` and the
    portage API can resolve dependency graphs.

Creating a prefix that exists is an update: every managed file is rewritten
only when its content changes, so a second run costs a few stat calls.

Command line::

    python tools/prefix.py create /tmp/drone --role drone
    python tools/prefix.py create /tmp/client --role client --binhost http://127.0.0.1:8080/
    python tools/prefix.py emerge /tmp/drone -- --buildpkg swarm-test/diamond-top
    eval "$(python tools/prefix.py env /tmp/drone)"
"""

from __future__ import annotations

import argparse
import enum
import grp
import logging
import os
import platform
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
# The project's test overlay: tiny EAPI 8 ebuilds in swarm-test/.
OVERLAY = ROOT / "tests" / "fixtures" / "overlay"
# The repository is named "gentoo" and made main-repo so Portage does not
# warn about a missing /var/db/repos/gentoo.
REPO_NAME = "gentoo"
BINREPO_NAME = "swarm"
PORTAGE_USER = "portage"
PORTAGE_GROUP = "portage"

# platform.machine() -> profile under <repo>/profiles.
PROFILES = {"x86_64": "swarm/amd64", "amd64": "swarm/amd64", "aarch64": "swarm/arm64", "arm64": "swarm/arm64"}

# No sandbox binary here; userpriv/userfetch/usersync would drop to the
# portage user, who may not be able to read the venv (under /root, say) or
# a prefix inside a 0700 directory such as pytest's tmp_path. merge-sync
# (syncfs after each merge), news and parallel-fetch (a second emerge
# process, with nothing to fetch) only cost time. nostrip: stripping needs
# scanelf (pax-utils), which Debian lacks, and the test binaries are tiny.
BASE_FEATURES = (
    "-sandbox",
    "-usersandbox",
    "-ipc-sandbox",
    "-network-sandbox",
    "-pid-sandbox",
    "-mount-sandbox",
    "-userpriv",
    "-userfetch",
    "-usersync",
    "-merge-sync",
    "-news",
    "-parallel-fetch",
    "nostrip",
)

# The environment emerge runs with is built from scratch: Portage reads
# variables such as FEATURES, USE, PKGDIR or ROOT from its environment and
# lets them override make.conf, so nothing of the caller's leaks in.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PrefixError(Exception):
    """The prefix cannot be laid out or used (missing emerge, user, profile...)."""


class EmergeTimeout(PrefixError):
    """emerge ran longer than its timeout; its process group was killed."""

    def __init__(self, argv: Sequence[str], timeout: float, output: str) -> None:
        super().__init__(f"emerge timed out after {timeout:.0f}s: {shlex.join(argv)}")
        self.output = output


class Role(enum.StrEnum):
    DRONE = "drone"
    CLIENT = "client"
    CONTROLLER = "controller"


@dataclass(frozen=True, slots=True)
class PrefixConfig:
    """What a prefix should look like; ``create_prefix`` makes it so."""

    root: Path
    role: Role
    # The ebuild repository (an overlay laid out like tests/fixtures/overlay).
    repo: Path = OVERLAY
    # Profile path relative to <repo>/profiles; None picks one for this machine.
    profile: str | None = None
    # Binhost URL (binrepos.conf sync-uri): required for a client, optional
    # for a drone (used with emerge --getbinpkg), ignored by a controller.
    binhost: str | None = None
    # GnuPG home holding the binhost's signing key with ultimate trust: gpkg
    # signatures are verified against it. None: verify-signature = false.
    # Verification runs as nobody:nogroup, so the directory and every parent
    # must be readable by them.
    gnupghome: Path | None = None
    # Drone only: sign every binpkg it builds (FEATURES=binpkg-signing) with
    # this key from this GnuPG home. Portage then verifies what it signed, so
    # gnupghome must hold the public key too.
    signing_gnupghome: Path | None = None
    signing_key: str | None = None
    # Extra make.conf variables, e.g. {"SWARM_TEST_SLEEP": "3"}; a FEATURES
    # value is appended to the role's own list.
    make_conf: Mapping[str, str] = field(default_factory=dict)
    # Per-package variables: {"swarm-test/sleeper": {"SWARM_TEST_SLEEP": "3"}}
    # becomes an etc/portage/env file named in etc/portage/package.env.
    package_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Prefix:
    """An existing prefix: its paths and how to run emerge in it."""

    root: Path

    @property
    def config_root(self) -> Path:
        return self.root / "etc" / "portage"

    @property
    def pkgdir(self) -> Path:
        return self.root / "var" / "cache" / "binpkgs"

    @property
    def distdir(self) -> Path:
        return self.root / "var" / "cache" / "distfiles"

    @property
    def tmpdir(self) -> Path:
        return self.root / "var" / "tmp"

    @property
    def vdb(self) -> Path:
        """The installed-package database: var/db/pkg/<cat>/<pf>/."""
        return self.root / "var" / "db" / "pkg"

    def installed(self, cpv: str) -> bool:
        """Whether ``cat/pkg-ver`` is recorded as installed in this prefix."""
        return (self.vdb / cpv / "CONTENTS").is_file()

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment to run Portage tools in this prefix."""
        return emerge_env(self, extra)

    @property
    def binhost_cache(self) -> Path:
        """Where binpkgs fetched through binrepos.conf are kept: <this>/<binrepo>/<cat>/<pn>/.

        Not PKGDIR: a drone's PKGDIR holds only what it built itself. (With
        PORTAGE_BINHOST instead of binrepos.conf, Portage fetches into PKGDIR.)
        """
        return self.root / "var" / "cache" / "binhost"

    def emerge_argv(self) -> list[str]:
        """How to start emerge: with the running interpreter when it is in its venv."""
        emerge = find_tool("emerge")
        if emerge.parent == Path(sys.executable).parent:
            return [sys.executable, str(emerge)]
        return [str(emerge)]


@dataclass(frozen=True, slots=True)
class EmergeResult:
    argv: tuple[str, ...]
    returncode: int
    # stdout and stderr interleaved, as a person would see them.
    output: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# -- portage user ------------------------------------------------------------


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _admin_tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise PrefixError(f"{name} not found: create the {PORTAGE_USER} user and group by hand")
    return found


def ensure_portage_user() -> None:
    """Make sure the ``portage`` user and group exist; Portage refuses to run without them.

    As root, missing ones are created as a system group and a system account
    without login; otherwise this fails saying what to create.
    """
    if _group_exists(PORTAGE_GROUP) and _user_exists(PORTAGE_USER):
        return
    if os.geteuid() != 0:
        raise PrefixError(
            f"Portage needs a {PORTAGE_USER!r} user and group (see /etc/passwd, /etc/group);"
            " run once as root or create them: groupadd --system portage &&"
            " useradd --system --gid portage --no-create-home --shell /usr/sbin/nologin portage"
        )
    if not _group_exists(PORTAGE_GROUP):
        log.info("creating system group %s", PORTAGE_GROUP)
        done = subprocess.run(
            [_admin_tool("groupadd"), "--system", PORTAGE_GROUP], capture_output=True, text=True
        )
        # Another process may have created it meanwhile.
        if done.returncode != 0 and not _group_exists(PORTAGE_GROUP):
            raise PrefixError(f"groupadd {PORTAGE_GROUP} failed: {done.stderr.strip()}")
    if not _user_exists(PORTAGE_USER):
        log.info("creating system user %s", PORTAGE_USER)
        done = subprocess.run(
            [
                _admin_tool("useradd"),
                "--system",
                "--gid",
                PORTAGE_GROUP,
                "--no-create-home",
                "--home-dir",
                "/var/lib/portage/home",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "Portage system user",
                PORTAGE_USER,
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 and not _user_exists(PORTAGE_USER):
            raise PrefixError(f"useradd {PORTAGE_USER} failed: {done.stderr.strip()}")


# -- layout ------------------------------------------------------------------


def find_tool(name: str) -> Path:
    """A Portage tool (emerge, ebuild, quickpkg, gpkg-sign...) of the running venv."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found is None:
        raise PrefixError(f"{name} not found next to {sys.executable} nor on PATH: pip install portage")
    return Path(found)


def portage_share_config() -> Path:
    """The venv's share/portage/config (make.globals, the default repos.conf...)."""
    # Imported here: laying out paths and --help need no portage import (slow).
    import portage.const

    # PORTAGE_BASE_PATH is <venv>/lib/portage; the config is <venv>/share/portage/config.
    candidates = [
        Path(sys.prefix) / "share" / "portage" / "config",
        Path(portage.const.PORTAGE_BASE_PATH).parent.parent / "share" / "portage" / "config",
    ]
    for candidate in candidates:
        if (candidate / "make.globals").is_file():
            return candidate
    raise PrefixError(f"make.globals not found in {', '.join(map(str, candidates))}")


def _write(path: Path, content: str) -> bool:
    """Write ``content`` atomically unless it is already there; True when written."""
    try:
        if path.read_text() == content:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _copy_tree(src: Path, dst: Path) -> None:
    """Mirror src into dst, copying only files whose size or mtime differ."""
    for dirpath, _dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            source, target = Path(dirpath) / name, dst / rel / name
            s = source.stat()
            try:
                t = target.stat()
                if t.st_size == s.st_size and int(t.st_mtime) == int(s.st_mtime):
                    continue
            except FileNotFoundError:
                pass
            shutil.copy2(source, target)


def _symlink(link: Path, target: Path) -> None:
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.exists() or link.is_symlink():
        _remove(link)
    link.symlink_to(target)


def _quote(value: str) -> str:
    """A make.conf value: double-quoted, with the characters bash expands escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    return f'"{escaped}"'


def _assignments(values: Mapping[str, str]) -> str:
    return "".join(f"{key}={_quote(value)}\n" for key, value in values.items())


def default_profile() -> str:
    machine = platform.machine()
    try:
        return PROFILES[machine]
    except KeyError:
        raise PrefixError(f"no swarm test profile for {machine!r}: pass a profile explicitly") from None


def _features(config: PrefixConfig) -> str:
    features = list(BASE_FEATURES)
    if config.role is Role.DRONE:
        features.append("buildpkg")
        if config.signing_key:
            features.append("binpkg-signing")
    return " ".join(features)


def _make_conf(config: PrefixConfig, prefix: Prefix) -> str:
    values: dict[str, str] = {
        "FEATURES": _features(config),
        "PKGDIR": str(prefix.pkgdir),
        "DISTDIR": str(prefix.distdir),
        "PORTAGE_TMPDIR": str(prefix.tmpdir),
        "BINPKG_FORMAT": "gpkg",
        # Keys are ours to manage: no getuto (and no warning that it is missing).
        "PORTAGE_TRUST_HELPER": "",
    }
    # Portage verifies every signed gpkg it reads, including the ones a
    # signing drone just built; the default home is the host's
    # /etc/portage/gnupg, so point it into the prefix when none is given.
    gnupghome = config.gnupghome.resolve() if config.gnupghome else prefix.config_root / "gnupg"
    values["BINPKG_GPG_VERIFY_GPG_HOME"] = str(gnupghome)
    if config.role is Role.DRONE and config.signing_key:
        assert config.signing_gnupghome is not None
        values["BINPKG_GPG_SIGNING_GPG_HOME"] = str(config.signing_gnupghome.resolve())
        values["BINPKG_GPG_SIGNING_KEY"] = config.signing_key
    if config.role is Role.CLIENT:
        # A client never builds: what the binhost lacks cannot be installed.
        values["EMERGE_DEFAULT_OPTS"] = "--getbinpkgonly"
    for key, value in config.make_conf.items():
        if key == "FEATURES":
            values[key] = f"{values[key]} {value}"
        else:
            values[key] = value
    header = f"# Written by tools/prefix.py for a {config.role} prefix; rewritten on every run.\n"
    return header + _assignments(values)


def _repos_conf(repo: Path) -> str:
    return (
        "# Written by tools/prefix.py.\n"
        "[DEFAULT]\n"
        f"main-repo = {REPO_NAME}\n"
        "\n"
        f"[{REPO_NAME}]\n"
        f"location = {repo}\n"
        "auto-sync = no\n"
    )


def _binrepos_conf(binhost: str, verify: bool) -> str:
    return (
        "# Written by tools/prefix.py.\n"
        f"[{BINREPO_NAME}]\n"
        "priority = 9999\n"
        f"sync-uri = {binhost}\n"
        f"verify-signature = {'true' if verify else 'false'}\n"
    )


def _env_file_name(atom: str) -> str:
    return "swarm-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in atom) + ".conf"


def create_prefix(config: PrefixConfig) -> Prefix:
    """Lay out (or bring up to date) the prefix described by ``config``."""
    if (config.signing_key is None) != (config.signing_gnupghome is None):
        raise PrefixError("signing needs both a key and a GnuPG home")
    if config.signing_key and config.gnupghome is None:
        raise PrefixError(
            "a signing drone needs a verification GnuPG home too: Portage verifies each binpkg it signs"
        )
    repo = config.repo.resolve()
    if not (repo / "profiles" / "repo_name").is_file():
        raise PrefixError(f"{repo} is not an ebuild repository (no profiles/repo_name)")
    profile = repo / "profiles" / (config.profile or default_profile())
    if not (profile / "make.defaults").is_file():
        raise PrefixError(f"{profile} is not a profile (no make.defaults)")
    ensure_portage_user()

    prefix = Prefix(config.root.resolve())
    for directory in (prefix.config_root, prefix.pkgdir, prefix.distdir, prefix.tmpdir, prefix.vdb):
        directory.mkdir(parents=True, exist_ok=True)
    _copy_tree(portage_share_config(), prefix.root / "share" / "portage" / "config")
    _symlink(prefix.config_root / "make.profile", profile)
    _write(prefix.config_root / "make.conf", _make_conf(config, prefix))
    _write(prefix.config_root / "repos.conf", _repos_conf(repo))

    binrepos = prefix.config_root / "binrepos.conf"
    if config.binhost and config.role is not Role.CONTROLLER:
        _write(binrepos, _binrepos_conf(config.binhost, verify=config.gnupghome is not None))
    elif binrepos.exists() and config.role is not Role.CLIENT:
        _remove(binrepos)

    env_dir = prefix.config_root / "env"
    package_env = prefix.config_root / "package.env"
    wanted: set[str] = set()
    lines = []
    for atom, values in config.package_env.items():
        name = _env_file_name(atom)
        wanted.add(name)
        _write(env_dir / name, _assignments(values))
        lines.append(f"{atom} {name}\n")
    if lines:
        _write(package_env, "# Written by tools/prefix.py.\n" + "".join(lines))
    elif package_env.exists():
        _remove(package_env)
    if env_dir.is_dir():
        for stale in env_dir.glob("swarm-*.conf"):
            if stale.name not in wanted:
                stale.unlink()
    log.debug("prefix %s ready (%s)", prefix.root, config.role)
    return prefix


# -- running emerge ------------------------------------------------------------


def emerge_env(prefix: Prefix, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for Portage tools in ``prefix`` (plus ``extra``).

    Variables in ``extra`` reach ebuilds too (e.g. SWARM_TEST_SLEEP), and
    override make.conf for Portage's own settings.
    """
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PORTAGE_OVERRIDE_EPREFIX": str(prefix.root),
        "PATH": f"{venv_bin}:{DEFAULT_PATH}",
        "HOME": str(prefix.tmpdir),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NOCOLOR": "true",
    }
    if extra:
        env.update(extra)
    return env


def emerge_command(
    prefix: Prefix, extra_env: Mapping[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The argv prefix and the environment to run emerge in ``prefix``."""
    return prefix.emerge_argv(), emerge_env(prefix, extra_env)


def run_emerge(
    prefix: Prefix,
    *args: str,
    timeout: float = 300.0,
    env: Mapping[str, str] | None = None,
) -> EmergeResult:
    """Run ``emerge *args`` in ``prefix`` and capture its output.

    emerge runs in its own session; on timeout the whole process group is
    killed and EmergeTimeout raised with what it printed so far.
    """
    argv, process_env = emerge_command(prefix, env)
    argv += args
    log.info("emerge %s in %s", shlex.join(args), prefix.root)
    started = time.monotonic()
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=process_env,
        cwd=prefix.root,
        start_new_session=True,
    ) as proc:
        try:
            raw, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raw, _ = proc.communicate()
            raise EmergeTimeout(argv, timeout, raw.decode(errors="replace")) from None
    duration = time.monotonic() - started
    log.info("emerge exited %d after %.1fs", proc.returncode, duration)
    return EmergeResult(tuple(argv), proc.returncode, raw.decode(errors="replace"), duration)


# -- command line ----------------------------------------------------------------


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected VAR=VALUE, got {text!r}")
    return key, value


def _package_env(text: str) -> tuple[str, str, str]:
    atom, sep, assignment = text.partition(":")
    if not sep or not atom:
        raise argparse.ArgumentTypeError(f"expected ATOM:VAR=VALUE, got {text!r}")
    key, value = _key_value(assignment)
    return atom, key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Lay out a Gentoo prefix for a drone, a client or the controller, and run emerge in it.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    create = sub.add_parser("create", help="create or update a prefix")
    create.add_argument("root", type=Path, help="prefix directory (created if missing)")
    create.add_argument("--role", type=Role, choices=list(Role), required=True, help="what the prefix is for")
    create.add_argument("--repo", type=Path, default=OVERLAY, help=f"ebuild repository (default: {OVERLAY})")
    create.add_argument(
        "--profile",
        help="profile path under <repo>/profiles (default: swarm/amd64 or swarm/arm64 for this machine)",
    )
    create.add_argument(
        "--binhost",
        help="binhost URL for binrepos.conf (a client without one: swarm-upgrade writes binrepos.conf)",
    )
    create.add_argument(
        "--gnupghome",
        type=Path,
        help="verify gpkg signatures with the keys in this GnuPG home (default: no verification)",
    )
    create.add_argument(
        "--set",
        dest="make_conf",
        type=_key_value,
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="extra make.conf variable (repeatable), e.g. SWARM_TEST_SLEEP=3",
    )
    create.add_argument(
        "--package-env",
        type=_package_env,
        action="append",
        default=[],
        metavar="ATOM:VAR=VALUE",
        help="per-package variable through package.env (repeatable),"
        " e.g. swarm-test/sleeper:SWARM_TEST_SLEEP=3",
    )

    create.add_argument(
        "--sign-gnupghome",
        type=Path,
        help="drone: sign each binpkg it builds with a key from this GnuPG home"
        " (needs --sign-key and --gnupghome)",
    )
    create.add_argument("--sign-key", help="drone: fingerprint of the signing key")

    env = sub.add_parser("env", help="print shell export lines to run Portage tools in a prefix")
    env.add_argument("root", type=Path, help="prefix directory")

    emerge = sub.add_parser("emerge", help="run emerge in a prefix (arguments after --)")
    emerge.add_argument("root", type=Path, help="prefix directory")
    emerge.add_argument("args", nargs=argparse.REMAINDER, help="emerge arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ns = _parser().parse_args(argv)
    try:
        if ns.command == "create":
            package_env: dict[str, dict[str, str]] = {}
            for atom, key, value in ns.package_env:
                package_env.setdefault(atom, {})[key] = value
            started = time.monotonic()
            prefix = create_prefix(
                PrefixConfig(
                    root=ns.root,
                    role=ns.role,
                    repo=ns.repo,
                    profile=ns.profile,
                    binhost=ns.binhost,
                    gnupghome=ns.gnupghome,
                    signing_gnupghome=ns.sign_gnupghome,
                    signing_key=ns.sign_key,
                    make_conf=dict(ns.make_conf),
                    package_env=package_env,
                )
            )
            log.info("%s prefix ready in %s (%.3fs)", ns.role, prefix.root, time.monotonic() - started)
        elif ns.command == "env":
            prefix = Prefix(ns.root.resolve())
            for key, value in emerge_env(prefix).items():
                print(f"export {key}={shlex.quote(value)}")
        else:
            prefix = Prefix(ns.root.resolve())
            args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
            command, env = emerge_command(prefix)
            return subprocess.call([*command, *args], env=env)
    except PrefixError as exc:
        log.error("error: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
