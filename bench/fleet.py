"""Fleet benchmark: a real controller, N simulated drones on real gRPC
streams, and the figures issues 2 and 3 ask for. It prints figures; it is
not a test and asserts nothing about timing.

Run from the repository root::

    .venv/bin/python bench/fleet.py                      # everything, a few minutes
    .venv/bin/python bench/fleet.py --drones 100 --storm none --no-agent
    .venv/bin/python bench/fleet.py --modes plain,mtls   # what mutual TLS costs

See ``--help`` and bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from harness import (
    HOST,
    PYTHON,
    Api,
    BareServer,
    BenchError,
    Children,
    Controller,
    CpuMeter,
    Placement,
    Pool,
    Profile,
    env_info,
    flag_supported,
    join_tokens,
    own_pid_group,
    percentile,
    rss,
    say,
    tcp_connections,
    wait_api,
)

# Targets from issue 2.
TARGET_CPU = 50.0  # % of one core at 2,000 drones
TARGET_RSS_PER_DRONE_KB = 50.0
TARGET_VISIBLE_P99_MS = 100.0
TARGET_CUT_MS = 1000.0
TARGET_SILENT_MS = 3000.0
TARGET_AGENT_CPU = 0.5
TARGET_AGENT_RSS_MB = 40.0
# Issue 15: the controller within this factor of a bare grpc.aio server, CPU and memory.
TARGET_BARE_RATIO = 1.1

NOT_LISTENING = "controller not listening"
STORM_MODES = ("backoff", "at-once")
# Transports: the controller with --insecure, or with its default mutual TLS.
PLAIN, MTLS = "plain", "mtls"
MODES = (PLAIN, MTLS)
# Defaults of --drones, --storm, --storm-drones: alone, and when mtls is measured.
DEFAULTS = {"drones": "100,1000,2000", "storm": ",".join(STORM_MODES), "storm_drones": "4000"}
MTLS_DEFAULTS = {"drones": "1000", "storm": "at-once", "storm_drones": "1000"}


@dataclass(frozen=True, slots=True)
class Options:
    modes: list[str]
    enroll_concurrency: int
    drones: list[int]
    duration: float
    warmup: float
    workers: int
    connect_rate: float
    ping_interval: float
    probes: int
    cuts: int
    silences: int
    storm: list[str]
    storm_drones: int
    storm_timeout: float
    agent: bool
    bare: bool
    bare_pings: bool
    bare_uvloop: bool
    pongs: bool
    agent_duration: float
    profile_dir: Path | None
    profile_seconds: float
    profile_native: bool
    json_path: Path | None
    controller_args: list[str]
    controller_python: str
    placement: Placement
    keep: bool
    seed: int


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/fleet.py",
        description="Fleet benchmark: starts a real controller on 127.0.0.1, simulates N drones "
        "(each its own gRPC stream and HTTP/2 connection, 1 Hz heartbeats, pongs) in a few "
        "worker processes, and prints controller CPU and memory, heartbeat-to-API latency, "
        "ping round trips, failure-detection times, a reconnect storm after kill -9 of the "
        "controller, and the real agent's idle cost, next to the targets of issue 2; with "
        "--modes plain,mtls, what mutual TLS costs against plaintext (issue 3). "
        "Prints figures; asserts nothing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--drones",
        default=argparse.SUPPRESS,
        help="comma-separated fleet sizes; each gets a fresh controller and data dir "
        f"(default: {DEFAULTS['drones']}; {MTLS_DEFAULTS['drones']} when --modes has mtls)",
    )
    parser.add_argument(
        "--modes",
        default=PLAIN,
        help="transports to measure, comma-separated: 'plain' (the controller runs with "
        "--insecure, plaintext gRPC) and/or 'mtls' (its default, mutual TLS: every simulated "
        "drone is enrolled once per run, with a join token from the admin API and the Enroll "
        "RPC, then connects with its own key and certificate). Every fleet size, storm and the "
        "agent run once per mode; with both, a table puts the cost of mTLS next to plaintext",
    )
    parser.add_argument(
        "--enroll-concurrency",
        type=int,
        default=32,
        help="mtls: enrollments in flight at once, over all simulator processes (set-up, not measured)",
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds of the CPU window, once all drones are online"
    )
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds to wait after the last drone is online"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=4,
        help="simulator processes (drones are spread over them; each runs grpc.aio)",
    )
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=200.0,
        help="drones per second at start-up: start times are spread uniformly over N/rate seconds",
    )
    parser.add_argument(
        "--ping-interval", type=float, default=5.0, help="controller --ping-interval, seconds"
    )
    parser.add_argument(
        "--probes",
        type=int,
        default=40,
        help="heartbeats timed from the drone's write until GET /api/v1/nodes/ID shows them",
    )
    parser.add_argument(
        "--cuts",
        type=int,
        default=20,
        help="drones per N whose channel is closed (a crash), one after the other; "
        "time until the API says offline",
    )
    parser.add_argument(
        "--silences",
        type=int,
        default=5,
        help="drones per N that stop heartbeats and pongs with the stream left open (a frozen "
        "drone), at random points of their cycle; time until the API says suspect",
    )
    parser.add_argument(
        "--storm",
        default=argparse.SUPPRESS,
        help="reconnect storms after kill -9 + restart of the controller, comma-separated: "
        "'backoff' (drones reconnect with the agent's full-jitter backoff, 0.5 s initial, "
        "30 s cap) and/or 'at-once' (drones wait until the new controller is up, then all "
        "connect at the same moment: the worst case); 'none' to skip "
        f"(default: {DEFAULTS['storm']}; {MTLS_DEFAULTS['storm']} when --modes has mtls)",
    )
    parser.add_argument(
        "--storm-drones",
        type=int,
        default=argparse.SUPPRESS,
        help="fleet size for the storms "
        f"(default: {DEFAULTS['storm_drones']}; {MTLS_DEFAULTS['storm_drones']} when --modes has mtls)",
    )
    parser.add_argument(
        "--storm-timeout", type=float, default=120.0, help="give up waiting for the fleet after this"
    )
    parser.add_argument(
        "--no-agent", action="store_true", help="skip the real agent's idle CPU and RSS measurement"
    )
    parser.add_argument(
        "--bare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after each fleet size, the same drones (and transport) on a bare grpc.aio server "
        "(bench/bare.py: the same proto and server options, a Welcome per Hello, then it only "
        "reads): its CPU and RSS per drone over the same window, and the controller's as a "
        "multiple of them: the floor that any gateway in Python pays",
    )
    parser.add_argument(
        "--bare-pings",
        action="store_true",
        help="also measure the bare server pinging every stream at --ping-interval and reading "
        "the pongs, as the controller does (bare.py --ping-interval), and print it beside the "
        "floor without pings: what proof of life costs any gateway",
    )
    parser.add_argument(
        "--bare-uvloop",
        action="store_true",
        help="also measure the bare server on uvloop (bare.py --event-loop uvloop), the loop the "
        "controller runs on by default, and print it beside the floor on asyncio's: the "
        "controller's own cost on the same loop",
    )
    parser.add_argument(
        "--pongs",
        action="store_true",
        help="simulated drones list no features and answer every ping with a Pong of its own, as "
        "agents before pong-in-heartbeat did (default: like today's agent, a routine ping is "
        "answered in the next heartbeat): what the separate pongs cost the controller",
    )
    parser.add_argument(
        "--agent-duration", type=float, default=20.0, help="seconds over which the agent's CPU is measured"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the controller with py-spy after the measurements of the largest N, and "
        "from the restart in the first storm (folded stacks into DIR); print where its time goes",
    )
    parser.add_argument("--profile-seconds", type=float, default=15.0, help="py-spy sampling time")
    parser.add_argument(
        "--profile-native", action="store_true", help="include native (C/Cython) frames in the profile"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure as JSON here")
    parser.add_argument(
        "--controller-python",
        default=PYTHON,
        metavar="PYTHON",
        help="the interpreter every controller runs under: another checkout's venv runs that "
        "checkout's controller, for before/after pairs (default: this checkout's)",
    )
    parser.add_argument(
        "--controller-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every controller started (repeat it; use --controller-arg=--flag "
        "for values that start with a dash), e.g. --controller-arg=--persist-interval=3600 "
        "to see what batched persistence costs",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run the controller on the first CPU only and the simulator and the bench on the "
        "others, so that the simulator cannot take the controller's time (the controller then "
        "has exactly one core, its gRPC threads included)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary data dirs and logs (path is printed)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for drone ids and sampling")
    ns = parser.parse_args(argv)
    modes = list(dict.fromkeys(m.strip() for m in ns.modes.split(",") if m.strip()))
    for mode in modes:
        if mode not in MODES:
            parser.error(f"--modes: unknown mode {mode!r} (use {', '.join(MODES)})")
    if not modes:
        parser.error("--modes: name at least one of " + ", ".join(MODES))
    defaults = MTLS_DEFAULTS if MTLS in modes else DEFAULTS
    drones_text = str(getattr(ns, "drones", defaults["drones"]))
    storm_text = str(getattr(ns, "storm", defaults["storm"]))
    storm_drones = int(getattr(ns, "storm_drones", defaults["storm_drones"]))
    try:
        drones = [int(x) for x in drones_text.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--drones must be comma-separated whole numbers, got {drones_text!r}")
    storm = [m.strip() for m in storm_text.split(",") if m.strip() and m.strip() != "none"]
    for mode in storm:
        if mode not in STORM_MODES:
            parser.error(f"--storm: unknown mode {mode!r} (use {', '.join(STORM_MODES)} or none)")
    if any(n < 1 for n in drones) or ns.workers < 1 or ns.duration <= 0 or ns.connect_rate <= 0:
        parser.error("--drones, --workers, --duration and --connect-rate must be positive")
    if storm_drones < 1 or ns.enroll_concurrency < 1:
        parser.error("--storm-drones and --enroll-concurrency must be positive")
    return Options(
        modes=modes,
        enroll_concurrency=ns.enroll_concurrency,
        drones=drones,
        duration=ns.duration,
        warmup=ns.warmup,
        workers=ns.workers,
        connect_rate=ns.connect_rate,
        ping_interval=ns.ping_interval,
        probes=ns.probes,
        cuts=ns.cuts,
        silences=ns.silences,
        storm=storm,
        storm_drones=storm_drones,
        storm_timeout=ns.storm_timeout,
        agent=not ns.no_agent,
        bare=ns.bare,
        bare_pings=ns.bare_pings,
        bare_uvloop=ns.bare_uvloop,
        pongs=ns.pongs,
        agent_duration=ns.agent_duration,
        profile_dir=ns.profile,
        profile_seconds=ns.profile_seconds,
        profile_native=ns.profile_native,
        json_path=ns.json,
        controller_args=ns.controller_arg,
        controller_python=ns.controller_python,
        placement=Placement.split() if ns.pin else Placement(),
        keep=ns.keep,
        seed=ns.seed,
    )


# -- fleet set-up ----------------------------------------------------------


def new_controller(opts: Options, children: Children, data: Path, mode: str) -> Controller:
    return Controller(
        children,
        data,
        ping_interval=opts.ping_interval,
        tls=mode == MTLS,
        extra=opts.controller_args,
        cpus=opts.placement.controller,
        python=opts.controller_python,
    )


@dataclass(frozen=True, slots=True)
class DroneSpec:
    index: int
    id: str
    name: str


def make_specs(n: int, seed: int) -> list[DroneSpec]:
    """The first n drones of the run: the same ids in every phase (a prefix of
    the largest fleet), so that one enrollment serves every mtls phase."""
    rng = random.Random(seed)
    return [DroneSpec(i, uuid.UUID(int=rng.getrandbits(128)).hex, f"sim-{i:05d}") for i in range(n)]


def add_drones(
    pool: Pool, specs: list[DroneSpec], ramp: float, enrolled: Enrolled | None, pongs: bool = False
) -> None:
    """Start the drones; with ``enrolled`` each connects with its own key and certificate;
    with ``pongs`` they answer every ping with a Pong (drones.py)."""
    count = len(pool.workers)
    per_worker: list[dict[str, Any]] = [
        {
            "drones": [[s.index, s.id, s.name] for s in specs if s.index % count == w],
            "ramp": ramp,
            "pongs": pongs,
        }
        for w in range(count)
    ]
    if enrolled is not None:
        for args in per_worker:
            args["credentials"] = str(enrolled.credentials)
    pool.each("add", per_worker, timeout=60.0 + len(specs) / 200)


# -- enrollment (mtls) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enrolled:
    """A controller data dir (CA, issued certificates, spent tokens) after
    ``drones`` simulated drones enrolled, and their keys and certificates
    (``credentials/<drone id>/``). Every mtls phase starts from a copy of
    the data dir, so the drones enroll once per run."""

    data_dir: Path
    credentials: Path
    drones: int

    def phase_dir(self, target: Path) -> Path:
        shutil.copytree(self.data_dir, target)
        for leftover in ("controller.log", "ready.json"):
            (target / leftover).unlink(missing_ok=True)
        return target


def enroll_fleet(opts: Options, children: Children, tmp: Path, n: int) -> tuple[Enrolled, dict[str, Any]]:
    """Enroll n simulated drones the way a real drone does: a one-time join token
    from the admin API each, then the Enroll RPC (CA pin, own key, CSR), bounded
    concurrency. Set-up, not measured; timed only so the report can say so."""
    say(f"mtls: enrolling {n} simulated drones ({opts.enroll_concurrency} at a time)")
    data = tmp / "enrolled"
    creds = tmp / "credentials"
    logs = tmp / "enroll-logs"
    for path in (data, creds, logs):
        path.mkdir()
    ctl = new_controller(opts, children, data, MTLS)
    ports = ctl.start()
    started = time.monotonic()
    tokens = join_tokens(ctl, n)
    tokens_s = time.monotonic() - started
    specs = make_specs(n, opts.seed)
    pool = Pool(children, min(opts.workers, n), f"{HOST}:{ports.grpc}", logs, opts.placement.simulator)
    try:
        count = len(pool.workers)
        per_worker: list[dict[str, Any]] = [
            {
                "drones": [[s.index, s.id, s.name, tokens[s.index]] for s in specs if s.index % count == w],
                "target": ctl.enroll_target,
                "pin": ctl.ca_pin,
                "dir": str(creds),
                "concurrency": max(1, opts.enroll_concurrency // count),
            }
            for w in range(count)
        ]
        started = time.monotonic()
        replies = pool.each("enroll", per_worker, timeout=120.0 + n / 10)
        enroll_s = time.monotonic() - started
    finally:
        pool.stop()
        ctl.stop()  # SIGTERM: a clean database to copy
    enrolled = sum(int(r["enrolled"]) for r in replies)
    failed: dict[str, int] = {}
    for r in replies:
        for why, k in r["failed"].items():
            failed[why] = failed.get(why, 0) + int(k)
    if enrolled < n:
        raise BenchError(f"only {enrolled} of {n} drones enrolled: {failed}")
    say(f"mtls: {n} drones enrolled in {enroll_s:.1f} s ({n} join tokens in {tokens_s:.1f} s)")
    figures = {
        "drones": n,
        "tokens_s": round(tokens_s, 2),
        "enroll_s": round(enroll_s, 2),
        "concurrency": opts.enroll_concurrency,
    }
    return Enrolled(data, creds, n), figures


def phase_dir(tmp: Path, name: str, mode: str, enrolled: Enrolled | None) -> Path:
    """A fresh data dir for a phase: empty for plaintext; for mtls a copy of the
    enrolled controller's (same CA, the drones' certificates on record)."""
    if mode != MTLS:
        data = tmp / name
        data.mkdir()
        return data
    if enrolled is None:
        raise BenchError("no enrolled drones (enrollment failed or was not run)")
    return enrolled.phase_dir(tmp / f"{name}-{MTLS}")


def wait_online(pool: Pool, api: Api, n: int, timeout: float, interval: float = 0.5) -> float:
    """Until the simulator has n streams and the API shows n drones online; returns when."""
    deadline = time.monotonic() + timeout
    while True:
        stats = pool.stats()
        online = api.counts().get("online", 0)
        if stats.connected >= n and online >= n:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise BenchError(
                f"only {stats.connected} streams / {online} online of {n} after {timeout:.0f}s; "
                f"failures: {stats.failures}"
            )
        time.sleep(interval)


def poll_until(
    api: Api, drone_id: str, check: Callable[[dict[str, Any]], bool], timeout: float, pause: float = 0.0
) -> float | None:
    """Poll one node (by id: an O(1) lookup) until check(node); the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node = api.node(drone_id)
        seen = time.monotonic()
        if node is not None and check(node):
            return seen
        if pause:
            time.sleep(pause)
    return None


