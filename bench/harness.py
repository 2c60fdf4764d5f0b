"""Plumbing for the benchmarks: child processes that cannot outlive us, the
controller and agent as real processes, the simulator workers, a small
HTTP client for the public and admin APIs, CPU meters and percentiles.

Nothing here imports grpc: the parent process only starts, watches and
asks; all gRPC traffic happens in the children.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import http.client
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").is_dir() else sys.executable
HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def wait_until(
    what: str, predicate: Callable[[], Any], timeout: float, alive: Callable[[], None], interval: float = 0.05
) -> Any:
    """Poll until predicate() is truthy and return it; alive() raises if what
    is measured died; BenchError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _child_setup(cpus: frozenset[int] | None) -> Callable[[], None]:
    def setup() -> None:
        """In the child between fork and exec: be killed if the bench dies; stay on ``cpus``."""
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


@dataclass(frozen=True, slots=True)
class Placement:
    """Which CPUs the controller and the simulator may use; None: anywhere.

    Pinned, the controller has a core to itself and the simulator cannot
    steal its time, which makes latencies about the controller alone."""

    controller: frozenset[int] | None = None
    simulator: frozenset[int] | None = None

    @classmethod
    def split(cls) -> Placement:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise BenchError("pinning needs at least two CPUs")
        return cls(frozenset(cpus[:1]), frozenset(cpus[1:]))

    def pin_self(self) -> None:
        """The bench itself polls the API: it belongs with the simulator."""
        if self.simulator:
            os.sched_setaffinity(0, self.simulator)


