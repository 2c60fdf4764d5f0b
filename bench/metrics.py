"""What a scrape of ``/metrics`` costs with N drones. It prints figures; it
is not a test and asserts nothing about timing.

Run from the repository root::

    .venv/bin/python bench/metrics.py                       # 100, 1,000 and 2,000 drones
    .venv/bin/python bench/metrics.py --drones 2000 --scrapes 50

One controller (controller/app.py, ``--insecure``, SQLite in a temporary
directory) runs in this process. Its drones are control streams that
only take what they are sent, each attached with a Hello and one
heartbeat, so that every per-drone figure has its sample. For each fleet
size: the time to collect the figures (on the event loop, which can do
nothing else meanwhile), to render them as text (``generate_latest``; the
handler runs it in a thread), a whole scrape over HTTP from the admin tier
with the key as a bearer token (gzipped, as Prometheus asks), and the size
of the text.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import generate_latest

from swarm.controller.app import Controller
from swarm.controller.config import ControllerConfig
from swarm.controller.metrics import Collected
from swarm.controller.serde import HeartbeatData, HelloData


class Link:
    """A control stream that takes everything and sends nothing back."""

    def __init__(self, drone_id: str) -> None:
        self.drone_id = drone_id
        self.peer = "ipv4:127.0.0.1:1"

    def send(self, message: Any) -> bool:
        return True

    def close(self, code: str, details: str) -> None:
        pass


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(values) * 1e3:7.2f} ms, p95 {p95 * 1e3:7.2f} ms"


async def one_size(root: Path, drones: int, scrapes: int) -> None:
    config = ControllerConfig(
        data_dir=root,
        bind="127.0.0.1",
        admin_bind="127.0.0.1",
        grpc_port=0,
        public_port=0,
        admin_port=0,
        enroll_port=0,
        insecure=True,
        log_file=Path(""),
        # The streams answer no ping and beat once: they stay online for the bench.
        missed_pings=1_000_000,
        heal_grace=3600.0,
    )
    controller = Controller(config)
    ports = await controller.start()
    try:
        fleet = controller.fleet
        for i in range(drones):
            drone_id = f"{i:032x}"
            hello = HelloData(drone_id, f"drone-{i}", 4, "lxc", "lan", "bench", 3_600_000, "host", "", "")
            state = fleet.attach(hello, Link(drone_id), announce=False)
            fleet.on_heartbeat(
                state, HeartbeatData(1, time.time(), 0.5, 0.4, 0.3, 10.0, 20.0, 30.0, 2**30, False, "")
            )
        registry = controller.metrics.registry
        collected: list[float] = []
        rendered: list[float] = []
        for _ in range(scrapes):
            start = time.perf_counter()
            families = Collected(list(registry.collect()))
            collected.append(time.perf_counter() - start)
            start = time.perf_counter()
            text = generate_latest(families)
            rendered.append(time.perf_counter() - start)
        url = f"http://127.0.0.1:{ports.admin}/metrics"
        headers = {"Authorization": f"Bearer {config.admin_key_path.read_text().strip()}"}
        fetched: list[float] = []
        async with aiohttp.ClientSession() as session:
            for _ in range(scrapes):
                start = time.perf_counter()
                async with session.get(url, headers=headers) as response:
                    body = await response.read()
                    assert response.status == 200, body[:200]
                fetched.append(time.perf_counter() - start)
        samples = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
        print(
            f"{drones:5d} drones, {samples:5d} samples, {len(text) / 1024:5.0f} KiB: "
            f"collect (on the loop) {ms(collected)}; render (in a thread) {ms(rendered)}; "
            f"HTTP, gzipped {ms(fetched)}"
        )
    finally:
        await controller.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--drones", default="100,1000,2000", help="fleet sizes, comma-separated")
    parser.add_argument("--scrapes", type=int, default=20, help="scrapes per fleet size")
    args = parser.parse_args()
    for size in (int(n) for n in args.drones.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
            await one_size(Path(tmp), size, args.scrapes)


if __name__ == "__main__":
    asyncio.run(main())