# -- one fleet size ----------------------------------------------------------


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
        "values": values,
    }


def shows_load(node: dict[str, Any], *, load1: float) -> bool:
    return abs(float(node["load1"]) - load1) < 1e-6


def probe_heartbeats(pool: Pool, api: Api, specs: list[DroneSpec], rng: random.Random) -> list[float]:
    """Heartbeat-to-visible latency in ms: a distinctive load1, polled on its node."""
    latencies: list[float] = []
    for k, spec in enumerate(specs):
        load1 = 100.25 + k  # far above any simulated load, and unique
        reply = pool.of(spec.index).call("mark", drone=spec.index, load1=load1)
        seen = poll_until(api, spec.id, functools.partial(shows_load, load1=load1), 5.0)
        if seen is None:
            say(f"heartbeat of {spec.name} not visible in 5 s")
            continue
        latencies.append(ms(seen - reply["sent"]))
        time.sleep(rng.uniform(0.05, 0.15))
    return latencies


def detect_cut(pool: Pool, api: Api, specs: list[DroneSpec]) -> list[float]:
    """Close a drone's channel (a crash); ms until the API says offline."""
    took: list[float] = []
    for spec in specs:
        at = pool.of(spec.index).call("cut", drone=spec.index)["at"]
        seen = poll_until(api, spec.id, lambda node: node["status"] == "offline", 10.0, pause=0.002)
        if seen is None:
            say(f"{spec.name}: not offline 10 s after its stream was cut")
            continue
        took.append(ms(seen - at))
    return took


