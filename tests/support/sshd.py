"""A real, private OpenSSH server for tests.

``SshServer`` runs the system ``sshd`` (Debian: openssh-server) from a
temporary directory as the current user: a throwaway ed25519 host key and
client key made with ``ssh-keygen``, an ``authorized_keys`` with the client
key, a ``known_hosts`` naming ``[127.0.0.1]:PORT``, and an ``sshd_config``
that listens on 127.0.0.1 on a free port and allows nothing but that key
for that user. ``start()`` returns once a real ``ssh ... true`` login
works; ``stop()`` kills the server and every session it started, and
removes the directory.

As root, sshd wants its privilege separation directory (/run/sshd) and
is made to allow root logins by key; it is created if missing. As another
user sshd runs without privilege separation and can only log that user in.

Fixture: ``sshd_server()`` is a context manager for a session fixture
(``sshd`` in conftest.py). Without OpenSSH it skips the test, unless
``SWARM_REQUIRE_SSHD=1`` is set (as CI does): then it fails it, so a
missing sshd can never pass silently.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import psutil
import pytest

from swarm.controller.oob import SshSettings, SshTarget, ssh_argv

REQUIRE_ENV = "SWARM_REQUIRE_SSHD"
SSHD_PATHS = (Path("/usr/sbin/sshd"), Path("/usr/local/sbin/sshd"))
PRIVSEP_DIR = Path("/run/sshd")
START_TIMEOUT = 15.0
START_ATTEMPTS = 5
COMMAND_TIMEOUT = 30.0

# Written only when this sshd knows them (sshd -t): OpenSSH 9.8 and later
# penalise addresses that fail to authenticate, and tests fail on purpose.
OPTIONAL_SETTINGS = {"PerSourcePenalties": "no"}


class SshdUnavailable(Exception):
    """OpenSSH (server, client or ssh-keygen) is not installed here."""


def find_sshd() -> Path:
    for path in SSHD_PATHS:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which("sshd")
    if found is None:
        raise SshdUnavailable(
            f"sshd not found at {', '.join(map(str, SSHD_PATHS))} or on PATH "
            "(on Debian: apt-get install openssh-server)"
        )
    # sshd re-executes itself and insists on an absolute path.
    return Path(found).resolve()


def find_client_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SshdUnavailable(f"{name} not found on PATH (on Debian: apt-get install openssh-client)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_key(path: Path, comment: str) -> str:
    """A new passphrase-less ed25519 key pair at path; returns the public key line."""
    subprocess.run(
        [find_client_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def known_hosts_line(port: int, public_key: str) -> str:
    key_type, key = public_key.split()[:2]
    return f"[127.0.0.1]:{port} {key_type} {key}\n"


class SshServer:
    """One private sshd on 127.0.0.1 in a temporary directory."""

    def __init__(self, sshd: Path | None = None) -> None:
        self.sshd = sshd or find_sshd()
        self.ssh = find_client_tool("ssh")
        find_client_tool("ssh-keygen")
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.base: Path | None = None
        self.port = 0
        self.host_public_key = ""
        self.popen: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0

    def _path(self, name: str) -> Path:
        assert self.base is not None, "server not started"
        return self.base / name

    @property
    def log_path(self) -> Path:
        return self._path("sshd.log")

    @property
    def known_hosts(self) -> Path:
        return self._path("known_hosts")

    @property
    def identity(self) -> Path:
        return self._path("client_ed25519")

    @property
    def target(self) -> SshTarget:
        return SshTarget(host="127.0.0.1", user=self.user, port=self.port)

    @property
    def settings(self) -> SshSettings:
        return SshSettings(ssh=self.ssh, identity_file=self.identity, known_hosts_file=self.known_hosts)

    def log(self) -> str:
        if self.base is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def _log_tail(self) -> str:
        return "\nsshd log:\n" + self.log()[-3000:]

    def start(self) -> None:
        if self.popen is not None:
            return
        self.base = Path(tempfile.mkdtemp(prefix="swarm-sshd-"))
        # Process start times are in clock ticks; allow for the rounding.
        self._started_at = time.time() - 1
        try:
            if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
                PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
            self.host_public_key = make_key(self._path("host_ed25519"), "swarm-test-host")
            client_key = make_key(self.identity, "swarm-test-client")
            self._path("authorized_keys").write_text(client_key + "\n")
            self._path("home").mkdir()
            self._start_on_free_port()
            atexit.register(self.stop)
        except BaseException:
            self.stop()
            raise

    def _config(self, optional: dict[str, str]) -> str:
        settings = {
            "ListenAddress": "127.0.0.1",
            "Port": str(self.port),
            "HostKey": str(self._path("host_ed25519")),
            "PidFile": str(self._path("sshd.pid")),
            "AuthorizedKeysFile": str(self._path("authorized_keys")),
            "AllowUsers": self.user,
            "PubkeyAuthentication": "yes",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "PermitRootLogin": "prohibit-password",
            "UsePAM": "no",
            # The key files live under /tmp, which is world-writable.
            "StrictModes": "no",
            "PrintMotd": "no",
            "PrintLastLog": "no",
            "X11Forwarding": "no",
            "AllowTcpForwarding": "no",
            "LogLevel": "VERBOSE",
            # Sessions get a home of their own: the login shell then reads no
            # rc files of the machine's user (a slow or stuck ~/.bashrc, e.g.
            # `pyenv init` waiting on a stale lock, would hang every command).
            "SetEnv": f"HOME={self._path('home')}",
            **optional,
        }
        return "".join(f"{key} {value}\n" for key, value in settings.items())

    def _write_config(self) -> Path:
        config = self._path("sshd_config")
        optional = dict(OPTIONAL_SETTINGS)
        while True:
            config.write_text(self._config(optional))
            check = subprocess.run(
                [str(self.sshd), "-t", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
            )
            if check.returncode == 0:
                return config
            unknown = [key for key in optional if key in check.stderr]
            if not unknown:
                raise RuntimeError(f"sshd -t rejects the test configuration:\n{check.stderr}")
            for key in unknown:
                del optional[key]

    def _start_on_free_port(self) -> None:
        # The port is free when chosen but could be taken before sshd binds
        # it; try again on another one if that happens.
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = free_port()
            config = self._write_config()
            self.known_hosts.write_text(known_hosts_line(self.port, self.host_public_key))
            self._launch(config)
            if self._wait_ready():
                return
            self._kill()
            if attempt == START_ATTEMPTS or "Address already in use" not in self.log():
                raise RuntimeError(f"sshd did not start{self._log_tail()}")

    def _launch(self, config: Path) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [str(self.sshd), "-D", "-f", str(config), "-E", str(self.log_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_ready(self) -> bool:
        """True once a real login works; False if sshd exited (port taken?)."""
        assert self.popen is not None
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                return False
            try:
                result = subprocess.run(
                    ssh_argv(self.target, self.settings, "true"),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=COMMAND_TIMEOUT,
                )
            except subprocess.TimeoutExpired:
                result = None
            if result is not None and result.returncode == 0:
                return True
            last = result.stderr.strip() if result is not None else "ssh timed out"
            time.sleep(0.05)
        raise RuntimeError(f"no ssh login within {START_TIMEOUT}s (last: {last}){self._log_tail()}")

    def sessions(self) -> list[psutil.Process]:
        """Processes running for this server's connections: sshd's own
        children, and every process whose environment says it was started
        through this server. The latter matter most: ssh without a tty does
        not stop a remote command when the client goes away, and once sshd
        drops the connection the command lives on, orphaned, outside sshd's
        process tree."""
        found: dict[int, psutil.Process] = {}
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                found.update((p.pid, p) for p in psutil.Process(self.popen.pid).children(recursive=True))
        # SSH_CONNECTION is "CLIENT_IP CLIENT_PORT SERVER_IP SERVER_PORT".
        suffix = f" 127.0.0.1 {self.port}"
        for process in psutil.process_iter():
            try:
                if process.create_time() < self._started_at:
                    continue
                if process.environ().get("SSH_CONNECTION", "").endswith(suffix):
                    found[process.pid] = process
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return list(found.values())

    def kill_sessions(self) -> None:
        """Kill everything clients started that is still running."""
        sessions = self.sessions()
        for process in sessions:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(sessions, timeout=5)

    def authorize(self, public_key: str) -> None:
        """Also let the holder of ``public_key`` (an ssh .pub line) log in."""
        with self._path("authorized_keys").open("a") as keys:
            keys.write(public_key.strip() + "\n")

    def pause(self) -> None:
        """Kill the server (and its sessions) but keep its keys, port and
        directory: connections are refused until ``resume()``."""
        self._kill()

    def resume(self) -> None:
        """Start the paused server again on the same port with the same keys."""
        if self.popen is not None:
            return
        config = self._write_config()
        self._launch(config)
        if not self._wait_ready():
            self._kill()
            raise RuntimeError(f"sshd did not start again on port {self.port}{self._log_tail()}")

    def _kill(self) -> None:
        if self.popen is None:
            return
        self.kill_sessions()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        self.popen = None

    def stop(self) -> None:
        """Kill the server and its sessions and remove its directory. Idempotent."""
        atexit.unregister(self.stop)
        try:
            self._kill()
        finally:
            if self.base is not None:
                shutil.rmtree(self.base, ignore_errors=True)
                self.base = None

    def __enter__(self) -> SshServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"OpenSSH is required ({REQUIRE_ENV}=1) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"OpenSSH unavailable: {reason}")


@contextlib.contextmanager
def sshd_server() -> Iterator[SshServer]:
    """A started SshServer, stopped on exit; skips (or fails, see
    SWARM_REQUIRE_SSHD) when OpenSSH is not installed."""
    try:
        server = SshServer()
    except SshdUnavailable as exc:
        reason = str(exc)
    else:
        reason = ""
    if reason:
        _unavailable(reason)  # outside the except block: no chained traceback
    with server:
        yield server
