"""The ``agent`` payload: versions of this program installed beside the
running one, switched to atomically, and tried under a watchdog.

Under ``STATE_DIR/payloads/agent/``::

    <version>/<wheel or sdist>   the verified bytes, under the name pip needs
    <version>/venv/              a venv holding only this project; its deps.pth
                                 names the floor's site-packages (grpcio, ...)
    <version>/meta.json          version, sha256, package_version
    current -> <version>         what the service runs (a symlink, replaced by rename)
    trial.json                   a switch not yet confirmed (see watchdog.py)
    rolled-back.json             what the watchdog undid, for the restored agent to report

The *floor* is the agent the system installed (the ebuild, or pip): its
``swarm-agent`` execs the version ``current`` names (launch_argv), unless
that one's package version is older than the floor's.

Standard library only: the watchdog (watchdog.py) imports this module and
runs even when grpc or the new version's code does not import.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from swarm.files import fsync_dir, write_atomic

log = logging.getLogger(__name__)

PROJECT = "build-swarm"
CURRENT, TRIAL, ROLLED_BACK, META = "current", "trial.json", "rolled-back.json", "meta.json"
INSTALL_TIMEOUT = 300.0
# Seconds a new version has to connect when the controller names no window.
DEFAULT_CONFIRM_WITHIN = 60
# The build backend an sdist of this project needs (pyproject.toml's
# build-system; its SPDX licence string needs setuptools 77).
SETUPTOOLS_MAJOR = 77
_WHEEL_INFO = re.compile(r"^([A-Za-z0-9_.]+)-([A-Za-z0-9_.!+]+)\.dist-info/WHEEL$")


class InstallError(Exception):
    """The payload cannot be installed; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class Trial:
    """A switch to ``version`` that its process has not confirmed yet."""

    version: int
    previous: str  # what ``current`` named before ("": the floor)
    deadline: float  # wall clock
    deploy_id: str
    pid: int
    supervised: bool
    argv: tuple[str, ...]  # how the previous version was started, to start it again


@dataclass(frozen=True, slots=True)
class RolledBack:
    version: int
    deploy_id: str
    reason: str


def agent_dir(state_dir: Path) -> Path:
    return state_dir / "payloads" / "agent"


def venv_of(state_dir: Path, version: int) -> Path:
    return agent_dir(state_dir) / str(version) / "venv"


def running_version(prefix: str | None = None) -> tuple[int, str]:
    """The payload version and sha256 of the code running now: (0, "") for the floor."""
    venv = Path(prefix if prefix is not None else sys.prefix)
    version_dir = venv.parent
    if venv.name != "venv" or not version_dir.name.isdigit() or version_dir.parent.name != "agent":
        return 0, ""
    try:
        meta = json.loads((version_dir / META).read_text())
        return int(version_dir.name), str(meta["sha256"])
    except (OSError, ValueError, KeyError):
        return 0, ""


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0]))


def launch_argv(state_dir: Path, floor_version: str, args: list[str]) -> list[str] | None:
    """The command that runs the version ``current`` names with ``args``, or
    None when this process already is that version (or there is none, it is
    not installed, or it is older than the floor)."""
    current = agent_dir(state_dir) / CURRENT
    try:
        target = os.readlink(current)
        meta = json.loads((current / META).read_text())
    except (OSError, ValueError):
        return None
    venv = (agent_dir(state_dir) / target / "venv").resolve()
    script = venv / "bin" / "swarm-agent"
    if venv == Path(sys.prefix).resolve() or not os.access(script, os.X_OK):
        return None
    if running_version()[0] == 0 and _version_key(str(meta.get("package_version", ""))) < _version_key(
        floor_version
    ):
        log.warning(
            "payload version %s (package %s) is older than the installed agent %s: running the installed one",
            target,
            meta.get("package_version"),
            floor_version,
        )
        return None
    return [str(script), *args]


# -- installing ------------------------------------------------------------------