def detect_silent(
    pool: Pool, api: Api, specs: list[DroneSpec], rng: random.Random
) -> tuple[list[float], list[float]]:
    """Stop a drone's heartbeats and pongs (stream open, as SIGSTOP); ms until
    suspect, counted from the freeze and from the last heartbeat sent.

    Drones freeze at random points of their heartbeat cycle; all are polled
    round-robin, each about every 20 ms."""
    pending: dict[str, tuple[DroneSpec, float, float]] = {}
    for spec in specs:
        time.sleep(rng.uniform(0, 0.3))
        reply = pool.of(spec.index).call("silence", drone=spec.index)
        pending[spec.id] = (spec, reply["at"], reply["last_beat"])
    from_freeze: list[float] = []
    from_beat: list[float] = []
    deadline = time.monotonic() + 20.0
    while pending and time.monotonic() < deadline:
        for drone_id, (_spec, at, beat) in list(pending.items()):
            node = api.node(drone_id)
            if node is not None and node["status"] in ("suspect", "offline"):
                seen = time.monotonic()
                from_freeze.append(ms(seen - at))
                from_beat.append(ms(seen - beat))
                del pending[drone_id]
        time.sleep(0.02 / max(1, len(pending)))
    for spec, _at, _beat in pending.values():
        say(f"{spec.name}: not suspect 20 s after it went silent")
    return from_freeze, from_beat


def other_busy(machine_busy: float, ours: float) -> float:
    """How busy the machine was beyond the controller and the simulator (``ours``,
    % of one core), in % of all cores: other work, the bench, py-spy."""
    return round(max(0.0, machine_busy - ours / (psutil.cpu_count() or 1)), 1)


def tagged(opts: Options, what: str, mode: str) -> str:
    """A phase's name in the log: with its transport unless the run is plaintext only."""
    return what if opts.modes == [PLAIN] else f"{what} [{mode}]"


def enrolled_for(mode: str, enrolled: Enrolled | None, n: int) -> Enrolled | None:
    """The enrolled fleet a phase of n drones uses: None for plaintext."""
    if mode != MTLS:
        return None
    if enrolled is None or enrolled.drones < n:
        raise BenchError(f"no {n} enrolled drones (enrollment failed or was not run)")
    return enrolled


