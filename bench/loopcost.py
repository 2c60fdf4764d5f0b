"""What each callback of a server's event loop cost, from bench/loopcost/.

Run a bench with the servers' loops timed per callback (a diagnostic: see
bench/loopcost/sitecustomize.py), then subtract two of a process's
snapshots, by default from 20 s after it started to 45 s (with
``fleet.py``'s defaults at 2,000 drones: 10 s of connecting, a 5 s warm-up,
then the window):

    LOOPCOST=/tmp/lc PYTHONPATH=bench/loopcost .venv/bin/python bench/fleet.py \\
        --drones 2000 --modes mtls --storm none --no-agent --duration 30
    .venv/bin/python bench/loopcost.py /tmp/lc

It prints each process (by pid) with the callbacks' total, then per
callback: % of one core, calls a second, and CPU per call. The whole
process's CPU moves by points between windows with grpc's own threads; a
callback's share does not, which is what this is for.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

SNAPSHOT_EVERY = 5.0


def load(path: Path) -> dict[str, tuple[int, float]]:
    totals = {}
    for line in path.read_text().splitlines():
        secs, count, name = line.split("\t", 2)
        totals[name] = (int(count), float(secs))
    return totals


def report(prefix: str, pid: str, first: int, last: int, top: int) -> bool:
    paths = {n: Path(f"{prefix}.{pid}.{n}") for n in (first, last)}
    if not all(path.exists() for path in paths.values()):
        return False
    before, after = load(paths[first]), load(paths[last])
    seconds = (last - first) * SNAPSHOT_EVERY
    rows = []
    for name, (count, secs) in after.items():
        count0, secs0 = before.get(name, (0, 0.0))
        rows.append((secs - secs0, count - count0, name))
    rows.sort(reverse=True)
    total = sum(secs for secs, _count, _name in rows)
    print(f"pid {pid}: callbacks {100 * total / seconds:.2f} % of one core over {seconds:g} s")
    for secs, count, name in rows[:top]:
        per_call = 1e6 * secs / count if count else 0.0
        print(f"  {100 * secs / seconds:6.2f} %  {count / seconds:9.1f}/s  {per_call:9.1f} us  {name}")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix", help="the LOOPCOST prefix the bench ran with")
    parser.add_argument("--from", dest="start", type=float, default=20.0, help="seconds after the start")
    parser.add_argument("--seconds", type=float, default=25.0, help="how long a window")
    parser.add_argument("--top", type=int, default=12, help="callbacks per process")
    args = parser.parse_args()
    first = max(1, round(args.start / SNAPSHOT_EVERY))
    last = first + max(1, round(args.seconds / SNAPSHOT_EVERY))
    pids = sorted({Path(p).name.split(".")[-2] for p in glob.glob(f"{glob.escape(args.prefix)}.*.*")})
    if not pids:
        sys.exit(f"loopcost: no snapshots at {args.prefix}.*: run the bench with LOOPCOST and PYTHONPATH")
    shown = [pid for pid in pids if report(args.prefix, pid, first, last, args.top)]
    if not shown:
        sys.exit(f"loopcost: no process lived {last * SNAPSHOT_EVERY:g} s (try --from and --seconds)")


if __name__ == "__main__":
    main()
