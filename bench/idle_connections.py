"""The controller under idle connections: how long its tiers take to answer.

A real controller with a low open-files limit (as the OpenRC service had
before it set rc_ulimit); for each count of idle connections to the public
tier (each has sent a request line and then nothing), while they are
held: the time to answer GET /api/v1/health (public) and GET
/admin/api/whoami (admin), the descriptors the controller holds, and the
lines its connection layer wrote. Prints figures; asserts nothing.

    .venv/bin/python bench/idle_connections.py
    .venv/bin/python bench/idle_connections.py --idle 0,2000,10000 --fd-limit 1024 --uncapped
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.conns import close_all, connect_many, open_files, with_open_files_limit  # noqa: E402
from support.procs import Controller, http  # noqa: E402

LAYER = ("swarm.controller.web.server", "asyncio", "aiohttp", "Traceback")


def timed(url: str, headers: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    status, _body = http("GET", url, headers=headers)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise SystemExit(f"GET {url}: {status}")
    return elapsed * 1000


def layer_lines(ctl: Controller) -> int:
    return sum(1 for line in ctl.log().splitlines() if any(mark in line for mark in LAYER))


def figures(ms: list[float]) -> str:
    """The first request (right after the flood connected), then all of them."""
    ordered = sorted(ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"first {ms[0]:7.1f}  p50 {statistics.median(ordered):7.1f}  p99 {p99:7.1f}  max {ordered[-1]:7.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--idle", default="0,500,2000,5000", help="counts of idle connections (comma-separated)"
    )
    parser.add_argument("--fd-limit", type=int, default=256, help="the controller's open-files limit")
    parser.add_argument("--rounds", type=int, default=20, help="requests per tier and count")
    parser.add_argument(
        "--uncapped",
        action="store_true",
        help="caps far above the limit: measure the out-of-descriptors path",
    )
    parser.add_argument(
        "--header-timeout", type=float, default=30.0, help="the controller's --http-header-timeout"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.idle.split(",")]

    extra = ["--http-header-timeout", str(args.header_timeout), "--log-level", "info"]
    if args.uncapped:
        extra += ["--http-connections", "100000", "--http-connections-per-address", "100000"]
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp, open_files(max(counts) + 256):
        ctl = Controller(Path(tmp), *extra)
        ctl.args = with_open_files_limit(ctl.args, args.fd_limit)
        ctl.start()
        try:
            key = {"X-Admin-Key": ctl.admin_key}
            print(
                f"{(__doc__ or '').splitlines()[0]}\ncontroller: open-files limit {args.fd_limit}, "
                f"{'caps above it' if args.uncapped else 'default caps'}, "
                f"header timeout {args.header_timeout:g}s; times in ms over {args.rounds} requests"
            )
            head = f"{'idle':>6}  {'connect s':>9}  {'tier':6}  {'answer time':50}"
            print(f"{head}  {'fds':>4}  {'log lines':>9}")
            for count in counts:
                lines_before = layer_lines(ctl)
                started = time.monotonic()
                socks = (
                    connect_many(ctl.info["public_port"], count, send=b"GET / HTTP/1.1\r\n", timeout=120)
                    if count
                    else []
                )
                connected = time.monotonic() - started
                try:
                    public = [timed(ctl.public_url + "/api/v1/health") for _ in range(args.rounds)]
                    admin = [timed(ctl.admin_url + "/admin/api/whoami", key) for _ in range(args.rounds)]
                    fds = len(list(Path(f"/proc/{ctl.pid}/fd").iterdir()))
                finally:
                    close_all(socks)
                written = layer_lines(ctl) - lines_before
                row = f"{count:>6}  {connected:>9.1f}  {'public':6}  {figures(public):50}"
                print(f"{row}  {fds:>4}  {written:>9}")
                print(f"{'':>6}  {'':>9}  {'admin':6}  {figures(admin):50}")
        finally:
            ctl.terminate()


if __name__ == "__main__":
    main()