def bench_fleet(
    opts: Options,
    children: Children,
    tmp: Path,
    n: int,
    mode: str,
    enrolled: Enrolled | None,
    *,
    profile_it: bool,
) -> dict[str, Any]:
    name = tagged(opts, f"fleet of {n}", mode)
    say(f"{name}: starting a controller")
    creds = enrolled_for(mode, enrolled, n)
    data = phase_dir(tmp, f"fleet-{n}", mode, creds)
    rng = random.Random(opts.seed + n)
    ctl = new_controller(opts, children, data, mode)
    ports = ctl.start()
    api = wait_api(ports.public)
    time.sleep(2.0)
    rss_idle = rss(ctl.pid)
    pool = Pool(children, min(opts.workers, n), f"{HOST}:{ports.grpc}", data, opts.placement.simulator)
    result: dict[str, Any] = {
        "drones": n,
        "transport": mode,
        "controller_rss_idle_mb": round(rss_idle / 2**20, 1),
    }
    try:
        specs = make_specs(n, opts.seed)
        ramp = n / opts.connect_rate
        say(f"{name}: connecting over {ramp:.1f} s")
        started = time.monotonic()
        add_drones(pool, specs, ramp, creds, opts.pongs)
        wait_online(pool, api, n, ramp + 60.0)
        result["connect_s"] = round(time.monotonic() - started, 1)
        say(f"{name}: all online; warm-up {opts.warmup:g} s, then a {opts.duration:g} s window")
        time.sleep(opts.warmup)

        # The window: nothing but sleeping on our side.
        ctl_cpu = CpuMeter([ctl.pid])
        sim_cpu = CpuMeter(pool.pids)
        before = pool.stats()
        time.sleep(opts.duration)
        after = pool.stats()
        cpu = ctl_cpu.percent()
        loop_cpu = ctl_cpu.main_thread_percent()
        grpc_threads = ctl_cpu.grpc_threads()
        sim = sim_cpu.percent()
        busy = ctl_cpu.machine_busy()
        rss_full = rss(ctl.pid)
        result |= {
            # Controllers before --event-loop ran on asyncio and did not say so.
            "controller_event_loop": ctl.info.get("event_loop", "asyncio"),
            "controller_cpu_pct": round(cpu, 1),
            "controller_loop_cpu_pct": round(loop_cpu, 1),
            "controller_grpc_threads": grpc_threads,
            "controller_cpu_pct_per_drone": round(cpu / n, 5),
            "simulator_cpu_pct": round(sim, 1),
            "machine_busy_pct": round(busy, 1),
            "other_busy_pct": other_busy(busy, cpu + sim),
            "heartbeats_per_s": round((after.heartbeats - before.heartbeats) / opts.duration, 1),
            "pongs_per_s": round((after.pongs - before.pongs) / opts.duration, 1),
            "controller_rss_mb": round(rss_full / 2**20, 1),
            "rss_per_drone_kb": round((rss_full - rss_idle) / n / 1024, 1),
            "controller_tcp_connections": tcp_connections(ctl.pid, ports.grpc),
            "online_in_api": api.counts().get("online", 0),
            "simulator_failures": after.failures,
        }

        # One read of the whole fleet, outside the window: the controller's
        # latest ping round trip for every drone.
        _status, body = api.get("/api/v1/nodes")
        pings = [
            float(node["ping_latency_ms"])
            for node in body["nodes"]
            if node["status"] == "online" and node["ping_latency_ms"] is not None
        ]
        result["ping_rtt_ms"] = summary(pings)

        sample = rng.sample(specs, min(n, opts.probes + opts.cuts + opts.silences))
        probes = sample[: opts.probes]
        cut = sample[opts.probes : opts.probes + opts.cuts]
        silent = sample[opts.probes + opts.cuts :]
        say(f"{name}: timing {len(probes)} heartbeats until visible in the API")
        result["heartbeat_visible_ms"] = summary(probe_heartbeats(pool, api, probes, rng))
        say(f"{name}: cutting {len(cut)} streams, silencing {len(silent)} drones")
        result["cut_to_offline_ms"] = summary(detect_cut(pool, api, cut))
        from_freeze, from_beat = detect_silent(pool, api, silent, rng)
        result["silent_to_suspect_ms"] = summary(from_freeze)
        result["last_heartbeat_to_suspect_ms"] = summary(from_beat)

        if profile_it and opts.profile_dir is not None:
            try:
                label = f"fleet-{n}" + ("" if mode == PLAIN else f"-{mode}")
                result["profile"] = profile_controller(opts, children, ctl.pid, label).finish()
            except BenchError as exc:
                say(f"{name}: no profile: {exc}")
    finally:
        api.close()
        pool.stop()
        ctl.stop()
    if opts.bare:
        try:
            result["bare"] = bench_bare(opts, children, tmp, n, mode, data, creds)
        except BenchError as exc:
            say(f"{name}: no bare floor: {exc}")
            result["bare"] = {"error": str(exc)}
    if opts.bare_pings:
        try:
            result["bare_pinging"] = bench_bare(opts, children, tmp, n, mode, data, creds, opts.ping_interval)
        except BenchError as exc:
            say(f"{name}: no pinging bare floor: {exc}")
            result["bare_pinging"] = {"error": str(exc)}
    if opts.bare_uvloop:
        try:
            result["bare_uvloop"] = bench_bare(opts, children, tmp, n, mode, data, creds, event_loop="uvloop")
        except BenchError as exc:
            say(f"{name}: no bare floor on uvloop: {exc}")
            result["bare_uvloop"] = {"error": str(exc)}
    return result


def bare_tls(data: Path, work: Path) -> Path:
    """Server key, chain and client CA for bench/bare.py, from the phase's
    controller CA: the enrolled drones' certificates and pins fit it."""
    import bare

    from swarm.controller.ca import CertificateAuthority

    ca = CertificateAuthority.load_or_create(data / "pki")
    key, chain = ca.issue_server([HOST, "localhost"])
    tls = work / "tls"
    tls.mkdir()
    (tls / bare.SERVER_KEY).write_bytes(key)
    (tls / bare.SERVER_CHAIN).write_bytes(chain)
    (tls / bare.CLIENT_CA).write_bytes(ca.pem)
    return tls


def bench_bare(
    opts: Options,
    children: Children,
    tmp: Path,
    n: int,
    mode: str,
    data: Path,
    creds: Enrolled | None,
    ping_interval: float = 0.0,
    event_loop: str = "asyncio",
) -> dict[str, Any]:
    """The floor: the same n drones on a bare grpc.aio server, measured like
    the controller; with ``ping_interval``, the server pings them; on
    ``event_loop``."""
    pinging = " pinging" if ping_interval else ""
    on = "" if event_loop == "asyncio" else f" on {event_loop}"
    name = tagged(opts, f"bare server{pinging}{on}, {n} drones", mode)
    work = tmp / f"bare{pinging.replace(' ', '-')}{on.replace(' ', '-')}-{n}-{mode}"
    work.mkdir()
    server = BareServer(
        children,
        work,
        bare_tls(data, work) if mode == MTLS else None,
        opts.placement.controller,
        ping_interval,
        event_loop,
    )
    pool: Pool | None = None
    try:
        port = server.start()
        time.sleep(2.0)
        rss_idle = rss(server.pid)
        pool = Pool(children, min(opts.workers, n), f"{HOST}:{port}", work, opts.placement.simulator)
        ramp = n / opts.connect_rate
        say(f"{name}: connecting over {ramp:.1f} s")
        add_drones(pool, make_specs(n, opts.seed), ramp, creds, opts.pongs)
        deadline = time.monotonic() + ramp + 60.0
        while (stats := pool.stats()).connected < n:
            if time.monotonic() > deadline:
                raise BenchError(f"only {stats.connected} of {n} streams; failures: {stats.failures}")
            time.sleep(0.5)
        say(f"{name}: all connected; warm-up {opts.warmup:g} s, then a {opts.duration:g} s window")
        time.sleep(opts.warmup)
        meter = CpuMeter([server.pid])
        time.sleep(opts.duration)
        cpu = meter.percent()
        loop_cpu = meter.main_thread_percent()
        grpc_threads = meter.grpc_threads()
        rss_full = rss(server.pid)
        return {
            "cpu_pct": round(cpu, 1),
            "loop_cpu_pct": round(loop_cpu, 1),
            "grpc_threads": grpc_threads,
            "rss_idle_mb": round(rss_idle / 2**20, 1),
            "rss_mb": round(rss_full / 2**20, 1),
            "rss_per_drone_kb": round((rss_full - rss_idle) / n / 1024, 1),
            "machine_busy_pct": round(meter.machine_busy(), 1),
        }
    finally:
        if pool is not None:
            pool.stop()
        server.stop()


def ratio(result: dict[str, Any], ours: str, floor: str, bare: str = "bare") -> str | None:
    """The controller's figure as a multiple of the bare server's ("1.26x",
    marked "!" above the target); None without both figures."""
    a, b = value(result, ours), value(result, bare, floor)
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b <= 0:
        return None
    return f"{a / b:.2f}x" + (" !" if a / b > TARGET_BARE_RATIO else "")


def points(a: Any, b: Any) -> float | None:
    """a - b, in points of one core; None unless both are figures."""
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return None
    return round(a - b, 1)


def profile_controller(opts: Options, children: Children, pid: int, name: str) -> Profile:
    """Start sampling the controller with py-spy; ``finish()`` it for the summary."""
    assert opts.profile_dir is not None
    opts.profile_dir.mkdir(parents=True, exist_ok=True)
    out = opts.profile_dir / f"controller-{name}{'-native' if opts.profile_native else ''}.folded"
    say(f"{name}: py-spy on the controller for {opts.profile_seconds:g} s -> {out}")
    return Profile(children, pid, opts.profile_seconds, out, native=opts.profile_native)


# -- reconnect storm ---------------------------------------------------------


