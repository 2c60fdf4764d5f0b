"""Binhost mirrors for tests: each a real sshd on 127.0.0.1 (support/sshd.py)
with a directory of its own that the controller pushes releases into over
rsync, and a static HTTP server (``python -m http.server``) serving that
directory, ``current`` link and all, as nginx would.

``mirrors(root, n)`` starts ``n`` of them that share one client identity
(the first sshd's key, authorized on every other) and one known_hosts file
naming every host key: what a controller takes as ``--ssh-identity`` and
``--ssh-known-hosts``. Each half stops and starts on its own: ``ssh_down()``
makes pushes fail (connection refused) while HTTP still serves what the
mirror holds, ``http_down()`` makes health checks fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from swarm.controller.oob import SshSettings

from support.sshd import SshServer, free_port, known_hosts_line, sshd_server

HTTP_START_TIMEOUT = 15.0
ACCESS_RE = re.compile(r'"(?:GET|HEAD) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>[0-9]{3}) ')


class Mirror:
    """One mirror: an sshd, a directory (``root``) and an HTTP server for it."""

    def __init__(self, name: str, sshd: SshServer, root: Path) -> None:
        self.name = name
        self.sshd = sshd
        self.root = root
        self.http_port = 0
        self._http: subprocess.Popen[bytes] | None = None
        # The HTTP server's request log (http.server writes it to stderr), beside the directory.
        self.access_log = root.with_name(root.name + ".access.log")

    @property
    def destination(self) -> str:
        """The target's rsync destination: user@127.0.0.1:PORT:/path."""
        return f"{self.sshd.user}@127.0.0.1:{self.sshd.port}:{self.root}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def sync_uri(self) -> str:
        """What a binrepos.conf answer names for its current release."""
        return f"{self.url}/current/"

    def current(self) -> str | None:
        """The release ``current`` names on disk, or None."""
        try:
            return Path(os.readlink(self.root / "current")).name
        except OSError:
            return None

    def releases(self) -> list[str]:
        base = self.root / "releases"
        return sorted(p.name for p in base.iterdir() if not p.name.startswith(".")) if base.is_dir() else []

    def served(self, suffix: str = "") -> list[str]:
        """The paths the HTTP server answered 200 to, oldest first (those ending in ``suffix``)."""
        try:
            lines = self.access_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            # 127.0.0.1 - - [date] "GET /path HTTP/1.1" 200 -
            match = ACCESS_RE.search(line)
            if match and match["status"] == "200" and match["path"].endswith(suffix):
                found.append(match["path"])
        return found

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"{self.url}/{path.lstrip('/')}", timeout=10) as answer:
            data: bytes = answer.read()
            return data

    # -- the two halves --------------------------------------------------------------------

    def ssh_down(self) -> None:
        self.sshd.pause()

    def ssh_up(self) -> None:
        self.sshd.resume()

    def http_up(self) -> None:
        if self._http is not None:
            return
        self.http_port = self.http_port or free_port()
        argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(self.root)]
        with self.access_log.open("ab") as log:
            self._http = subprocess.Popen(
                [*argv, str(self.http_port)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + HTTP_START_TIMEOUT
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.http_port), 1):
                return
            if self._http.poll() is not None or time.monotonic() > deadline:
                self.http_down()
                raise RuntimeError(f"mirror {self.name}: the HTTP server did not start on {self.http_port}")
            time.sleep(0.05)

    def http_down(self) -> None:
        if self._http is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._http.pid, signal.SIGKILL)
        self._http.wait(timeout=10)
        self._http = None


class Mirrors:
    """Started mirrors and the ssh files a controller needs to reach them all."""

    def __init__(self, items: list[Mirror], identity: Path, known_hosts: Path) -> None:
        self.items = items
        self.identity = identity
        self.known_hosts = known_hosts

    def __getitem__(self, index: int) -> Mirror:
        return self.items[index]

    def __iter__(self) -> Iterator[Mirror]:
        return iter(self.items)

    @property
    def settings(self) -> SshSettings:
        return SshSettings(identity_file=self.identity, known_hosts_file=self.known_hosts)

    def controller_args(self, targets: Path, networks: dict[str, str], priority: int = 10) -> list[str]:
        """A controller's options for these mirrors: ``targets`` is written
        as its --binhosts-file, each mirror serving the network named for it
        in ``networks`` (by mirror name), and its ssh identity and known_hosts."""
        targets.write_text(
            "".join(
                f'[binhosts.{m.name}]\nurl = "{m.url}"\ndestination = "{m.destination}"\n'
                f'networks = ["{networks[m.name]}"]\npriority = {priority}\n'
                for m in self.items
            )
        )
        return [
            "--binhosts-file",
            str(targets),
            "--ssh-identity",
            str(self.identity),
            "--ssh-known-hosts",
            str(self.known_hosts),
        ]


@contextlib.contextmanager
def mirrors(root: Path, count: int) -> Iterator[Mirrors]:
    """``count`` started mirrors (``mirror-a``, ``mirror-b``...) with
    directories under ``root``; everything is stopped on exit."""
    with contextlib.ExitStack() as stack:
        items: list[Mirror] = []
        for i in range(count):
            sshd = stack.enter_context(sshd_server())
            name = f"mirror-{chr(ord('a') + i)}"
            directory = root / name
            directory.mkdir(parents=True, exist_ok=True)
            mirror = Mirror(name, sshd, directory)
            stack.callback(mirror.http_down)
            mirror.http_up()
            items.append(mirror)
        first = items[0].sshd
        shared = root / "mirror-ssh"
        shared.mkdir(exist_ok=True)
        identity = shared / "id_ed25519"
        shutil.copy(first.identity, identity)
        identity.chmod(0o600)
        public = first.identity.with_name(first.identity.name + ".pub").read_text()
        lines = []
        for mirror in items:
            mirror.sshd.authorize(public)
            lines.append(known_hosts_line(mirror.sshd.port, mirror.sshd.host_public_key))
        known_hosts = shared / "known_hosts"
        known_hosts.write_text("".join(lines))
        yield Mirrors(items, identity, known_hosts)
