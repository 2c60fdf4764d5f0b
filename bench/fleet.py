"""Fleet benchmark: a real controller, N simulated drones on real gRPC
streams, and the figures issue 2 asks for. It prints figures; it is not a
test and asserts nothing about timing.

Run from the repository root::

    .venv/bin/python bench/fleet.py                      # everything, a few minutes
    .venv/bin/python bench/fleet.py --drones 100 --storm none --no-agent

See ``--help`` and bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from harness import (
    PYTHON,
    Api,
    BenchError,
    Children,
    Controller,
    CpuMeter,
    Pool,
    env_info,
    flag_supported,
    own_pid_group,
    percentile,
    profile,
    rss,
    summarise_folded,
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

NOT_LISTENING = "controller not listening"
STORM_MODES = ("backoff", "at-once")


@dataclass(frozen=True, slots=True)
class Options:
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
    agent_duration: float
    profile_dir: Path | None
    profile_seconds: float
    profile_native: bool
    json_path: Path | None
    controller_args: list[str]
    keep: bool
    seed: int


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/fleet.py",
        description="Fleet benchmark: starts a real controller on 127.0.0.1, simulates N drones "
        "(each its own gRPC stream and HTTP/2 connection, 1 Hz heartbeats, pongs) in a few "
        "worker processes, and prints controller CPU and memory, heartbeat-to-API latency, "
        "ping round trips, failure-detection times, a reconnect storm after kill -9 of the "
        "controller, and the real agent's idle cost, next to the targets of issue 2. "
        "Prints figures; asserts nothing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--drones",
        default="100,1000,2000",
        help="comma-separated fleet sizes; each gets a fresh controller and data dir",
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
        default=",".join(STORM_MODES),
        help="reconnect storms after kill -9 + restart of the controller, comma-separated: "
        "'backoff' (drones reconnect with the agent's full-jitter backoff, 0.5 s initial, "
        "30 s cap) and/or 'at-once' (drones wait until the new controller is up, then all "
        "connect at the same moment: the worst case); 'none' to skip",
    )
    parser.add_argument("--storm-drones", type=int, default=4000, help="fleet size for the storms")
    parser.add_argument(
        "--storm-timeout", type=float, default=120.0, help="give up waiting for the fleet after this"
    )
    parser.add_argument(
        "--no-agent", action="store_true", help="skip the real agent's idle CPU and RSS measurement"
    )
    parser.add_argument(
        "--agent-duration", type=float, default=20.0, help="seconds over which the agent's CPU is measured"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after the measurements of the largest N, sample the controller with py-spy "
        "(folded stacks into DIR) and print where its time goes",
    )
    parser.add_argument("--profile-seconds", type=float, default=15.0, help="py-spy sampling time")
    parser.add_argument(
        "--profile-native", action="store_true", help="include native (C/Cython) frames in the profile"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure as JSON here")
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
        "--keep", action="store_true", help="keep the temporary data dirs and logs (path is printed)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for drone ids and sampling")
    ns = parser.parse_args(argv)
    try:
        drones = [int(x) for x in ns.drones.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--drones must be comma-separated whole numbers, got {ns.drones!r}")
    storm = [m.strip() for m in ns.storm.split(",") if m.strip() and m.strip() != "none"]
    for mode in storm:
        if mode not in STORM_MODES:
            parser.error(f"--storm: unknown mode {mode!r} (use {', '.join(STORM_MODES)} or none)")
    if any(n < 1 for n in drones) or ns.workers < 1 or ns.duration <= 0 or ns.connect_rate <= 0:
        parser.error("--drones, --workers, --duration and --connect-rate must be positive")
    return Options(
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
        storm_drones=ns.storm_drones,
        storm_timeout=ns.storm_timeout,
        agent=not ns.no_agent,
        agent_duration=ns.agent_duration,
        profile_dir=ns.profile,
        profile_seconds=ns.profile_seconds,
        profile_native=ns.profile_native,
        json_path=ns.json,
        controller_args=ns.controller_arg,
        keep=ns.keep,
        seed=ns.seed,
    )


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- fleet set-up ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DroneSpec:
    index: int
    id: str
    name: str


def make_specs(n: int, seed: int) -> list[DroneSpec]:
    rng = random.Random(seed)
    return [DroneSpec(i, uuid.UUID(int=rng.getrandbits(128)).hex, f"sim-{i:05d}") for i in range(n)]


def add_drones(pool: Pool, specs: list[DroneSpec], ramp: float) -> None:
    count = len(pool.workers)
    per_worker = [
        {"drones": [[s.index, s.id, s.name] for s in specs if s.index % count == w], "ramp": ramp}
        for w in range(count)
    ]
    pool.each("add", per_worker)


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


def probe_heartbeats(pool: Pool, api: Api, specs: list[DroneSpec], rng: random.Random) -> list[float]:
    """Heartbeat-to-visible latency in ms: a distinctive load1, polled on its node."""
    latencies: list[float] = []
    for k, spec in enumerate(specs):
        value = 100.25 + k
        reply = pool.of(spec.index).call("mark", drone=spec.index, load1=value)
        seen = poll_until(api, spec.id, lambda node, v=value: abs(node["load"][0] - v) < 1e-6, 5.0)
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


def bench_fleet(opts: Options, children: Children, tmp: Path, n: int, *, profile_it: bool) -> dict[str, Any]:
    say(f"fleet of {n}: starting a controller")
    data = tmp / f"fleet-{n}"
    data.mkdir()
    rng = random.Random(opts.seed + n)
    ctl = Controller(children, data, ping_interval=opts.ping_interval, extra=opts.controller_args)
    ports = ctl.start()
    api = wait_api(ports.public)
    time.sleep(2.0)
    rss_idle = rss(ctl.pid)
    pool = Pool(children, min(opts.workers, n), f"127.0.0.1:{ports.grpc}", data)
    result: dict[str, Any] = {"drones": n, "controller_rss_idle_mb": round(rss_idle / 2**20, 1)}
    try:
        specs = make_specs(n, opts.seed + n)
        ramp = n / opts.connect_rate
        say(f"fleet of {n}: connecting over {ramp:.1f} s")
        started = time.monotonic()
        add_drones(pool, specs, ramp)
        wait_online(pool, api, n, ramp + 60.0)
        result["connect_s"] = round(time.monotonic() - started, 1)
        say(f"fleet of {n}: all online; warm-up {opts.warmup:g} s, then a {opts.duration:g} s window")
        time.sleep(opts.warmup)

        # The window: nothing but sleeping on our side.
        ctl_cpu = CpuMeter([ctl.pid])
        sim_cpu = CpuMeter(pool.pids)
        before = pool.stats()
        time.sleep(opts.duration)
        after = pool.stats()
        rss_full = rss(ctl.pid)
        result |= {
            "controller_cpu_pct": round(ctl_cpu.percent(), 1),
            "simulator_cpu_pct": round(sim_cpu.percent(), 1),
            "machine_busy_pct": round(ctl_cpu.machine_busy(), 1),
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
        say(f"fleet of {n}: timing {len(probes)} heartbeats until visible in the API")
        result["heartbeat_visible_ms"] = summary(probe_heartbeats(pool, api, probes, rng))
        say(f"fleet of {n}: cutting {len(cut)} streams, silencing {len(silent)} drones")
        result["cut_to_offline_ms"] = summary(detect_cut(pool, api, cut))
        from_freeze, from_beat = detect_silent(pool, api, silent, rng)
        result["silent_to_suspect_ms"] = summary(from_freeze)
        result["last_heartbeat_to_suspect_ms"] = summary(from_beat)

        if profile_it and opts.profile_dir is not None:
            result["profile"] = profile_controller(opts, children, ctl.pid, n)
    finally:
        api.close()
        pool.stop()
        ctl.stop()
    return result


def profile_controller(opts: Options, children: Children, pid: int, n: int) -> dict[str, Any]:
    assert opts.profile_dir is not None
    opts.profile_dir.mkdir(parents=True, exist_ok=True)
    out = opts.profile_dir / f"controller-{n}{'-native' if opts.profile_native else ''}.folded"
    say(f"fleet of {n}: py-spy on the controller for {opts.profile_seconds:g} s -> {out}")
    meter = CpuMeter([pid])
    profile(children, pid, opts.profile_seconds, out, native=opts.profile_native)
    return {
        "file": str(out),
        "controller_cpu_pct_while_profiling": round(meter.percent(), 1),
        **summarise_folded(out),
    }


# -- reconnect storm ---------------------------------------------------------


def bench_storm(opts: Options, children: Children, tmp: Path, mode: str) -> dict[str, Any]:
    n = opts.storm_drones
    say(f"storm ({mode}) with {n} drones: starting a controller")
    data = tmp / f"storm-{mode}"
    data.mkdir()
    ctl = Controller(children, data, ping_interval=opts.ping_interval, extra=opts.controller_args)
    ports = ctl.start()
    api = wait_api(ports.public)
    pool = Pool(children, min(opts.workers, n), f"127.0.0.1:{ports.grpc}", data)
    result: dict[str, Any] = {"mode": mode, "drones": n}
    try:
        specs = make_specs(n, opts.seed + n)
        ramp = n / opts.connect_rate
        say(f"storm ({mode}): connecting {n} drones over {ramp:.1f} s")
        add_drones(pool, specs, ramp)
        wait_online(pool, api, n, ramp + 90.0)
        time.sleep(3.0)
        result["controller_rss_before_mb"] = round(rss(ctl.pid) / 2**20, 1)
        before = pool.stats()
        if mode == "at-once":
            pool.all("hold")
        api.close()

        say(f"storm ({mode}): kill -9 of the controller, restart on the same ports")
        killed = time.monotonic()
        ctl.kill9()
        restarted = time.monotonic()
        ctl.start()
        ready = time.monotonic()
        meter = CpuMeter([ctl.pid])
        api = wait_api(ports.public)
        if mode == "at-once":
            pool.all("go")
        deadline = ready + opts.storm_timeout
        all_online: float | None = None
        while time.monotonic() < deadline:
            stats = pool.stats()
            if stats.connected >= n and api.counts().get("online", 0) >= n:
                all_online = time.monotonic()
                break
            time.sleep(0.1)
        cpu_s = meter.seconds()
        time.sleep(3.0)  # anything that goes wrong just after
        after = pool.stats(since=killed)
        refused = {k: v for k, v in after.failures_since.items() if k != NOT_LISTENING}
        ended_before = sum(before.ended.values())
        result |= {
            "restart_to_ready_s": round(ready - restarted, 2),
            "all_online_after_restart_s": round(all_online - restarted, 2) if all_online else None,
            "all_online_after_kill_s": round(all_online - killed, 2) if all_online else None,
            "refused_or_cancelled": sum(refused.values()),
            "refused_by_kind": refused,
            "refused_while_down": after.failures_since.get(NOT_LISTENING, 0),
            # Welcomed streams that ended after the kill, beyond the n the kill itself ended.
            "welcomed_then_ended": sum(after.ended.values()) - ended_before - n,
            "ended_by_code": {
                k: v - before.ended.get(k, 0) for k, v in after.ended.items() if v != before.ended.get(k, 0)
            },
            "welcome_s": {
                k: (round(v, 3) if v is not None else None)
                for k, v in summary([t for t in after.connect_times]).items()
            },
            "controller_cpu_s_until_online": round(cpu_s, 1),
            "controller_rss_after_mb": round(rss(ctl.pid) / 2**20, 1),
            "online_in_api": api.counts().get("online", 0),
        }
        if all_online is None:
            say(f"storm ({mode}): not all online after {opts.storm_timeout:g} s")
    finally:
        api.close()
        pool.stop()
        ctl.stop()
    return result


# -- the real agent ----------------------------------------------------------


def bench_agent(opts: Options, children: Children, tmp: Path) -> dict[str, Any]:
    say("agent: starting a controller and one real swarm-agent")
    data = tmp / "agent"
    data.mkdir()
    ctl = Controller(children, data, ping_interval=opts.ping_interval, extra=opts.controller_args)
    ports = ctl.start()
    api = wait_api(ports.public)
    module = "swarm.agent.main"
    argv = [
        PYTHON,
        "-m",
        module,
        "--controller",
        f"127.0.0.1:{ports.grpc}",
        "--name",
        "bench-agent",
        "--state-dir",
        str(data / "agent-state"),
        "--cache-path",
        "/tmp",
        "--log-file",
        "",
    ]
    if flag_supported(module, "--insecure"):
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


def slow_cuts(result: dict[str, Any]) -> str:
    values = result["cut_to_offline_ms"]["values"]
    slow = sum(1 for v in values if v >= TARGET_CUT_MS)
    return f"{slow}/{len(values)}" + (" !" if slow else "")


def fmt(value: Any, target: Callable[[float], bool] | None = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.1f}" if isinstance(value, float) else str(value)
    if target is not None and isinstance(value, int | float) and not target(float(value)):
        text += " !"
    return text


def report(results: dict[str, Any], opts: Options) -> str:
    lines: list[str] = []
    env = results["env"]
    lines.append(
        f"Build Swarm fleet benchmark: {env['cpus']} CPUs, Python {env['python']}, "
        f"{opts.workers} simulator processes, ping interval {opts.ping_interval:g} s, "
        f"CPU window {opts.duration:g} s after a {opts.warmup:g} s warm-up. '!' marks a missed target."
    )
    fleet = results["fleet"]
    if fleet:
        head = f"{'':40}" + "".join(f"{r['drones']:>10}" for r in fleet) + "   target"
        lines += ["", "Fleet, 1 Hz heartbeats per drone", head, "-" * len(head)]

        def row(label: str, get: Callable[[dict[str, Any]], Any], target: str = "", ok: Any = None) -> None:
            cells = "".join(f"{fmt(get(r), ok):>10}" for r in fleet)
            lines.append(f"{label:40}{cells}   {target}")

        row("drones online in the API", lambda r: r["online_in_api"])
        row("controller TCP connections (gRPC port)", lambda r: r["controller_tcp_connections"])
        row("heartbeats/s sent by the simulator", lambda r: r["heartbeats_per_s"])
        row(
            "controller CPU, % of one core",
            lambda r: r["controller_cpu_pct"],
            f"< {TARGET_CPU:g} at 2000",
            lambda v: v < TARGET_CPU,
        )
        row("controller RSS with no drone, MB", lambda r: r["controller_rss_idle_mb"])
        row("controller RSS, MB", lambda r: r["controller_rss_mb"])
        row(
            "RSS per drone, KB",
            lambda r: r["rss_per_drone_kb"],
            f"< {TARGET_RSS_PER_DRONE_KB:g}",
            lambda v: v < TARGET_RSS_PER_DRONE_KB,
        )
        row("heartbeat -> API p50, ms", lambda r: r["heartbeat_visible_ms"]["p50"])
        row(
            "heartbeat -> API p99, ms",
            lambda r: r["heartbeat_visible_ms"]["p99"],
            f"< {TARGET_VISIBLE_P99_MS:g}",
            lambda v: v < TARGET_VISIBLE_P99_MS,
        )
        row("ping round trip p50, ms (controller)", lambda r: r["ping_rtt_ms"]["p50"])
        row("ping round trip p99, ms (controller)", lambda r: r["ping_rtt_ms"]["p99"])
        row("stream cut -> offline, median ms", lambda r: r["cut_to_offline_ms"]["p50"])
        row("stream cut -> offline, samples >= 1 s", slow_cuts, "0")
        row(
            "stream cut -> offline, max ms",
            lambda r: r["cut_to_offline_ms"]["max"],
            f"< {TARGET_CUT_MS:g}",
            lambda v: v < TARGET_CUT_MS,
        )
        row("silent -> suspect, median ms", lambda r: r["silent_to_suspect_ms"]["p50"])
        row(
            "silent -> suspect, max ms",
            lambda r: r["silent_to_suspect_ms"]["max"],
            f"< {TARGET_SILENT_MS:g}",
            lambda v: v < TARGET_SILENT_MS,
        )
        row("last heartbeat -> suspect, max ms", lambda r: r["last_heartbeat_to_suspect_ms"]["max"])
        row("simulator CPU, % of one core (all procs)", lambda r: r["simulator_cpu_pct"])
        row("machine busy, % of all cores", lambda r: r["machine_busy_pct"])
        row("time to connect all, s", lambda r: r["connect_s"])
        failures = {r["drones"]: r["simulator_failures"] for r in fleet if r["simulator_failures"]}
        if failures:
            lines.append(f"simulator connection failures: {failures}")

    storms = results["storm"]
    if storms:
        head = f"{'':48}" + "".join(f"{r['mode']:>10}" for r in storms) + "   target"
        lines += ["", "Reconnect storm: kill -9 of the controller, restart on the same ports", head]
        lines.append("-" * len(head))

        def srow(label: str, get: Callable[[dict[str, Any]], Any], target: str = "", ok: Any = None) -> None:
            cells = "".join(f"{fmt(get(r), ok):>10}" for r in storms)
            lines.append(f"{label:48}{cells}   {target}")

        srow("drones", lambda r: r["drones"])
        srow("restart until ready file, s", lambda r: r["restart_to_ready_s"])
        srow("restart until all online (API), s", lambda r: r["all_online_after_restart_s"])
        srow("kill until all online (API), s", lambda r: r["all_online_after_kill_s"])
        srow(
            "streams refused or cancelled (controller up)",
            lambda r: r["refused_or_cancelled"],
            "0",
            lambda v: v == 0,
        )
        srow("connections refused while it was down", lambda r: r["refused_while_down"])
        srow("welcomed streams ended again", lambda r: r["welcomed_then_ended"], "0", lambda v: v == 0)
        srow("Hello -> Welcome p50, s", lambda r: r["welcome_s"]["p50"])
        srow("Hello -> Welcome p99, s", lambda r: r["welcome_s"]["p99"])
        srow("Hello -> Welcome max, s", lambda r: r["welcome_s"]["max"])
        srow("controller CPU until all online, s", lambda r: r["controller_cpu_s_until_online"])
        srow(
            "controller RSS before / after, MB",
            lambda r: f"{r['controller_rss_before_mb']:.0f}/{r['controller_rss_after_mb']:.0f}",
        )
        for r in storms:
            if r["refused_by_kind"]:
                lines.append(f"{r['mode']}: refused/cancelled by kind: {r['refused_by_kind']}")
            if r["ended_by_code"]:
                lines.append(f"{r['mode']}: welcomed streams ended, by code: {r['ended_by_code']}")

    agent = results["agent"]
    if agent:
        lines += ["", "Real agent (swarm-agent, one stream, idle)"]
        lines.append(
            f"{'CPU, % of one core':40}{fmt(agent['cpu_pct'], lambda v: v < TARGET_AGENT_CPU):>10}   "
            f"< {TARGET_AGENT_CPU:g}"
        )
        lines.append(
            f"{'RSS, MB':40}{fmt(agent['rss_mb'], lambda v: v < TARGET_AGENT_RSS_MB):>10}   "
            f"< {TARGET_AGENT_RSS_MB:g}"
        )
        lines.append(f"{'USS (private), MB':40}{fmt(agent['uss_mb']):>10}")
        lines.append(f"{'threads':40}{fmt(agent['threads']):>10}")

    for r in fleet:
        prof = r.get("profile")
        if not prof:
            continue
        lines += [
            "",
            f"Controller profile at {r['drones']} drones (py-spy, {prof['file']}; "
            f"controller CPU {prof['controller_cpu_pct_while_profiling']:.0f}% while sampled)",
            "  share of samples, self:",
        ]
        lines += [f"    {share:5.1f}%  {name}" for name, share in prof["self"]]
        lines.append("  share of samples, inclusive:")
        lines += [f"    {share:5.1f}%  {name}" for name, share in prof["inclusive"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    own_pid_group()
    results: dict[str, Any] = {
        "env": env_info(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars_of(opts).items()},
        "fleet": [],
        "storm": [],
        "agent": None,
    }
    children = Children()
    tmp = Path(tempfile.mkdtemp(prefix="swarm-bench-"))
    code = 0
    try:
        if opts.agent:
            results["agent"] = bench_agent(opts, children, tmp)
        largest = max(opts.drones, default=0)
        for n in opts.drones:
            results["fleet"].append(bench_fleet(opts, children, tmp, n, profile_it=n == largest))
        for mode in opts.storm:
            results["storm"].append(bench_storm(opts, children, tmp, mode))
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        code = 130
    except BenchError as exc:
        say(f"error: {exc}")
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


if __name__ == "__main__":
    sys.exit(main())