def bench_storm(
    opts: Options,
    children: Children,
    tmp: Path,
    mode: str,
    transport: str,
    enrolled: Enrolled | None,
    *,
    profile_it: bool,
) -> dict[str, Any]:
    n = opts.storm_drones
    name = tagged(opts, f"storm ({mode})", transport)
    say(f"{name} with {n} drones: starting a controller")
    result: dict[str, Any] = {"mode": mode, "transport": transport, "drones": n}
    creds = enrolled_for(transport, enrolled, n)
    data = phase_dir(tmp, f"storm-{mode}", transport, creds)
    ctl = new_controller(opts, children, data, transport)
    pool: Pool | None = None
    api: Api | None = None
    try:
        ports = ctl.start()
        api = wait_api(ports.public)
        pool = Pool(children, min(opts.workers, n), f"{HOST}:{ports.grpc}", data, opts.placement.simulator)
        ramp = n / opts.connect_rate
        say(f"{name}: connecting {n} drones over {ramp:.1f} s")
        add_drones(pool, make_specs(n, opts.seed), ramp, creds, opts.pongs)
        try:
            wait_online(pool, api, n, ramp + 90.0)
        except BenchError as exc:
            # The controller cannot hold this fleet: say how far it got, skip the storm.
            stats = pool.stats()
            result |= {
                "error": f"the fleet never got to {n} drones: {exc}",
                "controller_cpu_pct_now": round(CpuMeter([ctl.pid]).percent_over(2.0), 1),
                "connected_before_storm": stats.connected,
            }
            return result
        time.sleep(3.0)
        result["controller_rss_before_mb"] = round(rss(ctl.pid) / 2**20, 1)
        if mode == "at-once":
            pool.all("hold")
        api.close()

        say(f"{name}: kill -9 of the controller, restart on the same ports")
        killed = time.monotonic()
        ctl.kill9()
        restarted = time.monotonic()
        ctl.start()
        ready = time.monotonic()
        meter = CpuMeter([ctl.pid])
        sim_meter = CpuMeter(pool.pids)
        label = f"storm-{mode}" + ("" if transport == PLAIN else f"-{transport}")
        sampler = profile_controller(opts, children, ctl.pid, label) if profile_it else None
        api = wait_api(ports.public)
        released: float | None = None
        if mode == "at-once":
            pool.all("go")
            released = time.monotonic()
        deadline = ready + opts.storm_timeout
        all_online: float | None = None
        while time.monotonic() < deadline:
            stats = pool.stats()
            if stats.connected >= n and api.counts().get("online", 0) >= n:
                all_online = time.monotonic()
                break
            time.sleep(0.1)
        cpu_s = meter.seconds()
        busy = meter.machine_busy()
        others = other_busy(busy, meter.percent() + sim_meter.percent())
        if all_online is None:
            say(f"{name}: not all online {opts.storm_timeout:g} s after the restart")
        time.sleep(3.0)  # anything that goes wrong just after
        after = pool.stats(since=killed)
        # Welcomed streams that ended once the new controller was up: none should.
        again = pool.stats(since=ready).ended_since
        refused = {k: v for k, v in after.failures_since.items() if k != NOT_LISTENING}
        result |= {
            "restart_to_ready_s": round(ready - restarted, 2),
            "all_online_after_restart_s": round(all_online - restarted, 2) if all_online else None,
            "all_online_after_kill_s": round(all_online - killed, 2) if all_online else None,
            "all_online_after_release_s": (
                round(all_online - released, 2) if all_online and released is not None else None
            ),
            "connected_at_end": after.connected,
            "refused_or_cancelled": sum(refused.values()),
            "refused_by_kind": refused,
            "refused_while_down": after.failures_since.get(NOT_LISTENING, 0),
            "ended_by_kill": {k: v - again.get(k, 0) for k, v in after.ended_since.items()},
            "welcomed_then_ended": sum(again.values()),
            "ended_again_by_code": again,
            "welcome_s": summary([round(t, 3) for t in after.connect_times]),
            "controller_cpu_s_until_online": round(cpu_s, 1),
            "machine_busy_pct_until_online": round(busy, 1),
            "other_busy_pct_until_online": others,
            "controller_rss_after_mb": round(rss(ctl.pid) / 2**20, 1),
            "online_in_api": api.counts().get("online", 0),
        }
        if sampler is not None:
            try:
                result["profile"] = sampler.finish()
            except BenchError as exc:
                say(f"{name}: no profile: {exc}")
    finally:
        if api is not None:
            api.close()
        if pool is not None:
            pool.stop()
        ctl.stop()
    return result


# -- the real agent ----------------------------------------------------------


def enroll_agent(ctl: Controller, argv: list[str], log: Path) -> None:
    """``swarm-agent enroll`` with a join token from the admin API, as an admin would."""
    token = join_tokens(ctl, 1)[0]
    enroll = [*argv[:3], "enroll", *argv[3:], "--enroll-address", ctl.enroll_target]
    enroll += ["--token", token, "--ca-pin", ctl.ca_pin]
    with log.open("ab") as out:
        done = subprocess.run(enroll, stdout=out, stderr=out, timeout=60, check=False)
    if done.returncode != 0:
        raise BenchError(f"swarm-agent enroll exited with {done.returncode}; see {log}")


def bench_agent(opts: Options, children: Children, tmp: Path, mode: str) -> dict[str, Any]:
    say(tagged(opts, "agent", mode) + ": starting a controller and one real swarm-agent")
    data = tmp / ("agent" if mode == PLAIN else f"agent-{mode}")
    data.mkdir()
    ctl = new_controller(opts, children, data, mode)
    ports = ctl.start()
    api = wait_api(ports.public)
    module = "swarm.agent.main"
    argv = [
        PYTHON,
        "-m",
        module,
        "--controller",
        f"{HOST}:{ports.grpc}",
        "--name",
        "bench-agent",
        "--state-dir",
        str(data / "agent-state"),
        "--cache-path",
        "/tmp",
        "--log-file",
        "",
    ]
    if mode == MTLS:
        enroll_agent(ctl, argv, data / "agent.log")
    elif flag_supported(module, "--insecure"):
        argv.append("--insecure")
    agent = children.spawn(argv, log=data / "agent.log")
    try:
        seen = None
        deadline = time.monotonic() + 30
        while seen is None and time.monotonic() < deadline:
            node = api.node("bench-agent")
            if node is not None and node["status"] == "online" and node["last_heartbeat_at"]:
                seen = node
            elif agent.poll() is not None:
                raise BenchError(f"agent exited with {agent.returncode}; see {data / 'agent.log'}")
            else:
                time.sleep(0.2)
        if seen is None:
            raise BenchError("the agent did not come online in 30 s")
        time.sleep(5.0)
        meter = CpuMeter([agent.pid])
        time.sleep(opts.agent_duration)
        cpu = meter.percent()
        memory = psutil.Process(agent.pid).memory_full_info()
        node = api.node("bench-agent") or {}
        return {
            "transport": mode,
            "cpu_pct": round(cpu, 2),
            "rss_mb": round(memory.rss / 2**20, 1),
            "uss_mb": round(memory.uss / 2**20, 1),
            "threads": psutil.Process(agent.pid).num_threads(),
            "status": node.get("status"),
            "ping_latency_ms": node.get("ping_latency_ms"),
        }
    finally:
        api.close()
        children.stop(agent)
        ctl.stop()


# -- report ------------------------------------------------------------------


def value(result: dict[str, Any], *path: str) -> Any:
    """result[a][b]..., or None where a step is missing (a phase that failed part-way)."""
    current: Any = result
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return None
        current = current[key]
    return current


def slow_cuts(result: dict[str, Any]) -> str | None:
    values = value(result, "cut_to_offline_ms", "values")
    if values is None:
        return None
    slow = sum(1 for v in values if v >= TARGET_CUT_MS)
    return f"{slow}/{len(values)}" + (" !" if slow else "")


def fmt(cell: Any, ok: Callable[[float], bool] | None = None) -> str:
    if cell is None:
        return "-"
    text = f"{cell:.1f}" if isinstance(cell, float) else str(cell)
    if ok is not None and isinstance(cell, int | float) and not ok(float(cell)):
        text += " !"
    return text