class Children:
    """Every process the bench starts. ``close()`` ends those still running:
    SIGTERM, a grace period, then SIGKILL. Children get their own session
    (a Ctrl-C reaches only us, and we stop them in order) and die with us
    if we are killed outright."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        self,
        argv: Sequence[str],
        *,
        log: Path,
        pipes: bool = False,
        cpus: frozenset[int] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a child logging to ``log``; with ``pipes`` its stdin and stdout are
        ours; with ``cpus`` it runs only there."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else out,
                stderr=out,
                start_new_session=True,
                preexec_fn=_child_setup(cpus),
                cwd=ROOT,
            )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc, grace=5.0)


@functools.cache
def flag_supported(module: str, flag: str, python: str = PYTHON) -> bool:
    """Whether ``python -m module --help`` mentions the flag (options move as the code grows)."""
    out = subprocess.run(
        [python, "-m", module, "--help"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    return flag in out


# -- controller ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ports:
    grpc: int
    public: int
    admin: int


class Controller:
    """A real ``swarm.controller.main`` process on 127.0.0.1: plaintext gRPC
    (``--insecure``), or with ``tls`` its default, mutual TLS. ``python`` is
    the interpreter it runs under: another checkout's venv runs that
    checkout's controller (before/after pairs)."""

    MODULE = "swarm.controller.main"

    def __init__(
        self,
        children: Children,
        data_dir: Path,
        *,
        ping_interval: float,
        tls: bool = False,
        extra: Sequence[str] = (),
        cpus: frozenset[int] | None = None,
        python: str = PYTHON,
    ) -> None:
        self.cpus = cpus
        self.python = python
        self._children = children
        self.data_dir = data_dir
        self.ping_interval = ping_interval
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: Ports | None = None
        # The ready file of the latest start: ports, admin key file, CA pin.
        self.info: dict[str, Any] = {}
        self._extra: list[str] = []
        # Flags that come and go as the controller grows: plaintext gRPC for
        # simulated drones, and no fixed enrollment port to collide on.
        if flag_supported(self.MODULE, "--insecure", python):
            self._extra.append("--no-insecure" if tls else "--insecure")
        elif tls:
            raise BenchError("this controller has no --insecure flag, so no mutual TLS to measure")
        if flag_supported(self.MODULE, "--enroll-port", python):
            self._extra += ["--enroll-port", "0"]
        # The fleet bench mints a join token per simulated drone before any enrolls.
        if flag_supported(self.MODULE, "--join-tokens-max", python):
            self._extra += ["--join-tokens-max", "1000000"]
        self._extra += extra

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError("controller not running")
        return self.proc.pid

    @property
    def ready_file(self) -> Path:
        return self.data_dir / "ready.json"

    @property
    def enroll_target(self) -> str:
        if "enroll_port" not in self.info:
            raise BenchError("the controller has no enrollment port (started with --insecure?)")
        return f"{HOST}:{self.info['enroll_port']}"

    @property
    def ca_pin(self) -> str:
        return str(self.info["ca_pin"])

    @property
    def admin_key(self) -> str:
        return Path(self.info["admin_key_file"]).read_text().strip()

    def start(self, timeout: float = 60.0) -> Ports:
        """Start on the ports of the previous run if there was one, else on free ports."""
        ports = self.ports or Ports(0, 0, 0)
        self.ready_file.unlink(missing_ok=True)
        argv = [
            self.python,
            "-m",
            self.MODULE,
            "--data-dir",
            str(self.data_dir),
            "--bind",
            HOST,
            "--grpc-port",
            str(ports.grpc),
            "--public-port",
            str(ports.public),
            "--admin-port",
            str(ports.admin),
            "--ready-file",
            str(self.ready_file),
            "--log-file",
            "",
            "--log-level",
            "warning",
            "--ping-interval",
            f"{self.ping_interval:g}",
            *self._extra,
        ]
        self.proc = self._children.spawn(argv, log=self.data_dir / "controller.log", cpus=self.cpus)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"controller exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                info = json.loads(self.ready_file.read_text())
                self.ports = Ports(info["grpc_port"], info["public_port"], info["admin_port"])
                self.info = dict(info)
                return self.ports
            time.sleep(0.02)
        raise BenchError(f"controller not ready in {timeout:.0f}s: {self.log_tail()}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            self._children.stop(self.proc, grace=20.0)
            self.proc = None

    def log_tail(self, lines: int = 15) -> str:
        path = self.data_dir / "controller.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class BareServer:
    """``bench/bare.py``: a grpc.aio DroneGateway that only reads, the floor
    the controller is compared with. With ``tls_dir`` (``bare.SERVER_KEY``,
    ``SERVER_CHAIN``, ``CLIENT_CA``), mutual TLS like the controller's; with
    ``ping_interval``, it pings its streams (bare.py --ping-interval); on
    ``event_loop`` (bare.py --event-loop)."""

    def __init__(
        self,
        children: Children,
        work: Path,
        tls_dir: Path | None,
        cpus: frozenset[int] | None = None,
        ping_interval: float = 0.0,
        event_loop: str = "asyncio",
    ) -> None:
        self._children = children
        self._work = work
        self._tls_dir = tls_dir
        self._cpus = cpus
        self._ping_interval = ping_interval
        self._event_loop = event_loop
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError("bare server not running")
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> int:
        """Start it; its port."""
        # The controller's gRPC environment (its package sets GRPC_VERBOSITY and
        # turns gRPC's fork support off) is the floor's too: set here, in the
        # bench's own environment, which the server inherits.
        import swarm.controller  # noqa: F401

        ready = self._work / "bare-ready.json"
        ready.unlink(missing_ok=True)
        argv = [PYTHON, str(BENCH / "bare.py"), "--ready-file", str(ready), "--event-loop", self._event_loop]
        if self._tls_dir is not None:
            argv += ["--tls-dir", str(self._tls_dir)]
        if self._ping_interval:
            argv += ["--ping-interval", str(self._ping_interval)]
        self.proc = self._children.spawn(argv, log=self._work / "bare.log", cpus=self._cpus)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"bare server exited with {self.proc.returncode}; see {self._work / 'bare.log'}"
                )
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                return int(json.loads(ready.read_text())["port"])
            time.sleep(0.02)
        raise BenchError(f"bare server not listening in {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc is not None:
            self._children.stop(self.proc, grace=10.0)
            self.proc = None


# -- public API ------------------------------------------------------------


class Api:
    """One keep-alive HTTP connection to the public tier (or, with the
    admin key, to the admin tier)."""

    def __init__(self, port: int, timeout: float = 10.0, admin_key: str | None = None) -> None:
        self._port = port
        self._timeout = timeout
        self._headers = {"X-Admin-Key": admin_key} if admin_key is not None else {}
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return self.request("POST", path, body)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(HOST, self._port, timeout=self._timeout)
            try:
                self._conn.request(method, path, body=data, headers=headers)
                response = self._conn.getresponse()
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def node(self, key: str) -> dict[str, Any] | None:
        status, body = self.get(f"/api/v1/nodes/{key}")
        return body["node"] if status == 200 else None

    def counts(self) -> dict[str, int]:
        status, body = self.get("/api/v1/health")
        if status != 200:
            raise BenchError(f"/api/v1/health answered {status}")
        return dict(body["drones"])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def join_tokens(ctl: Controller, count: int, ttl: float = 3600.0) -> list[str]:
    """One-time join tokens from the admin API, as ``swarm-cli token create`` makes them."""
    if ctl.ports is None:
        raise BenchError("controller not running")
    admin = Api(ctl.ports.admin, admin_key=ctl.admin_key)
    tokens: list[str] = []
    try:
        for _ in range(count):
            status, body = admin.post("/admin/api/tokens", {"ttl": ttl})
            if status != 201:
                raise BenchError(f"POST /admin/api/tokens answered {status}: {body}")
            tokens.append(str(body["token"]))
    finally:
        admin.close()
    return tokens


def wait_api(port: int, timeout: float = 30.0) -> Api:
    api = Api(port)
    deadline = time.monotonic() + timeout
    while True:
        try:
            api.counts()
            return api
        except (OSError, http.client.HTTPException, BenchError):
            if time.monotonic() > deadline:
                raise BenchError(f"public API on port {port} not answering") from None
            time.sleep(0.05)


# -- simulator workers -----------------------------------------------------


class Worker:
    """One ``bench/drones.py`` process; JSON lines on stdin/stdout."""

    def __init__(
        self, children: Children, index: int, target: str, log: Path, cpus: frozenset[int] | None = None
    ) -> None:
        self.index = index
        self._children = children
        self.proc = children.spawn(
            [PYTHON, str(BENCH / "drones.py"), "--target", target, "--worker", str(index)],
            log=log,
            pipes=True,
            cpus=cpus,
        )
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"worker-{index}-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self._replies.put(json.loads(line))
        self._replies.put(None)

    def send(self, cmd: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise BenchError(f"simulator worker {self.index} is gone ({exc})") from None

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"simulator worker {self.index} did not answer in {timeout:.0f}s") from None
        if reply is None:
            raise BenchError(f"simulator worker {self.index} exited ({self.proc.poll()})")
        if "error" in reply:
            raise BenchError(f"simulator worker {self.index}: {reply['error']}")
        return reply

    def call(self, cmd: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        self.send(cmd, **args)
        return self.receive(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BenchError):
                self.call("stop", timeout=20.0)
        self._children.stop(self.proc, grace=10.0)
        self._reader.join(5)


class Pool:
    """The simulator workers; drone i lives in worker i % len(workers)."""

    def __init__(
        self, children: Children, count: int, target: str, log_dir: Path, cpus: frozenset[int] | None = None
    ) -> None:
        self.workers = [Worker(children, i, target, log_dir / f"sim-{i}.log", cpus) for i in range(count)]
        self.all("ping", timeout=60.0)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def of(self, drone: int) -> Worker:
        return self.workers[drone % len(self.workers)]

    def all(self, cmd: str, timeout: float = 30.0, **args: Any) -> list[dict[str, Any]]:
        for worker in self.workers:
            worker.send(cmd, **args)
        return [worker.receive(timeout) for worker in self.workers]

    def each(self, cmd: str, per_worker: list[dict[str, Any]], timeout: float = 60.0) -> list[dict[str, Any]]:
        for worker, args in zip(self.workers, per_worker, strict=True):
            worker.send(cmd, **args)
        return [worker.receive(timeout) for worker in self.workers]

    def stats(self, since: float = 0.0) -> SimStats:
        return SimStats.merge(self.all("stats", since=since))

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


@dataclass(frozen=True, slots=True)
class SimStats:
    """What the simulator saw, summed over workers."""

    drones: int
    connected: int
    heartbeats: int
    pongs: int
    failures: dict[str, int]
    failures_since: dict[str, int]
    ended: dict[str, int]
    ended_since: dict[str, int]
    last_welcome_at: float
    connect_times: list[float]

    @classmethod
    def merge(cls, replies: Iterable[dict[str, Any]]) -> SimStats:
        failures: Counter[str] = Counter()
        since: Counter[str] = Counter()
        ended: Counter[str] = Counter()
        ended_since: Counter[str] = Counter()
        drones = connected = heartbeats = pongs = 0
        last = 0.0
        connect: list[float] = []
        for r in replies:
            drones += r["drones"]
            connected += r["connected"]
            heartbeats += r["heartbeats"]
            pongs += r["pongs"]
            failures.update(r["failures"])
            since.update(r["failures_since"])
            ended.update(r["ended"])
            ended_since.update(r["ended_since"])
            last = max(last, r["last_welcome_at"])
            connect += r["connect_times"]
        return cls(
            drones=drones,
            connected=connected,
            heartbeats=heartbeats,
            pongs=pongs,
            failures=dict(failures),
            failures_since=dict(since),
            ended=dict(ended),
            ended_since=dict(ended_since),
            last_welcome_at=last,
            connect_times=connect,
        )


# -- measuring -------------------------------------------------------------


def thread_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid`` so far (empty when it is gone)."""
    with contextlib.suppress(psutil.Error):
        return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}
    return {}


# A grpc thread counts as busy over a window above this, % of one core.
GRPC_THREAD_BUSY = 0.5


def grpc_threads_busy(pid: int, before: dict[int, float], after: dict[int, float], wall: float) -> int:
    """How many of grpc's event-engine threads in ``pid`` (named
    ``event_engine``) were busy between the two snapshots of
    ``thread_seconds``. grpc's pool grows under load (a connect ramp's TLS
    handshakes) and never shrinks, and the same reads cost more CPU on more
    threads: it is what moves the other threads' CPU between two servers
    (bench/README.md, session 15)."""
    busy = 0
    for tid, seconds in after.items():
        if wall <= 0 or (seconds - before.get(tid, 0.0)) / wall * 100 <= GRPC_THREAD_BUSY:
            continue
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip() == "event_engine":
                busy += 1
    return busy


class CpuMeter:
    """CPU time of some processes over a wall-clock window; with one process,
    also of its main thread (an asyncio server's event loop) apart, and how
    many of grpc's threads were busy."""

    def __init__(self, pids: Iterable[int]) -> None:
        self._procs = [psutil.Process(p) for p in pids]
        self._start = time.monotonic()
        self._cpu = self._total()
        self._threads = self._thread_seconds()
        self._machine = psutil.cpu_times()

    def _thread_seconds(self) -> dict[int, float]:
        """CPU seconds of each thread of the first process."""
        return thread_seconds(self._procs[0].pid) if self._procs else {}

    def main_thread_percent(self) -> float:
        """Percent of one core the first process's main thread used since the
        meter started: in the controller and bench/bare.py, the event loop,
        where all of their Python runs but a database thread's and grpc's
        poller's. Moves much less with the machine's other load than the whole
        process (grpc's core threads, the same in both, make up the rest)."""
        wall = time.monotonic() - self._start
        if not self._procs or wall <= 0:
            return 0.0
        pid = self._procs[0].pid
        return 100.0 * (self._thread_seconds().get(pid, 0.0) - self._threads.get(pid, 0.0)) / wall

    def grpc_threads(self) -> int:
        """How many of grpc's event-engine threads of the first process were
        busy since the meter started (``grpc_threads_busy``)."""
        if not self._procs:
            return 0
        wall = time.monotonic() - self._start
        return grpc_threads_busy(self._procs[0].pid, self._threads, self._thread_seconds(), wall)

    def _total(self) -> float:
        total = 0.0
        for proc in self._procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def percent(self) -> float:
        """Percent of one core since the meter started."""
        wall = time.monotonic() - self._start
        return 100.0 * (self._total() - self._cpu) / wall if wall > 0 else 0.0

    def percent_over(self, seconds: float) -> float:
        """Wait, then the percent of one core over the wait."""
        time.sleep(seconds)
        return self.percent()

    def seconds(self) -> float:
        return self._total() - self._cpu

    def machine_busy(self) -> float:
        """Percent of the whole machine (all cores) busy since the meter started."""
        now = psutil.cpu_times()
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (
            self._machine.idle + getattr(self._machine, "iowait", 0.0)
        )
        total = sum(now) - sum(self._machine)
        return 100.0 * (1 - idle / total) if total > 0 else 0.0


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def tcp_connections(pid: int, port: int) -> int:
    """Established connections to the given local port held by the process."""
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)


