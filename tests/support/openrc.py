"""Real OpenRC for tests: Debian's openrc 0.45 in a private mount and pid
namespace, running the packaged init scripts.

``OpenRCRoot`` starts ``unshare --mount --pid --fork`` with a small init
(PID 1 of the new pid namespace) that mounts an overlay of / (writes go to
a tmpfs; the host's files are never touched), a fresh /proc, /run and
/etc/init.d, unpacks the OpenRC packages into the overlay, and chroots into
it. There:

* ``/etc/init.d/swarm-agent``, ``/etc/init.d/swarm-controller`` and their
  ``/etc/conf.d`` files are bind mounts of packaging/ebuilds/.../files/:
  the packaged files themselves, not copies;
* ``/usr/bin/swarm-agent`` and ``/usr/bin/swarm-controller`` are thin
  wrappers that exec this checkout's venv entry points (the venv is
  visible through the overlay of /);
* ``net`` is a stand-in service, the ``build-swarm`` user and group exist,
  and OpenRC's state in /run/openrc is set up as at boot.

Commands run inside with ``run()`` (``nsenter`` into the namespace and the
chroot, ``bash -c``, as sshd runs a remote command); ``path()`` maps a path
inside to one the host can read and write (``/proc/PID/root/...``).
``close()`` kills PID 1, and with it everything in the namespace.

The packages: ``apt-get download openrc libeinfo1 librc1`` into
``.cache/openrc/`` of the checkout (``make openrc``; .ci/run does it), or
the directory named by ``SWARM_OPENRC_DEBS``. Without them the tests skip,
unless ``SWARM_REQUIRE_OPENRC=1`` (as CI sets): then they fail, so missing
packages can never pass silently. Running needs root (mounts, namespaces).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import psutil
import pytest

from support.procs import wait_for

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "packaging" / "ebuilds" / "app-admin" / "build-swarm" / "files"
VENV_BIN = Path(sys.executable).parent
REQUIRE_ENV = "SWARM_REQUIRE_OPENRC"
DEBS_ENV = "SWARM_OPENRC_DEBS"
DEFAULT_DEBS = ROOT / ".cache" / "openrc"
PACKAGES = ("openrc", "libeinfo1", "librc1")
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0
# What a shell on a Gentoo box has; nothing of the test's own environment.
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}

SERVICES = {
    "/etc/init.d/swarm-agent": FILES / "swarm-agent.initd",
    "/etc/conf.d/swarm-agent": FILES / "swarm-agent.confd",
    "/etc/init.d/swarm-controller": FILES / "swarm-controller.initd",
    "/etc/conf.d/swarm-controller": FILES / "swarm-controller.confd",
}
PROGRAMS = ("swarm-agent", "swarm-controller")
# OpenRC's state as at boot (/run/openrc/...).
STATE_DIRS = (
    "starting started stopping inactive wasinactive failed hotplugged daemons options exclusive scheduled tmp"
)
NET_SERVICE = """#!/sbin/openrc-run
description="stand-in: the network is the host's"
depend() { provide net; }
start() { :; }
"""

# PID 1 of the namespace: set up the root, chroot, then reap orphans
# (supervise-daemon daemonizes; killed agents must not linger as zombies).
# argv: workdir, then a JSON object of bind mounts {inside: host path}.
INIT = r"""
import json, os, subprocess, sys, time
work, binds, debs = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
def sh(command):
    subprocess.run(command, shell=True, check=True)
layers = f"{work}/layers"
sh(f"mount -t tmpfs swarm-openrc {layers}")
for name in ("upper", "work", "root"):
    os.mkdir(f"{layers}/{name}")
root = f"{layers}/root"
sh(f"mount -t overlay swarm-openrc -o lowerdir=/,upperdir={layers}/upper,workdir={layers}/work {root}")
sh(f"mount --rbind /dev {root}/dev && mount -t proc proc {root}/proc && mount --rbind /sys {root}/sys")
sh(f"mount -t tmpfs run {root}/run && mount -t tmpfs init.d {root}/etc/init.d")
for deb in debs:
    # Into the overlay, through its /bin -> usr/bin style links (merged /usr).
    sh(f"dpkg-deb --fsys-tarfile {deb} | tar -x --keep-directory-symlink --exclude=./etc/init.d -C {root}")
os.makedirs(f"{root}/etc/conf.d", exist_ok=True)
for inside, outside in binds.items():
    open(root + inside, "a").close()
    sh(f"mount --bind {outside} {root}{inside}")
