"""Console benchmark: the admin console's topology page in headless Chromium
with a big fleet heartbeating behind it. It prints figures; it is not a test.

Run from the repository root::

    .venv/bin/python bench/console.py                      # 500 drones, 5 minutes measured
    .venv/bin/python bench/console.py --minutes 1          # a quick look
    .venv/bin/python bench/console.py --drones 1000 --json figures.json

A real controller on 127.0.0.1 (plaintext gRPC, ``--insecure``) and
``--drones`` simulated drones (bench/drones.py: each its own gRPC
connection, Hello, a heartbeat every second, a Pong for every Ping), a
``--tailscale`` share of them on the ``tailscale`` network. Debian's
Chromium, headless with the flags of the console tests
(tests/support/browser.py), driven by Playwright: log in with the admin key
as a person does, land on the topology page, wait until it shows the whole
fleet, then measure for ``--minutes``:

- frame times: the deltas between requestAnimationFrame callbacks, collected
  in the page by a loop the bench adds (median, p95, p99, max, frames);
- main-thread busy share: the growth of Chromium's TaskDuration over wall
  time (CDP Performance.getMetrics), and the long tasks (over 50 ms) a
  PerformanceObserver saw;
- JS heap used (CDP JSHeapUsedSize) at the start and every minute, and after
  a forced garbage collection at the start and at the end: flat means the
  end is within 10 % (plus 2 MiB) of the start;
- what the page drew: packets launched, merged into one already in flight,
  skipped over the cap, the heartbeat sample rate it chose, DOM nodes;
- CPU of the controller and the simulator, how busy the whole machine was.

Targets (issue 7): p95 frame time under 20 ms, memory flat.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    HOST,
    ROOT,
    Api,
    BenchError,
    Children,
    Controller,
    CpuMeter,
    Pool,
    env_info,
    own_pid_group,
    percentile,
    say,
    wait_api,
)

sys.path.insert(0, str(ROOT / "tests"))
# The console tests' Chromium and its flags.
from support.browser import CHROMIUM, CHROMIUM_ARGS

FRAME_TARGET_MS = 20.0
HEAP_SLACK = 0.10
HEAP_SLACK_BYTES = 2 * 2**20
MiB = 2**20

# Added to the page by the bench (not part of the console): frame deltas and long tasks.
PROBE = """
() => {
  if (window.__bench) return;
  const b = { deltas: [], longtasks: 0, longtaskMs: 0, last: null };
  window.__bench = b;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) { b.longtasks += 1; b.longtaskMs += entry.duration; }
  }).observe({ type: "longtask" });
  const step = (t) => {
    if (b.last !== null) b.deltas.push(t - b.last);
    b.last = t;
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}
"""
# Everything collected since the last drain, and the page's own record of what it drew.
DRAIN = """
() => {
  const b = window.__bench;
  const deltas = b.deltas;
  b.deltas = [];
  const stage = document.querySelector(".topo-stage").dataset;
  return {
    deltas,
    longtasks: b.longtasks,
    longtaskMs: b.longtaskMs,
    drawn: Number(stage.packetsDrawn),
    merged: Number(stage.packetsMerged),
    skipped: Number(stage.packetsSkipped),
    dropped: Number(stage.packetsDropped),
    inFlight: Number(stage.inFlight),
    sample: Number(stage.sample),
    drones: Number(stage.drones),
    layout: stage.layout,
    domNodes: document.getElementsByTagName("*").length,
  };
}
"""


@dataclass(frozen=True, slots=True)
class Options:
    drones: int
    tailscale: float
    minutes: float
    warmup: float
    workers: int
    ping_interval: float
    viewport: tuple[int, int]
    json_path: Path | None
    keep: bool
    seed: int
    profile: float


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="the console's topology page in headless Chromium under a simulated fleet",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--drones", type=int, default=500, help="simulated drones, heartbeating at 1 Hz")
    parser.add_argument("--tailscale", type=float, default=0.3, help="share of the drones on tailscale")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the measured window")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds on the page before measuring")
    parser.add_argument("--workers", type=int, default=2, help="simulator processes")
    parser.add_argument("--ping-interval", type=float, default=5.0, help="the controller's ping interval (s)")
    parser.add_argument("--viewport", default="1440x900", help="browser window, WIDTHxHEIGHT")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--seed", type=int, default=7, help="drone ids and networks")
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="S",
        help="after the window, sample the page's JavaScript for S seconds (CDP Profiler) and list "
        "where its time goes",
    )
    ns = parser.parse_args(argv)
    try:
        width, height = (int(x) for x in ns.viewport.lower().split("x"))
    except ValueError:
        parser.error(f"--viewport must be WIDTHxHEIGHT, got {ns.viewport!r}")
    if ns.drones < 1 or ns.workers < 1 or ns.minutes <= 0 or not 0 <= ns.tailscale <= 1:
        parser.error("--drones, --workers and --minutes must be positive, --tailscale in 0..1")
    return Options(
        drones=ns.drones,
        tailscale=ns.tailscale,
        minutes=ns.minutes,
        warmup=ns.warmup,
        workers=ns.workers,
        ping_interval=ns.ping_interval,
        viewport=(width, height),
        json_path=ns.json,
        keep=ns.keep,
        seed=ns.seed,
        profile=ns.profile,
    )


def start_fleet(opts: Options, children: Children, tmp: Path) -> tuple[Controller, Pool, Api]:
    ctl = Controller(children, tmp, ping_interval=opts.ping_interval)
    ports = ctl.start()
    api = wait_api(ports.public)
    pool = Pool(children, min(opts.workers, opts.drones), f"{HOST}:{ports.grpc}", tmp)
    rng = random.Random(opts.seed)
    count = len(pool.workers)
    per_worker: list[dict[str, Any]] = [{"drones": [], "ramp": opts.drones / 100} for _ in range(count)]
    for i in range(opts.drones):
        network = "tailscale" if rng.random() < opts.tailscale else "lan"
        spec = [i, uuid.UUID(int=rng.getrandbits(128)).hex, f"sim-{i:04d}", network]
        per_worker[i % count]["drones"].append(spec)
    pool.each("add", per_worker, timeout=60.0 + opts.drones / 200)
    deadline = time.monotonic() + opts.drones / 100 + 60
    while (online := api.counts().get("online", 0)) < opts.drones:
        if time.monotonic() > deadline:
            raise BenchError(f"only {online} of {opts.drones} drones online; see {tmp}/sim-*.log")
        time.sleep(0.5)
    return ctl, pool, api


def metrics(cdp: Any) -> dict[str, float]:
    reply = cdp.send("Performance.getMetrics")
    return {m["name"]: float(m["value"]) for m in reply["metrics"]}


def heap_after_gc(cdp: Any) -> float:
    cdp.send("HeapProfiler.collectGarbage")
    return metrics(cdp)["JSHeapUsedSize"]


def measure(opts: Options, ctl: Controller, pool: Pool, tmp: Path) -> dict[str, Any]:
    from playwright.sync_api import expect, sync_playwright

    assert ctl.ports is not None
    admin = f"http://{HOST}:{ctl.ports.admin}"
    if not CHROMIUM.exists():
        raise BenchError(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            width, height = opts.viewport
            page = browser.new_context(viewport={"width": width, "height": height}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
            say("logging in with headless Chromium")
            page.goto(admin + "/")
            page.fill("#key", ctl.admin_key)
            page.press("#key", "Enter")
            page.wait_for_url("**/#/topology", timeout=30_000)
            expect(page.locator(".topo-stage")).to_have_attribute(
                "data-drones", str(opts.drones), timeout=30_000
            )
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable", {"timeDomain": "timeTicks"})
            page.evaluate(PROBE)
            say(f"on the topology with {opts.drones} drones; warm-up {opts.warmup:g} s")
            time.sleep(opts.warmup)

            deltas: list[float] = []
            page.evaluate(DRAIN)
            first = page.evaluate(DRAIN)
            heap_start_gc = heap_after_gc(cdp)
            start = metrics(cdp)
            heap = [{"minute": 0, "mib": round(start["JSHeapUsedSize"] / MiB, 2)}]
            ctl_cpu = CpuMeter([ctl.pid])
            sim_cpu = CpuMeter(pool.pids)
            say(f"measuring for {opts.minutes:g} min")
            began = time.monotonic()
            minute = 0
            state = first
            while (left := opts.minutes * 60 - (time.monotonic() - began)) > 0:
                time.sleep(min(60.0, left))
                state = page.evaluate(DRAIN)
                deltas += state["deltas"]
                minute += 1
                now = metrics(cdp)
                heap.append(
                    {
                        "minute": round((time.monotonic() - began) / 60, 2),
                        "mib": round(now["JSHeapUsedSize"] / MiB, 2),
                    }
                )
                say(f"  minute {minute}: {len(state['deltas'])} frames, heap {heap[-1]['mib']} MiB")
            end = metrics(cdp)
            wall = time.monotonic() - began
            ctl_pct, sim_pct, busy = ctl_cpu.percent(), sim_cpu.percent(), ctl_cpu.machine_busy()
            heap_end_gc = heap_after_gc(cdp)
            profile = profile_page(cdp, opts.profile) if opts.profile > 0 else None
            page.screenshot(path=str(tmp / "topology.png"))
        finally:
            browser.close()
    if errors:
        raise BenchError(f"the page reported errors: {errors[:3]}")
    task_s = end["TaskDuration"] - start["TaskDuration"]
    span_s = end["Timestamp"] - start["Timestamp"]
    flat_limit = heap_start_gc * (1 + HEAP_SLACK) + HEAP_SLACK_BYTES
    return {
        "drones": opts.drones,
        "tailscale_share": opts.tailscale,
        "viewport": f"{opts.viewport[0]}x{opts.viewport[1]}",
        "minutes": round(wall / 60, 2),
        "frames": len(deltas),
        "fps": round(len(deltas) / wall, 1),
        "frame_ms": {
            "median": percentile(deltas, 50),
            "p95": percentile(deltas, 95),
            "p99": percentile(deltas, 99),
            "max": max(deltas, default=None),
        },
        "main_thread_busy_pct": round(100 * task_s / span_s, 1) if span_s > 0 else None,
        "long_tasks": state["longtasks"] - first["longtasks"],
        "long_task_ms": round(state["longtaskMs"] - first["longtaskMs"], 1),
        "heap_mib": heap,
        "heap_after_gc_mib": {"start": round(heap_start_gc / MiB, 2), "end": round(heap_end_gc / MiB, 2)},
        "heap_flat": heap_end_gc <= flat_limit,
        "page": {
            "layout": state["layout"],
            "heartbeat_sample": state["sample"],
            "packets_drawn_per_s": round((state["drawn"] - first["drawn"]) / wall, 1),
            "packets_merged_per_s": round((state["merged"] - first["merged"]) / wall, 1),
            "packets_skipped_per_s": round((state["skipped"] - first["skipped"]) / wall, 1),
            "messages_dropped_per_s": round((state["dropped"] - first["dropped"]) / wall, 1),
            "in_flight_at_end": state["inFlight"],
            "dom_nodes": {"start": first["domNodes"], "end": state["domNodes"]},
        },
        "controller_cpu_pct": round(ctl_pct, 1),
        "simulator_cpu_pct": round(sim_pct, 1),
        "machine_busy_pct": round(busy, 1),
        **({"profile": profile} if profile is not None else {}),
    }


def profile_page(cdp: Any, seconds: float, top: int = 15) -> dict[str, Any]:
    """CDP Profiler samples of the page's main thread: self time per function (% of samples)."""
    say(f"profiling the page for {seconds:g} s")
    cdp.send("Profiler.enable")
    cdp.send("Profiler.setSamplingInterval", {"interval": 500})
    cdp.send("Profiler.start")
    time.sleep(seconds)
    prof = cdp.send("Profiler.stop")["profile"]
    names = {}
    for node in prof["nodes"]:
        frame = node["callFrame"]
        where = frame["url"].rsplit("/", 1)[-1]
        names[node["id"]] = (
            f"{frame['functionName'] or '(anonymous)'} {where}:{frame['lineNumber'] + 1}".strip()
        )
    counts: dict[str, int] = {}
    for sample in prof["samples"]:
        counts[names[sample]] = counts.get(names[sample], 0) + 1
    total = max(1, len(prof["samples"]))
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    return {"samples": total, "self_pct": [(name, round(100 * n / total, 1)) for name, n in ranked]}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def report(r: dict[str, Any]) -> str:
    f = r["frame_ms"]
    p95_ok = f["p95"] is not None and f["p95"] < FRAME_TARGET_MS
    gc = r["heap_after_gc_mib"]
    page = r["page"]
    dom = page["dom_nodes"]
    rows = [
        ("frames (per second)", f"{r['frames']} ({r['fps']:g}/s)", ""),
        ("frame time median", ms(f["median"]), ""),
        ("frame time p95", ms(f["p95"]), f"< {FRAME_TARGET_MS:g} ms: {'met' if p95_ok else 'MISSED'}"),
        ("frame time p99 / max", f"{ms(f['p99'])} / {ms(f['max'])}", ""),
        ("main thread busy", f"{r['main_thread_busy_pct']} %", ""),
        ("long tasks (> 50 ms), their total", f"{r['long_tasks']}, {r['long_task_ms']:g} ms", ""),
        ("JS heap each minute (MiB)", " ".join(f"{h['mib']:g}" for h in r["heap_mib"]), ""),
        (
            "JS heap after GC, start -> end",
            f"{gc['start']:g} -> {gc['end']:g} MiB",
            f"flat: {'met' if r['heap_flat'] else 'MISSED'}",
        ),
        (
            "packets drawn / merged / skipped",
            f"{page['packets_drawn_per_s']:g} / {page['packets_merged_per_s']:g} / "
            f"{page['packets_skipped_per_s']:g} per s",
            "",
        ),
        ("messages the controller dropped", f"{page['messages_dropped_per_s']:g} per s", ""),
        ("heartbeats shown, layout", f"1 in {page['heartbeat_sample']}, {page['layout']}", ""),
        ("DOM nodes, start -> end", f"{dom['start']} -> {dom['end']}", ""),
        (
            "controller / simulator CPU",
            f"{r['controller_cpu_pct']} / {r['simulator_cpu_pct']} %",
            "(% of one core)",
        ),
        ("machine busy", f"{r['machine_busy_pct']} %", "(% of all cores)"),
    ]
    head = (
        f"Topology page, {r['drones']} simulated drones at 1 Hz ({r['tailscale_share']:.0%} on tailscale), "
        f"headless Chromium {r['viewport']}, {r['minutes']:g} min measured"
    )
    width = max(len(value) for _, value, _ in rows)
    lines = [head, "", f"{'figure':<36} {'value':>{width}}  target"]
    lines += [f"{name:<36} {value:>{width}}  {target}".rstrip() for name, value, target in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    own_pid_group()
    children = Children()
    tmp = Path(tempfile.mkdtemp(prefix="swarm-console-"))
    results: dict[str, Any] = {"env": env_info()}
    code = 0
    try:
        say(f"starting a controller and {opts.drones} simulated drones in {tmp}")
        ctl, pool, api = start_fleet(opts, children, tmp)
        try:
            results |= measure(opts, ctl, pool, tmp)
        finally:
            api.close()
            pool.stop()
            ctl.stop()
    except BenchError as exc:
        results["error"] = str(exc)
        say(f"error: {exc}")
        code = 1
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        code = 130
    except Exception:
        say(f"bench failed:\n{traceback.format_exc()}")
        results["error"] = "unexpected failure (traceback above)"
        code = 1
    finally:
        children.close()
        if opts.keep or code == 1:
            say(f"kept {tmp} (controller.log, sim-*.log, topology.png)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if "frame_ms" in results:
        print(report(results))
        for name, pct in results.get("profile", {}).get("self_pct", []):
            print(f"  {pct:5.1f} %  {name}")
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(results, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
