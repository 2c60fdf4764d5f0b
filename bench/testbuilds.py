"""Test-build requests benchmark: 1,000 requests from 50 tokens at once
against a real controller, while a regular session builds on real drones.
It prints figures; it asserts nothing about timing.

Run from the repository root::

    .venv/bin/python bench/testbuilds.py                    # about 2 minutes
    .venv/bin/python bench/testbuilds.py --drones 0         # the requests alone, seconds
    .venv/bin/python bench/testbuilds.py --json figures.json --keep
    .venv/bin/python bench/testbuilds.py --before /work/main/.venv/bin/python --rounds 3
    .venv/bin/python bench/testbuilds.py --before /work/main/.venv/bin/python --drones 0 --rounds 8

What it does (bench/schedule.py's DAG, overlay, controller and agents):

1. **Baseline.** A fresh controller with Portage and ``--drones`` real
   agents (real emerge in Gentoo prefixes) build a generated DAG of
   ``--packages`` sleep-timed packages in one session; the dispatch
   overhead per job (emerge started - max(its dependencies ready, its
   drone free)), p50/p99/max, as schedule.py measures it.
2. **Under requests.** The same again on a fresh controller; once the
   session is queued, ``--tokens`` test-build tokens (``--rate``,
   ``--burst``, ``--max-queued``, made through the admin API) send
   ``--requests`` requests at once: one connection per token (opened
   before the burst, as an API client keeps its own), each token its
   share one after the other, every one of the DAG's packages asked
   for in a random order (repeats included: a repeat of a queued build is
   answered with it). Then the session finishes as in 1.

With ``--before PYTHON`` (another checkout's venv), only step 2, the
loaded run, is made (with ``--drones 0``, the requests alone), ``--rounds``
times for each controller in turns (the first to go alternates): before
and after seen on much the same machine.

Figures: requests answered per second (wall time of the whole burst), the
answer's latency p50/p99/max (target: p99 under 50 ms), answers by status;
whether any token got more builds queued than its burst and queued cap,
or the controller more than its global cap (--test-build-max-queued,
default 100): "none beyond the limits" is the target; and the regular
dispatch p99 of run 2 beside run 1's (target: unchanged).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import schedule  # bench/schedule.py: the DAG, the overlay, a controller with real agents
from harness import (
    HOST,
    PYTHON,
    Api,
    BenchError,
    Children,
    Controller,
    env_info,
    options_json,
    own_pid_group,
    percentile,
    say,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import prefix as pfx  # tools/prefix.py

SUBMIT = "/api/v1/test-build"
TARGET_P99_MS = 50.0
GLOBAL_CAP = 100  # the controller's --test-build-max-queued, left at its default


@dataclass(frozen=True, slots=True)
class Options:
    drones: int
    packages: int
    requests: int
    tokens: int
    rate: str
    burst: int
    max_queued: int
    seed: int
    keep: bool
    json_path: Path | None
    before: str | None = None
    rounds: int = 3


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--drones", type=int, default=2, help="real agents building the session (0: no session)"
    )
    parser.add_argument("--packages", type=int, default=12, help="packages of the session's DAG (default 12)")
    parser.add_argument(
        "--requests", type=int, default=1000, help="test-build requests in all (default 1000)"
    )
    parser.add_argument("--tokens", type=int, default=50, help="tokens sending them at once (default 50)")
    parser.add_argument("--rate", default="5/h", help="each token's rate (default 5/h)")
    parser.add_argument("--burst", type=int, default=2, help="each token's burst (default 2)")
    parser.add_argument("--max-queued", type=int, default=3, help="each token's queued cap (default 3)")
    parser.add_argument("--seed", type=int, default=19, help="seed of the DAG and of the request order")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and its logs")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the figures here")
    parser.add_argument(
        "--before",
        metavar="PYTHON",
        help="another checkout's venv python: its controller and this one's take turns, "
        "--rounds times each, each a loaded run (no baseline; with --drones 0 the requests alone)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds with --before (default 3)")
    ns = parser.parse_args(argv)
    if ns.drones < 0 or ns.packages < 1 or ns.requests < 1 or ns.tokens < 1:
        parser.error("--drones must be 0 or more; --packages, --requests and --tokens at least 1")
    if ns.rounds < 1:
        parser.error("--rounds must be 1 or more")
    return Options(
        ns.drones,
        ns.packages,
        ns.requests,
        ns.tokens,
        ns.rate,
        ns.burst,
        ns.max_queued,
        ns.seed,
        ns.keep,
        ns.json_path,
        ns.before,
        ns.rounds,
    )


# -- the requests ------------------------------------------------------------------


def make_tokens(admin: Api, opts: Options) -> list[dict[str, Any]]:
    made = []
    for i in range(opts.tokens):
        body = {
            "user": f"bench-{i:03}",
            "rate": opts.rate,
            "burst": opts.burst,
            "max_queued": opts.max_queued,
        }
        status, reply = admin.post("/admin/api/test-build-tokens", body)
        if status != 201:
            raise BenchError(f"POST /admin/api/test-build-tokens answered {status}: {reply}")
        made.append(reply)
    return made


async def _send_all(
    port: int, plan: list[list[str]], secrets: list[str], *, floor: bool = False
) -> tuple[list[dict[str, Any]], float]:
    """Each token's requests one after the other on its own connection, every
    token at once; (one record per answer, wall seconds of the whole burst).
    With ``floor``, the same number of GET /api/v1/health instead: what the
    tier answers at this concurrency on this machine for a request that
    does nothing."""
    start, all_open = asyncio.Event(), asyncio.Event()
    opened: list[str] = []

    async def one_token(secret: str, packages: list[str]) -> list[dict[str, Any]]:
        records = []
        connector = aiohttp.TCPConnector(limit=1)
        headers = {"Authorization": f"Bearer {secret}"}
        async with aiohttp.ClientSession(
            f"http://{HOST}:{port}", connector=connector, headers=headers
        ) as http:
            # The connection is opened before the burst: what is timed is the answer,
            # not 50 TCP handshakes at once (a client of the API keeps its connection).
            async with http.get("/api/v1/health") as warm:
                await warm.read()
            opened.append(secret)
            if len(opened) == len(plan):
                all_open.set()
            await start.wait()
            for package in packages:
                sent = time.perf_counter()
                if floor:
                    async with http.get("/api/v1/health") as answer:
                        await answer.read()
                    records.append({"status": answer.status, "ms": (time.perf_counter() - sent) * 1000})
                    continue
                async with http.post(SUBMIT, json={"package": package}) as answer:
                    body = await answer.json()
                records.append(
                    {
                        "token": secret.partition(".")[0],
                        "package": package,
                        "status": answer.status,
                        "ms": (time.perf_counter() - sent) * 1000,
                        "id": body.get("id"),
                        "existing": body.get("existing"),
                        "retry_after": answer.headers.get("Retry-After"),
                    }
                )
        return records

    tasks = [asyncio.create_task(one_token(s, p)) for s, p in zip(secrets, plan, strict=True)]
    await all_open.wait()  # every connection open before the first request goes
    began = time.perf_counter()
    start.set()
    results = await asyncio.gather(*tasks)
    return [r for records in results for r in records], time.perf_counter() - began


def latency(records: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    ms = [r["ms"] for r in records]
    return {
        "requests": len(records),
        "wall_s": round(wall, 3),
        "per_second": round(len(records) / wall, 1),
        "p50_ms": round(percentile(ms, 50) or 0, 2),
        "p99_ms": round(percentile(ms, 99) or 0, 2),
        "max_ms": round(max(ms), 2),
    }


def flood(controller: Controller, atoms: Sequence[str], opts: Options) -> dict[str, Any]:
    """The burst of requests against a running controller, and what it left queued."""
    assert controller.ports is not None
    admin = Api(controller.ports.admin, admin_key=controller.admin_key)
    try:
        tokens = make_tokens(admin, opts)
        rng = random.Random(opts.seed)
        plan: list[list[str]] = [[] for _ in tokens]
        for i in range(opts.requests):
            plan[i % len(tokens)].append(rng.choice(atoms))
        secrets = [t["secret"] for t in tokens]
        say(f"floor: {opts.requests} GET /api/v1/health on {len(tokens)} connections at once")
        floor = latency(*asyncio.run(_send_all(controller.ports.public, plan, secrets, floor=True)))
        say(f"{opts.requests} test-build requests from {len(tokens)} tokens at once")
        records, wall = asyncio.run(_send_all(controller.ports.public, plan, secrets))
        status, listed = admin.get("/admin/api/test-builds?state=queued&limit=1000")
        if status != 200:
            raise BenchError(f"GET /admin/api/test-builds answered {status}: {listed}")
    finally:
        admin.close()
    return {**request_figures(records, wall, listed["builds"], opts), "floor": floor}


def request_figures(
    records: list[dict[str, Any]], wall: float, queued: list[dict[str, Any]], opts: Options
) -> dict[str, Any]:
    statuses = Counter(str(r["status"]) for r in records)
    new = [r for r in records if r["status"] == 202 and not r["existing"]]
    per_token = Counter(r["token"] for r in new)
    queued_per_token = Counter(b["token_id"] for b in queued)
    limit = min(opts.burst, opts.max_queued)
    over = {t: n for t, n in per_token.items() if n > limit}
    over_queued = {t: n for t, n in queued_per_token.items() if n > opts.max_queued}
    retry = [int(r["retry_after"]) for r in records if r["status"] == 429 and r["retry_after"]]
    kinds: dict[str, list[float]] = {}
    for r in records:
        kind = (
            "new"
            if r["status"] == 202 and not r["existing"]
            else "existing"
            if r["status"] == 202
            else "refused"
        )
        kinds.setdefault(kind, []).append(r["ms"])
    by_kind = {
        kind: {
            "count": len(ms),
            "p50_ms": round(percentile(ms, 50) or 0, 1),
            "p99_ms": round(percentile(ms, 99) or 0, 1),
        }
        for kind, ms in sorted(kinds.items())
    }
    return {
        **latency(records, wall),
        "by_kind": by_kind,
        "statuses": dict(sorted(statuses.items())),
        "accepted_new": len(new),
        "answered_existing": sum(1 for r in records if r["status"] == 202 and r["existing"]),
        "accepted_most_by_one_token": max(per_token.values(), default=0),
        "token_limit": limit,
        "tokens_over_limit": over,
        "tokens_over_queued_cap": over_queued,
        "queued_after": len(queued),
        "global_cap": GLOBAL_CAP,
        "retry_after_s": {"min": min(retry, default=None), "max": max(retry, default=None)},
        "none_beyond_limits": not over and not over_queued and len(queued) <= GLOBAL_CAP,
    }


# -- runs ---------------------------------------------------------------------------


@contextlib.contextmanager
def flooding_while_the_session_runs(
    opts: Options, atoms: Sequence[str], out: dict[str, Any]
) -> Iterator[None]:
    """schedule.run_fleet, with the burst sent once its session is queued."""
    original: Callable[..., dict[str, Any]] = schedule.wait_session

    def wait_session(sopts: Any, api: Any, controller: Controller, *rest: Any) -> dict[str, Any]:
        out.update(flood(controller, atoms, opts))
        return original(sopts, api, controller, *rest)

    schedule.wait_session = wait_session
    try:
        yield
    finally:
        schedule.wait_session = original


def requests_alone(
    children: Children,
    work: Path,
    overlay: Path,
    atoms: Sequence[str],
    opts: Options,
    python: str = PYTHON,
) -> dict[str, Any]:
    ctl_prefix = pfx.create_prefix(pfx.PrefixConfig(work / "ctl-prefix", pfx.Role.CONTROLLER, repo=overlay))
    data = work / "controller"
    data.mkdir(parents=True)
    controller = Controller(
        children, data, ping_interval=5.0, extra=["--portage-eprefix", str(ctl_prefix.root)], python=python
    )
    ports = controller.start(timeout=120)
    try:
        # As in the run with drones: a session of the same packages is queued first, so
        # Portage has read their ebuilds (this overlay has no metadata cache; a real
        # tree has one) and the requests measure the controller, not a cold tree.
        admin = Api(ports.admin, timeout=300.0, admin_key=controller.admin_key)
        try:
            status, body = admin.post("/admin/api/queue", {"atoms": list(atoms), "session": "warm"})
        finally:
            admin.close()
        if status != 201:
            raise BenchError(f"POST /admin/api/queue answered {status}: {body}")
        return flood(controller, atoms, opts)
    finally:
        controller.stop()


def run(opts: Options) -> dict[str, Any]:
    sopts = schedule.parse_args(
        [
            "--drones",
            str(max(1, opts.drones)),
            "--packages",
            str(opts.packages),
            "--seed",
            str(opts.seed),
            "--sleep-min",
            "1",
            "--sleep-max",
            "3",
            "--direct-sample",
            "0",
        ]
    )
    packages = schedule.generate_dag(
        sopts.packages, sopts.layers, sopts.seed, sopts.sleep_min, sopts.sleep_max
    )
    atoms = [p.atom for p in packages]
    work = Path(tempfile.mkdtemp(prefix="bench-testbuilds-"))
    children = Children()
    figures: dict[str, Any] = {"env": env_info(), "options": options_json(opts)}
    try:
        overlay = schedule.write_overlay(work / "overlay", packages)
        if opts.before is not None:
            figures["rounds"] = alternated(opts.before, sopts, children, work, overlay, packages, opts)
            return figures
        if opts.drones == 0:
            figures["requests"] = requests_alone(children, work / "alone", overlay, atoms, opts)
            return figures
        say(f"baseline: {opts.drones} drone(s) build {len(packages)} packages")
        baseline = schedule.run_fleet(sopts, children, work / "baseline", overlay, packages, opts.drones)
        say(f"again, with {opts.requests} test-build requests once the session is queued")
        burst, loaded = loaded_run(sopts, children, work / "loaded", overlay, packages, opts)
        figures["requests"] = burst
        figures["dispatch"] = {"baseline": baseline["dispatch"], "under_requests": loaded["dispatch"]}
        figures["makespan_s"] = {"baseline": baseline["makespan_s"], "under_requests": loaded["makespan_s"]}
    finally:
        children.close()
        if opts.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return figures


def loaded_run(
    sopts: Any,
    children: Children,
    work: Path,
    overlay: Path,
    packages: Sequence[Any],
    opts: Options,
    python: str = PYTHON,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The drones build the session while the requests come: the burst's
    figures, and the fleet's (bench/schedule.py's run_fleet)."""
    burst: dict[str, Any] = {}
    with flooding_while_the_session_runs(opts, [p.atom for p in packages], burst):
        loaded = schedule.run_fleet(sopts, children, work, overlay, packages, opts.drones, python=python)
    return burst, loaded