open(f"{work}/ready", "w").close()
os.chroot(root)
os.chdir("/")
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.1)
"""


class OpenRCUnavailable(Exception):
    """The OpenRC packages, or what running them needs, are not here."""


def find_debs() -> list[Path]:
    """The OpenRC packages, once everything else running them needs is checked."""
    folder = Path(os.environ.get(DEBS_ENV) or DEFAULT_DEBS)
    debs = []
    for package in PACKAGES:
        found = sorted(folder.glob(f"{package}_*.deb"))
        if not found:
            raise OpenRCUnavailable(
                f"no {package}_*.deb in {folder}: run `make openrc` (apt-get download "
                f"{' '.join(PACKAGES)}), or point {DEBS_ENV} at a directory holding them"
            )
        debs.append(found[-1])
    if os.geteuid() != 0:
        raise OpenRCUnavailable("running OpenRC in a private namespace needs root")
    for tool in ("unshare", "nsenter", "dpkg-deb", "tar", "useradd"):
        if shutil.which(tool, path=ENV["PATH"]) is None:
            raise OpenRCUnavailable(f"{tool} not found on {ENV['PATH']}")
    for program in PROGRAMS:
        if not (VENV_BIN / program).is_file():
            raise OpenRCUnavailable(f"no {VENV_BIN / program}: run the tests with the venv's python")
    return debs


def unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"OpenRC is required ({REQUIRE_ENV}=1) but unavailable: {reason}")
    pytest.skip(f"OpenRC unavailable: {reason}")


@dataclass
class Result:
    code: int
    output: str


class OpenRCRoot:
    def __init__(self, debs: list[Path]) -> None:
        self.debs = debs
        self.work = Path(tempfile.mkdtemp(prefix="swarm-openrc-"))
        self.unshare: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    def start(self) -> None:
        (self.work / "layers").mkdir()
        log = (self.work / "init.log").open("wb")
        binds = {inside: str(outside) for inside, outside in SERVICES.items()}
        with log:
            self.unshare = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--pid",
                    "--fork",
                    "--kill-child",
                    "--propagation",
                    "private",
                    sys.executable,
                    "-c",
                    INIT,
                    str(self.work),
                    json.dumps(binds),
                    *map(str, self.debs),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for(self._ready, timeout=START_TIMEOUT, what="the OpenRC namespace")
        [init] = psutil.Process(self.unshare.pid).children()
        self.init_pid = init.pid
        self._prepare()

    def _ready(self) -> bool:
        assert self.unshare is not None
        if self.unshare.poll() is not None:
            raise AssertionError(f"the namespace's init exited:\n{(self.work / 'init.log').read_text()}")
        return (self.work / "ready").exists()

    def _prepare(self) -> None:
        for program in PROGRAMS:
            wrapper = self.path(f"/usr/bin/{program}")
            wrapper.write_text(f'#!/bin/sh\nexec {VENV_BIN / program} "$@"\n')
            wrapper.chmod(0o755)
        self.path("/etc/init.d/net").write_text(NET_SERVICE)
        self.path("/etc/init.d/net").chmod(0o755)
        # The build-swarm user must reach the venv's interpreter (often under /root).
        for binary in (Path(os.path.realpath(sys.executable)), VENV_BIN):
            for folder in binary.parents:
                inside = self.path(str(folder))
                inside.chmod(inside.stat().st_mode | 0o005)
        setup = self.run(
            "set -e; touch /etc/insserv.conf; mkdir -p /etc/insserv.conf.d /etc/build-swarm; "
            f"for d in {STATE_DIRS}; do mkdir -p /run/openrc/$d; done; touch /run/openrc/softlevel; "
            "groupadd -r build-swarm; "
            "useradd -r -g build-swarm -d /var/lib/build-swarm -s /sbin/nologin build-swarm"
        )
        assert setup.code == 0, setup.output

    def path(self, inside: str) -> Path:
        """A path inside the namespace, as the host reaches it."""
        return Path(f"/proc/{self.init_pid}/root{inside}")

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> Result:
        """``bash -c command`` as root inside; output is stdout and stderr."""
        result = subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-m", "-p", "-r", "-w", "--", "bash", "-c", command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=timeout,
            env=ENV,
        )
        return Result(result.returncode, result.stdout)

    def processes(self) -> list[psutil.Process]:
        """Everything running in the namespace (zombies left out)."""
        ns = os.readlink(f"/proc/{self.init_pid}/ns/pid")
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(OSError, psutil.Error):
                if os.readlink(f"/proc/{proc.pid}/ns/pid") == ns and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        return found

    def running(self, program: str) -> list[psutil.Process]:
        """Processes of the venv entry point ``program`` (python .../bin/PROGRAM ...)."""
        script = str(VENV_BIN / program)
        found = []
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                if proc.cmdline()[1:2] == [script]:
                    found.append(proc)
        return found

    def supervisors(self, service: str) -> list[psutil.Process]:
        found = []
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                if proc.cmdline()[:2] == ["supervise-daemon", service]:
                    found.append(proc)
        return found

    def close(self) -> None:
        """Kill everything in the namespace; fails if anything survives."""
        inside = self.processes() if self.init_pid else []
        if self.init_pid:
            # PID 1 gone, the kernel kills the whole pid namespace.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, signal.SIGKILL)
        if self.unshare is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.unshare.pid, signal.SIGKILL)
            self.unshare.wait(timeout=10)
        shutil.rmtree(self.work, ignore_errors=True)

        def survivors() -> list[str]:
            left = []
            for proc in inside:
                with contextlib.suppress(psutil.NoSuchProcess):
                    if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                        left.append(f"{proc.pid} {proc.status()} {proc.cmdline()[:3]}")
            return left

        # SIGKILLed; exiting takes a moment.
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not survivors(), timeout=10, what="the namespace's processes gone")
        assert not survivors(), f"processes of the OpenRC namespace survived it: {survivors()}"


@contextlib.contextmanager
def openrc_root() -> Iterator[OpenRCRoot]:
    """An OpenRC namespace for a module fixture; skips (or fails, see
    SWARM_REQUIRE_OPENRC) when OpenRC cannot run here."""
    try:
        debs = find_debs()
    except OpenRCUnavailable as exc:
        unavailable(str(exc))
    root = OpenRCRoot(debs)
    try:
        root.start()
        yield root
    finally:
        root.close()