Getter = Callable[[dict[str, Any]], Any]


def heading(result: dict[str, Any], key: str, modes: list[str]) -> str:
    """A column's heading: the run's size or mode, and its transport unless all are plaintext."""
    text = str(result.get(key, "?"))
    return text if modes == [PLAIN] else f"{text} {result.get('transport', PLAIN)}"


class Table:
    """Figures as rows, one column per run, the target last."""

    def __init__(
        self, title: str, columns: list[dict[str, Any]], headings: list[str], width: int = 44
    ) -> None:
        self.columns = columns
        self.width = width
        self.cell = max([11, *(len(h) + 2 for h in headings)])
        head = f"{'':{width}}" + "".join(f"{h:>{self.cell}}" for h in headings) + "   target"
        self.lines = ["", title, head, "-" * len(head)]

    def row(
        self, label: str, get: Getter, target: str = "", ok: Callable[[float], bool] | None = None
    ) -> None:
        cells = "".join(f"{fmt(get(c), ok):>{self.cell}}" for c in self.columns)
        self.lines.append(f"{label:{self.width}}{cells}   {target}".rstrip())


def fleet_table(fleet: list[dict[str, Any]], modes: list[str]) -> list[str]:
    title = "Fleet, 1 Hz heartbeats per drone (drones per column)"
    if modes != [PLAIN]:
        title = "Fleet, 1 Hz heartbeats per drone (drones and transport per column)"
    t = Table(title, fleet, [heading(r, "drones", modes) for r in fleet])
    t.row("drones online in the API", lambda r: value(r, "online_in_api"))
    t.row("controller TCP connections (gRPC port)", lambda r: value(r, "controller_tcp_connections"))
    t.row("heartbeats/s sent by the simulator", lambda r: value(r, "heartbeats_per_s"))
    t.row(
        "controller CPU, % of one core",
        lambda r: value(r, "controller_cpu_pct"),
        f"< {TARGET_CPU:g} at 2000",
        lambda v: v < TARGET_CPU,
    )
    t.row("  of it the event loop thread", lambda r: value(r, "controller_loop_cpu_pct"))
    t.row("  on the event loop", lambda r: (value(r, "controller_event_loop") or "?").split(" ")[0])
    t.row("  grpc event-engine threads busy", lambda r: value(r, "controller_grpc_threads"))
    t.row("controller RSS with no drone, MB", lambda r: value(r, "controller_rss_idle_mb"))
    t.row("controller RSS, MB", lambda r: value(r, "controller_rss_mb"))
    t.row(
        "RSS per drone, KB",
        lambda r: value(r, "rss_per_drone_kb"),
        f"< {TARGET_RSS_PER_DRONE_KB:g}",
        lambda v: v < TARGET_RSS_PER_DRONE_KB,
    )
    if any("bare" in r for r in fleet):
        t.row("bare grpc.aio server CPU, % of one core", lambda r: value(r, "bare", "cpu_pct"))
        t.row("  of it the event loop thread", lambda r: value(r, "bare", "loop_cpu_pct"))
        t.row("  grpc event-engine threads busy", lambda r: value(r, "bare", "grpc_threads"))
        t.row("bare grpc.aio server RSS per drone, KB", lambda r: value(r, "bare", "rss_per_drone_kb"))
        t.row(
            "controller / bare, CPU",
            lambda r: ratio(r, "controller_cpu_pct", "cpu_pct"),
            f"<= {TARGET_BARE_RATIO:g} at 2000",
        )
        t.row(
            "controller - bare, event loop threads",
            lambda r: points(value(r, "controller_loop_cpu_pct"), value(r, "bare", "loop_cpu_pct")),
        )
        t.row(
            "controller - bare, other threads",
            lambda r: points(
                points(value(r, "controller_cpu_pct"), value(r, "controller_loop_cpu_pct")),
                points(value(r, "bare", "cpu_pct"), value(r, "bare", "loop_cpu_pct")),
            ),
        )
        t.row(
            "controller / bare, RSS per drone",
            lambda r: ratio(r, "rss_per_drone_kb", "rss_per_drone_kb"),
            f"<= {TARGET_BARE_RATIO:g} at 2000",
        )
    if any("bare_pinging" in r for r in fleet):
        t.row("bare server pinging too, CPU, % of one core", lambda r: value(r, "bare_pinging", "cpu_pct"))
        t.row("  of it the event loop thread", lambda r: value(r, "bare_pinging", "loop_cpu_pct"))
        t.row(
            "bare server pinging too, RSS per drone, KB",
            lambda r: value(r, "bare_pinging", "rss_per_drone_kb"),
        )
        t.row(
            "controller / bare pinging, CPU",
            lambda r: ratio(r, "controller_cpu_pct", "cpu_pct", "bare_pinging"),
        )
        t.row(
            "controller / bare pinging, RSS per drone",
            lambda r: ratio(r, "rss_per_drone_kb", "rss_per_drone_kb", "bare_pinging"),
        )
    if any("bare_uvloop" in r for r in fleet):
        t.row("bare server on uvloop, CPU, % of one core", lambda r: value(r, "bare_uvloop", "cpu_pct"))
        t.row("  of it the event loop thread", lambda r: value(r, "bare_uvloop", "loop_cpu_pct"))
        t.row("  grpc event-engine threads busy", lambda r: value(r, "bare_uvloop", "grpc_threads"))
        t.row(
            "controller / bare on uvloop, CPU",
            lambda r: ratio(r, "controller_cpu_pct", "cpu_pct", "bare_uvloop"),
        )
        t.row(
            "controller - bare on uvloop, event loop threads",
            lambda r: points(value(r, "controller_loop_cpu_pct"), value(r, "bare_uvloop", "loop_cpu_pct")),
        )
    t.row("heartbeat -> visible in API p50, ms", lambda r: value(r, "heartbeat_visible_ms", "p50"))
    t.row(
        "heartbeat -> visible in API p99, ms",
        lambda r: value(r, "heartbeat_visible_ms", "p99"),
        f"< {TARGET_VISIBLE_P99_MS:g}",
        lambda v: v < TARGET_VISIBLE_P99_MS,
    )
    t.row("ping round trip p50, ms (controller)", lambda r: value(r, "ping_rtt_ms", "p50"))
    t.row("ping round trip p99, ms (controller)", lambda r: value(r, "ping_rtt_ms", "p99"))
    t.row("stream cut -> offline, median ms", lambda r: value(r, "cut_to_offline_ms", "p50"))
    t.row(
        "stream cut -> offline, max ms",
        lambda r: value(r, "cut_to_offline_ms", "max"),
        f"< {TARGET_CUT_MS:g}",
        lambda v: v < TARGET_CUT_MS,
    )
    t.row("stream cut -> offline, samples >= 1 s", slow_cuts, "0")
    t.row("silent -> suspect, median ms", lambda r: value(r, "silent_to_suspect_ms", "p50"))
    t.row(
        "silent -> suspect, max ms",
        lambda r: value(r, "silent_to_suspect_ms", "max"),
        f"< {TARGET_SILENT_MS:g}",
        lambda v: v < TARGET_SILENT_MS,
    )
    t.row("last heartbeat -> suspect, max ms", lambda r: value(r, "last_heartbeat_to_suspect_ms", "max"))
    t.row("simulator CPU, % of one core (all procs)", lambda r: value(r, "simulator_cpu_pct"))
    t.row("machine busy, % of all cores", lambda r: value(r, "machine_busy_pct"))
    t.row("  of which not controller or simulator", lambda r: value(r, "other_busy_pct"))
    t.row("time to connect all, s", lambda r: value(r, "connect_s"))
    lines = t.lines
    for r in fleet:
        name = heading(r, "drones", modes)
        if r.get("simulator_failures"):
            lines.append(f"{name} drones: failed connection attempts: {r['simulator_failures']}")
        if r.get("error"):
            lines.append(f"{name} drones: ERROR {r['error']}")
        if r.get("bare", {}).get("error"):
            lines.append(f"{name} drones: bare server: ERROR {r['bare']['error']}")
    return lines


