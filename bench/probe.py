"""A longer outside probe than tests/test_probe.py: schemathesis against both
web tiers of a live controller with two enrolled agents, with a larger
budget of generated requests per operation (tests/support/probe.py).

Prints, per tier, the requests made, how long they took, the count of each
status per operation, and every finding (a 5xx, an answer outside its
documented schema, no answer) with a request that shows it; then the
tracebacks the controller logged. Exits 1 if anything was found.

    .venv/bin/python bench/probe.py                  # 100 examples per operation and mode
    .venv/bin/python bench/probe.py --examples 500 --seed 7 --keep
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))

from support.probe import (  # noqa: E402
    ADMIN_EXCLUDED,
    ADMIN_TARGETS,
    PUBLIC_TARGETS,
    SEED,
    ProbeReport,
    excluding,
    load_schema,
    probe_fleet,
    run_probe,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=100, help="generated requests per operation and mode")
    parser.add_argument("--seed", type=int, default=SEED, help="Hypothesis seed (same seed, same requests)")
    parser.add_argument("--tier", choices=("public", "admin", "both"), default="both")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and the logs")
    return parser.parse_args()


def print_report(tier: str, report: ProbeReport) -> None:
    rate = report.requests / report.seconds if report.seconds else 0.0
    totals = ", ".join(f"{status}: {count}" for status, count in sorted(report.status_totals().items()))
    print(
        f"\n== {tier}: {report.requests} requests in {report.seconds:.1f} s ({rate:.0f}/s), "
        f"{report.repeats} generated repeats not sent; {totals}"
    )
    by_operation: dict[str, Counter[int]] = {}
    for (label, status), count in report.statuses.items():
        by_operation.setdefault(label, Counter())[status] = count
    width = max((len(label) for label in by_operation), default=10)
    for label in sorted(by_operation):
        counts = "  ".join(f"{s}x{n}" for s, n in sorted(by_operation[label].items()))
        print(f"  {label:<{width}}  {counts}")
    if report.findings:
        print(f"\n{len(report.findings)} findings:\n{report.describe_findings(limit=200)}")
    else:
        print("no findings")


def main() -> int:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="swarm-probe-"))
    fleet = probe_fleet(root)
    controller = fleet.controller
    found = 0
    try:
        key = {"X-Admin-Key": controller.admin_key}
        tiers: list[tuple[str, str, Any, dict[str, str], dict[str, dict[str, Any]]]] = []
        if args.tier in ("public", "both"):
            schema = load_schema(controller.public_url + "/api/v1/openapi.json")
            tiers.append(("public", controller.public_url, schema, {}, PUBLIC_TARGETS))
        if args.tier in ("admin", "both"):
            schema = excluding(
                load_schema(controller.admin_url + "/admin/api/openapi.json", key), ADMIN_EXCLUDED
            )
            tiers.append(("admin", controller.admin_url, schema, key, ADMIN_TARGETS))
        print(f"examples {args.examples}, seed {args.seed}, data {root}")
        for tier, url, schema, headers, targets in tiers:
            report = run_probe(
                schema, url, examples=args.examples, seed=args.seed, headers=headers, targets=targets
            )
            print_report(tier, report)
            found += len(report.findings)
        tracebacks = controller.log().count("Traceback")
        print(f"\ncontroller alive: {controller.alive()}, tracebacks in its log: {tracebacks}")
        found += tracebacks + (not controller.alive())
    finally:
        fleet.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