def artifact_name(path: Path) -> str:
    """The file name pip needs for this wheel or sdist of the project, from its contents."""
    # Here, not at the top: every start of the agent imports this module.
    import tarfile
    import zipfile

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as wheel:
            for name in wheel.namelist():
                found = _WHEEL_INFO.match(name)
                if found is None:
                    continue
                dist, version = found.groups()
                tags = [
                    line.split(":", 1)[1].strip()
                    for line in wheel.read(name).decode(errors="replace").splitlines()
                    if line.startswith("Tag:")
                ]
                if dist.replace("_", "-").lower() != PROJECT or not tags:
                    break
                return f"{dist}-{version}-{tags[0]}.whl"
        raise InstallError(f"the agent payload is a zip but not a wheel of {PROJECT}")
    try:
        with tarfile.open(path) as sdist:
            top = sdist.getnames()[0].split("/")[0] if sdist.getnames() else ""
    except (tarfile.TarError, OSError):
        raise InstallError("the agent payload is neither a wheel nor an sdist") from None
    name, _, version = top.rpartition("-")
    if name.replace("_", "-").lower() != PROJECT or not version:
        raise InstallError(f"the agent payload is a tar but not an sdist of {PROJECT}")
    return f"{top}.tar.gz"


def dependency_paths() -> list[str]:
    """Where the floor's dependencies are, for a new version's venv to see
    them: the deps.pth of the payload venv running now, else this
    interpreter's site-packages."""
    version, _ = running_version()
    if version:
        pth = next(Path(sys.prefix).glob("lib/python*/site-packages/deps.pth"), None)
        if pth is not None:
            return [line for line in pth.read_text().splitlines() if line.strip()]
    import site

    return [p for p in site.getsitepackages() if Path(p).is_dir()]


def _run(argv: list[str], what: str) -> str:
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=INSTALL_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{what}: {exc}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise InstallError(f"{what} failed: {lines[-1].strip()[:300] if lines else done.returncode}")
    return done.stdout


def install(state_dir: Path, version: int, sha256: str, payload: Path) -> str:
    """Install ``payload`` (verified) as ``version`` beside the running
    agent; its package version. Blocking (a thread): a venv, then pip
    without the network (--no-index, --no-deps: the floor has the
    dependencies; an sdist is built without build isolation, by the
    floor's setuptools), then the new entry point asked for its version."""
    target = agent_dir(state_dir) / str(version)
    kept = installed(state_dir, version, sha256)
    if kept is not None:
        return kept  # still here (the version before, deployed again as a rollback)
    if target.exists():
        shutil.rmtree(target)  # an earlier attempt's leftovers: never the running version
    target.mkdir(parents=True)
    artifact = target / artifact_name(payload)
    shutil.copyfile(payload, artifact)
    venv = target / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "creating the venv")
    python = venv / "bin" / "python"
    site_dir = next(venv.glob("lib/python*/site-packages"))
    (site_dir / "deps.pth").write_text("".join(f"{p}\n" for p in dependency_paths()))
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    offline = ["--no-deps", "--no-index"]
    if artifact.name.endswith(".tar.gz"):
        # An sdist is built first, by the floor's setuptools (the venv sees
        # the floor's site-packages): pip's isolated build environment would
        # need setuptools from an index.
        _require_build_backend(python)
        offline.append("--no-build-isolation")
    _run([*pip, "install", "--quiet", *offline, str(artifact)], "pip install")
    out = _run([str(venv / "bin" / "swarm-agent"), "--version"], "the new agent's --version")
    package_version = out.strip().rpartition(" ")[2]
    write_atomic(
        target / META,
        json.dumps({"version": version, "sha256": sha256, "package_version": package_version}).encode(),
    )
    return package_version


def _require_build_backend(python: Path) -> None:
    """InstallError unless the new venv's Python can import the build
    backend an sdist of this project names (pyproject.toml's build-system)."""
    probe = (
        "import sys\n"
        "try:\n"
        "    import setuptools\n"
        "except ImportError:\n"
        "    sys.exit(1)\n"
        f"sys.exit(int(setuptools.__version__.split('.')[0]) < {SETUPTOOLS_MAJOR})\n"
    )
    try:
        done = subprocess.run(
            [str(python), "-c", probe], stdin=subprocess.DEVNULL, capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"looking for setuptools: {exc}") from None
    if done.returncode != 0:
        raise InstallError(
            f"an sdist is built on the drone, which needs setuptools {SETUPTOOLS_MAJOR} or newer "
            "beside the installed agent (dev-python/setuptools); deploy a wheel instead"
        )


