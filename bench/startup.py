"""What starting a swarm process costs: the controller to its ready file, the
agent to its control stream, a ``swarm-cli`` call, each program's ``--help``,
and where their import time goes.

    .venv/bin/python bench/startup.py            # 7 runs of each, 2-5 minutes
    .venv/bin/python bench/startup.py --runs 3 --json figures.json

The test suite starts hundreds of these processes, and a drone or a CLI call
pays the same start-up, so this is CPU that every run spends before any
behaviour. Each figure is the median (and the minimum) over ``--runs``:

- CPU: a daemon's own user + system time (its threads included, not its
  children) when it became ready; a command's whole time when it exited
  (an exec'd program included). This is what the suite pays; it moves far
  less with the machine's other load than wall time does.
- wall: from ``Popen`` to ready or exit; it does move with the load.
- import: ``-X importtime`` of the same start, in a separate run (it adds
  overhead of its own): the sum of the modules' own times, split by who
  imports cost (stdlib, grpc, cryptography, aiohttp, ... and swarm's own
  packages), and how many modules were loaded. importtime reads the wall
  clock, so these come from the run with the smallest total.

Everything runs on 127.0.0.1 with ports chosen by the kernel, in a
temporary directory (``--keep`` keeps it, with each process's log).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from harness import PYTHON, BenchError, Children, Controller, env_info, join_tokens, say, wait_until

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
# The checkout's own modules (pyproject's package-dir).
SOURCES = ("common", "agent", "controller", "cli", "protos")
EMERGE = Path(PYTHON).parent / "emerge"
# Portage's emerge script itself (PORTAGE_BIN_PATH of a pip install): the
# venv's bin/emerge above is pip's shim, which starts Python only to exec it.
EMERGE_SCRIPT = Path(PYTHON).parent.parent / "lib" / "portage" / "bin" / "emerge"
# The agent's emerge check runs the emerge command's program with --version at
# start; the tests give their drones this venv's Portage, as here.
EMERGE_COMMAND = f"{PYTHON} {EMERGE} --oneshot --buildpkg --usepkg --getbinpkg"
READY_TIMEOUT = 60.0
CONNECTED_LINE = "connected to controller"


@dataclass
class Figures:
    """Samples of one measured start."""

    cpu: list[float] = field(default_factory=list)  # seconds
    wall: list[float] = field(default_factory=list)
    imports: list[dict[str, float]] = field(default_factory=list)  # group -> seconds
    modules: list[int] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, values in (("cpu_ms", self.cpu), ("wall_ms", self.wall)):
            if values:
                out[name] = {"median": ms(statistics.median(values)), "min": ms(min(values))}
        if self.imports:
            # -X importtime reads the wall clock, so other work on the machine
            # inflates it: the least disturbed run is the one that says most.
            totals = [sum(run.values()) for run in self.imports]
            best = totals.index(min(totals))
            out["import_ms"] = ms(totals[best])
            out["modules"] = self.modules[best]
            out["import_by_group_ms"] = {
                g: ms(v) for g, v in sorted(self.imports[best].items(), key=lambda kv: -kv[1]) if v >= 0.0005
            }
        return out


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# -- -X importtime ---------------------------------------------------------------

STDLIB = frozenset(sys.stdlib_module_names) | {"_frozen_importlib", "_frozen_importlib_external"}


def import_group(module: str) -> str:
    """Who an import's cost belongs to: swarm's own packages one level down,
    the standard library as one, any other distribution by its top package."""
    parts = module.split(".")
    if parts[0] == "swarm":
        return "swarm." + parts[1] if parts[1:2] in (["agent"], ["controller"], ["cli"], ["v1"]) else "swarm"
    if parts[0] in STDLIB or parts[0].lstrip("_") in STDLIB:
        return "stdlib"
    if parts[0] == "google":
        return "protobuf"
    if parts[0].startswith("__editable__"):
        return "editable-install finder"
    return parts[0]


def parse_importtime(stderr: str) -> tuple[dict[str, float], int]:
    """Self time per group (seconds) and the number of modules, from -X importtime lines."""
    groups: dict[str, float] = defaultdict(float)
    count = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = line.removeprefix("import time:").split("|", 2)
        groups[import_group(name.strip())] += int(self_us) / 1e6
        count += 1
    return dict(groups), count


# -- one measured process ----------------------------------------------------------


def cpu_of(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def run_to_exit(argv: Sequence[str], *, importtime: bool = False) -> tuple[float, float, str]:
    """Run a short command; (CPU seconds, wall seconds, stderr). Fails on a non-zero exit."""
    full = [argv[0], "-X", "importtime", *argv[1:]] if importtime else list(argv)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(full, capture_output=True, text=True, timeout=120, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])}... exited with {done.returncode}: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, done.stderr


def measure_exit(figures: Figures, argv: Sequence[str], importtime: bool) -> None:
    cpu, wall, stderr = run_to_exit(argv, importtime=importtime)
    if importtime:
        groups, count = parse_importtime(stderr)
        figures.imports.append(groups)
        figures.modules.append(count)
    else:
        figures.cpu.append(cpu)
        figures.wall.append(wall)


def measure_ready(
    figures: Figures,
    children: Children,
    argv: Sequence[str],
    log: Path,
    ready: Callable[[], bool],
    importtime: bool,
) -> None:
    """Start a daemon, wait until ready() and record its CPU and wall time to
    then (or, with importtime, its imports), and stop it."""
    full = [argv[0], "-X", "importtime", *argv[1:]] if importtime else list(argv)
    start = time.perf_counter()
    proc = children.spawn(full, log=log)

    def alive() -> None:
        if proc.poll() is not None:
            raise BenchError(f"{argv[2]} exited with {proc.returncode}: {tail(log)}")

    try:
        wait_until(f"{argv[2]} ready", ready, READY_TIMEOUT, alive, interval=0.005)
        wall = time.perf_counter() - start
        cpu = cpu_of(proc.pid)
    finally:
        children.stop(proc)
    if importtime:
        groups, count = parse_importtime(log.read_text(errors="replace"))
        figures.imports.append(groups)
        figures.modules.append(count)
    else:
        figures.cpu.append(cpu)
        figures.wall.append(wall)


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- the programs ------------------------------------------------------------------


def controller_argv(data_dir: Path, ready_file: Path) -> list[str]:
    return [
        PYTHON,
        "-m",
        "swarm.controller.main",
        "--data-dir",
        str(data_dir),
        "--bind",
        HOST,
        "--admin-bind",
        HOST,
        "--grpc-port",
        "0",
        "--public-port",
        "0",
        "--admin-port",
        "0",
        "--enroll-port",
        "0",
        "--ready-file",
        str(ready_file),
        "--log-file",
        "",
        "--log-level",
        "info",
    ]


def agent_argv(state_dir: Path, name: str, grpc_target: str, log_file: Path) -> list[str]:
    return [
        PYTHON,
        "-m",
        "swarm.agent.main",
        "--controller",
        grpc_target,
        "--name",
        name,
        "--drone-type",
        "unknown",
        "--state-dir",
        str(state_dir),
        "--cache-path",
        str(state_dir),
        "--pid-file",
        str(state_dir / "agent.pid"),
        "--log-file",
        str(log_file),
        "--log-level",
        "info",
        "--emerge-command",
        EMERGE_COMMAND,
    ]


class Bench:
    def __init__(self, root: Path, runs: int) -> None:
        self.root = root
        self.runs = runs
        self.children = Children()
        self.results: dict[str, Figures] = defaultdict(Figures)
        self._serial = 0

    def fresh(self, what: str) -> Path:
        self._serial += 1
        path = self.root / f"{what}-{self._serial}"
        path.mkdir(parents=True)
        return path

    def interpreter(self, importtime: bool) -> None:
        measure_exit(self.results["python -c pass (the floor)"], [PYTHON, "-c", "pass"], importtime)

    def helps(self, importtime: bool) -> None:
        for program, module in (
            ("swarm-agent", "swarm.agent.main"),
            ("swarm-controller", "swarm.controller.main"),
            ("swarm-cli", "swarm.cli.main"),
        ):
            measure_exit(self.results[f"{program} --help"], [PYTHON, "-m", module, "--help"], importtime)

    def controller(self, importtime: bool) -> None:
        """A first start (CA key, database made) and a second on the same data dir."""
        run = self.fresh("controller")
        ready_file = run / "ready.json"
        argv = controller_argv(run / "data", ready_file)
        for n, label in enumerate(
            ("swarm-controller first start, to ready", "swarm-controller restart, to ready")
        ):
            ready_file.unlink(missing_ok=True)
            log = run / f"controller-{n}.log"
            measure_ready(self.results[label], self.children, argv, log, ready_file.exists, importtime)

    def agent(self, ctl: dict[str, Any], token: str, importtime: bool) -> None:
        """``swarm-agent enroll``, then the agent until its control stream is up."""
        run = self.fresh("agent")
        name = run.name
        grpc_target = f"{HOST}:{ctl['grpc_port']}"
        enroll = [
            PYTHON,
            "-m",
            "swarm.agent.main",
            "enroll",
            "--controller",
            grpc_target,
            "--enroll-address",
            f"{HOST}:{ctl['enroll_port']}",
            "--token",
            token,
            "--ca-pin",
            str(ctl["ca_pin"]),
            "--name",
            name,
            "--state-dir",
            str(run / "state"),
            "--log-file",
            "",
        ]
        measure_exit(self.results["swarm-agent enroll, to exit"], enroll, importtime)
        log_file = run / "agent.log"

        def connected() -> bool:
            return log_file.exists() and CONNECTED_LINE in log_file.read_text(errors="replace")

        argv = agent_argv(run / "state", name, grpc_target, log_file)
        measure_ready(
            self.results["swarm-agent (mTLS), to connected"],
            self.children,
            argv,
            run / "agent.stderr",
            connected,
            importtime,
        )

    def cli(self, ctl: dict[str, Any], importtime: bool) -> None:
        argv = [
            PYTHON,
            "-m",
            "swarm.cli.main",
            "--url",
            f"http://{HOST}:{ctl['admin_port']}",
            "--key-file",
            str(ctl["admin_key_file"]),
            "status",
        ]
        measure_exit(self.results["swarm-cli status, to exit"], argv, importtime)

    def emerge_check(self, importtime: bool) -> None:
        """Both Python processes of bin/emerge (the shim and the script), then the script alone."""
        measure_exit(
            self.results["emerge --version (the agent's emerge check)"],
            [PYTHON, str(EMERGE), "--version"],
            importtime,
        )
        if EMERGE_SCRIPT.exists():
            measure_exit(
                self.results["  the same, Portage's script without pip's shim"],
                [PYTHON, str(EMERGE_SCRIPT), "--version"],
                importtime,
            )

    def run(self) -> None:
        # One controller (mutual TLS, as the agents enroll) serves the agent and
        # CLI runs; it is not itself measured.
        host = Controller(self.children, self.fresh("host"), ping_interval=1.0, tls=True)
        host.start(READY_TIMEOUT)
        ctl = host.info
        tokens = iter(join_tokens(host, 2 * self.runs))
        # Alternate plain and importtime runs, so both see much the same machine.
        for i in range(self.runs):
            say(f"run {i + 1} of {self.runs}")
            for importtime in (False, True):
                self.interpreter(importtime)
                self.helps(importtime)
                self.controller(importtime)
                self.agent(ctl, next(tokens), importtime)
                self.cli(ctl, importtime)
                if EMERGE.exists():
                    self.emerge_check(importtime)
        host.stop()

    def report(self) -> dict[str, Any]:
        return {label: figures.row() for label, figures in self.results.items()}


def bytecode_state() -> dict[str, Any]:
    """How many of the checkout's modules have current bytecode: a process
    compiles the others on every start when PYTHONDONTWRITEBYTECODE is set
    (tests/support/bytecode.py writes them before a test run)."""
    sources = [p for name in SOURCES for p in (ROOT / name).rglob("*.py")]
    current = 0
    for path in sources:
        cached = Path(importlib.util.cache_from_source(str(path)))
        with contextlib.suppress(OSError):
            current += cached.stat().st_mtime >= path.stat().st_mtime
    return {
        "dont_write_bytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
        "modules": len(sources),
        "current_pyc": current,
    }


def print_report(report: dict[str, Any], runs: int, bytecode: dict[str, Any]) -> None:
    print(f"\nStart-up, median (min) of {runs} runs; CPU is the process's own, wall includes waiting.")
    flag = "set" if bytecode["dont_write_bytecode"] else "not set"
    print(
        f"Bytecode: {bytecode['current_pyc']} of the checkout's {bytecode['modules']} modules have a "
        f"current .pyc; PYTHONDONTWRITEBYTECODE is {flag}.\n"
    )
    print(f"{'':52} {'CPU ms':>15} {'wall ms':>15} {'import ms':>10} {'modules':>8}")
    for label, row in report.items():
        cpu = row.get("cpu_ms", {})
        wall = row.get("wall_ms", {})
        print(
            f"{label:52} {_pair(cpu):>15} {_pair(wall):>15} "
            f"{row.get('import_ms', ''):>10} {row.get('modules', ''):>8}"
        )
    print("\nImport time by who imports cost (ms, -X importtime self times, least disturbed run):\n")
    for label, row in report.items():
        groups = row.get("import_by_group_ms")
        if not groups:
            continue
        top = ", ".join(f"{g} {v:g}" for g, v in list(groups.items())[:9])
        print(f"{label}:\n    {top}")


def _pair(value: dict[str, float]) -> str:
    return f"{value['median']:.0f} ({value['min']:.0f})" if value else ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7, help="starts of each program (default 7)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and its logs")
    opts = parser.parse_args()
    if opts.runs < 1:
        parser.error("--runs must be at least 1")
    bytecode = bytecode_state()
    root = Path(tempfile.mkdtemp(prefix="swarm-startup-"))
    bench = Bench(root, opts.runs)
    try:
        bench.run()
    except BenchError as exc:
        sys.exit(f"startup: {exc}")
    finally:
        bench.children.close()
        if opts.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report = bench.report()
    print_report(report, opts.runs, bytecode)
    if opts.json:
        figures = {"env": env_info(), "runs": opts.runs, "bytecode": bytecode, "figures": report}
        opts.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
