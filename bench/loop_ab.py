"""Interleaved CPU windows: controllers (this checkout's, another's) and the
bare floor, each under the same N mutual-TLS drones, round after round.

``fleet.py`` measures the controller and the bare server once each, one
after the other; on this shared 2-core machine a single pair moves by more
than what a change to the heartbeat's path takes off (0.95x-1.43x for one
configuration in session 10). This script alternates the servers in
rounds, so that each sees much the same machine, and splits each window's
CPU by thread: the main thread (the event loop, where all of the
controller's own Python runs but the database thread's) apart from the
rest (grpc's core threads, its poller, the database thread). The event
loop's share holds within about a point between rounds even with the
machine 100 % busy, where the whole process moves by five.

    .venv/bin/python bench/loop_ab.py                       # this checkout's controller against the floor
    .venv/bin/python bench/loop_ab.py --before /work/main/.venv/bin/python --rounds 3
    .venv/bin/python bench/loop_ab.py --bare-ping-interval 20   # the floor pinging as the controller does
    .venv/bin/python bench/loop_ab.py --before .venv/bin/python --before-arg=--event-loop=asyncio \
        --bare-uvloop                                           # the controller and the floor on both loops
    .venv/bin/python bench/loop_ab.py --before .venv/bin/python --before-arg=--ping-interval=5 \
        --controller-arg=--ping-interval=3600                   # this controller with pings and without

Each server: started, N drones connected (the same enrolled set, as
``fleet.py``), a warm-up, a window in which the bench only sleeps. It
prints one line per window and the medians; ``--json`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from fleet import MTLS, Enrolled, add_drones, bare_tls, enroll_fleet, make_specs, parse_args, phase_dir
from harness import (
    HOST,
    PYTHON,
    BareServer,
    BenchError,
    Children,
    Controller,
    Pool,
    grpc_threads_busy,
    own_pid_group,
    say,
    thread_seconds,
)


@dataclass(frozen=True, slots=True)
class Server:
    """One column: a controller under ``python`` (with ``args``), or the bare server."""

    name: str
    python: str = PYTHON
    args: tuple[str, ...] = ()
    bare: bool = False
    ping_interval: float = 0.0  # the bare server's
    event_loop: str = "asyncio"  # the bare server's


def window(pid: int, seconds: float) -> dict[str, float]:
    """% of one core over ``seconds``: the process, its main thread, the
    other threads; how many of grpc's threads were busy; and how busy the
    whole machine was (% of all cores)."""
    before, machine, started = thread_seconds(pid), psutil.cpu_times(), time.monotonic()
    time.sleep(seconds)
    after, now, wall = thread_seconds(pid), psutil.cpu_times(), time.monotonic() - started
    total = sum(after[t] - before.get(t, 0.0) for t in after) / wall * 100
    loop = (after.get(pid, 0.0) - before.get(pid, 0.0)) / wall * 100
    idle = (now.idle + getattr(now, "iowait", 0.0)) - (machine.idle + getattr(machine, "iowait", 0.0))
    busy = 100 * (1 - idle / (sum(now) - sum(machine)))
    return {
        "cpu_pct": round(total, 1),
        "loop_cpu_pct": round(loop, 1),
        "other_cpu_pct": round(total - loop, 1),
        "grpc_threads": grpc_threads_busy(pid, before, after, wall),
        "machine_busy_pct": round(busy, 1),
    }


def measure(
    server: Server,
    children: Children,
    tmp: Path,
    run: int,
    enrolled: Enrolled,
    n: int,
    warmup: float,
    seconds: float,
) -> dict[str, float]:
    data = phase_dir(tmp, f"{server.name}-{run}", MTLS, enrolled)
    stop: Callable[[], None]
    if server.bare:
        work = tmp / f"bare-{run}"
        work.mkdir()
        bare = BareServer(children, work, bare_tls(data, work), None, server.ping_interval, server.event_loop)
        port, pid, stop = bare.start(), bare.pid, bare.stop
    else:
        ctl = Controller(children, data, ping_interval=5.0, tls=True, extra=server.args, python=server.python)
        port, pid, stop = ctl.start().grpc, ctl.pid, ctl.stop
    pool: Pool | None = None
    try:
        time.sleep(2.0)
        pool = Pool(children, 4, f"{HOST}:{port}", data)
        add_drones(pool, make_specs(n, 1), n / 200, enrolled)
        deadline = time.monotonic() + n / 200 + 60
        while (stats := pool.stats()).connected < n:
            if time.monotonic() > deadline:
                raise BenchError(f"{server.name}: only {stats.connected} of {n} streams; {stats.failures}")
            time.sleep(0.5)
        time.sleep(warmup)
        figures = window(pid, seconds)
        figures["rss_mb"] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
        return figures
    finally:
        if pool is not None:
            pool.stop()
        stop()


def servers_of(ns: argparse.Namespace) -> list[Server]:
    args = tuple(ns.controller_arg)
    servers = [Server("controller", args=args)]
    if ns.before:
        before_args = tuple(ns.before_arg) if ns.before_arg else args
        servers.insert(0, Server("before", python=ns.before, args=before_args))
    servers.append(Server("bare", bare=True))
    if ns.bare_ping_interval:
        servers.append(Server("bare pinging", bare=True, ping_interval=ns.bare_ping_interval))
    if ns.bare_uvloop:
        servers.append(Server("bare uvloop", bare=True, event_loop="uvloop"))
    return servers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--drones", type=int, default=2000, help="mutual-TLS drones per server")
    parser.add_argument("--rounds", type=int, default=3, help="windows per server, interleaved")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each CPU window")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after the last drone connected")
    parser.add_argument(
        "--before",
        metavar="PYTHON",
        help="also a controller run by this interpreter (another checkout's venv)",
    )
    parser.add_argument(
        "--bare-ping-interval",
        type=float,
        default=0.0,
        help="also the bare server pinging every stream this often, seconds (0: not)",
    )
    parser.add_argument(
        "--bare-uvloop",
        action="store_true",
        help="also the bare server on uvloop, the loop the controller runs on by default",
    )
    parser.add_argument(
        "--controller-arg",
        action="append",
        default=[],
        help="an extra flag for every controller (repeatable; the --before one takes --before-arg if given)",
    )
    parser.add_argument(
        "--before-arg",
        action="append",
        default=[],
        help="flags for the --before controller instead of --controller-arg (repeatable): "
        "one checkout against itself with other flags",
    )
    parser.add_argument("--json", type=Path, help="write every window's figures here")
    ns = parser.parse_args(argv)
    if ns.drones < 1 or ns.rounds < 1 or ns.duration <= 0:
        parser.error("--drones, --rounds and --duration must be positive")
    own_pid_group()
    servers = servers_of(ns)
    children = Children()
    tmp = Path(tempfile.mkdtemp(prefix="swarm-loop-ab-"))
    results: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}
    try:
        opts = parse_args(["--drones", str(ns.drones), "--modes", MTLS, "--storm", "none", "--no-agent"])
        enrolled, _ = enroll_fleet(opts, children, tmp, ns.drones)
        children.close()
        run = 0
        for r in range(ns.rounds):
            for server in servers:
                run += 1
                figures = measure(server, children, tmp, run, enrolled, ns.drones, ns.warmup, ns.duration)
                results[server.name].append(figures)
                say(f"round {r + 1} {server.name}: {figures}")
    except BenchError as exc:
        say(f"stopped: {exc}")
        return 1
    finally:
        children.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if ns.json is not None:
            ns.json.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results, ns.drones))
    return 0


def report(results: dict[str, list[dict[str, float]]], n: int) -> str:
    keys = ("cpu_pct", "loop_cpu_pct", "other_cpu_pct", "grpc_threads", "machine_busy_pct", "rss_mb")
    lines = [
        f"{n} mutual-TLS drones, medians of {max(len(v) for v in results.values())} windows, % of one core"
    ]
    lines.append(f"{'':14}" + "".join(f"{k:>18}" for k in keys))
    medians: dict[str, dict[str, float]] = {}
    for name, windows in results.items():
        if not windows:
            continue
        medians[name] = {k: statistics.median(w[k] for w in windows) for k in keys}
        lines.append(f"{name:14}" + "".join(f"{medians[name][k]:>18.1f}" for k in keys))
    for floor_name in ("bare", "bare uvloop"):
        floor = medians.get(floor_name)
        if not floor:
            continue
        for name, m in medians.items():
            if name == floor_name or (floor_name != "bare" and name.startswith("bare")):
                continue
            lines.append(
                f"{name} / {floor_name}: CPU {m['cpu_pct'] / floor['cpu_pct']:.2f}x, "
                f"event loop {m['loop_cpu_pct'] - floor['loop_cpu_pct']:+.1f} points, "
                f"other threads {m['other_cpu_pct'] - floor['other_cpu_pct']:+.1f} points"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
