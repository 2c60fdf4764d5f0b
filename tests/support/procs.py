"""Real swarm processes for tests: a controller and agents on 127.0.0.1.

Every process runs in its own process group and is killed at teardown;
ports are chosen by the kernel (port 0) and read back from the
controller's ready file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import zygote
from support.gpg import end_agent

DEFAULT_TIMEOUT = 15.0
# emerge from this venv's Portage: the agent's emerge check runs it with
# --version, and a test drone is healthy only if it answers. The script itself
# (where Portage's PORTAGE_BIN_PATH is for a pip install), not the venv's
# bin/emerge: that is pip's shim, a Python start of its own that only execs
# this script, some 80 ms of CPU on every check and every build of a run.
EMERGE = Path(sys.prefix).resolve() / "lib" / "portage" / "bin" / "emerge"
EMERGE_COMMAND = f"{sys.executable} {EMERGE} --oneshot --buildpkg --usepkg --getbinpkg --quiet-build=n"
# The emerge command of an agent without --portage-eprefix: it builds nothing
# and answers the emerge check from a shell (the script says why). An agent
# with a prefix, or a test that asks for it (--emerge-command EMERGE_COMMAND),
# runs the real one.
NO_BUILDS_COMMAND = f"{Path(__file__).with_name('no-builds-emerge')} --oneshot"


# wait_for's polls when the caller names no interval: every 20 ms at first,
# then a tenth of the time waited so far, at most every quarter second. A
# condition that comes soon is seen as soon as before; a wait of seconds (a
# build, a recovery, a drone coming back) polls a few times a second instead of
# fifty, each poll an HTTP request both the test and the controller pay CPU
# for, which the processes under test could use.
FIRST_POLL = 0.02
LATEST_POLL = 0.25


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "condition",
    interval: float | None = None,
) -> Any:
    """Poll until predicate() is truthy; return its value or fail saying what was awaited.

    ``interval``: seconds between polls (default: FIRST_POLL, growing with the
    time waited up to LATEST_POLL). The last poll is at the deadline."""
    started = time.monotonic()
    deadline = started + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = predicate()
        except (OSError, ValueError, KeyError) as exc:
            last_exc = exc
            value = None
        if value:
            return value
        now = time.monotonic()
        if now >= deadline:
            break
        pause = interval if interval is not None else min(LATEST_POLL, max(FIRST_POLL, (now - started) / 10))
        time.sleep(min(pause, deadline - now))
    raise AssertionError(
        f"timed out after {timeout:.1f}s waiting for {what}"
        + (f" (last error: {last_exc})" if last_exc else "")
    )


def http(
    method: str, url: str, *, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, Any]:
    """One HTTP request; returns (status, parsed JSON or text)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, ctype = response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, raw, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        exc.close()
    if "json" in ctype:
        return status, json.loads(raw)
    return status, raw.decode(errors="replace")


class Proc:
    """A swarm program in a session of its own, its output appended to ``log_path``.

    ``python -m swarm.controller.main`` and ``swarm.agent.main`` are forked
    from a zygote that imported them once (support/zygote.py says why and
    how); anything else, or every start under SWARM_TEST_EXEC=1, or this one
    with ``exec_start``, is exec'd by its command line."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.env = env
        # True: started by its command line, for a test of the process as
        # that starts it (/proc/PID/cmdline, what a restart execs).
        self.exec_start = False
        self.popen: subprocess.Popen[bytes] | zygote.Forked | None = None

    def start(self) -> None:
        env = {**os.environ, **(self.env or {})}
        log = self.log_path.open("ab")  # a log that cannot be opened fails here either way
        try:
            if not self.exec_start and zygote.forkable(self.args, env):
                self.popen = zygote.spawn(self.args, env, self.log_path)
                return
            self.popen = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        os.kill(self.popen.pid, sig)

    def kill(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code (fails the test if it hangs)."""
        assert self.popen is not None
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGCONT)
            self.popen.terminate()
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.args[2]} did not stop within {timeout}s of SIGTERM") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ControllerApi:
    """A controller's web tiers as tests call them, for a controller process
    (Controller) and one in the test process (support/inproc.py)."""

    @property
    def public_url(self) -> str:
        raise NotImplementedError

    @property
    def admin_url(self) -> str:
        raise NotImplementedError

    @property
    def admin_key(self) -> str:
        raise NotImplementedError

    def get(self, path: str) -> Any:
        status, body = http("GET", self.public_url + path)
        assert status == 200, f"GET {path}: {status} {body}"
        return body

    def admin(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        headers = {"X-Admin-Key": self.admin_key}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return http(method, self.admin_url + path, headers=headers, body=body)

    def node(self, name: str) -> dict[str, Any] | None:
        status, body = http("GET", f"{self.public_url}/api/v1/nodes/{name}")
        return body["node"] if status == 200 else None

    def online(self, name: str) -> dict[str, Any] | None:
        """node() once the drone is online, else None (a wait_for predicate)."""
        node = self.node(name)
        return node if node is not None and node["status"] == "online" else None

    def known_node(self, name: str) -> dict[str, Any]:
        """node() of a drone the test knows the controller has; fails saying so if not."""
        node = self.node(name)
        assert node is not None, f"the controller does not know {name}"
        return node

    def events(self, **query: str) -> list[dict[str, Any]]:
        """Every event (the admin tier's view, audit trail included)."""
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        status, body = self.admin("GET", f"/admin/api/events?limit=1000&{qs}")
        assert status == 200, body
        return list(body["events"])

    def create_token(self, ttl: float = 600, name: str | None = None) -> str:
        body: dict[str, Any] = {"ttl": ttl}
        if name is not None:
            body["name"] = name
        status, reply = self.admin("POST", "/admin/api/tokens", json.dumps(body).encode())
        assert status == 201, reply
        return str(reply["token"])


class Controller(ControllerApi, Proc):
    def __init__(
        self,
        root: Path,
        *extra: str,
        grpc_port: int = 0,
        public_port: int = 0,
        admin_port: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.data_dir = root / "controller"
        self.ready_file = root / "controller.ready.json"
        self.extra = list(extra)
        self.ports = {
            "grpc_port": grpc_port,
            "public_port": public_port,
            "admin_port": admin_port,
            "enroll_port": 0,
        }
        super().__init__(self._args(), root / "controller.log", env)
        self.info: dict[str, Any] = {}

    def _args(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "swarm.controller.main",
            "--data-dir",
            str(self.data_dir),
            "--bind",
            "127.0.0.1",
            "--admin-bind",
            "127.0.0.1",
            "--grpc-port",
            str(self.ports["grpc_port"]),
            "--public-port",
            str(self.ports["public_port"]),
            "--admin-port",
            str(self.ports["admin_port"]),
            "--enroll-port",
            str(self.ports["enroll_port"]),
            "--ready-file",
            str(self.ready_file),
            "--log-file",
            "",
            "--log-level",
            "debug",
            # Healing is what tests/test_healing.py tests, with its own grace (a later
            # flag wins): elsewhere a drone made sick on purpose must not be restarted
            # under the test. (Until the startup grace ended once no known drone was
            # awaited, a fresh controller healed nothing for 30 s, and every test relied
            # on that without saying so.)
            "--heal-grace",
            "3600",
            *self.extra,
        ]

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        super().start()
        self.info = wait_for(self._ready, what="controller ready file")

    def _ready(self) -> dict[str, Any] | None:
        if not self.alive():
            raise AssertionError(
                f"controller exited with {self.popen.returncode if self.popen else '?'}:\n"
                f"{self.log()[-3000:]}"
            )
        if not self.ready_file.exists():
            return None
        info: dict[str, Any] = json.loads(self.ready_file.read_text())
        return info

    def kill(self) -> None:
        super().kill()
        # The release key's gpg-agent (controller/signing.py) is a daemon of
        # its own: it outlives a controller killed with SIGKILL.
        end_agent(self.data_dir / "releases" / "gnupg")

    def restart(self) -> None:
        """Start again on the same ports (agents reconnect to the same address)."""
        self.ports = {k: self.info[k] for k in self.ports}
        self.args = self._args()
        self.start()

    @property
    def enroll_target(self) -> str:
        return f"127.0.0.1:{self.info['enroll_port']}"

    @property
    def ca_pin(self) -> str:
        return str(self.info["ca_pin"])

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.info['grpc_port']}"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.info['public_port']}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.info['admin_port']}"

    @property
    def admin_key(self) -> str:
        return Path(self.info["admin_key_file"]).read_text().strip()


def enroll(
    controller: Controller, name: str, state_dir: Path, token: str | None = None, pin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``swarm-agent enroll`` as an admin would on a new drone (forked
    from the agent's zygote, as agents are)."""
    return zygote.run(
        [
            sys.executable,
            "-m",
            "swarm.agent.main",
            "enroll",
            "--controller",
            controller.grpc_target,
            "--enroll-address",
            controller.enroll_target,
            "--token",
            token or controller.create_token(),
            "--ca-pin",
            pin or controller.ca_pin,
            "--name",
            name,
            "--state-dir",
            str(state_dir),
            "--log-file",
            "",
        ],
        timeout=60,
    )


def enroll_here(controller: Controller, name: str, state_dir: Path) -> str:
    """Enroll as ``swarm-agent enroll`` does, but in this process: the same
    credentials.enroll over gRPC to the controller's enrollment port, without
    starting a Python for it. For identities a test drives by hand; the
    command itself is run by enroll() (and tested in test_cli*). The drone id."""
    import asyncio

    from swarm.agent import credentials
    from swarm.agent.identity import load_or_create_drone_id

    drone_id = load_or_create_drone_id(state_dir)
    token = controller.create_token()
    asyncio.run(
        credentials.enroll(state_dir, drone_id, name, controller.enroll_target, token, controller.ca_pin)
    )
    return drone_id


def agent_credentials(state_dir: Path) -> Any:
    """gRPC channel credentials from an enrolled drone's state dir."""
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=(state_dir / "ca.crt").read_bytes(),
        private_key=(state_dir / "drone.key").read_bytes(),
        certificate_chain=(state_dir / "drone.crt").read_bytes(),
    )


# Test agents beat at the production second: an idle agent at a quarter
# second cost about twice the CPU (its own and the controller's), for every
# agent of every module. A test that waits on beats asks for this instead:
# silence noticed (suspect within ~3 intervals, offline), a heartbeat or pong
# awaited or counted (the protocol log, the console's packets, a drone's
# checks coming back with the next pong).
FAST_HEARTBEAT = 0.25


class Agent(Proc):
    def __init__(
        self,
        root: Path,
        name: str,
        controller: str,
        *extra: str,
        drone_type: str | None = "unknown",
        heartbeat_interval: float = 1.0,
        state_dir: Path | None = None,
    ) -> None:
        """drone_type None: no --drone-type, the agent detects it."""
        self.name = name
        self.state_dir = state_dir or root / f"agent-{name}"
        args = [
            sys.executable,
            "-m",
            "swarm.agent.main",
            "--controller",
            controller,
            "--name",
            name,
            *(["--drone-type", drone_type] if drone_type is not None else []),
            "--state-dir",
            str(self.state_dir),
            "--cache-path",
            str(root),
            "--heartbeat-interval",
            str(heartbeat_interval),
            "--backoff-initial",
            "0.1",
            "--backoff-max",
            "1",
            # A refused agent (revoked, a duplicate) waits minutes by default.
            "--refused-backoff-initial",
            "0.5",
            "--refused-backoff-max",
            "2",
            "--log-file",
            "",
            # Many drones on one machine: one pid file each.
            "--pid-file",
            str(self.state_dir / "agent.pid"),
            "--log-level",
            "debug",
            "--emerge-command",
            EMERGE_COMMAND if "--portage-eprefix" in extra else NO_BUILDS_COMMAND,
            *extra,  # a later --emerge-command wins
        ]
        super().__init__(args, root / f"agent-{name}.log")

    @property
    def drone_id(self) -> str:
        return (self.state_dir / "drone-id").read_text().strip()