def storm_table(storms: list[dict[str, Any]], modes: list[str]) -> list[str]:
    t = Table(
        "Reconnect storm: kill -9 of the controller, restart on the same ports",
        storms,
        [heading(r, "mode", modes) for r in storms],
    )
    t.row("drones", lambda r: value(r, "drones"))
    t.row("restart until ready file, s", lambda r: value(r, "restart_to_ready_s"))
    t.row("restart until all online (API), s", lambda r: value(r, "all_online_after_restart_s"))
    t.row("at-once: release until all online, s", lambda r: value(r, "all_online_after_release_s"))
    t.row("kill until all online (API), s", lambda r: value(r, "all_online_after_kill_s"))
    t.row(
        "streams refused or cancelled (controller up)",
        lambda r: value(r, "refused_or_cancelled"),
        "0",
        lambda v: v == 0,
    )
    t.row("connections refused while it was down", lambda r: value(r, "refused_while_down"))
    t.row(
        "welcomed streams ended after restart",
        lambda r: value(r, "welcomed_then_ended"),
        "0",
        lambda v: v == 0,
    )
    t.row("Hello -> Welcome p50, s", lambda r: value(r, "welcome_s", "p50"))
    t.row("Hello -> Welcome p99, s", lambda r: value(r, "welcome_s", "p99"))
    t.row("Hello -> Welcome max, s", lambda r: value(r, "welcome_s", "max"))
    t.row("controller CPU until all online, s", lambda r: value(r, "controller_cpu_s_until_online"))
    t.row("machine busy until all online, % of all", lambda r: value(r, "machine_busy_pct_until_online"))
    t.row("  of which not controller or simulator", lambda r: value(r, "other_busy_pct_until_online"))
    t.row("controller RSS before, MB", lambda r: value(r, "controller_rss_before_mb"))
    t.row("controller RSS after, MB", lambda r: value(r, "controller_rss_after_mb"))
    lines = t.lines
    for r in storms:
        name = heading(r, "mode", modes)
        if r.get("refused_by_kind"):
            lines.append(f"{name}: refused/cancelled by kind: {r['refused_by_kind']}")
        if r.get("ended_by_kill"):
            lines.append(f"{name}: streams the kill ended, by code: {r['ended_by_kill']}")
        if r.get("ended_again_by_code"):
            lines.append(f"{name}: streams ended after the restart: {r['ended_again_by_code']}")
        if r.get("error"):
            lines.append(
                f"{name}: ERROR {r['error']} (controller at {r.get('controller_cpu_pct_now')}% "
                f"of a core with {r.get('connected_before_storm')} streams)"
            )
    return lines


def agent_table(agents: list[dict[str, Any]], modes: list[str]) -> list[str]:
    if len(agents) != 1:
        t = Table(
            "Real agent (swarm-agent, one stream, idle)",
            agents,
            [str(a.get("transport", PLAIN)) for a in agents],
        )
        t.row(
            "CPU, % of one core",
            lambda a: value(a, "cpu_pct"),
            f"< {TARGET_AGENT_CPU:g}",
            lambda v: v < TARGET_AGENT_CPU,
        )
        t.row(
            "RSS, MB",
            lambda a: value(a, "rss_mb"),
            f"< {TARGET_AGENT_RSS_MB:g}",
            lambda v: v < TARGET_AGENT_RSS_MB,
        )
        t.row("USS (private memory), MB", lambda a: value(a, "uss_mb"))
        t.row("threads", lambda a: value(a, "threads"))
        return t.lines + [f"{a.get('transport')}: ERROR {a['error']}" for a in agents if a.get("error")]
    agent = agents[0]
    title = "Real agent (swarm-agent, one stream, idle)"
    if modes != [PLAIN]:
        title = f"Real agent (swarm-agent, one stream, idle, {agent.get('transport', PLAIN)})"
    lines = ["", title]
    if agent.get("error"):
        return [*lines, f"ERROR {agent['error']}"]
    lines.append(
        f"{'CPU, % of one core':44}{fmt(agent['cpu_pct'], lambda v: v < TARGET_AGENT_CPU):>11}   "
        f"< {TARGET_AGENT_CPU:g}"
    )
    lines.append(
        f"{'RSS, MB':44}{fmt(agent['rss_mb'], lambda v: v < TARGET_AGENT_RSS_MB):>11}   "
        f"< {TARGET_AGENT_RSS_MB:g}"
    )
    lines.append(f"{'USS (private memory), MB':44}{fmt(agent['uss_mb']):>11}")
    lines.append(f"{'threads':44}{fmt(agent['threads']):>11}")
    return lines