def say(message: str) -> None:
    """A progress line on stderr, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def comma_subset(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated subset of ``choices``, kept in their order."""

    def parse(text: str) -> tuple[str, ...]:
        chosen = {k.strip() for k in text.split(",") if k.strip()}
        unknown = chosen - set(choices)
        if not chosen or unknown:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {','.join(choices)}, got {text!r}"
            )
        return tuple(k for k in choices if k in chosen)

    return parse


def options_json(opts: Any) -> dict[str, Any]:
    """A slotted options object's fields, paths as strings: the --json record of a run's options."""
    values = {name: getattr(opts, name) for name in opts.__slots__}
    return {name: str(v) if isinstance(v, Path) else v for name, v in values.items()}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# -- profiling -------------------------------------------------------------


def py_spy() -> str | None:
    candidate = Path(PYTHON).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    found = subprocess.run(["which", "py-spy"], capture_output=True, text=True, check=False).stdout.strip()
    return found or None


class Profile:
    """py-spy sampling one process into a folded-stacks file, in the background
    (without pausing the process, unless native frames are wanted)."""

    def __init__(self, children: Children, pid: int, seconds: float, out: Path, *, native: bool) -> None:
        exe = py_spy()
        if exe is None:
            raise BenchError("py-spy not found: pip install py-spy into the venv")
        argv = [exe, "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate", "200"]
        argv += ["--format", "raw", "--output", str(out)]
        # Native frames need the process paused while its stack is read.
        argv.append("--native" if native else "--nonblocking")
        self._children = children
        self._seconds = seconds
        self.out = out
        self._meter = CpuMeter([pid])
        self._proc = children.spawn(argv, log=out.with_suffix(".log"))

    def finish(self) -> dict[str, Any]:
        """Wait for py-spy; the summary, with the process's CPU over the sampling."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(self._seconds + 60)
        cpu = self._meter.percent()
        self._children.stop(self._proc)
        if not self.out.exists():
            raise BenchError(f"py-spy wrote nothing; see {self.out.with_suffix('.log')}")
        return {"file": str(self.out), "cpu_pct_while_profiling": round(cpu, 1), **summarise_folded(self.out)}


# Frames every sample of a thread goes through: left out of the inclusive list.
PLUMBING = (
    "(threading.py)",
    "(<frozen runpy>)",
    "(asyncio/runners.py)",
    "(asyncio/base_events.py)",
    "(asyncio/events.py)",
    "(futures/thread.py)",
    "(controller/main.py)",
)
ROLES = (
    ("event loop", "BaseEventLoop.run_forever"),
    ("database thread", "concurrent/futures/thread.py"),
)


def summarise_folded(path: Path, top: int = 20) -> dict[str, list[tuple[str, float]]]:
    """Shares of samples from a folded-stacks file: per thread role (the event
    loop, the database executor, other threads such as grpc's poller), and per
    function, self and inclusive."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        roles[next((role for role, mark in ROLES if mark in stack), "other threads")] += count
        frames = [f for f in (_frame_name(f) for f in stack.split(";")) if f]
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            if not frame.endswith(PLUMBING):
                inclusive[frame] += count
    if total == 0:
        return {"roles": [], "self": [], "inclusive": []}
    return {
        "roles": [(name, 100.0 * n / total) for name, n in roles.most_common()],
        "self": [(name, 100.0 * n / total) for name, n in own.most_common(top)],
        "inclusive": [(name, 100.0 * n / total) for name, n in inclusive.most_common(top)],
    }


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``; thread/process labels are dropped."""
    frame = frame.strip()
    if frame.startswith(("process ", "thread ")):
        return ""
    name, _, where = frame.partition(" (")
    if not where:
        return name
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({_short_path(file)})"


def _short_path(file: str) -> str:
    parts = file.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    elif len(parts) > 2:
        parts = parts[-2:]
    return "/".join(parts)


def own_pid_group() -> None:
    """SIGTERM to the bench behaves like Ctrl-C: unwind, clean up, exit."""

    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)


def env_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "machine_mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }
