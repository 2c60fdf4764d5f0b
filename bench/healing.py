"""Healing benchmark: how fast the controller notices a sick drone and how
fast its healer brings it back, for real failures of real agents. It prints
figures; it is not a test and asserts nothing about timing.

Run from the repository root::

    .venv/bin/python bench/healing.py                    # 5 trials of each kind, about 10 minutes
    .venv/bin/python bench/healing.py --trials 1         # one of each, about 2 minutes
    .venv/bin/python bench/healing.py --ssh --json figures.json --keep

One controller on 127.0.0.1 with its default healing settings (a fresh
one: no startup grace) and N real ``swarm-agent`` drones managed by
tools/dronectl.py, as OpenRC manages the agent on a real drone; the
healer's restart commands run dronectl locally (``ssh = "local"``) or, with
``--ssh``, through a private sshd. Failure kinds, one trial at a time:

- crash: SIGKILL to an agent (step 1 restarts it through dronectl);
- frozen: SIGSTOP to an agent (silent: suspect; step 1 over the control
  stream goes unread, step 2 hard-restarts it through dronectl);
- wedged: a build that neither prints nor uses CPU (swarm-test/sleeper
  sleeping in src_compile) past the agent's ``--builder-stall-timeout``:
  the drone reports itself unhealthy; step 1 over the control stream
  cancels the build and the agent execs itself afresh.

Figures come from the controller's incidents (``GET
/admin/api/drones/{name}/health``) and events; see ``--help`` and
bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from harness import (
    HOST,
    PYTHON,
    ROOT,
    Api,
    BenchError,
    Children,
    Controller,
    comma_subset,
    env_info,
    join_tokens,
    own_pid_group,
    percentile,
    say,
    wait_api,
    wait_until,
)

from swarm.agent.config import AgentConfig
from swarm.clock import parse_iso
from swarm.controller.config import ControllerConfig

# tools/: Gentoo prefixes (as the tests and the demo make them) and the
# service manager of the local drones.
sys.path.insert(0, str(ROOT / "tools"))
import dronectl
import prefix as pfx

KINDS = ("crash", "frozen", "wedged")
# Targets from the issue.
TARGET_FROZEN_DETECTION_HB = 3.0  # heartbeat intervals, for a frozen agent
TARGET_CRASH_DETECTION_HB = 1.0  # "at once": before a single heartbeat is missed
TARGET_RECOVERY_S = 15.0  # when step 1 or 2 suffices

DRONECTL = ROOT / "tools" / "dronectl.py"
VENV_BIN = Path(PYTHON).parent
# What every drone runs, as in tools/demo.py; the agent appends
# --usepkg-exclude=<cat/pkg> and =<cpv>.
EMERGE_COMMAND = f"{PYTHON} {VENV_BIN / 'emerge'} --oneshot --buildpkg --usepkg --getbinpkg --quiet-build=n"
WEDGE_ATOM = "swarm-test/sleeper"
WEDGE_SLEEP = 900  # seconds the sleeper sleeps on a drone: far longer than any trial
SESSION = "healing-bench"
# Healing actions a trial of each kind takes when all goes as expected.
ACTIONS_NEEDED = {"crash": 1, "frozen": 2, "wedged": 1}
SETTLE = 2.0  # seconds a recovered fleet gets before the next trial
# A drone is broken only once connected this many heartbeat intervals: the
# controller's phi-accrual detector has then learned its rhythm (right after
# a connect its window still holds the short Hello -> first heartbeat gap,
# and a silence takes up to ~3.5 intervals to be suspected instead of ~2.5).
STEADY_HEARTBEATS = 20
MARGIN = 1.0  # seconds beyond a cool-off or throttle window before a trial starts
POLL = 0.1
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Agent log lines start with logging's asctime (local time, milliseconds).
AGENT_LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"

CONTROLLER_DEFAULTS = {f.name: f.default for f in ControllerConfig.__dataclass_fields__.values()}
HEARTBEAT_DEFAULT = float(AgentConfig.__dataclass_fields__["heartbeat_interval"].default)


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


# -- options ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    trials: int
    drones: int
    kinds: tuple[str, ...]
    ssh: bool
    insecure: bool
    stall_timeout: float
    timeout: float
    keep: bool
    json_path: Path | None
    controller_args: tuple[str, ...]


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/healing.py",
        description="Healing benchmark: one real controller (its default healing settings; fresh, "
        "so no startup grace) and N real swarm-agent drones under tools/dronectl.py on "
        "127.0.0.1. Each trial breaks one drone: 'crash' (SIGKILL to its agent), 'frozen' "
        "(SIGSTOP) or 'wedged' (a build with no output and no CPU time past the agent's "
        "--builder-stall-timeout), and waits for the controller's healer to bring it back. Per "
        "kind: detection time and time to recovery (p50, max) from the controller's incidents, "
        "which ladder step fixed it, where the time went (from the controller's events), and "
        "a verdict against the issue's targets (detection within 3 heartbeat intervals for a "
        "frozen agent, at once for a crash; recovery under 15 s when step 1 or 2 suffices). "
        "Trials run one at a time and wait out the healer's cool-off and action throttle, so "
        "neither shows in the figures. Prints figures; asserts nothing. Ctrl-C stops every "
        "process it started.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--trials", type=int, default=5, help="trials of each failure kind")
    parser.add_argument(
        "--drones",
        type=int,
        default=3,
        help="drones in the fleet (at least 3 keeps one sick drone from looking like a dark fleet "
        "to the healer, which then does nothing; 2 or fewer are never 'dark')",
    )
    parser.add_argument(
        "--kinds",
        type=comma_subset(KINDS),
        default=",".join(KINDS),
        help="comma-separated failure kinds to try, in this order within each round",
    )
    parser.add_argument(
        "--ssh",
        action="store_true",
        help="restart commands go through a private sshd on 127.0.0.1 (tests/support/sshd.py; needs "
        'openssh-server) instead of running on this machine (ssh = "local")',
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext gRPC (controller and agents with --insecure) instead of mutual TLS with "
        "enrolled drones",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=3.0,
        help="every agent's --builder-stall-timeout: seconds without output or CPU time after which "
        "a build is wedged (the agent's default is 1800)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        help="seconds one trial may take from the failure to the controller's recovery before "
        "the bench gives up (and prints the drone's health history)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (controller data and log, each drone's dronectl "
        "folder with agent.out, the prefixes and build logs); kept anyway when the run fails",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON here")
    parser.add_argument(
        "--controller-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the controller, for experiments (repeat it; e.g. "
        "--controller-arg=--heal-cooloff=5 for a shorter run: the bench waits out whatever the "
        "controller's cool-off is, so the figures do not change)",
    )
    ns = parser.parse_args(argv)
    if ns.trials < 1:
        parser.error("--trials must be at least 1")
    if ns.drones < 1:
        parser.error("--drones must be at least 1")
    if ns.stall_timeout <= 0 or ns.timeout <= 0:
        parser.error("--stall-timeout and --timeout must be positive")
    return Options(
        trials=ns.trials,
        drones=ns.drones,
        kinds=ns.kinds,
        ssh=ns.ssh,
        insecure=ns.insecure,
        stall_timeout=ns.stall_timeout,
        timeout=ns.timeout,
        keep=ns.keep,
        json_path=ns.json,
        controller_args=tuple(ns.controller_arg),
    )


# -- small helpers ------------------------------------------------------------------


def ts(text: str | None) -> float | None:
    return None if text is None else parse_iso(text)


def process_started_at(pid: int) -> float:
    """When a process started, on the wall clock, to about 10 ms. psutil's
    create_time() adds the start ticks to the boot time, which /proc/stat
    gives in whole seconds; /proc/uptime has hundredths."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    start_ticks = int(stat.rpartition(")")[2].split()[19])  # field 22, starttime
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - (uptime - start_ticks / CLK_TCK)


def stats(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50": None if not values else round(percentile(values, 50) or 0.0, 3),
        "max": None if not values else round(max(values), 3),
    }


def fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def p50max(figure: Mapping[str, float | None], spec: str = ".2f") -> str:
    return f"p50 {fmt(figure['p50'], spec, 's')}, max {fmt(figure['max'], spec, 's')}"


# -- the swarm ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealSettings:
    """What the running controller's healer says of itself (GET /admin/api/healing)."""

    grace: float
    restart_timeout: float
    hard_restart_timeout: float
    cooloff: float
    max_actions: int
    action_window: float
    dark_share: float

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> HealSettings:
        s = body["settings"]
        return cls(
            grace=float(s["grace_s"]),
            restart_timeout=float(s["step_timeouts_s"]["restart"]),
            hard_restart_timeout=float(s["step_timeouts_s"]["hard restart"]),
            cooloff=float(s["cooloff_s"]),
            max_actions=int(s["max_actions"]),
            action_window=float(s["action_window_s"]),
            dark_share=float(s["dark_share"]),
        )


@dataclass(frozen=True, slots=True)
class Action:
    """One healing action the controller took (a heal_action event that ran)."""

    drone: str
    started: float  # ~ when the healer counted it against its throttle
    ended: float  # ~ the healer's last_action_at for the drone: its cool-off starts here


class Swarm:
    """The controller, the drones and the ways to look at them."""

    def __init__(self, opts: Options, children: Children, work: Path) -> None:
        self.opts = opts
        self.children = children
        self.work = work
        self.services = work / "services"  # dronectl's folders, one per drone
        self.names = [f"drone-{i}" for i in range(opts.drones)]
        self.controller: Controller | None = None
        self.api: Api | None = None
        self.admin: Api | None = None
        self.sshd: Any = None
        self.access_mode = "local"
        self.settings: HealSettings | None = None
        self.heartbeat = HEARTBEAT_DEFAULT
        self.actions: list[Action] = []
        self.session_id: str | None = None
        self.job_id: str | None = None

    # -- start --------------------------------------------------------------------

    def start(self) -> None:
        opts = self.opts
        self.services.mkdir(parents=True)
        if opts.ssh:
            self._start_sshd()
        ctl = f"{shlex.quote(PYTHON)} {shlex.quote(str(DRONECTL))} --state {shlex.quote(str(self.services))}"
        ctl += " --timeout 2"
        ctl_prefix = pfx.create_prefix(pfx.PrefixConfig(self.work / "ctl-prefix", pfx.Role.CONTROLLER))
        extra = [
            "--restart-command",
            f"{ctl} restart {{name}}",
            "--hard-restart-command",
            f"{ctl} hard-restart {{name}}",
            "--portage-eprefix",
            str(ctl_prefix.root),
            # Access comes from a drones file: "local" is the file's to give, never the API's.
            "--drones-file",
            str(self._drones_file()),
            "--log-level",
            "info",
        ]
        if self.sshd is not None:
            extra += [
                "--ssh-identity",
                str(self.sshd.identity),
                "--ssh-known-hosts",
                str(self.sshd.known_hosts),
            ]
        data = self.work / "controller"
        data.mkdir()
        self.controller = Controller(
            self.children,
            data,
            ping_interval=float(CONTROLLER_DEFAULTS["ping_interval"]),
            tls=not opts.insecure,
            extra=[*extra, *opts.controller_args],
        )
        ports = self.controller.start()
        self.api = wait_api(ports.public)
        self.admin = Api(ports.admin, timeout=120.0, admin_key=self.controller.admin_key)
        self.settings = HealSettings.from_json(self.get_admin("/admin/api/healing"))
        tokens = [] if opts.insecure else join_tokens(self.controller, len(self.names))
        staging = str(self.controller.info["staging_url"])
        for i, name in enumerate(self.names):
            self._add_drone(name, staging, tokens[i] if tokens else None)
        say(f"{len(self.names)} agent(s) started; waiting for them to come online")
        wait_until(
            "every drone online with its checks passing", self._all_healthy, 120.0, self.check_alive, 0.25
        )
        wait_until("every drone's access (drones file)", self._all_reachable, 30.0, self.check_alive, 0.25)
        node = self.nodes()[self.names[0]]
        self.heartbeat = float(node["heartbeat_interval_ms"]) / 1000.0

    def _drones_file(self) -> Path:
        ssh = str(self.sshd.target) if self.sshd is not None else "local"
        path = self.work / "drones.toml"
        path.write_text("".join(f'[drones.{name}]\nssh = "{ssh}"\n' for name in self.names))
        return path

    def _all_reachable(self) -> bool:
        drones = self.get_admin("/admin/api/drones")["drones"]
        reachable = {d["name"] for d in drones if d["ssh_access"] is not None}
        return reachable >= set(self.names)

    def _start_sshd(self) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        try:
            from support.sshd import SshdUnavailable, SshServer
        except ImportError as exc:
            raise BenchError(f"--ssh needs tests/support/sshd.py and its imports: {exc}") from None
        try:
            self.sshd = SshServer()
        except SshdUnavailable as exc:
            raise BenchError(f"--ssh: {exc}") from None
        try:
            self.sshd.start()
        except RuntimeError as exc:
            raise BenchError(f"--ssh: {exc}") from None
        version = subprocess.run(
            [self.sshd.ssh, "-V"], capture_output=True, text=True, timeout=10, check=False
        ).stderr.strip()
        self.access_mode = f"ssh to {self.sshd.target} (private sshd, {version})"

    def _add_drone(self, name: str, staging: str, token: str | None) -> None:
        assert self.controller is not None and self.controller.ports is not None
        home = self.work / "drones" / name
        state = home / "state"
        state.mkdir(parents=True)
        target = f"{HOST}:{self.controller.ports.grpc}"
        if token is not None:
            enrolled = subprocess.run(
                [
                    PYTHON,
                    "-m",
                    "swarm.agent.main",
                    "enroll",
                    "--controller",
                    target,
                    "--enroll-address",
                    self.controller.enroll_target,
                    "--token",
                    token,
                    "--ca-pin",
                    self.controller.ca_pin,
                    "--name",
                    name,
                    "--state-dir",
                    str(state),
                    "--log-file",
                    "",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                cwd=ROOT,
            )
            if enrolled.returncode != 0:
                raise BenchError(f"enrolling {name} failed: {enrolled.stderr.strip()[-300:]}")
        prefix = pfx.create_prefix(
            pfx.PrefixConfig(
                home / "prefix",
                pfx.Role.DRONE,
                binhost=staging,
                package_env={WEDGE_ATOM: {"SWARM_TEST_SLEEP": str(WEDGE_SLEEP)}},
            )
        )
        argv = [
            PYTHON,
            "-m",
            "swarm.agent.main",
            "--name",
            name,
            "--controller",
            target,
            "--state-dir",
            str(state),
            "--cache-path",
            str(state),
            "--portage-eprefix",
            str(prefix.root),
            "--pkgdir",
            str(prefix.pkgdir),
            "--emerge-command",
            EMERGE_COMMAND,
            "--min-free-disk-mb",
            "64",
            "--builder-stall-timeout",
            f"{self.opts.stall_timeout:g}",
            "--log-file",
            "",
            "--log-level",
            "info",
        ]
        if self.opts.insecure:
            argv.append("--insecure")
        # The same PATH (and PYTHONPATH, if any) whoever starts it: the bench, the
        # controller's sh -c, an SSH session (whose environment is sshd's).
        env = {key: os.environ[key] for key in ("PATH", "PYTHONPATH") if key in os.environ}
        dronectl.write_spec(self.services, name, argv, env=env)
        self.dronectl("start", name)

    def dronectl(self, action: str, name: str) -> str:
        """The same tool the healer's commands run."""
        done = subprocess.run(
            [PYTHON, str(DRONECTL), "--state", str(self.services), "--timeout", "2", action, name],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode not in (0, dronectl.NOT_RUNNING):
            raise BenchError(f"dronectl {action} {name} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    # -- looking ---------------------------------------------------------------------

    def check_alive(self) -> None:
        ctl = self.controller
        if ctl is not None and ctl.proc is not None and ctl.proc.poll() is not None:
            raise BenchError(f"the controller exited with {ctl.proc.returncode}: {ctl.log_tail(5)}")

    def get(self, path: str) -> Any:
        assert self.api is not None
        status, body = self.api.get(path)
        if status != 200:
            raise BenchError(f"GET {path} answered {status}: {body}")
        return body

    def admin_request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        assert self.admin is not None
        return self.admin.request(method, path, body)

    def get_admin(self, path: str) -> Any:
        status, body = self.admin_request("GET", path)
        if status != 200:
            raise BenchError(f"GET {path} answered {status}: {body}")
        return body

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in self.get("/api/v1/nodes")["nodes"]}

    def health(self, name: str) -> dict[str, Any]:
        return dict(self.get_admin(f"/admin/api/drones/{name}/health"))

    def last_event_id(self) -> int:
        return int(self.get("/api/v1/status")["last_event_id"])

    def events_since(self, after: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            page = self.get(f"/api/v1/events?since={after}&limit=1000")["events"]
            found += page
            if len(page) < 1000:
                return found
            after = int(page[-1]["id"])

    def _all_healthy(self) -> bool:
        nodes = self.nodes()
        return all(
            (n := nodes.get(name)) is not None
            and n["status"] == "online"
            and n["checks"]
            and all(c["ok"] for c in n["checks"])
            for name in self.names
        )

    def agent_pid(self, name: str) -> int | None:
        """The drone's running agent, as dronectl recorded it (exec keeps the pid)."""
        try:
            pid, started = json.loads((self.services / name / "agent.pid").read_text())
            proc = psutil.Process(pid)
            if abs(proc.create_time() - started) < 0.5 and proc.status() != psutil.STATUS_ZOMBIE:
                return int(pid)
        except (OSError, ValueError, psutil.Error):
            pass
        return None

    def connected_since(self, name: str) -> float | None:
        """When the drone's current stream came up (its latest connect event)."""
        found = self.get(f"/api/v1/events?type=drone_connected,drone_replaced&drone={name}&limit=1")["events"]
        return parse_iso(found[-1]["ts"]) if found else None

    def steady(self, name: str) -> bool:
        since = self.connected_since(name)
        return since is not None and time.time() - since >= STEADY_HEARTBEATS * self.heartbeat

    def agent_log(self, name: str) -> Path:
        return self.services / name / "agent.out"

    # -- waiting between trials ----------------------------------------------------------

    def quiet(self) -> bool:
        """Every drone online, no open incident, the fleet not dark, healing not held."""
        nodes = self.nodes()
        if any((nodes.get(n) or {}).get("status") != "online" for n in self.names):
            return False
        healing = self.get_admin("/admin/api/healing")
        if healing["fleet_dark"] or healing["paused"]:
            return False
        return all(self.health(n)["incident"] is None for n in self.names)

    def free_at(self, drones: Iterable[str], need: int) -> float:
        """When a trial may break one of ``drones`` without the healer's cool-off
        or action throttle delaying its first step."""
        s = self.settings
        assert s is not None
        at = 0.0
        for drone in drones:
            # The drone's cool-off is a backoff that grows with each healed
            # incident: its health view says until when it lasts.
            until = self.health(drone)["cooloff"]["until"]
            if until is not None:
                at = max(at, parse_iso(until) + MARGIN)
        starts = sorted(a.started for a in self.actions)
        allowed = max(0, s.max_actions - need)
        if len(starts) > allowed:
            # The oldest len - allowed actions must have left the window.
            at = max(at, starts[len(starts) - allowed - 1] + s.action_window + MARGIN)
        return at

    def record_actions(self, events: Iterable[Mapping[str, Any]]) -> None:
        for e in events:
            if e["type"] == "heal_action" and e["data"].get("done"):
                ended = parse_iso(e["ts"])
                started = ended - float(e["data"].get("duration_s") or 0.0)
                self.actions.append(Action(e["drone_name"], started, ended))

    # -- the wedge's build -----------------------------------------------------------------

    def start_wedge_build(self) -> None:
        """Queue the sleeper (the first time) or resume its session: the
        scheduler sends it to a drone at once."""
        if self.session_id is None:
            status, body = self.admin_request(
                "POST", "/admin/api/queue", {"atoms": [WEDGE_ATOM], "session": SESSION}
            )
            if status != 201:
                raise BenchError(f"POST /admin/api/queue answered {status}: {body}")
            self.session_id = str(body["session"]["id"])
            jobs = body["jobs"]
            if len(jobs) != 1:
                raise BenchError(f"queueing {WEDGE_ATOM} made {len(jobs)} jobs, expected 1: {jobs}")
            self.job_id = str(jobs[0]["id"])
        else:
            self.control("resume")

    def control(self, action: str) -> None:
        status, body = self.admin_request(
            "POST", "/admin/api/control", {"action": action, "session": self.session_id}
        )
        if status != 200:
            raise BenchError(f"POST /admin/api/control {action} answered {status}: {body}")

    def wedge_job(self) -> dict[str, Any] | None:
        for job in self.get("/api/v1/queue?limit=5000")["jobs"]:
            if job["id"] == self.job_id:
                return dict(job)
        return None

    # -- stop -----------------------------------------------------------------------------

    def close(self) -> None:
        """Healing off, controller stopped, then every agent and what it ran
        (emerge runs in a session of its own: killing the agent's group misses it)."""
        for api in (self.api, self.admin):
            if api is not None:
                api.close()
        ctl = self.controller
        if ctl is not None and ctl.ports is not None and ctl.proc is not None and ctl.proc.poll() is None:
            quick = Api(ctl.ports.admin, timeout=5.0, admin_key=ctl.admin_key)
            with contextlib.suppress(Exception):  # best effort: it is stopped next anyway
                quick.post("/admin/api/healing", {"action": "pause"})
            quick.close()
        if self.controller is not None:
            self.controller.stop()
        for _ in range(2):  # twice: a restart command already on its way may start one more
            for name in self.names:
                folder = self.services / name
                if not (folder / "agent.json").exists():
                    continue
                pid = self.agent_pid(name)
                descendants: list[psutil.Process] = []
                if pid is not None:
                    with contextlib.suppress(psutil.Error):
                        descendants = psutil.Process(pid).children(recursive=True)
                with contextlib.suppress(dronectl.DroneCtlError, OSError):
                    dronectl.stop(folder, 0.0)
                for proc in descendants:
                    with contextlib.suppress(psutil.Error):
                        proc.kill()
            time.sleep(0.5)
        if self.sshd is not None:
            self.sshd.stop()


# -- one trial --------------------------------------------------------------------------


@dataclass(slots=True)
class Injected:
    drone: str
    at: float  # the failure, on the bench's clock (wedged: the stall started)
    pid: int
    extra: dict[str, Any]


def inject_crash(swarm: Swarm, drone: str) -> Injected:
    pid = swarm.agent_pid(drone)
    if pid is None:
        raise BenchError(f"{drone} has no running agent")
    at = time.time()
    os.kill(pid, signal.SIGKILL)
    return Injected(drone, at, pid, {})


def inject_freeze(swarm: Swarm, drone: str) -> Injected:
    pid = swarm.agent_pid(drone)
    if pid is None:
        raise BenchError(f"{drone} has no running agent")
    at = time.time()
    os.kill(pid, signal.SIGSTOP)
    return Injected(drone, at, pid, {})


def find_sleep(pid: int) -> psutil.Process | None:
    """The sleeper's ``sleep`` somewhere below the agent (agent, emerge, ebuild.sh, ...)."""
    with contextlib.suppress(psutil.Error):
        for proc in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if proc.name() == "sleep" and proc.cmdline()[1:] == [str(WEDGE_SLEEP)]:
                    return proc
    return None


def inject_wedge(swarm: Swarm, timeout: float) -> Injected:
    """Let the sleeper's build start on whichever drone the scheduler picks,
    pause the session (so the job, requeued when the build is cancelled, waits
    for the next trial), and find when its build went silent: the moment its
    ``sleep`` started, right after the ebuild printed its last line."""
    sent = time.time()
    swarm.start_wedge_build()
    job = wait_until(
        "the sleeper's build to be sent to a drone",
        lambda: (j := swarm.wedge_job()) is not None and j["state"] in ("assigned", "building") and j,
        timeout,
        swarm.check_alive,
        0.05,
    )
    swarm.control("pause")
    drone = str(job["drone"])
    pid = swarm.agent_pid(drone)
    if pid is None:
        raise BenchError(f"{drone} got the sleeper but has no running agent")
    sleep = wait_until(
        f"the sleeper's sleep on {drone}",
        lambda: find_sleep(pid),
        timeout,
        swarm.check_alive,
        0.05,
    )
    stall = process_started_at(sleep.pid)
    started = swarm.wedge_job()
    return Injected(
        drone,
        stall,
        pid,
        {
            "queued_or_resumed_at": sent,
            "build_id": job["build_id"],
            "build_started_at": ts(started["started_at"]) if started else None,
            "stall_started_at": stall,
        },
    )


def incident_of(health: Mapping[str, Any], since: float) -> dict[str, Any] | None:
    """The drone's first incident detected since the trial began."""
    found = [i for i in health["incidents"] if (ts(i["detected_at"]) or 0.0) >= since]
    return dict(min(found, key=lambda i: ts(i["detected_at"]) or 0.0)) if found else None


def history_line(health: Mapping[str, Any]) -> str:
    notes = [f"{h['at'][11:23]} {h['what']}" for h in health.get("history", [])[-12:]]
    events = [f"{e['ts'][11:23]} {e['message']}" for e in health.get("events", [])[-8:]]
    return (
        f"status {health.get('status')}, level {health.get('level')}, next {health.get('next_action')}; "
        f"history: {' | '.join(notes) or 'none'}; events: {' | '.join(events) or 'none'}"
    )


def run_trial(swarm: Swarm, kind: str, index: int, rotation: int) -> dict[str, Any]:
    opts = swarm.opts
    need = ACTIONS_NEEDED[kind]
    # Crash and frozen: the drone that is free soonest. Wedged: the scheduler
    # picks the drone, so every drone must be free.
    if kind == "wedged":
        candidates = list(swarm.names)
        at = swarm.free_at(candidates, need)
    else:
        order = swarm.names[rotation % len(swarm.names) :] + swarm.names[: rotation % len(swarm.names)]
        candidates = [min(order, key=lambda d: swarm.free_at([d], need))]
        at = swarm.free_at(candidates, need)
    waited_from = time.time()
    wait_until("a quiet fleet", swarm.quiet, 120.0, swarm.check_alive, 0.25)
    if at > time.time():
        say(f"{kind} #{index + 1}: waiting {at - time.time():.0f}s for the healer's cool-off or throttle")
        while time.time() < at:
            swarm.check_alive()
            time.sleep(min(1.0, max(0.0, at - time.time())))
        wait_until("a quiet fleet", swarm.quiet, 120.0, swarm.check_alive, 0.25)
    if kind != "wedged":
        wait_until(
            f"{candidates[0]} connected for {STEADY_HEARTBEATS} heartbeat intervals",
            lambda: swarm.steady(candidates[0]),
            STEADY_HEARTBEATS * swarm.heartbeat + 60.0,
            swarm.check_alive,
            0.5,
        )
    waited = time.time() - waited_from
    marker = swarm.last_event_id()
    connected = {name: swarm.connected_since(name) for name in swarm.names}
    began = time.time()
    load = loadavg()
    if kind == "crash":
        injected = inject_crash(swarm, candidates[0])
    elif kind == "frozen":
        injected = inject_freeze(swarm, candidates[0])
    else:
        injected = inject_wedge(swarm, opts.timeout)
    drone = injected.drone
    say(f"{kind} #{index + 1}: {drone} broken; waiting for the healer")
    deadline = injected.at + opts.timeout
    while True:
        swarm.check_alive()
        health = swarm.health(drone)
        incident = incident_of(health, began - 0.5)
        if incident is not None and incident["recovered_at"] is not None:
            break
        if time.time() > deadline:
            what = "no incident opened" if incident is None else f"incident {incident['id']} still open"
            raise BenchError(
                f"{kind} trial {index + 1} on {drone}: not recovered {opts.timeout:.0f}s after the failure "
                f"({what}); {history_line(health)}"
            )
        time.sleep(POLL)
    events = swarm.events_since(marker)
    swarm.record_actions(events)
    new_pid = swarm.agent_pid(drone)
    trial = figures_of(swarm, kind, index, injected, incident, events, new_pid)
    opened = [i for i in swarm.health(drone)["incidents"] if (ts(i["detected_at"]) or 0.0) >= began - 0.5]
    since = connected.get(drone)
    trial |= {
        "connected_for_s": None if since is None else round(injected.at - since, 1),
        "incidents_in_trial": len(opened),
        "waited_s": round(waited, 1),
        "load_at_start": [round(x, 2) for x in load],
    }
    say(
        f"{kind} #{index + 1} on {drone}: detection {trial['detection_s']:.3f}s, recovery "
        f"{trial['recovery_s']:.2f}s, {incident['outcome']}"
    )
    time.sleep(SETTLE)
    return trial


def figures_of(
    swarm: Swarm,
    kind: str,
    index: int,
    injected: Injected,
    incident: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    new_pid: int | None,
) -> dict[str, Any]:
    """One trial's figures: the controller's incident, the same measured from
    the failure the bench caused, and where the recovery time went."""
    drone = injected.drone
    failed = ts(incident["failed_at"]) or 0.0
    detected = ts(incident["detected_at"]) or 0.0
    recovered = ts(incident["recovered_at"]) or 0.0
    mine = [e for e in events if e.get("drone_name") == drone]
    actions = [e for e in mine if e["type"] == "heal_action"]
    trial: dict[str, Any] = {
        "kind": kind,
        "trial": index + 1,
        "drone": drone,
        "incident": dict(incident),
        "detection_s": float(incident["detection_s"]),
        "recovery_s": float(incident["recovery_s"]),
        "level": int(incident["level"]),
        "step": incident["step"],
        "outcome": incident["outcome"],
        "failure_at": injected.at,
        # From the failure the bench caused (wedged: the stall's start).
        "detection_from_failure_s": round(detected - injected.at, 3),
        "recovery_from_failure_s": round(recovered - injected.at, 3),
        "steps": [
            {
                "step": a["data"]["step"],
                "done": a["data"]["done"],
                "at_s": round(parse_iso(a["ts"]) - float(a["data"].get("duration_s") or 0.0) - failed, 3),
                "duration_s": a["data"].get("duration_s"),
                "exit_code": a["data"].get("exit_code"),
                "detail": a["message"].split(": ", 2)[-1][:200],
            }
            for a in actions
        ],
        "new_process": new_pid != injected.pid or kind == "wedged",
        "bystander_events": [
            f"{e['drone_name']}: {e['type']}: {e['message']}"
            for e in events
            if e.get("drone_name") not in (None, drone)
            and e["type"] in ("drone_suspect", "drone_unhealthy", "drone_disconnected", "heal_action")
        ],
        "fleet_events": [
            f"{e['type']}: {e['message']}"
            for e in events
            if e["type"] in ("fleet_dark", "fleet_dark_cleared", "healing_throttled", "drone_alert")
        ],
        "events": [
            {"at_s": round(parse_iso(e["ts"]) - failed, 3), "type": e["type"], "message": e["message"]}
            for e in mine
        ],
        **injected.extra,
    }
    trial["phases"] = phases(failed, detected, recovered, actions, mine)
    if kind == "wedged":
        trial |= wedge_figures(swarm, injected, detected, recovered, mine)
    return trial


def phases(
    failed: float,
    detected: float,
    recovered: float,
    actions: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
) -> dict[str, float | None]:
    """Recovery split at the controller's events: failure -> detected -> first
    step (grace) -> the step that worked (earlier steps' timeouts) -> its
    command done -> the new agent's stream -> proof of life (its first pong,
    seen by the healer's next pass)."""
    if not actions:
        return {"detect": round(detected - failed, 3), "self": round(recovered - detected, 3)}
    first_start = parse_iso(actions[0]["ts"]) - float(actions[0]["data"].get("duration_s") or 0.0)
    last_end = parse_iso(actions[-1]["ts"])
    last_start = last_end - float(actions[-1]["data"].get("duration_s") or 0.0)
    connected = next(
        (
            parse_iso(e["ts"])
            for e in events
            if e["type"] in ("drone_connected", "drone_replaced") and parse_iso(e["ts"]) >= last_start - 0.001
        ),
        None,
    )
    out: dict[str, float | None] = {
        "detect": round(detected - failed, 3),
        "grace": round(first_start - detected, 3),
        "earlier_steps": round(last_start - first_start, 3),
        "command": round(last_end - last_start, 3),
        "reconnect": None if connected is None else round(connected - last_end, 3),
        "proof": None if connected is None else round(recovered - connected, 3),
    }
    return out


def wedge_figures(
    swarm: Swarm, injected: Injected, detected: float, recovered: float, events: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The wedge against its own clock: the stall started (the sleep), the
    stall timeout expired (the earliest the agent may call it wedged), the
    agent said so (its log), the controller learned it (the next Pong)."""
    stall = injected.at
    expiry = stall + swarm.opts.stall_timeout
    declared = agent_declared_wedged(swarm.agent_log(injected.drone), stall)
    unhealthy = next((e for e in events if e["type"] == "drone_unhealthy"), None)
    detail = ""
    if unhealthy is not None:
        failing = unhealthy["data"].get("failing") or []
        detail = "; ".join(str(f.get("detail", "")) for f in failing)
    return {
        "stall_timeout_s": swarm.opts.stall_timeout,
        "detection_from_expiry_s": round(detected - expiry, 3),
        "recovery_from_expiry_s": round(recovered - expiry, 3),
        "agent_declared_after_expiry_s": None if declared is None else round(declared - expiry, 3),
        "controller_learned_after_agent_s": None if declared is None else round(detected - declared, 3),
        "emerge_until_stall_s": None
        if injected.extra.get("build_started_at") is None
        else round(stall - injected.extra["build_started_at"], 3),
        "unhealthy_detail": detail,
    }


def agent_declared_wedged(log: Path, since: float) -> float | None:
    """When the agent's builder check first failed after ``since`` (its log line)."""
    if not log.exists():
        return None
    for line in log.read_text(errors="replace").splitlines():
        if "check builder failing" not in line:
            continue
        try:
            at = datetime.strptime(line[:23], AGENT_LOG_TIME).timestamp()
        except ValueError:
            continue
        if at >= since - 0.5:
            return at
    return None


# -- figures and report ---------------------------------------------------------------------


PHASES = ("detect", "grace", "earlier_steps", "command", "reconnect", "proof")


def summarise(kind: str, trials: Sequence[Mapping[str, Any]], hb: float) -> dict[str, Any]:
    det = [t["detection_s"] for t in trials]
    rec = [t["recovery_s"] for t in trials]
    det_f = [t["detection_from_failure_s"] for t in trials]
    rec_f = [t["recovery_from_failure_s"] for t in trials]
    fixed = Counter(t["step"] if t["level"] else "itself" for t in trials)
    laddered = [t for t in trials if 1 <= t["level"] <= 2]
    summary: dict[str, Any] = {
        "kind": kind,
        "trials": len(trials),
        "detection_s": stats(det),
        "detection_hb": stats([d / hb for d in det]),
        "recovery_s": stats(rec),
        "detection_from_failure_s": stats(det_f),
        "recovery_from_failure_s": stats(rec_f),
        "fixed_by": dict(fixed),
        "phases_p50_s": {
            p: (
                percentile(vals, 50)
                if (vals := [t["phases"][p] for t in trials if t["phases"].get(p) is not None])
                else None
            )
            for p in PHASES
        },
    }
    targets: dict[str, Any] = {}
    if kind == "crash":
        worst = max(det_f)
        targets["detection at once (< 1 heartbeat after the kill)"] = worst < TARGET_CRASH_DETECTION_HB * hb
    elif kind == "frozen":
        targets[
            f"detection <= {TARGET_FROZEN_DETECTION_HB:g} heartbeat intervals after the last heartbeat"
        ] = max(det) <= TARGET_FROZEN_DETECTION_HB * hb
    if laddered:
        targets[f"recovery < {TARGET_RECOVERY_S:g} s (controller's failed_at)"] = (
            max(t["recovery_s"] for t in laddered) < TARGET_RECOVERY_S
        )
    if kind == "wedged":
        summary["detection_from_expiry_s"] = stats([t["detection_from_expiry_s"] for t in trials])
        summary["recovery_from_expiry_s"] = stats([t["recovery_from_expiry_s"] for t in trials])
        declared = [
            t["agent_declared_after_expiry_s"]
            for t in trials
            if t["agent_declared_after_expiry_s"] is not None
        ]
        learned = [
            t["controller_learned_after_agent_s"]
            for t in trials
            if t["controller_learned_after_agent_s"] is not None
        ]
        summary["agent_declared_after_expiry_s"] = stats(declared)
        summary["controller_learned_after_agent_s"] = stats(learned)
        summary["emerge_until_stall_s"] = stats(
            [t["emerge_until_stall_s"] for t in trials if t["emerge_until_stall_s"] is not None]
        )
        if laddered:
            targets[f"recovery < {TARGET_RECOVERY_S:g} s from the stall timeout's expiry"] = (
                max(t["recovery_from_expiry_s"] for t in laddered) < TARGET_RECOVERY_S
            )
    summary["targets"] = targets
    return summary


def report(results: Mapping[str, Any]) -> str:
    env = results["env"]
    s = results["settings"]
    hb = results["heartbeat_s"]
    lines = [
        f"Build Swarm healing benchmark: {results['drones']} drones, {env['cpus']} CPUs, Python "
        f"{env['python']}; transport {results['transport']}; restart commands: {results['access']}.",
        f"Controller healing settings (its defaults{results['settings_note']}): grace {s['grace']:g}s, "
        f"step timeouts restart {s['restart_timeout']:g}s / hard restart {s['hard_restart_timeout']:g}s, "
        f"cool-off from {s['cooloff']:g}s doubling (waited out), {s['max_actions']} actions per "
        f"{s['action_window']:g}s (waited out), no startup grace (fresh); ping every "
        f"{results['ping_interval_s']:g}s; agents beat every "
        f"{hb:g}s; builder stall timeout {results['stall_timeout_s']:g}s.",
        f"Crash and frozen trials break a drone connected for at least {STEADY_HEARTBEATS} heartbeat "
        "intervals (the controller's failure detector has learned its rhythm by then).",
        f"Load average (1 min) at trial starts: {results['load']['min']:.2f}-{results['load']['max']:.2f} "
        f"(mean {results['load']['mean']:.2f}). '!' marks a missed target.",
        "",
        "Per kind, from the controller's incidents (detection = detected_at - failed_at; recovery = "
        "recovered_at - failed_at):",
        f"{'kind':<7} {'n':>2} {'detect p50':>10} {'max':>7} {'(hb p50/max)':>13} {'recover p50':>11} "
        f"{'max':>7}   fixed by",
    ]
    for k in results["kinds"]:
        d, r, h = k["detection_s"], k["recovery_s"], k["detection_hb"]
        fixed = ", ".join(f"{step} {n}" for step, n in sorted(k["fixed_by"].items()))
        lines.append(
            f"{k['kind']:<7} {k['trials']:>2} {fmt(d['p50'], '.3f', 's'):>10} {fmt(d['max'], '.3f', 's'):>7} "
            f"{fmt(h['p50'], '.1f') + '/' + fmt(h['max'], '.1f'):>13} {fmt(r['p50'], '.2f', 's'):>11} "
            f"{fmt(r['max'], '.2f', 's'):>7}   {fixed}"
        )
    lines += [
        "  failed_at is what the controller can know: a crash, the moment the stream ended (so detection",
        "  is 0 by construction); a frozen agent, its last heartbeat; a wedged builder, the moment the",
        "  controller learned it from a Pong (detection 0 again: see the wedge's own clock below).",
        "",
        "The same from the failure the bench caused (its clock: the kill / the SIGSTOP / the stall's start):",
    ]
    for k in results["kinds"]:
        d, r = k["detection_from_failure_s"], k["recovery_from_failure_s"]
        origin = {"crash": "the SIGKILL", "frozen": "the SIGSTOP", "wedged": "the stall's start"}[k["kind"]]
        lines.append(
            f"  {k['kind']:<7} from {origin:<17}: detection {p50max(d, '.3f')}; recovery {p50max(r)}"
        )
    wedged = next((k for k in results["kinds"] if k["kind"] == "wedged"), None)
    if wedged is not None:
        de, re_ = wedged["detection_from_expiry_s"], wedged["recovery_from_expiry_s"]
        ag, cl = wedged["agent_declared_after_expiry_s"], wedged["controller_learned_after_agent_s"]
        em = wedged["emerge_until_stall_s"]
        lines += [
            "",
            "Wedged builder, on its own clock. The stall starts when the sleeper's `sleep` starts, right",
            f"after the ebuild's last line (emerge ran {p50max(em, '.1f')} before that); the build",
            f"is wedged by definition {results['stall_timeout_s']:g}s later, when the stall timeout expires",
            "(with the agent's default of 1800s that is half an hour on: the figures from the expiry are",
            "the ones that carry over to a real fleet).",
            f"  from the expiry: detection {p50max(de)}; recovery {p50max(re_)}",
            f"  the agent declared it wedged {p50max(ag)} after the expiry (its check runs every 1s",
            "  and samples the build's CPU time every 1s: the stall it sees starts up to 1s late);",
            f"  the controller learned it {p50max(cl)} after that, with the next Pong (pings every "
            f"{results['ping_interval_s']:g}s).",
        ]
    lines += [
        "",
        "Where the recovery time goes (p50 per phase, seconds, from the controller's events):",
        f"{'kind':<7} {'detect':>7} {'grace':>7} {'earlier':>8} {'command':>8} {'reconn.':>8} {'proof':>7}",
    ]
    for k in results["kinds"]:
        p = k["phases_p50_s"]
        widths = (7, 7, 8, 8, 8, 7)
        cells = " ".join(f"{fmt(p[name]):>{w}}" for name, w in zip(PHASES, widths, strict=True))
        lines.append(f"{k['kind']:<7} {cells}")
    lines += [
        "  detect: failed_at -> detected_at; grace: -> the first step starts (heal grace + the healer's",
        "  0.25s tick); earlier: -> the step that worked starts (the earlier steps' timeouts); command: the",
        "  step's own run (dronectl; 0 over the control stream); reconn.: -> the new agent's stream is up",
        "  (agent start-up, connect, TLS, Hello); proof: -> recovered_at (its first Pong, ~1 interval after",
        "  connecting, and the healer's next tick).",
        "",
        "Targets:",
    ]
    for k in results["kinds"]:
        for name, ok in k["targets"].items():
            lines.append(f"  {k['kind']:<7} {name}: {'met' if ok else 'MISSED !'}")
    fleet = results.get("fleet") or {}
    if fleet:
        lines += [
            "",
            "Controller's fleet figures (GET /api/v1/health, over the run): availability "
            f"{fmt(fleet.get('availability'), '.4f')}, MTTR {fmt(fleet.get('mttr_s'), '.2f', 's')}, "
            f"mean detection {fmt(fleet.get('mean_detection_s'), '.3f', 's')}, "
            f"{fleet.get('incidents')} incidents ({fleet.get('open_incidents')} open).",
        ]
    warnings = [w for t in results["trials"] for w in t["bystander_events"] + t["fleet_events"]]
    flapped = [t for t in results["trials"] if t["incidents_in_trial"] > 1]
    if warnings or flapped:
        lines.append("")
        lines.append("Noticed during trials (each may have skewed its trial):")
        lines += [f"  {w}" for w in warnings[:10]]
        lines += [
            f"  {t['kind']} #{t['trial']} on {t['drone']}: {t['incidents_in_trial']} incidents"
            for t in flapped
        ]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    own_pid_group()
    children = Children()
    tmp = Path(tempfile.mkdtemp(prefix="swarm-healing-"))
    swarm = Swarm(opts, children, tmp)
    results: dict[str, Any] = {
        "env": env_info(),
        "options": {name: jsonable(getattr(opts, name)) for name in opts.__slots__},
        "uptime_before": uptime(),
        "trials": [],
    }
    code = 0
    began = time.monotonic()
    try:
        say(f"starting a controller and {opts.drones} drones in {tmp}")
        swarm.start()
        assert swarm.settings is not None
        say(
            f"fleet up ({'plaintext' if opts.insecure else 'mutual TLS'}, restart commands: "
            f"{swarm.access_mode}); {opts.trials} trial(s) of {', '.join(opts.kinds)}"
        )
        rotation = 0
        for index in range(opts.trials):
            for kind in opts.kinds:
                results["trials"].append(run_trial(swarm, kind, index, rotation))
                rotation += 1
        results["fleet"] = swarm.get("/api/v1/health")["fleet"]
    except (BenchError, pfx.PrefixError) as exc:
        results["error"] = str(exc)
        code = 1
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        code = 130
    except Exception:
        say(f"bench failed:\n{traceback.format_exc()}")
        results["error"] = "unexpected failure (traceback above)"
        code = 1
    finally:
        settings = swarm.settings
        heartbeat = swarm.heartbeat
        access = swarm.access_mode
        swarm.close()
        children.close()
        if opts.keep or code == 1:
            say(
                f"kept {tmp} (controller/controller.log, services/drone-I/agent.out, "
                "drones/drone-I/state/builds/)"
            )
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["wall_s"] = round(time.monotonic() - began, 1)
    results["uptime_after"] = uptime()
    if results["trials"] and settings is not None:
        loads = [t["load_at_start"][0] for t in results["trials"]]
        results |= {
            "drones": opts.drones,
            "transport": "plaintext (--insecure)" if opts.insecure else "mutual TLS (enrolled drones)",
            "access": access,
            "settings": {k: getattr(settings, k) for k in settings.__slots__},
            "settings_note": "".join(f", {a}" for a in opts.controller_args),
            "ping_interval_s": float(CONTROLLER_DEFAULTS["ping_interval"]),
            "heartbeat_s": heartbeat,
            "stall_timeout_s": opts.stall_timeout,
            "load": {"min": min(loads), "max": max(loads), "mean": sum(loads) / len(loads)},
            "waited_s": round(sum(t["waited_s"] for t in results["trials"]), 1),
            "kinds": [
                summarise(kind, [t for t in results["trials"] if t["kind"] == kind], heartbeat)
                for kind in opts.kinds
                if any(t["kind"] == kind for t in results["trials"])
            ],
        }
        print(report(results))
        print(
            f"Total wall time {results['wall_s']:.0f}s, of which {results['waited_s']:.0f}s waiting between "
            "trials (the healer's cool-off and action throttle, a steady connection).\n"
            f"uptime before: {results['uptime_before']}\nuptime after:  {results['uptime_after']}"
        )
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        say(f"figures written to {opts.json_path}")
    if "error" in results:
        print(f"error: {results['error']}", file=sys.stderr)
    return code


def jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


def uptime() -> str:
    out = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    return out or "load average: {:.2f}, {:.2f}, {:.2f}".format(*loadavg())


if __name__ == "__main__":
    raise SystemExit(main())
