"""Scheduling benchmark: a generated DAG of sleep-timed packages built by a
real controller and N real drones (``swarm-agent`` running real emerge in
Gentoo prefixes), for each N in ``--drones``. It prints figures; it is not
a test and asserts nothing about timing.

Run from the repository root::

    .venv/bin/python bench/schedule.py                       # 1, 2, 4, 8 drones, about 20 minutes
    .venv/bin/python bench/schedule.py --drones 1,2 --packages 8 --sleep-min 2 --sleep-max 4
    .venv/bin/python bench/schedule.py --json figures.json --keep

Per fleet size: the makespan, the lower bound max(critical path, total
work / drones) and efficiency = bound / makespan; dispatch overhead per
job (emerge started - max(deps ready, drone free)) p50/p99/max; and, from
a few packages also emerged directly without the swarm, the swarm's
overhead per package. See ``--help`` and bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import random
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    CpuMeter,
    env_info,
    options_json,
    own_pid_group,
    percentile,
    say,
    wait_api,
)

from swarm.clock import parse_iso

# tools/prefix.py lays out the Gentoo prefixes (as the tests and the demo do).
sys.path.insert(0, str(ROOT / "tools"))
import prefix as pfx

# Targets from the issue.
TARGET_EFFICIENCY = 0.9  # at TARGET_DRONES
TARGET_DRONES = 8
TARGET_DISPATCH_P99_MS = 100.0

CATEGORY = "bench-dag"
VERSION = "1"
VENV_BIN = Path(PYTHON).parent
# What every drone runs, as in tools/demo.py and tests/test_builds.py; the
# agent appends --usepkg-exclude=<cat/pkg> and =<cpv>.
EMERGE_FLAGS = ("--oneshot", "--buildpkg", "--usepkg", "--getbinpkg", "--quiet-build=n")
# The controller's build-time estimate for a package it has never built
# (controller/builds.py DEFAULT_ESTIMATE): a fresh controller ranks jobs by
# the number of packages on the longest chain that waits on them.
CONTROLLER_ESTIMATE = 60.0
DONE = "done"
# How emerge announces each package it builds from source or installs from a binhost.
EXEC_LOG_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO\s+swarm\.agent\.builder: build (b-[0-9a-f]+): emerge =",
    re.MULTILINE,
)
EMERGING_RE = re.compile(r"^>>> Emerging (binary )?\(\d+ of \d+\) (\S+?)::", re.MULTILINE)


# -- the package graph ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Package:
    name: str
    sleep: float  # seconds src_compile sleeps
    deps: tuple[str, ...]  # names of packages in the graph (DEPEND and RDEPEND)
    layer: int

    @property
    def atom(self) -> str:
        return f"{CATEGORY}/{self.name}"

    @property
    def cpv(self) -> str:
        return f"{CATEGORY}/{self.name}-{VERSION}"


def generate_dag(count: int, layers: int, seed: int, sleep_min: float, sleep_max: float) -> list[Package]:
    """A random layered DAG: packages in ``layers`` layers of about equal size;
    each package past the first layer depends on 0-3 earlier ones, one of
    them in the layer just below (so chains run through every layer), the
    others anywhere below, preferring packages many already depend on
    (fan-out); a package with several dependencies is a fan-in."""
    rng = random.Random(seed)
    layers = max(1, min(layers, count))
    width = len(str(count - 1))
    packages: list[Package] = []
    dependents: Counter[str] = Counter()
    for i in range(count):
        layer = i * layers // count
        deps: list[Package] = []
        if layer:
            k = rng.choices((0, 1, 2, 3), weights=(1, 4, 3, 2))[0]
            if k:
                deps.append(rng.choice([p for p in packages if p.layer == layer - 1]))
                pool = [p for p in packages if p.layer < layer and p is not deps[0]]
                while len(deps) < k and pool:
                    pick = rng.choices(pool, weights=[1 + dependents[p.name] for p in pool])[0]
                    pool.remove(pick)
                    deps.append(pick)
        for dep in deps:
            dependents[dep.name] += 1
        sleep = round(rng.uniform(sleep_min, sleep_max), 1)
        packages.append(Package(f"p{i:0{width}d}", sleep, tuple(sorted(d.name for d in deps)), layer))
    return packages


def bottom_levels(
    names: Iterable[str], deps: Mapping[str, Sequence[str]], cost: Callable[[str], float]
) -> dict[str, float]:
    """Each package's own cost plus the longest chain of packages that wait on it
    (the controller's priority, scheduler.critical_paths)."""
    order = topological(names, deps)
    dependents: dict[str, list[str]] = defaultdict(list)
    for name in order:
        for dep in deps[name]:
            dependents[dep].append(name)
    level: dict[str, float] = {}
    for name in reversed(order):
        level[name] = cost(name) + max((level[d] for d in dependents[name]), default=0.0)
    return level


def topological(names: Iterable[str], deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Dependencies first (the generator numbers packages that way already)."""
    done: set[str] = set()
    order: list[str] = []
    for root in names:
        stack = [(root, False)]
        while stack:
            name, expanded = stack.pop()
            if name in done:
                continue
            if expanded:
                done.add(name)
                order.append(name)
            else:
                stack.append((name, True))
                stack.extend((d, False) for d in deps[name] if d not in done)
    return order


def critical_path(durations: Mapping[str, float], deps: Mapping[str, Sequence[str]]) -> float:
    """The longest chain of durations through the DAG."""
    finish: dict[str, float] = {}
    for name in topological(durations, deps):
        finish[name] = durations[name] + max((finish[d] for d in deps[name]), default=0.0)
    return max(finish.values(), default=0.0)


def list_schedule(
    durations: Mapping[str, float],
    deps: Mapping[str, Sequence[str]],
    drones: int,
    priority: Mapping[str, float],
) -> float:
    """Makespan of a list schedule without any overhead: whenever a drone is
    free, the ready package of highest priority starts on it at once."""
    waiting = {name: set(deps[name]) for name in durations}
    dependents: dict[str, list[str]] = defaultdict(list)
    for name, ds in deps.items():
        for dep in ds:
            dependents[dep].append(name)
    ready = [name for name, ds in waiting.items() if not ds]
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        ready.sort(key=lambda name: (-priority[name], name))
        while ready and len(running) < drones:
            name = ready.pop(0)
            heapq.heappush(running, (now + durations[name], name))
        now, name = heapq.heappop(running)
        for other in dependents[name]:
            waiting[other].discard(name)
            if not waiting[other]:
                ready.append(other)
    return now


# -- the overlay -------------------------------------------------------------------

EBUILD = """\
# Generated by bench/schedule.py.

EAPI=8

DESCRIPTION="Scheduling bench: src_compile sleeps {sleep} s"
HOMEPAGE="https://example.invalid/build-swarm"
S="${{WORKDIR}}"

LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64 arm64"
{deps}
src_compile() {{
{checks}\tsleep {sleep} || die
\techo "${{CATEGORY}}/${{PF}}" > "${{PN}}.txt" || die
}}

src_install() {{
\tinsinto /usr/share/{category}
\tdoins "${{PN}}.txt"
}}
"""


def ebuild(package: Package) -> str:
    deps = checks = ""
    if package.deps:
        listed = "".join(f"\t{CATEGORY}/{d}\n" for d in package.deps)
        # Read at build time (DEPEND: the drone must install them first) and
        # needed at run time (RDEPEND), like the fixture overlay's chain.
        deps = f'\nDEPEND="\n{listed}"\nRDEPEND="${{DEPEND}}"\n'
        checks = "".join(
            f"\t[[ -f ${{ESYSROOT}}/usr/share/{CATEGORY}/{d}.txt ]]"
            f' || die "{CATEGORY}/{d} is not installed"\n'
            for d in package.deps
        )
    return EBUILD.format(sleep=f"{package.sleep:g}", deps=deps, checks=checks, category=CATEGORY)


def write_overlay(root: Path, packages: Sequence[Package]) -> Path:
    """A standalone ebuild repository laid out like tests/fixtures/overlay (its
    profiles and licence), with the packages in ``bench-dag/`` and a metadata
    cache, so that no drone's first emerge spends CPU regenerating it."""
    fixture = pfx.OVERLAY
    shutil.copytree(fixture / "profiles", root / "profiles")
    shutil.copytree(fixture / "licenses", root / "licenses")
    (root / "profiles" / "categories").write_text(f"{CATEGORY}\n")
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "layout.conf").write_text(
        "# Generated by bench/schedule.py: standalone, no distfiles, so no Manifests.\n"
        "masters =\nthin-manifests = true\nsign-manifests = false\ncache-formats = md5-dict\n"
    )
    for package in packages:
        folder = root / CATEGORY / package.name
        folder.mkdir(parents=True)
        (folder / f"{package.name}-{VERSION}.ebuild").write_text(ebuild(package))
    # egencache needs a Portage configuration that names the repository.
    cache_prefix = pfx.create_prefix(
        pfx.PrefixConfig(root.parent / "egencache-prefix", pfx.Role.CONTROLLER, repo=root)
    )
    egencache = [PYTHON, str(pfx.find_tool("egencache")), "--update", "--repo", pfx.REPO_NAME]
    done = _run(egencache, pfx.emerge_env(cache_prefix), timeout=300)
    if done.returncode != 0:
        raise BenchError(f"egencache failed: {done.stdout.strip()[-500:]}")
    return root


def _run(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- options ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    drones: list[int]
    packages: int
    layers: int
    seed: int
    sleep_min: float
    sleep_max: float
    direct_sample: int
    build_nice: int
    timeout: float
    online_timeout: float
    progress: float
    keep: bool
    json_path: Path | None


def positive_ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/schedule.py",
        description="Scheduling benchmark: generates an ebuild overlay whose packages only sleep "
        "in src_compile (so the CPU is not what limits the schedule), forming a random DAG, and "
        "for each fleet size N starts a fresh controller on 127.0.0.1 and N real swarm-agent "
        "drones, each running real emerge in its own Gentoo prefix with the controller's "
        "staging binhost for dependencies, queues every package in one session and waits for "
        "it. Prints the makespan, the lower bound max(critical path, total work / N) and "
        "efficiency = bound / makespan, dispatch overhead per job (emerge started - max(its "
        "dependencies ready, its drone free)) p50/p99/max, and the swarm's overhead per "
        "package against running the same emerge directly. 'Started' is the controller's "
        "receipt of the agent's STARTED build event, sent right after emerge is exec'd; "
        "'finished' its receipt of SUCCEEDED, sent after the binary package reached staging. "
        "Prints figures; asserts nothing. Ctrl-C stops every process it started.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--drones",
        type=positive_ints,
        default="1,2,4,8",
        help="comma-separated fleet sizes; each gets a fresh controller, data dir, staging "
        "binhost and drone prefixes",
    )
    parser.add_argument(
        "--packages", type=int, default=20, help="packages in the generated DAG (at most 900)"
    )
    parser.add_argument(
        "--layers",
        type=int,
        default=3,
        help="layers of the DAG: every package past the first layer depends on one in the layer "
        "below (if it has dependencies at all), so the deepest chain has this many packages",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the DAG and the sleep times")
    parser.add_argument(
        "--sleep-min",
        type=float,
        default=15.0,
        help="shortest src_compile sleep, seconds (sleeps are uniform in [min, max])",
    )
    parser.add_argument(
        "--sleep-max",
        type=float,
        default=30.0,
        help="longest src_compile sleep, seconds. Every emerge also costs a few seconds of CPU; "
        "with 8 drones on a 2-core machine, sleeps much shorter than the defaults make the CPU "
        "the limit",
    )
    parser.add_argument(
        "--direct-sample",
        type=int,
        default=3,
        help="packages without dependencies (those with the shortest sleeps) also emerged "
        "directly, one at a time, in a fresh drone-role prefix before any swarm runs: the "
        "baseline for the swarm's overhead per package (0: skip)",
    )
    parser.add_argument(
        "--build-nice",
        type=int,
        default=10,
        metavar="N",
        help="the agents' --build-nice: emerge runs under nice -n N so that the controller and "
        "the agents get the CPU before the emerges they start (default 10, the agent's own "
        "default; 0: not niced). On this machine every drone shares the same CPUs",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds to wait for one fleet size's session to finish before giving up",
    )
    parser.add_argument(
        "--online-timeout", type=float, default=60.0, help="seconds to wait for the drones to come online"
    )
    parser.add_argument(
        "--progress", type=float, default=15.0, help="seconds between progress lines while a session runs"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (overlay, prefixes, data dirs, every process's log "
        "and the build logs); its path is printed",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON here")
    ns = parser.parse_args(argv)
    if not 1 <= ns.packages <= 900:
        # The figures come from single API pages of at most 1,000 builds.
        parser.error("--packages must be 1..900")
    if ns.layers < 1:
        parser.error("--layers must be at least 1")
    if not 0 <= ns.sleep_min <= ns.sleep_max:
        parser.error("need 0 <= --sleep-min <= --sleep-max")
    if ns.direct_sample < 0:
        parser.error("--direct-sample must not be negative")
    if not 0 <= ns.build_nice <= 19:
        parser.error("--build-nice must be 0..19")
    return Options(
        drones=list(dict.fromkeys(ns.drones)),
        packages=ns.packages,
        layers=ns.layers,
        seed=ns.seed,
        sleep_min=ns.sleep_min,
        sleep_max=ns.sleep_max,
        direct_sample=ns.direct_sample,
        build_nice=ns.build_nice,
        timeout=ns.timeout,
        online_timeout=ns.online_timeout,
        progress=ns.progress,
        keep=ns.keep,
        json_path=ns.json,
    )


# -- direct emerge -----------------------------------------------------------------


def emerge_argv(flags: Sequence[str], package: Package) -> list[str]:
    """The agent's command line for one package (agent/builder.py)."""
    return [PYTHON, str(VENV_BIN / "emerge"), *flags, f"--usepkg-exclude={package.atom}", f"={package.cpv}"]


def run_direct(
    children: Children, work: Path, overlay: Path, packages: Sequence[Package], sample: int
) -> dict[str, Any]:
    """The same emerge the agent runs, for a few packages without dependencies,
    one at a time in a fresh drone-role prefix, with no swarm around: wall time
    from exec to exit. No binhost (nothing to fetch: no dependencies), so
    --getbinpkg is left out; the agent's environment otherwise (its own plus
    PORTAGE_OVERRIDE_EPREFIX and NOCOLOR)."""
    leaves = sorted((p for p in packages if not p.deps), key=lambda p: (p.sleep, p.name))[:sample]
    prefix = pfx.create_prefix(pfx.PrefixConfig(work / "prefix", pfx.Role.DRONE, repo=overlay))
    flags = [f for f in EMERGE_FLAGS if f != "--getbinpkg"]
    env_cmd = shutil.which("env") or "/usr/bin/env"
    runs = []
    for package in leaves:
        argv = emerge_argv(flags, package)
        log = work / f"{package.name}.log"
        say(f"direct: emerge ={package.cpv} (sleeps {package.sleep:g} s)")
        started = time.monotonic()
        # env(1) sets the agent's variables: Children has no env parameter, and a
        # process it starts dies with the bench.
        proc = children.spawn(
            [env_cmd, f"PORTAGE_OVERRIDE_EPREFIX={prefix.root}", "NOCOLOR=true", *argv], log=log
        )
        try:
            code = proc.wait(timeout=max(300.0, package.sleep * 4))
        except subprocess.TimeoutExpired:
            children.stop(proc)
            raise BenchError(f"direct emerge of {package.cpv} did not finish; see {log}") from None
        wall = time.monotonic() - started
        children.stop(proc)
        if code != 0:
            raise BenchError(f"direct emerge of {package.cpv} exited with {code}: {tail(log, 3)}")
        runs.append({"cpv": package.cpv, "sleep_s": package.sleep, "wall_s": round(wall, 3)})
    command = shlex.join([PYTHON, str(VENV_BIN / "emerge"), *flags])
    return {"command": f"{command} --usepkg-exclude=CATEGORY/PN =CPV", "runs": runs}


def tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").strip() if path.exists() else ""
    if not text:
        return f"(nothing in {path})"
    return " | ".join(ln.strip() for ln in text.splitlines()[-lines:])


# -- one fleet size --------------------------------------------------------------


@dataclass(slots=True)
class Drone:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


def run_fleet(
    opts: Options,
    children: Children,
    work: Path,
    overlay: Path,
    packages: Sequence[Package],
    n: int,
    *,
    python: str = PYTHON,
) -> dict[str, Any]:
    """A fresh controller and n drones build every package in one session.
    ``python``: the controller's interpreter (another checkout's venv runs
    that checkout's controller; the drones stay this checkout's)."""
    work.mkdir(parents=True)
    ctl_prefix = pfx.create_prefix(pfx.PrefixConfig(work / "ctl-prefix", pfx.Role.CONTROLLER, repo=overlay))
    data = work / "controller"
    data.mkdir()
    controller = Controller(
        children,
        data,
        ping_interval=5.0,
        extra=["--portage-eprefix", str(ctl_prefix.root), "--log-level", "info"],
        python=python,
    )
    ports = controller.start()
    staging = str(controller.info["staging_url"])
    api = wait_api(ports.public)
    admin = Api(ports.admin, timeout=300.0, admin_key=controller.admin_key)
    emerge = shlex.join([PYTHON, str(VENV_BIN / "emerge"), *EMERGE_FLAGS])
    drones = []
    for i in range(n):
        name = f"drone-{i}"
        home = work / name
        state = home / "state"
        state.mkdir(parents=True)
        prefix = pfx.create_prefix(
            pfx.PrefixConfig(home / "prefix", pfx.Role.DRONE, repo=overlay, binhost=staging)
        )
        argv = [
            str(VENV_BIN / "swarm-agent"),
            "--name",
            name,
            "--insecure",
            "--controller",
            f"{HOST}:{ports.grpc}",
            "--state-dir",
            str(state),
            "--cache-path",
            str(state),
            "--portage-eprefix",
            str(prefix.root),
            "--pkgdir",
            str(prefix.pkgdir),
            "--emerge-command",
            emerge,
            "--min-free-disk-mb",
            "64",
            "--build-nice",
            str(opts.build_nice),
            "--log-file",
            "",
            "--log-level",
            "info",
        ]
        log = home / "agent.log"
        drones.append(Drone(name, children.spawn(argv, log=log), log))
    try:
        wait_online(api, controller, drones, opts.online_timeout)
        say(f"{n} drone(s) online; queueing {len(packages)} packages")
        pids = [controller.pid, *(d.proc.pid for d in drones)]
        meter = CpuMeter([controller.pid])
        swarm_cpu = tree_cpu(pids)
        window = time.monotonic()
        status, body = admin.post(
            "/admin/api/queue", {"atoms": [p.atom for p in packages], "session": f"schedule-{n}"}
        )
        if status != 201:
            raise BenchError(f"POST /admin/api/queue answered {status}: {body}")
        session_id = str(body["session"]["id"])
        if body["session"]["total"] != len(packages):
            raise BenchError(f"the session has {body['session']['total']} jobs, expected {len(packages)}")
        session = wait_session(opts, api, controller, drones, session_id, n)
        machine_busy = meter.machine_busy()
        controller_cpu = meter.percent()
        swarm_cpu = tree_cpu(pids) - swarm_cpu
        window = time.monotonic() - window
        jobs = [j for j in get(api, "/api/v1/queue?limit=5000")["jobs"] if j["session_id"] == session_id]
        builds = [
            b for b in get(api, "/api/v1/history?limit=1000")["history"] if b["session_id"] == session_id
        ]
        done_events = get(api, "/api/v1/events?type=job_done&limit=1000")["events"]
    finally:
        api.close()
        admin.close()
        for drone in drones:
            children.stop(drone.proc)
        controller.stop()
    emerge_s = {
        e["data"]["job_id"]: float(e["data"]["duration"])
        for e in done_events
        if isinstance(e.get("data"), dict) and "job_id" in e["data"] and "duration" in e["data"]
    }
    stamps = {
        "sent": sent_times(data / "swarm.db"),
        "exec": exec_times([d.log for d in drones]),
    }
    figures = fleet_figures(packages, n, session, jobs, builds, emerge_s, stamps)
    figures["dependencies"] = dependency_installs(
        [work / d.name / "state" / "builds" for d in drones], builds
    )
    figures["machine_busy_pct"] = round(machine_busy, 1)
    figures["controller_cpu_pct"] = round(controller_cpu, 1)
    figures["swarm_busy_pct"] = round(100.0 * swarm_cpu / (window * (os.cpu_count() or 1)), 1)
    return figures


def tree_cpu(pids: Iterable[int]) -> float:
    """CPU seconds of these processes and all their descendants: the live ones
    and those already reaped (every emerge an agent ran, with its children)."""
    total = 0.0
    for pid in pids:
        try:
            procs = [psutil.Process(pid)]
            procs += procs[0].children(recursive=True)
        except psutil.Error:
            continue
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


def get(api: Api, path: str) -> Any:
    status, body = api.get(path)
    if status != 200:
        raise BenchError(f"GET {path} answered {status}: {body}")
    return body


def check_alive(controller: Controller, drones: Sequence[Drone]) -> None:
    if controller.proc is not None and controller.proc.poll() is not None:
        raise BenchError(f"the controller exited with {controller.proc.returncode}: {controller.log_tail(5)}")
    for drone in drones:
        if drone.proc.poll() is not None:
            raise BenchError(f"{drone.name} exited with {drone.proc.returncode}: {tail(drone.log, 5)}")


def wait_online(api: Api, controller: Controller, drones: Sequence[Drone], timeout: float) -> None:
    want = {d.name for d in drones}
    deadline = time.monotonic() + timeout
    while True:
        check_alive(controller, drones)
        nodes = get(api, "/api/v1/nodes")["nodes"]
        online = {n["name"] for n in nodes if n["status"] == "online"}
        if want <= online:
            return
        if time.monotonic() > deadline:
            missing = sorted(want - online)
            raise BenchError(
                f"{len(missing)} drone(s) not online after {timeout:.0f}s ({', '.join(missing[:4])}): "
                f"{tail(next(d.log for d in drones if d.name == missing[0]), 3)}"
            )
        time.sleep(0.2)


def wait_session(
    opts: Options, api: Api, controller: Controller, drones: Sequence[Drone], session_id: str, n: int
) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + opts.timeout
    next_line = started + opts.progress
    next_check = started
    while True:
        check_alive(controller, drones)
        session = next((s for s in get(api, "/api/v1/sessions")["sessions"] if s["id"] == session_id), None)
        if session is None:
            raise BenchError(f"session {session_id} is gone from /api/v1/sessions")
        counts = session["jobs"]
        now = time.monotonic()
        if counts.get("failed") or counts.get("cancelled") or now >= next_check:
            # A package that only sleeps must not fail: stop at the first failed
            # attempt (the controller would retry it on another drone, or with
            # one drone wait for ever for another).
            next_check = now + 2.0
            failure = first_failure(api, session_id)
            if failure:
                raise BenchError(f"{n} drone(s): {failure}")
        if session["state"] == "complete":
            return dict(session)
        if now >= next_line:
            next_line = now + opts.progress
            say(
                f"{n} drone(s), {now - started:.0f}s: {counts['done']}/{session['total']} done, "
                f"{counts['building'] + counts['assigned']} building, {counts['queued']} ready, "
                f"{counts['blocked']} waiting on dependencies"
            )
        if now > deadline:
            raise BenchError(f"{n} drone(s): the session did not finish in {opts.timeout:.0f}s ({counts})")
        time.sleep(0.5)


def first_failure(api: Api, session_id: str) -> str | None:
    """The first failed or cancelled build attempt of the session, with its job's
    reason (Portage's ERROR line) or else the attempt's own; None if there is none."""
    builds = get(api, "/api/v1/history?limit=1000")["history"]
    bad = [b for b in builds if b["session_id"] == session_id and b["state"] not in (DONE, "refused")]
    jobs = {j["id"]: j for j in get(api, "/api/v1/queue?limit=5000")["jobs"] if j["session_id"] == session_id}
    for job in jobs.values():
        if job["state"] in ("failed", "cancelled"):
            return f"{job['cpv']} {job['state']}: {job['reason']}"
    if not bad:
        return None
    first = min(bad, key=lambda b: b["finished_at"] or "")
    job = jobs.get(first["job_id"])
    if job and job["reason"].startswith("failed on"):
        return f"{first['package']} {job['reason']}"
    return f"{first['cpv']} {first['state']} on {first['drone']}: {first['reason'].strip()[-400:]}"


def dependency_installs(log_dirs: Sequence[Path], builds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How the drones got the dependencies they lacked, from their build logs:
    a binary package from staging ("Emerging binary"), or built again from
    source (its package was in staging, since the job was ready, but emerge
    did not use it)."""
    target = {b["build_id"]: b["cpv"] for b in builds}
    fetched = 0
    rebuilt: list[str] = []
    for folder in log_dirs:
        for log in sorted(folder.glob("b-*.log")):
            cpv = target.get(log.stem)
            if cpv is None:
                continue
            for binary, what in EMERGING_RE.findall(log.read_text(errors="replace")):
                if what == cpv:
                    continue
                if binary:
                    fetched += 1
                else:
                    rebuilt.append(f"{what} (building {cpv})")
    return {"from_staging": fetched, "rebuilt": len(rebuilt), "rebuilt_examples": rebuilt[:10]}


def exec_times(logs: Sequence[Path]) -> dict[str, float]:
    """When each agent had emerge running (fork and exec done), from its log line
    ``build B: emerge =CPV (pid P)`` (local time, millisecond resolution), just
    before it sends STARTED. Empty if the agent logs otherwise."""
    found: dict[str, float] = {}
    for log in logs:
        if not log.exists():
            continue
        for stamp, build_id in EXEC_LOG_RE.findall(log.read_text(errors="replace")):
            found[build_id] = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return found


def sent_times(db: Path) -> dict[str, float]:
    """When the controller sent each build's StartBuild: the public API does not
    show it, the controller's SQLite database (read once the controller has
    stopped and flushed) does, as the build's created_at. Empty if unreadable."""
    if not db.exists():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return {row[0]: float(row[1]) for row in conn.execute("SELECT id, created_at FROM build")}
    except sqlite3.Error as exc:
        say(f"cannot read StartBuild times from {db}: {exc}")
        return {}


# -- figures -----------------------------------------------------------------------


def ts(text: str | None) -> float | None:
    return None if text is None else parse_iso(text)


def ms_stats(values: Sequence[float]) -> dict[str, Any]:
    """p50, p99 and max of seconds, in milliseconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {
        "count": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(max(values, default=None)),
    }


def fleet_figures(
    packages: Sequence[Package],
    n: int,
    session: Mapping[str, Any],
    jobs: Sequence[Mapping[str, Any]],
    builds: Sequence[Mapping[str, Any]],
    emerge_s: Mapping[str, float],
    stamps: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
    by_name = {p.cpv: p for p in packages}
    deps = {p.name: p.deps for p in packages}
    job_by_cpv = {j["cpv"]: j for j in jobs}
    missing = sorted(set(by_name) - set(job_by_cpv))
    if missing:
        raise BenchError(f"{len(missing)} packages have no job: {', '.join(missing[:3])}")
    # Every attempt occupied its drone, successful or not.
    attempts: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for b in builds:
        start, end = ts(b["started_at"]), ts(b["finished_at"])
        if start is not None and end is not None:
            attempts[b["drone"]].append((start, end, b["build_id"]))
    done = {b["job_id"]: b for b in builds if b["state"] == DONE}

    per_job: dict[str, dict[str, Any]] = {}
    for cpv, job in job_by_cpv.items():
        name = by_name[cpv].name
        build = done.get(job["id"])
        ready, started, finished = ts(job["ready_at"]), ts(job["started_at"]), ts(job["finished_at"])
        if build is None or ready is None or started is None or finished is None:
            raise BenchError(f"{cpv}: no finished build on record ({job['state']}: {job['reason']})")
        # The drone became free when its previous build ended (one build slot per drone).
        free = max(
            (
                end
                for start, end, bid in attempts[build["drone"]]
                if end <= started and bid != build["build_id"]
            ),
            default=None,
        )
        eligible = max(ready, free) if free is not None else ready
        row: dict[str, Any] = {
            "cpv": cpv,
            "drone": build["drone"],
            "sleep_s": by_name[cpv].sleep,
            "ready": ready,
            "drone_free": free,
            "eligible": eligible,
            "started": started,
            "finished": finished,
            "build_s": float(build["duration_s"]),
            "dispatch_s": started - eligible,
            "emerge_s": emerge_s.get(job["id"]),
            "attempts": job["attempts"],
        }
        sent, execed = stamps["sent"].get(build["build_id"]), stamps["exec"].get(build["build_id"])
        if sent is not None and execed is not None:
            row.update(sent=sent, execed=execed)
            row["leg_controller_s"] = sent - eligible
            row["leg_agent_s"] = execed - sent
            row["leg_back_s"] = started - execed
        per_job[name] = row

    start = ts(session["started_at"]) or min(r["ready"] for r in per_job.values())
    end = max(r["finished"] for r in per_job.values())
    makespan = end - start
    durations = {name: r["build_s"] for name, r in per_job.items()}
    sleeps = {p.name: p.sleep for p in packages}
    work = sum(durations.values())
    cp = critical_path(durations, deps)
    bound = max(cp, work / n)
    nominal_cp = critical_path(sleeps, deps)
    nominal_bound = max(nominal_cp, sum(sleeps.values()) / n)
    ideal = list_schedule(durations, deps, n, bottom_levels(durations, deps, durations.__getitem__))
    ranked = list_schedule(
        durations, deps, n, bottom_levels(durations, deps, lambda _name: CONTROLLER_ESTIMATE)
    )
    dispatch = [r["dispatch_s"] for r in per_job.values()]
    busy: dict[str, float] = defaultdict(float)
    for drone, spans in attempts.items():
        busy[drone] += sum(e - s for s, e, _ in spans)
    figures: dict[str, Any] = {
        "drones": n,
        "session_started_at": session["started_at"],
        "makespan_s": round(makespan, 3),
        "work_s": round(work, 3),
        "critical_path_s": round(cp, 3),
        "bound_s": round(bound, 3),
        "efficiency": round(bound / makespan, 4) if makespan > 0 else None,
        "nominal_critical_path_s": round(nominal_cp, 3),
        "nominal_bound_s": round(nominal_bound, 3),
        "nominal_efficiency": round(nominal_bound / makespan, 4) if makespan > 0 else None,
        "list_schedule_s": round(ideal, 3),
        "list_schedule_controller_priority_s": round(ranked, 3),
        "dispatch": ms_stats(dispatch),
        "retries": sum(r["attempts"] - 1 for r in per_job.values()),
        "utilisation": {d: round(b / makespan, 3) for d, b in sorted(busy.items())} if makespan > 0 else {},
        "jobs": {
            name: {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
            for name, row in sorted(per_job.items())
        },
    }
    # Jobs ready at the start, each on a drone that had built nothing yet: the
    # controller sends them all at once and every drone starts emerge together.
    first = [r for r in per_job.values() if r["drone_free"] is None and r["ready"] - start < 0.01]
    rest = [r for r in per_job.values() if r not in first]
    figures["dispatch_first_wave"] = ms_stats([r["dispatch_s"] for r in first])
    figures["dispatch_rest"] = ms_stats([r["dispatch_s"] for r in rest])
    if all("sent" in r for r in per_job.values()):
        for leg in ("controller", "agent", "back"):
            figures[f"dispatch_{leg}"] = ms_stats([r[f"leg_{leg}_s"] for r in per_job.values()])
    slowest = max(per_job.values(), key=lambda r: r["dispatch_s"])
    figures["dispatch_slowest"] = {
        "cpv": slowest["cpv"],
        "drone": slowest["drone"],
        "ms": round(slowest["dispatch_s"] * 1000, 1),
        "waited_for": "its drone" if slowest["drone_free"] == slowest["eligible"] else "its dependencies",
    }
    return figures


def overhead_figures(direct: Mapping[str, Any], fleet: Mapping[str, Any]) -> dict[str, Any] | None:
    """The swarm against the direct emerge, for the sampled packages."""
    runs = direct.get("runs") or []
    jobs = fleet.get("jobs") or {}
    rows = []
    for run in runs:
        name = run["cpv"].split("/", 1)[1].rsplit("-", 1)[0]
        job = jobs.get(name)
        if job is None:
            continue
        rows.append((run, job))
    if not rows:
        return None

    def mean(values: Iterable[float]) -> float:
        items = list(values)
        return sum(items) / len(items)

    direct_s = mean(r["wall_s"] for r, _ in rows)
    build_s = mean(j["build_s"] for _, j in rows)
    to_done_s = mean(j["finished"] - j["eligible"] for _, j in rows)
    emerge = [j["emerge_s"] for _, j in rows if j.get("emerge_s") is not None]
    fixed_direct = mean(r["wall_s"] - r["sleep_s"] for r, _ in rows)
    return {
        "sample": [r["cpv"] for r, _ in rows],
        "direct_s": round(direct_s, 3),
        "build_s": round(build_s, 3),
        "build_overhead_s": round(build_s - direct_s, 3),
        "build_ratio": round(build_s / direct_s, 3),
        "eligible_to_done_s": round(to_done_s, 3),
        "eligible_to_done_overhead_s": round(to_done_s - direct_s, 3),
        "eligible_to_done_ratio": round(to_done_s / direct_s, 3),
        "agent_emerge_s": round(mean(emerge), 3) if len(emerge) == len(rows) else None,
        # Every package (dependencies fetched and installed too), beyond its sleep.
        "all_build_minus_sleep_s": round(mean(j["build_s"] - j["sleep_s"] for j in jobs.values()), 3),
        "direct_minus_sleep_s": round(fixed_direct, 3),
    }


# -- report --------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def report(results: Mapping[str, Any], opts: Options) -> str:
    env = results["env"]
    dag = results.get("dag") or {}
    lines = [
        f"Build Swarm scheduling benchmark: {env['cpus']} CPUs, Python {env['python']}. "
        "'!' marks a missed target.",
    ]
    lines.append(f"The drones ran emerge under nice -n {opts.build_nice} (--build-nice).")
    if dag:
        lines.append(
            f"DAG (seed {opts.seed}): {dag['packages']} packages in {dag['layers']} layers, "
            f"{dag['edges']} dependencies, {dag['sources']} without dependencies, deepest chain "
            f"{dag['depth']} packages; sleeps {opts.sleep_min:g}-{opts.sleep_max:g} s, "
            f"{dag['sleep_total_s']:.0f} s in all, {dag['sleep_critical_path_s']:.0f} s on the critical path."
        )
    lines.append(
        "started = the controller received the agent's STARTED build event (sent right after "
        "emerge is exec'd); finished = it received SUCCEEDED (sent once the binary package is "
        "in staging). A job's work is its build, started to finished."
    )
    fleets = results["fleets"]
    if fleets:
        lines += ["", f"Makespan (target: efficiency >= {TARGET_EFFICIENCY} at {TARGET_DRONES} drones)"]
        lines.append(
            f"{'drones':>6} {'makespan':>9} {'work':>8} {'crit.path':>9} {'bound':>8} {'eff':>6}"
            f" {'nom.bound':>9} {'nom.eff':>7} {'sim.ideal':>9} {'sim.ctl':>8} {'busy':>5} {'swarm':>5}"
            f" {'ctl cpu':>7}"
        )
        for f in fleets:
            mark = "!" if f["drones"] == TARGET_DRONES and (f["efficiency"] or 0) < TARGET_EFFICIENCY else " "
            lines.append(
                f"{f['drones']:>6} {f['makespan_s']:>8.1f}s {f['work_s']:>7.1f}s"
                f" {f['critical_path_s']:>8.1f}s"
                f" {f['bound_s']:>7.1f}s {fmt(f['efficiency'], '.3f'):>5}{mark}"
                f" {f['nominal_bound_s']:>8.1f}s {fmt(f['nominal_efficiency'], '.3f'):>7}"
                f" {f['list_schedule_s']:>8.1f}s {f['list_schedule_controller_priority_s']:>7.1f}s"
                f" {f['machine_busy_pct']:>4.0f}% {f['swarm_busy_pct']:>4.0f}%"
                f" {f['controller_cpu_pct']:>6.1f}%"
            )
        lines += [
            "  bound = max(crit.path, work / drones) with measured build times; eff = bound / makespan.",
            "  nom.* = the same from the sleeps alone (what emerge and the swarm add counts against it).",
            "  sim.ideal / sim.ctl = makespan of an overhead-free list schedule of the measured builds,",
            "  ranked by critical path of measured times / by the controller's ranking (60 s a package).",
            "  busy = the whole machine, swarm = the controller, the agents and their emerges (% of all",
            "  CPUs; busy well above swarm: something else ran too); ctl cpu = the controller, % of one CPU.",
            "",
            f"Dispatch overhead: started - max(dependencies ready, drone free) (target: p99 < "
            f"{TARGET_DISPATCH_P99_MS:.0f} ms)",
            f"{'drones':>6} {'jobs':>5} {'p50':>8} {'p99':>8} {'max':>8}   {'slowest':<22}"
            f" {'first wave':>16} {'the rest':>20}",
        ]
        for f in fleets:
            d = f["dispatch"]
            mark = "!" if (d["p99_ms"] or 0) > TARGET_DISPATCH_P99_MS else " "
            slow = f["dispatch_slowest"]
            first, rest = f["dispatch_first_wave"], f["dispatch_rest"]
            rest_text = f"{fmt(rest['p50_ms'], '.0f')}/{fmt(rest['max_ms'], '.0f', 'ms')}"
            lines.append(
                f"{f['drones']:>6} {d['count']:>5} {fmt(d['p50_ms'], '.1f', 'ms'):>8}"
                f" {fmt(d['p99_ms'], '.1f', 'ms'):>8}{mark}{fmt(d['max_ms'], '.1f', 'ms'):>8}   "
                f"{slow['cpv'].split('/')[1] + ' on ' + slow['drone']:<22}"
                f" {first['count']:>3} max {fmt(first['max_ms'], '.0f', 'ms'):>6}"
                f" {rest['count']:>3} p50/max {rest_text:<8}"
            )
        lines += [
            "  first wave = the jobs ready at the start, sent to idle drones all at once; the rest =",
            "  jobs made ready by a finished dependency or waiting for their drone's previous build.",
            "",
            "Where the dispatch time goes, p50 / p99 / max in ms: controller = ready or free ->",
            "StartBuild sent (from its database); agent = StartBuild sent -> emerge forked and exec'd",
            "(the agent's log line); back = then -> STARTED stamped by the controller.",
            f"{'drones':>6} {'controller':>18} {'agent':>18} {'back':>18}",
        ]
        for f in fleets:
            if "dispatch_controller" not in f:
                lines.append(f"{f['drones']:>6}   (no StartBuild or exec times found)")
                continue
            legs = [triple(f[f"dispatch_{leg}"]) for leg in ("controller", "agent", "back")]
            lines.append(f"{f['drones']:>6} {legs[0]:>18} {legs[1]:>18} {legs[2]:>18}")
        retries = [f"{f['drones']}: {f['retries']}" for f in fleets if f["retries"]]
        if retries:
            lines.append(f"  retried builds (drones: count): {', '.join(retries)}")
    direct = results.get("direct")
    if direct and direct.get("runs"):
        runs = direct["runs"]
        mean_wall = sum(r["wall_s"] for r in runs) / len(runs)
        lines += [
            "",
            f"Swarm overhead per package, against the same emerge run directly ({len(runs)} package(s) "
            f"without dependencies, mean {mean_wall:.1f} s each):",
            f"  {direct['command']}",
            f"{'drones':>6} {'direct':>7} {'build':>7} {'overhead':>9} {'ratio':>6}"
            f" {'elig->done':>10} {'overhead':>9} {'ratio':>6} {'emerge':>7} {'all: build-sleep':>17}",
        ]
        for f in fleets:
            o = f.get("overhead")
            if not o:
                continue
            lines.append(
                f"{f['drones']:>6} {o['direct_s']:>6.1f}s {o['build_s']:>6.1f}s"
                f" {o['build_overhead_s']:>+8.2f}s"
                f" {o['build_ratio']:>6.2f} {o['eligible_to_done_s']:>9.1f}s"
                f" {o['eligible_to_done_overhead_s']:>+8.2f}s {o['eligible_to_done_ratio']:>6.2f}"
                f" {fmt(o['agent_emerge_s'], '.1f', 's'):>7}"
                f" {o['all_build_minus_sleep_s']:>7.1f}s (direct {o['direct_minus_sleep_s']:.1f}s)"
            )
        lines += [
            "  build = started -> finished in the swarm; elig->done = max(ready, drone free) -> finished",
            "  (dispatch included); emerge = the agent's own emerge time (exec to exit, before the upload).",
            "  all: build-sleep = every package's build beyond its sleep, dependencies fetched from",
            "  staging and installed included; direct = the same for the direct runs.",
        ]
    if fleets:
        lines += [
            "",
            "Dependencies a drone lacked, from the build logs: installed as binary packages from",
            "staging, or built again from source although staging had them ('!': the drone's",
            "emerge did not see them in the staging index; 'rebuilt' builds take longer).",
            f"{'drones':>6} {'from staging':>12} {'rebuilt':>8}",
        ]
        for f in fleets:
            dep = f["dependencies"]
            mark = "!" if dep["rebuilt"] else " "
            example = f"   e.g. {dep['rebuilt_examples'][0]}" if dep["rebuilt_examples"] else ""
            lines.append(f"{f['drones']:>6} {dep['from_staging']:>12} {dep['rebuilt']:>8}{mark}{example}")
    return "\n".join(lines)


def triple(stats: Mapping[str, Any]) -> str:
    return f"{fmt(stats['p50_ms'])} / {fmt(stats['p99_ms'])} / {fmt(stats['max_ms'])}"


def dag_summary(packages: Sequence[Package]) -> dict[str, Any]:
    deps = {p.name: p.deps for p in packages}
    sleeps = {p.name: p.sleep for p in packages}
    return {
        "packages": len(packages),
        "layers": max(p.layer for p in packages) + 1,
        "edges": sum(len(p.deps) for p in packages),
        "sources": sum(1 for p in packages if not p.deps),
        "depth": round(critical_path(dict.fromkeys(deps, 1.0), deps)),
        "sleep_total_s": round(sum(sleeps.values()), 1),
        "sleep_critical_path_s": round(critical_path(sleeps, deps), 1),
        "graph": {p.name: {"sleep_s": p.sleep, "deps": list(p.deps), "layer": p.layer} for p in packages},
    }


# -- main ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    own_pid_group()
    packages = generate_dag(opts.packages, opts.layers, opts.seed, opts.sleep_min, opts.sleep_max)
    results: dict[str, Any] = {
        "env": env_info(),
        "options": options_json(opts),
        "dag": dag_summary(packages),
        "direct": None,
        "fleets": [],
    }
    children = Children()
    tmp = Path(tempfile.mkdtemp(prefix="swarm-schedule-"))
    code = 0
    began = time.monotonic()
    try:
        say(f"writing the overlay ({len(packages)} packages) in {tmp}")
        overlay = write_overlay(tmp / "overlay", packages)
        if opts.direct_sample:
            results["direct"] = run_direct(children, tmp / "direct", overlay, packages, opts.direct_sample)
        for n in opts.drones:
            say(f"{n} drone(s): starting a controller and {n} agent(s)")
            figures = run_fleet(opts, children, tmp / f"drones-{n}", overlay, packages, n)
            if results["direct"]:
                figures["overhead"] = overhead_figures(results["direct"], figures)
            results["fleets"].append(figures)
            say(
                f"{n} drone(s): makespan {figures['makespan_s']:.1f}s, "
                f"efficiency {fmt(figures['efficiency'], '.3f')}, "
                f"dispatch p99 {fmt(figures['dispatch']['p99_ms'])} ms"
            )
    except (BenchError, pfx.PrefixError) as exc:
        results["error"] = str(exc)
        code = 1
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        code = 130
    except Exception:
        say(f"bench failed:\n{traceback.format_exc()}")
        code = 1
    finally:
        children.close()
        if opts.keep or code == 1:
            say(f"kept {tmp} (logs: drones-N/controller/controller.log, drones-N/drone-I/agent.log)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["wall_s"] = round(time.monotonic() - began, 1)
    if results["fleets"] or results["direct"]:
        print(report(results, opts))
        print(f"Total wall time {results['wall_s']:.0f} s.")
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(results, indent=2) + "\n")
        say(f"figures written to {opts.json_path}")
    if "error" in results:
        print(f"error: {results['error']}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