def alternated(
    before: str,
    sopts: Any,
    children: Children,
    work: Path,
    overlay: Path,
    packages: Sequence[Any],
    opts: Options,
) -> list[dict[str, Any]]:
    """Loaded runs (with --drones 0, the requests alone), the two
    controllers taking turns (which goes first alternates too), so that each
    sees much the same machine."""
    atoms = [p.atom for p in packages]
    runs: list[dict[str, Any]] = []
    for i in range(opts.rounds):
        turns = [("before", before), ("after", PYTHON)]
        for label, python in turns if i % 2 == 0 else reversed(turns):
            say(f"round {i + 1}, {label}: {opts.drones} drone(s) build, {opts.requests} requests")
            if opts.drones == 0:
                alone = requests_alone(children, work / f"{label}-{i}", overlay, atoms, opts, python)
                runs.append({"round": i + 1, "controller": label, **alone})
                print(_run_line(runs[-1]), flush=True)
                continue
            where = work / f"{label}-{i}"
            burst, loaded = loaded_run(sopts, children, where, overlay, packages, opts, python)
            runs.append({"round": i + 1, "controller": label, **burst, "dispatch": loaded["dispatch"]})
            print(_run_line(runs[-1]), flush=True)
    return runs


def _run_line(run: dict[str, Any]) -> str:
    new, f = run["by_kind"].get("new", {}), run["floor"]
    dispatch = f"; dispatch p99 {run['dispatch']['p99_ms']} ms" if "dispatch" in run else ""
    return (
        f"round {run['round']} {run['controller']:6}: p50 {run['p50_ms']:.1f} p99 {run['p99_ms']:.1f} "
        f"max {run['max_ms']:.1f} ms; new p50 {new.get('p50_ms')} / p99 {new.get('p99_ms')}; "
        f"floor p50 {f['p50_ms']:.1f} / p99 {f['p99_ms']:.1f}; new builds {run['accepted_new']}, "
        f"none beyond the limits: {'yes' if run['none_beyond_limits'] else 'NO'}{dispatch}"
    )