def profile_lines(label: str, prof: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Controller profile, {label} (py-spy, {prof['file']}; "
        f"controller at {prof['cpu_pct_while_profiling']:.0f}% of a core while sampled)",
        "  share of samples, by thread:",
    ]
    lines += [f"    {share:5.1f}%  {name}" for name, share in prof["roles"]]
    lines.append("  share of samples, self:")
    lines += [f"    {share:5.1f}%  {name}" for name, share in prof["self"]]
    lines.append("  share of samples, inclusive:")
    lines += [f"    {share:5.1f}%  {name}" for name, share in prof["inclusive"]]
    return lines


# Rows of the side-by-side table: label, figure, decimals.
Compared = tuple[str, Getter, int]
STEADY: list[Compared] = [
    ("controller CPU, % of one core", lambda r: value(r, "controller_cpu_pct"), 1),
    ("controller CPU per drone, % of one core", lambda r: value(r, "controller_cpu_pct_per_drone"), 4),
    ("controller RSS with no drone, MB", lambda r: value(r, "controller_rss_idle_mb"), 1),
    ("controller RSS, MB", lambda r: value(r, "controller_rss_mb"), 1),
    ("controller RSS per drone, KB", lambda r: value(r, "rss_per_drone_kb"), 1),
    ("heartbeat -> visible in API p99, ms", lambda r: value(r, "heartbeat_visible_ms", "p99"), 1),
    ("ping round trip p99, ms", lambda r: value(r, "ping_rtt_ms", "p99"), 1),
    ("time to connect all, s", lambda r: value(r, "connect_s"), 1),
    ("simulator CPU, % of one core", lambda r: value(r, "simulator_cpu_pct"), 1),
    ("machine busy, % of all cores", lambda r: value(r, "machine_busy_pct"), 1),
    ("  of which not controller or simulator", lambda r: value(r, "other_busy_pct"), 1),
]
STORM: list[Compared] = [
    ("restart until all online, s", lambda r: value(r, "all_online_after_restart_s"), 2),
    ("at-once: release until all online, s", lambda r: value(r, "all_online_after_release_s"), 2),
    ("Hello -> Welcome p50, s", lambda r: value(r, "welcome_s", "p50"), 3),
    ("Hello -> Welcome p99, s", lambda r: value(r, "welcome_s", "p99"), 3),
    ("Hello -> Welcome max, s", lambda r: value(r, "welcome_s", "max"), 3),
    ("streams refused or cancelled (controller up)", lambda r: value(r, "refused_or_cancelled"), 0),
    ("welcomed streams ended after restart", lambda r: value(r, "welcomed_then_ended"), 0),
    ("controller CPU until all online, s", lambda r: value(r, "controller_cpu_s_until_online"), 1),
    ("machine busy until all online, % of all cores", lambda r: value(r, "machine_busy_pct_until_online"), 1),
    ("  of which not controller or simulator", lambda r: value(r, "other_busy_pct_until_online"), 1),
]
AGENT: list[Compared] = [
    ("CPU, % of one core", lambda r: value(r, "cpu_pct"), 2),
    ("RSS, MB", lambda r: value(r, "rss_mb"), 1),
]


def number(cell: Any, digits: int) -> str:
    if isinstance(cell, bool) or not isinstance(cell, int | float):
        return "-" if cell is None else str(cell)
    return f"{cell:.{digits}f}"


def change(plain: Any, mtls: Any, digits: int) -> str:
    """mtls - plain, and relative to plain."""
    if not isinstance(plain, int | float) or not isinstance(mtls, int | float):
        return "-"
    text = f"{mtls - plain:+.{digits}f}"
    if plain:
        text += f" ({100 * (mtls - plain) / plain:+.0f}%)"
    return text


def comparison_table(results: dict[str, Any], modes: list[str]) -> list[str]:
    """What mutual TLS costs: each figure for plaintext and mTLS side by side."""
    if PLAIN not in modes or MTLS not in modes:
        return []
    width = 48
    head = f"{'':{width}}{PLAIN:>11}{MTLS:>11}{'mtls - plain':>20}"
    lines = [
        "",
        "Mutual TLS against plaintext (a fresh controller per column; same drones, options, machine)",
        head,
        "-" * len(head),
    ]

    def section(title: str, runs: list[dict[str, Any]], rows: list[Compared]) -> None:
        pair = {str(r.get("transport", PLAIN)): r for r in runs}
        plain, mtls = pair.get(PLAIN, {}), pair.get(MTLS, {})
        lines.append(title)
        for label, get, digits in rows:
            a, b = get(plain), get(mtls)
            lines.append(
                f"  {label:{width - 2}}{number(a, digits):>11}{number(b, digits):>11}"
                f"{change(a, b, digits):>20}"
            )
        for mode, r in pair.items():
            if r.get("error"):
                lines.append(f"  {mode}: ERROR {r['error']}")

    for n in dict.fromkeys(r["drones"] for r in results["fleet"]):
        runs = [r for r in results["fleet"] if r["drones"] == n]
        section(f"{n} drones, steady state, 1 Hz heartbeats", runs, STEADY)
    for mode in dict.fromkeys(r["mode"] for r in results["storm"]):
        runs = [r for r in results["storm"] if r["mode"] == mode]
        n = runs[0]["drones"]
        section(f"{mode} reconnect storm of {n} drones (kill -9, restart on the same ports)", runs, STORM)
    if results["agents"]:
        section("real agent, one stream, idle", results["agents"], AGENT)
    return lines


def enrollment_line(enrollment: dict[str, Any]) -> str:
    if enrollment.get("error"):
        return f"mTLS set-up: enrolling {enrollment['drones']} drones failed: {enrollment['error']}"
    return (
        f"mTLS set-up (not measured): {enrollment['drones']} simulated drones enrolled once for the run, "
        f"{enrollment['tokens_s']:g} s for their join tokens (admin API), {enrollment['enroll_s']:g} s "
        f"for their Enroll RPCs ({enrollment['concurrency']} at a time); every mtls phase starts "
        "from a copy of that controller's data dir."
    )


def report(results: dict[str, Any], opts: Options) -> str:
    env = results["env"]
    lines = [
        f"Build Swarm fleet benchmark: {env['cpus']} CPUs, Python {env['python']}, "
        f"{opts.workers} simulator processes, ping interval {opts.ping_interval:g} s, "
        f"CPU window {opts.duration:g} s after a {opts.warmup:g} s warm-up. '!' marks a missed target."
    ]
    if opts.modes != [PLAIN]:
        lines.append(f"Transports: {', '.join(opts.modes)} (plain: --insecure; mtls: mutual TLS).")
    if results.get("enrollment"):
        lines.append(enrollment_line(results["enrollment"]))
    if opts.controller_args:
        lines.append(f"Controller started with extra arguments: {' '.join(opts.controller_args)}")
    lines += comparison_table(results, opts.modes)
    if results["fleet"]:
        lines += fleet_table(results["fleet"], opts.modes)
    if results["storm"]:
        lines += storm_table(results["storm"], opts.modes)
    if results["agents"]:
        lines += agent_table(results["agents"], opts.modes)
    for r in results["fleet"]:
        if r.get("profile"):
            what = heading(r, "drones", opts.modes)
            lines += profile_lines(f"{what} drones, steady state", r["profile"])
    for r in results["storm"]:
        if r.get("profile"):
            what = heading(r, "mode", opts.modes)
            lines += profile_lines(f"{what} storm of {r['drones']}, from the restart", r["profile"])
    return "\n".join(lines)


def guarded(
    children: Children, name: str, stub: dict[str, Any], phase: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run one phase; a failure is recorded in its figures and the bench goes on.
    No process outlives its phase, whatever happened in it."""
    try:
        return phase()
    except BenchError as exc:
        say(f"{name}: {exc}")
        return {**stub, "error": str(exc)}
    finally:
        children.close()


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    own_pid_group()
    opts.placement.pin_self()
    results: dict[str, Any] = {
        "env": env_info(),
        "options": {k: jsonable(v) for k, v in vars_of(opts).items()},
        "enrollment": None,
        "fleet": [],
        "storm": [],
        # "agent": the first mode's agent (the key older reports read); "agents": one per mode.
        "agent": None,
        "agents": [],
    }
    children = Children()
    tmp = Path(tempfile.mkdtemp(prefix="swarm-bench-"))
    code = 0
    try:
        if opts.agent:
            for mode in opts.modes:
                results["agents"].append(
                    guarded(
                        children,
                        tagged(opts, "agent", mode),
                        {"transport": mode},
                        functools.partial(bench_agent, opts, children, tmp, mode),
                    )
                )
            results["agent"] = results["agents"][0]
        enrolled: Enrolled | None = None
        need = max([*opts.drones, *([opts.storm_drones] if opts.storm else [])], default=0)
        if MTLS in opts.modes and need:
            try:
                enrolled, results["enrollment"] = enroll_fleet(opts, children, tmp, need)
            except BenchError as exc:
                say(f"mtls: {exc}")
                results["enrollment"] = {"drones": need, "error": str(exc)}
            finally:
                children.close()
        largest = max(opts.drones, default=0)
        # Modes alternate within each size, so that both see much the same machine.
        for n in opts.drones:
            for mode in opts.modes:
                results["fleet"].append(
                    guarded(
                        children,
                        tagged(opts, f"fleet of {n}", mode),
                        {"drones": n, "transport": mode},
                        functools.partial(
                            bench_fleet, opts, children, tmp, n, mode, enrolled, profile_it=n == largest
                        ),
                    )
                )
        for i, storm in enumerate(opts.storm):
            profile_it = i == 0 and opts.profile_dir is not None
            for mode in opts.modes:
                results["storm"].append(
                    guarded(
                        children,
                        tagged(opts, f"storm ({storm})", mode),
                        {"mode": storm, "transport": mode, "drones": opts.storm_drones},
                        functools.partial(
                            bench_storm, opts, children, tmp, storm, mode, enrolled, profile_it=profile_it
                        ),
                    )
                )
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        code = 130
    except Exception:
        say(f"bench failed:\n{traceback.format_exc()}")
        code = 1
    finally:
        children.close()
        if opts.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(report(results, opts))
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(results, indent=2) + "\n")
        say(f"figures written to {opts.json_path}")
    return code


def vars_of(opts: Options) -> dict[str, Any]:
    return {name: getattr(opts, name) for name in opts.__slots__}


def jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Placement):
        return {name: jsonable(getattr(value, name)) for name in value.__slots__}
    if isinstance(value, frozenset):
        return sorted(value)
    return value


if __name__ == "__main__":
    sys.exit(main())
