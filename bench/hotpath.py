"""The controller's own periodic work per drone, in-process: what the
heartbeat's hot path costs beside what gRPC does, without gRPC.

A fleet of N drones (stand-in links, no gRPC) on a clock this script
moves: every simulated second each drone beats once, the health monitor
ticks 10 times, the pinger 20 times and the healer 4 times (their real
rates), pongs answer the pings, and every --persist-interval the
NodeWriter writes to a real SQLite file. It prints the CPU time of each part per simulated second,
as % of one core: figures to compare between commits (run it on each),
not a test. The machine's other load barely matters: it times this
process's own CPU (time.process_time).

    .venv/bin/python bench/hotpath.py --drones 600,2000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarm.controller.alerts import Alerter
from swarm.controller.app import heal_settings
from swarm.controller.channel_frames import ChannelRequest
from swarm.controller.config import ControllerConfig
from swarm.controller.domain import CheckData, HeartbeatData, HelloData, PongData
from swarm.controller.events import EventLog
from swarm.controller.fleet import DroneState, Fleet
from swarm.controller.healer import Healer
from swarm.controller.health import HealthMonitor, y_for_phi
from swarm.controller.persist import NodeWriter
from swarm.controller.pinger import Pinger
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore

MONITOR_HZ = 10
PINGER_HZ = 20
HEALER_HZ = 4


class Clock:
    """Time that only this script moves (swarm.clock.Clock)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now

    def time_ns(self) -> int:
        return int(self.now * 1e9)

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        # Only the event ends a wait (the healer's loop waits here for a
        # status change): this clock moves when the script says.
        await event.wait()
        return True


class Link:
    """fleet.Link that takes every message and remembers the latest ping."""

    def __init__(self, drone_id: str) -> None:
        self.drone_id = drone_id
        self.peer = "ipv4:127.0.0.1:1"
        self.pinged: tuple[int, int] | None = None

    def ping(self, seq: int, sent_at_ns: int, answer_within_ms: int = 0) -> bool:
        self.pinged = (seq, sent_at_ns)
        return True

    def start_build(self, job_id: str, build_id: str, cpv: str, timeout_s: int, binhost_url: str) -> bool:
        return True

    def cancel_build(self, build_id: str, reason: str) -> bool:
        return True

    def restart_service(self, reason: str) -> bool:
        return True

    def open_channel(self, channel_id: str, request: ChannelRequest) -> bool:
        return True

    def close(self, code: str, details: str) -> None:
        pass


def timed(totals: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    start = time.process_time()
    result = fn()
    totals[name] = totals.get(name, 0.0) + time.process_time() - start
    return result


async def measure(drones: int, seconds: int, persist_interval: float, data: Path) -> dict[str, float]:
    clock = Clock()
    store = SqlStore(f"sqlite:///{data}/hotpath-{drones}.db")
    runner = StoreRunner(store)
    await runner.open()
    events = EventLog(runner, buffer=100, retention=100)
    fleet = Fleet(events, y_threshold=y_for_phi(8.0), clock=clock)
    monitor = HealthMonitor(fleet, suspect_phi=8.0, offline_after_intervals=10, clock=clock)
    pinger = Pinger(fleet, 5.0, clock)
    writer = NodeWriter(fleet, runner, persist_interval)
    healer = Healer(fleet, events, runner, Alerter(""), heal_settings(ControllerConfig()), clock=clock)
    await healer.start()
    states: list[tuple[DroneState, Link]] = []
    for i in range(drones):
        drone_id = f"{i:032x}"
        hello = HelloData(drone_id, f"d{i:05d}", 4, "lxc", "lan", "bench", 1000, "host", "", "", "i", None)
        link = Link(drone_id)
        states.append((fleet.attach(hello, link), link))
    await writer.flush()
    beat = HeartbeatData(0.5, 0.4, 0.3, 12.5, 40.0, 55.0, 10**11, False, "")
    checks = (CheckData("emerge", True, "Portage 3"), CheckData("cache_disk", True, ""))
    totals: dict[str, float] = {}
    next_persist = clock.now + persist_interval
    for _second in range(seconds):
        for tick in range(PINGER_HZ):
            clock.now += 1 / PINGER_HZ
            timed(totals, "pinger", lambda: pinger.tick(clock.now))
            if tick % (PINGER_HZ // MONITOR_HZ) == 0:
                timed(totals, "monitor", lambda: monitor.check(clock.now))
            if tick % (PINGER_HZ // HEALER_HZ) == 0:
                timed(totals, "healer", lambda: healer.tick(clock.now))
            # Each drone beats once a second, spread over the ticks.
            for state, link in states[tick::PINGER_HZ]:
                timed(totals, "heartbeats", lambda s=state: fleet.on_heartbeat(s, beat))  # type: ignore[misc]
                if link.pinged is not None:
                    seq, sent = link.pinged
                    link.pinged = None
                    pong = PongData(seq, sent, False, "", 0.5, 55.0, 10**11, checks)
                    timed(totals, "pongs", lambda s=state, p=pong: fleet.on_pong(s, p))  # type: ignore[misc]
            if clock.now >= next_persist:
                next_persist += persist_interval
                # Both the event loop's share (building rows) and the database thread's.
                start, wall = time.process_time(), time.perf_counter()
                await writer.flush()
                totals["persist"] = totals.get("persist", 0.0) + time.process_time() - start
                totals["persist (wall)"] = totals.get("persist (wall)", 0.0) + time.perf_counter() - wall
    offline = [s for s, _ in states if s.status != "online"]
    if offline:
        raise SystemExit(f"{len(offline)} drones not online at the end: the simulation is wrong")
    await healer.stop()
    await runner.close()
    return {name: 100 * value / seconds for name, value in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--drones", default="600,2000", help="comma-separated fleet sizes")
    parser.add_argument("--seconds", type=int, default=20, help="simulated seconds per fleet size")
    parser.add_argument("--persist-interval", type=float, default=10.0, help="the controller's default")
    ns = parser.parse_args()
    sizes = [int(n) for n in ns.drones.split(",")]
    with tempfile.TemporaryDirectory(prefix="hotpath-") as tmp:
        results = {n: asyncio.run(measure(n, ns.seconds, ns.persist_interval, Path(tmp))) for n in sizes}
    names = list(dict.fromkeys(name for r in results.values() for name in r))
    print("controller's own work, CPU % of one core per simulated second (no gRPC)")
    print(f"{'':28}" + "".join(f"{n:>10}" for n in sizes))
    for name in names:
        print(f"{name:28}" + "".join(f"{results[n].get(name, 0.0):10.2f}" for n in sizes))
    total = {n: sum(v for k, v in results[n].items() if k != "persist (wall)") for n in sizes}
    print(f"{'total (CPU)':28}" + "".join(f"{total[n]:10.2f}" for n in sizes))


if __name__ == "__main__":
    main()
