"""What a test's controller and agent start costs, started by their command
line (exec) and forked from the harness's zygote (tests/support/zygote.py).

    .venv/bin/python bench/zygote.py              # 7 runs of each, about a minute
    .venv/bin/python bench/zygote.py --runs 3

For each mode, ``--runs`` times: a controller as tests/support/procs.py
starts it, to its ready file, and an agent enrolled to it, until the
controller reports it online. Figures are medians (and minimums) of CPU
seconds, user + system:

- controller, agent: the process's own CPU when ready (online), its
  threads included;
- zygote: what the zygote spent on that start (the fork, its reply);
- zygote preload: each zygote's one-time cost, its imports (paid once per
  program and test process).

CPU moves far less with the machine's load than wall time, which is also
printed (from the start to ready or online). Everything runs on 127.0.0.1
with ports chosen by the kernel, in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import zygote  # noqa: E402 (after the path to tests/)
from support.procs import Agent, Controller, enroll_here, wait_for  # noqa: E402


def cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def zygote_cpu(program: str) -> float:
    found = zygote._zygotes.get(program)
    return cpu(found._proc.pid) if found is not None else 0.0


def one_run(root: Path, figures: dict[str, list[float]], mode: str) -> None:
    ctl_program, agent_program = "swarm.controller.main", "swarm.agent.main"
    zygote_before = zygote_cpu(ctl_program)
    started = time.monotonic()
    ctl = Controller(root, "--ping-interval", "0.5")
    ctl.start()
    figures[f"{mode} controller wall"].append(time.monotonic() - started)
    try:
        figures[f"{mode} controller"].append(cpu(ctl.pid))
        if mode == "fork":
            figures["fork zygote per controller"].append(zygote_cpu(ctl_program) - zygote_before)
        enroll_here(ctl, "bench", root / "agent-bench")
        zygote_before = zygote_cpu(agent_program)
        started = time.monotonic()
        agent = Agent(root, "bench", ctl.grpc_target)
        agent.start()
        try:
            wait_for(lambda: ctl.online("bench"), timeout=60, what="the agent online", interval=0.01)
            figures[f"{mode} agent wall"].append(time.monotonic() - started)
            figures[f"{mode} agent"].append(cpu(agent.pid))
            if mode == "fork":
                figures["fork zygote per agent"].append(zygote_cpu(agent_program) - zygote_before)
        finally:
            agent.kill()
    finally:
        ctl.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="starts of each program in each mode")
    args = parser.parse_args()
    figures: dict[str, list[float]] = defaultdict(list)
    base = Path(tempfile.mkdtemp(prefix="bench-zygote-"))
    try:
        for mode in ("exec", "fork"):
            if mode == "exec":
                os.environ[zygote.EXEC_ENV] = "1"
            else:
                os.environ.pop(zygote.EXEC_ENV, None)
            for run in range(args.runs):
                root = base / f"{mode}-{run}"
                root.mkdir()
                one_run(root, figures, mode)
                if mode == "fork" and run == 0:
                    # The first fork start also paid for the preloading: counted apart.
                    for program in zygote.PRELOAD:
                        figures[f"zygote preload {program}"].append(zygote_cpu(program))
                    figures["fork zygote per controller"].pop()
                    figures["fork zygote per agent"].pop()
    finally:
        zygote.close_all()
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'CPU s (wall s)':<40} {'median':>8} {'min':>8}")
    for name, values in figures.items():
        if values:
            print(f"{name:<40} {statistics.median(values):8.3f} {min(values):8.3f}")
    for program in ("controller", "agent"):
        execed = statistics.median(figures[f"exec {program}"])
        forked = statistics.median(figures[f"fork {program}"]) + statistics.median(
            figures[f"fork zygote per {program}"] or [0.0]
        )
        print(f"saved per {program} start: {execed - forked:.3f} CPU s ({execed:.3f} -> {forked:.3f})")


if __name__ == "__main__":
    main()