def installed(state_dir: Path, version: int, sha256: str) -> str | None:
    """The package version of ``version`` if it is installed from these very bytes."""
    target = agent_dir(state_dir) / str(version)
    try:
        meta = json.loads((target / META).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("sha256") != sha256 or not os.access(target / "venv" / "bin" / "swarm-agent", os.X_OK):
        return None
    return str(meta.get("package_version", ""))


def prune(state_dir: Path, keep: set[str]) -> None:
    """Delete installed versions other than ``keep`` (names of version directories)."""
    base = agent_dir(state_dir)
    for entry in base.iterdir() if base.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink() and entry.name.isdigit() and entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)


# -- switching -------------------------------------------------------------------


def current_target(state_dir: Path) -> str:
    """The version directory ``current`` names ("": none, the floor runs)."""
    try:
        return os.readlink(agent_dir(state_dir) / CURRENT)
    except OSError:
        return ""


def point_current(state_dir: Path, target: str) -> None:
    """Make ``current`` name ``target`` (a version directory; "": the floor) atomically."""
    base = agent_dir(state_dir)
    link = base / CURRENT
    if not target:
        link.unlink(missing_ok=True)
    else:
        tmp = base / f".{CURRENT}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    fsync_dir(base)


def write_trial(state_dir: Path, trial: Trial) -> None:
    write_atomic(agent_dir(state_dir) / TRIAL, json.dumps(asdict(trial)).encode())


def read_trial(state_dir: Path) -> Trial | None:
    try:
        raw = json.loads((agent_dir(state_dir) / TRIAL).read_text())
        return Trial(**{**raw, "argv": tuple(raw["argv"])})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def claim_trial(state_dir: Path, outcome: str) -> Trial | None:
    """Take the trial for ``outcome`` ("confirmed" by the new version, or
    "failed" by the watchdog): a rename, so exactly one of the two wins."""
    base = agent_dir(state_dir)
    trial = read_trial(state_dir)
    claimed = base / f".trial.{outcome}.{os.getpid()}"
    try:
        os.rename(base / TRIAL, claimed)
    except FileNotFoundError:
        return None
    claimed.unlink(missing_ok=True)
    return trial


def write_rolled_back(state_dir: Path, record: RolledBack) -> None:
    write_atomic(agent_dir(state_dir) / ROLLED_BACK, json.dumps(asdict(record)).encode())


def read_rolled_back(state_dir: Path) -> RolledBack | None:
    try:
        return RolledBack(**json.loads((agent_dir(state_dir) / ROLLED_BACK).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def forget_rolled_back(state_dir: Path) -> None:
    (agent_dir(state_dir) / ROLLED_BACK).unlink(missing_ok=True)


def supervised(parent: int | None = None) -> bool:
    """Whether a supervisor starts the agent again when it exits: the
    OpenRC service runs it under supervise-daemon (packaging/), its parent
    (``parent``: this process's by default; the kernel keeps 15 characters
    of a process name)."""
    try:
        with open(f"/proc/{parent or os.getppid()}/comm") as fh:
            return fh.read().strip() == "supervise-daemon"[:15]
    except OSError:
        return False


def start_trial(
    state_dir: Path, version: int, deploy_id: str, confirm_within: float, argv: list[str]
) -> None:
    """Switch ``current`` to ``version`` and start the watchdog that undoes
    it unless this process, after its exec, confirms within ``confirm_within``
    seconds. ``argv`` starts the previous version again."""
    trial = Trial(
        version=version,
        previous=current_target(state_dir),
        deadline=time.time() + confirm_within,
        deploy_id=deploy_id,
        pid=os.getpid(),
        supervised=supervised(),
        argv=tuple(argv),
    )
    write_trial(state_dir, trial)
    # The watchdog runs this (the previous) version's code, which stays on disk.
    # Its output goes where the agent's does (not captured: it outlives this call).
    try:
        subprocess.run(
            [sys.executable, "-m", "swarm.agent.watchdog", "--detach", str(state_dir)],
            stdin=subprocess.DEVNULL,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        (agent_dir(state_dir) / TRIAL).unlink(missing_ok=True)
        raise InstallError(f"cannot start the watchdog: {exc}") from None
    point_current(state_dir, str(version))