def report_rounds(runs: list[dict[str, Any]]) -> None:
    for label in ("before", "after"):
        mine = [r for r in runs if r["controller"] == label]
        p99 = [r["p99_ms"] for r in mine]
        new = [r["by_kind"]["new"]["p99_ms"] for r in mine if "new" in r["by_kind"]]
        floor = [r["floor"]["p99_ms"] for r in mine]
        print(
            f"{label}: p99 median {statistics.median(p99):.1f} ms ({min(p99):.1f}-{max(p99):.1f}), "
            f"new p99 median {statistics.median(new):.1f} ({min(new):.1f}-{max(new):.1f}), "
            f"floor p99 median {statistics.median(floor):.1f} ({min(floor):.1f}-{max(floor):.1f}), "
            f"none beyond the limits in all: {'yes' if all(r['none_beyond_limits'] for r in mine) else 'NO'}"
        )


def report(figures: dict[str, Any]) -> None:
    if "rounds" in figures:
        report_rounds(figures["rounds"])
        return
    r, f = figures["requests"], figures["requests"]["floor"]
    met = "met" if r["p99_ms"] < TARGET_P99_MS else "MISSED"
    print(
        f"{r['requests']} requests from {figures['options']['tokens']} tokens at once: "
        f"{r['per_second']:.0f} answered/s ({r['wall_s']:.2f} s), latency p50 {r['p50_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms (target p99 < {TARGET_P99_MS:g} ms: {met})"
    )
    print(
        f"  floor, as many GET /api/v1/health the same way: {f['per_second']:.0f}/s, "
        f"p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, max {f['max_ms']:.1f} ms"
    )
    print(
        f"  answers by status: {r['statuses']}; new builds {r['accepted_new']}, "
        f"duplicates {r['answered_existing']}"
    )
    kinds = ", ".join(
        f"{kind} ({k['count']}) p50 {k['p50_ms']} / p99 {k['p99_ms']} ms" for kind, k in r["by_kind"].items()
    )
    print(f"  by answer: {kinds} (new: stored before the answer; refused: 429 from memory)")
    print(
        f"  most new builds by one token {r['accepted_most_by_one_token']} (its limit {r['token_limit']}); "
        f"queued afterwards {r['queued_after']} (global cap {r['global_cap']}); Retry-After "
        f"{r['retry_after_s']['min']}-{r['retry_after_s']['max']} s; "
        f"none beyond the limits: {'yes' if r['none_beyond_limits'] else 'NO'}"
    )
    dispatch = figures.get("dispatch")
    if dispatch:
        b, u = dispatch["baseline"], dispatch["under_requests"]
        spans = figures["makespan_s"]
        print(
            "regular dispatch per job, p50 / p99 / max ms: "
            f"baseline {b['p50_ms']} / {b['p99_ms']} / {b['max_ms']}, "
            f"under requests {u['p50_ms']} / {u['p99_ms']} / {u['max_ms']} "
            f"(makespan {spans['baseline']:.1f} s, then {spans['under_requests']:.1f} s)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    own_pid_group()
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    try:
        figures = run(opts)
    except (BenchError, pfx.PrefixError) as exc:
        print(f"bench/testbuilds.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception:
        print(f"bench/testbuilds.py failed:\n{traceback.format_exc()}", file=sys.stderr)
        return 1
    report(figures)
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
