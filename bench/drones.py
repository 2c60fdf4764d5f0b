"""Simulated drones: one worker process of ``bench/fleet.py``.

Each drone is what ``swarm.agent.link.ControlLink`` does on the wire,
without the probes: its own gRPC channel (so its own HTTP/2 connection,
as on a real fleet), Hello, wait for Welcome, a heartbeat every interval
(jittered, phase-spread), an answer to every Ping, and a reconnect with the
agent's full-jitter backoff when the stream ends. Like the agent it lists
pong-in-heartbeat: a Ping that allows it is answered in the next heartbeat
(with how long it was held), any other with a Pong at once; ``add`` with
``pongs=true`` makes drones that list no features and answer every Ping
with a Pong, as agents before pong-in-heartbeat did.

The parent drives the worker with JSON lines on stdin and reads one JSON
line per command on stdout; logs go to stderr. Commands:

- ``ping``: liveness.
- ``enroll`` ``drones=[[index, id, name, token], ...]`` ``target=HOST:PORT``
  ``pin=sha256:...`` ``dir=D`` ``concurrency=K``: enroll each drone as the
  agent does (``swarm.agent.credentials.enroll``: pin the CA, new key, CSR,
  the Enroll RPC with its join token), at most K at a time; its key and
  certificate go to ``D/<drone id>/``. Answers how many, and failures.
- ``add`` ``drones=[[index, id, name(, network)], ...]`` ``ramp=S`` [``credentials=D``]
  [``pongs=true``]: start drones (on the network given, else ``lan``), each after a uniform
  random delay in [0, S); with ``credentials``, each connects with mutual
  TLS using the key and certificate in ``D/<drone id>/`` (else plaintext).
- ``stats`` ``since=T``: counters; failures whose attempt started at or
  after T (``time.monotonic``, the same clock in every process) are also
  counted apart.
- ``mark`` ``drone=I`` ``load1=X``: send a heartbeat with load1 X now (and
  keep X); answers the ``time.monotonic()`` just before the write.
- ``cut`` ``drone=I``: close the drone's channel for good (a crash).
- ``silence`` ``drone=I``: stop heartbeats and pongs, keep the stream open
  (a frozen drone); answers when, and when its last heartbeat was sent.
- ``hold``: streams that end from now on wait for ``go`` before they
  reconnect (instead of the backoff): the thundering-herd worst case.
- ``go``: release held drones, all at once.
- ``stop``: close every channel and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from swarm.agent import credentials
from swarm.backoff import Backoff
from swarm.grpcopts import CLIENT_OPTIONS
from swarm.protocol import AGENT_FEATURES
from swarm.v1 import fleet_pb2, gateway_pb2, gateway_pb2_grpc

log = logging.getLogger("bench.drones")

INTERVAL = 1.0
HEARTBEAT_JITTER = 0.05
WELCOME_TIMEOUT = 10.0
# Channels with the same target and arguments share one connection from
# grpc's global subchannel pool; a real drone is its own process, so give
# every simulated drone a pool of its own.
OPTIONS = [*CLIENT_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
DRONE_TYPES = (fleet_pb2.DRONE_TYPE_LXC, fleet_pb2.DRONE_TYPE_QEMU, fleet_pb2.DRONE_TYPE_BARE_METAL)
MAX_FAILURE_LOG = 20_000
# What a write raises when the call has ended under it.
CALL_ENDED = (asyncio.InvalidStateError, grpc.aio.AioRpcError)


class Refused(Exception):
    """The stream ended before Welcome without an error status."""


@dataclass(slots=True)
class Stats:
    heartbeats: int = 0
    pongs: int = 0
    connected: int = 0
    # Attempts that never got a Welcome: (attempt start, category).
    failures: list[tuple[float, str]] = field(default_factory=list)
    failure_counts: Counter[str] = field(default_factory=Counter)
    # Welcomed streams that ended, by status code: counts, and (end, code).
    ended: Counter[str] = field(default_factory=Counter)
    endings: list[tuple[float, str]] = field(default_factory=list)
    # (attempt start, seconds until Welcome) of every session.
    connects: list[tuple[float, float]] = field(default_factory=list)

    def failed(self, started: float, category: str) -> None:
        self.failure_counts[category] += 1
        if len(self.failures) < MAX_FAILURE_LOG:
            self.failures.append((started, category))

    def session_ended(self, outcome: str) -> None:
        self.ended[outcome] += 1
        if len(self.endings) < MAX_FAILURE_LOG:
            self.endings.append((time.monotonic(), outcome))


NOT_LISTENING = "controller not listening"
# What grpc says when a TLS handshake, not the TCP connect, went wrong.
TLS_FAILURE = ("handshake", "ssl", "tls", "certificate", "socket closed")


def category(exc: grpc.aio.AioRpcError, *, tls: bool) -> str:
    details = exc.details() or ""
    lower = details.lower()
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        if "connection refused" in lower:
            return NOT_LISTENING
        if "failed to connect" in lower:
            # A server that closes the socket mid-handshake (a refused client
            # certificate) reads "failed to connect to all addresses" too.
            if tls and any(mark in lower for mark in TLS_FAILURE):
                return f"TLS handshake: {last_error(details)[:60]}"
            return NOT_LISTENING
    return f"{exc.code().name}: {details[:60]}"


def last_error(details: str) -> str:
    """``failed to connect to all addresses; last error: X: ipv4:1.2.3.4:5: why`` -> ``X: why``."""
    _, found, rest = details.partition("last error: ")
    if not found:
        return details
    code, _, why = rest.partition(": ")
    if why.startswith(("ipv4:", "ipv6:")):
        why = why.split(": ", 1)[-1]
    return f"{code}: {why}"


class Drone:
    def __init__(
        self,
        sim: Simulator,
        index: int,
        drone_id: str,
        name: str,
        tls: grpc.ChannelCredentials | None = None,
        network: str = "lan",
        pongs: bool = False,
    ) -> None:
        self.sim = sim
        self.index = index
        # The drone's own key and certificate (mutual TLS), or None: plaintext.
        self.tls = tls
        rng = random.Random(index)
        self.hello = gateway_pb2.AgentMessage(
            hello=fleet_pb2.Hello(
                drone_id=drone_id,
                name=name,
                cores=rng.choice((2, 4, 8, 16, 32)),
                drone_type=DRONE_TYPES[index % len(DRONE_TYPES)],
                network=network,
                agent_version="bench",
                heartbeat_interval_ms=round(INTERVAL * 1000),
                hostname=name,
                features=() if pongs else AGENT_FEATURES,
            )
        )
        # A ping to answer in the next heartbeat, and when it came; when that heartbeat is due.
        self.held: tuple[fleet_pb2.Ping, float] | None = None
        self.next_beat_at = 0.0
        self.load1 = round(rng.uniform(0, 8), 2)
        self.seq = 0
        self.call: grpc.aio.StreamStreamCall | None = None
        self.lock = asyncio.Lock()
        self.silent = False
        self.dead = False
        self.welcomed_at = 0.0
        self.last_beat = 0.0
        self.task: asyncio.Task[None] | None = None

    async def run(self, delay: float) -> None:
        await asyncio.sleep(delay)
        backoff = Backoff()
        attempt = 0
        while not self.dead:
            started = time.monotonic()
            try:
                await self.session(started)
                outcome = "OK"
            except grpc.aio.AioRpcError as exc:
                outcome = category(exc, tls=self.tls is not None)
            except TimeoutError:
                outcome = "no Welcome within 10 s"
            except Refused as exc:
                outcome = f"ended before Welcome: {exc}"
            except Exception as exc:
                log.exception("drone %d: unexpected error", self.index)
                outcome = type(exc).__name__
            welcomed = self.welcomed_at >= started
            if welcomed:
                self.sim.stats.session_ended(outcome.split(":")[0])
            else:
                self.sim.stats.failed(started, outcome)
            if self.dead:
                return
            if welcomed:
                attempt = 0
                hold = self.sim.hold
                if hold is not None:
                    await hold.wait()
                    continue
            await asyncio.sleep(backoff.delay(attempt))
            attempt += 1

    async def session(self, started: float) -> None:
        """One stream from Hello to its end; raises unless it ended with OK."""
        if self.tls is not None:
            channel = grpc.aio.secure_channel(self.sim.target, self.tls, options=OPTIONS)
        else:
            channel = grpc.aio.insecure_channel(self.sim.target, options=OPTIONS)
        async with channel:
            call = gateway_pb2_grpc.DroneGatewayStub(channel).Connect()
            await call.write(self.hello)
            first = await asyncio.wait_for(call.read(), WELCOME_TIMEOUT)
            if first is grpc.aio.EOF:
                await _raise_status(call)
                raise Refused("EOF")
            if first.WhichOneof("body") != "welcome":
                raise Refused(f"got {first.WhichOneof('body')}")
            self.welcomed_at = time.monotonic()
            self.sim.stats.connects.append((started, self.welcomed_at - started))
            self.sim.stats.connected += 1
            self.call = call
            self.held = None
            beats = asyncio.create_task(self.heartbeats(call))
            try:
                while True:
                    message = await call.read()
                    if message is grpc.aio.EOF:
                        break
                    if message.WhichOneof("body") == "ping" and not self.silent:
                        ping = message.ping
                        now = time.monotonic()
                        within = ping.answer_within_ms / 1000
                        if within and self.held is None and self.next_beat_at - now <= within:
                            self.held = (ping, now)
                            continue
                        pong = gateway_pb2.AgentMessage(
                            pong=fleet_pb2.Pong(
                                seq=ping.seq,
                                sent_at_unix_ns=ping.sent_at_unix_ns,
                                status=fleet_pb2.DroneStatus(load1=self.load1),
                            )
                        )
                        # If the call ended under the write, the next read says how.
                        with contextlib.suppress(*CALL_ENDED):
                            async with self.lock:
                                await call.write(pong)
                            self.sim.stats.pongs += 1
            finally:
                self.call = None
                self.sim.stats.connected -= 1
                beats.cancel()
                # A write racing the end of the call fails with InvalidStateError;
                # the reader reports how the call really ended.
                with contextlib.suppress(asyncio.CancelledError, *CALL_ENDED):
                    await beats
            await _raise_status(call)

    async def heartbeats(self, call: grpc.aio.StreamStreamCall) -> None:
        # Phase-spread: a fleet's beats should not line up after a restart.
        next_at = self.next_beat_at = time.monotonic() + random.uniform(0, INTERVAL)
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if not self.silent:
                await self.beat(call)
            jitter = random.uniform(-HEARTBEAT_JITTER, HEARTBEAT_JITTER) * INTERVAL
            next_at = self.next_beat_at = max(next_at + INTERVAL, time.monotonic()) + jitter

    async def beat(self, call: grpc.aio.StreamStreamCall) -> float:
        self.seq += 1
        message = gateway_pb2.AgentMessage(
            heartbeat=fleet_pb2.Heartbeat(
                seq=self.seq,
                sent_at_unix_ns=time.time_ns(),
                load1=self.load1,
                load5=self.load1,
                load15=self.load1,
                cpu_percent=12.5,
                memory_percent=40.0,
                disk_percent=55.0,
                disk_free_bytes=50 << 30,
            )
        )
        held, self.held = self.held, None
        if held is not None:
            ping, since = held
            message.heartbeat.pong.CopyFrom(
                fleet_pb2.Pong(
                    seq=ping.seq,
                    sent_at_unix_ns=ping.sent_at_unix_ns,
                    status=fleet_pb2.DroneStatus(load1=self.load1),
                    held_ns=round((time.monotonic() - since) * 1e9),
                )
            )
            self.sim.stats.pongs += 1
        async with self.lock:
            sent = time.monotonic()
            await call.write(message)
        self.last_beat = sent
        self.sim.stats.heartbeats += 1
        return sent


async def _raise_status(call: grpc.aio.StreamStreamCall) -> None:
    code = await call.code()
    if code != grpc.StatusCode.OK:
        raise grpc.aio.AioRpcError(
            code, await call.initial_metadata(), await call.trailing_metadata(), await call.details()
        )


class Simulator:
    def __init__(self, target: str) -> None:
        self.target = target
        self.drones: dict[int, Drone] = {}
        self.stats = Stats()
        self.hold: asyncio.Event | None = None

    def add(self, specs: list[list[Any]], ramp: float, creds_dir: str | None, pongs: bool = False) -> None:
        for index, drone_id, name, *network in specs:
            tls = None
            if creds_dir is not None:
                creds = credentials.load(Path(creds_dir) / str(drone_id))
                if creds is None or creds.drone_id != drone_id:
                    raise ValueError(f"no credentials for drone {drone_id} in {creds_dir}")
                tls = creds.channel_credentials()
            on = str(network[0]) if network else "lan"
            drone = Drone(self, int(index), str(drone_id), str(name), tls, network=on, pongs=pongs)
            self.drones[drone.index] = drone
            drone.task = asyncio.create_task(drone.run(random.uniform(0, ramp)), name=name)

    async def enroll(
        self, specs: list[list[Any]], target: str, pin: str, creds_dir: str, concurrency: int
    ) -> dict[str, Any]:
        """Enroll drones the agent's way, at most ``concurrency`` at once; their
        credentials go to ``creds_dir/<drone id>/``."""
        gate = asyncio.Semaphore(max(1, concurrency))
        failed: Counter[str] = Counter()

        async def one(drone_id: str, name: str, token: str) -> None:
            async with gate:
                state = Path(creds_dir) / drone_id
                state.mkdir(parents=True, exist_ok=True)
                try:
                    await credentials.enroll(state, drone_id, name, target, token, pin)
                except (credentials.EnrollError, OSError, grpc.aio.AioRpcError) as exc:
                    failed[str(exc)[:80]] += 1

        started = time.monotonic()
        await asyncio.gather(*(one(str(d), str(n), str(t)) for _i, d, n, t in specs))
        return {
            "enrolled": len(specs) - sum(failed.values()),
            "failed": dict(failed),
            "seconds": time.monotonic() - started,
        }

    def report(self, since: float) -> dict[str, Any]:
        s = self.stats
        return {
            "drones": sum(1 for d in self.drones.values() if not d.dead),
            "connected": s.connected,
            "heartbeats": s.heartbeats,
            "pongs": s.pongs,
            "failures": dict(s.failure_counts),
            "failures_since": dict(Counter(cat for t, cat in s.failures if t >= since)),
            "ended": dict(s.ended),
            "ended_since": dict(Counter(code for t, code in s.endings if t >= since)),
            "last_welcome_at": max((d.welcomed_at for d in self.drones.values() if not d.dead), default=0.0),
            "connect_times": [took for t, took in s.connects if t >= since] if since else [],
        }

    async def mark(self, index: int, load1: float) -> dict[str, Any]:
        drone = self.drones[index]
        drone.load1 = load1
        if drone.call is None:
            return {"error": f"drone {index} is not connected"}
        return {"sent": await drone.beat(drone.call)}

    async def cut(self, index: int) -> dict[str, Any]:
        drone = self.drones[index]
        drone.dead = True
        at = time.monotonic()
        if drone.task is not None:
            drone.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drone.task
        return {"at": at}

    def silence(self, index: int) -> dict[str, Any]:
        drone = self.drones[index]
        drone.silent = True
        drone.dead = True  # when the controller gives up on it, it stays away
        return {"at": time.monotonic(), "last_beat": drone.last_beat}

    async def stop(self) -> None:
        for drone in self.drones.values():
            drone.dead = True
            if drone.task is not None:
                drone.task.cancel()
        tasks = [d.task for d in self.drones.values() if d.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=15)

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "ping":
            return {"ok": True}
        if cmd == "add":
            self.add(
                request["drones"],
                float(request.get("ramp", 0)),
                request.get("credentials"),
                bool(request.get("pongs", False)),
            )
            return {"ok": True}
        if cmd == "enroll":
            return await self.enroll(
                request["drones"],
                str(request["target"]),
                str(request["pin"]),
                str(request["dir"]),
                int(request.get("concurrency", 8)),
            )
        if cmd == "stats":
            return self.report(float(request.get("since", 0)))
        if cmd == "mark":
            return await self.mark(int(request["drone"]), float(request["load1"]))
        if cmd == "cut":
            return await self.cut(int(request["drone"]))
        if cmd == "silence":
            return self.silence(int(request["drone"]))
        if cmd == "hold":
            self.hold = asyncio.Event()
            return {"ok": True}
        if cmd == "go":
            if self.hold is not None:
                self.hold.set()
                self.hold = None
            return {"ok": True}
        if cmd == "stop":
            await self.stop()
            return {"ok": True}
        return {"error": f"unknown command {cmd!r}"}


async def serve(target: str) -> None:
    sim = Simulator(target)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            # The bench is gone: stop rather than linger.
            await sim.stop()
            return
        request = json.loads(line)
        try:
            reply = await sim.handle(request)
        except Exception as exc:
            log.exception("command %s failed", request.get("cmd"))
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if request.get("cmd") == "stop":
            return


def main() -> None:
    parser = argparse.ArgumentParser(description="simulated drones (a worker of bench/fleet.py)")
    parser.add_argument("--target", required=True, help="controller gRPC address HOST:PORT")
    parser.add_argument("--worker", type=int, default=0, help="worker number, for logs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format=f"sim-{args.worker} %(levelname)s %(message)s")
    # The bench stops us in order; a Ctrl-C in its terminal is its business.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(serve(args.target))


if __name__ == "__main__":
    main()
