"""The floor under the controller: a bare grpc.aio DroneGateway for ``bench/fleet.py``.

It serves the same proto with the controller's server options, in its
gRPC environment (``harness.BareServer`` starts it so) and, with
``--tls-dir``, mutual TLS as the controller does (a server certificate of
the controller's CA, client certificates required). It answers each Hello
with a Welcome (the simulated drones wait for one before they beat) and
then only reads the stream: no pings, no state, no log. What the
controller costs beyond this per drone is what its own work costs.

With ``--ping-interval S`` it also pings every stream every S seconds (at a
random phase, from one loop, each write in a task of its own while it
runs: what the controller's pinger and writers do at the least) and reads
the pongs: the floor of a gateway that must prove its drones alive. Not
the default floor: bench/fleet.py prints it beside the other with
``--bare-pings``.

It runs on Python's own asyncio loop, what a bare grpc.aio server gets;
with ``--event-loop uvloop`` on the loop the controller runs on by
default: the floor of the same loop (bench/fleet.py ``--bare-uvloop``).

It writes ``{"port": N}`` to ``--ready-file`` once it listens, and stops
on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import signal
import time
from pathlib import Path
from typing import Any

import grpc

from swarm.controller.eventloop import EVENT_LOOPS, loop_runner
from swarm.grpcopts import SERVER_OPTIONS
from swarm.v1 import fleet_pb2, gateway_pb2, gateway_pb2_grpc

log = logging.getLogger("bench.bare")

# Files in --tls-dir (written by bench/fleet.py from the controller's CA).
SERVER_KEY, SERVER_CHAIN, CLIENT_CA = "server.key", "server.pem", "ca.pem"


PING_TICK = 0.05


class BareGateway(gateway_pb2_grpc.DroneGatewayServicer):
    def __init__(self, ping_interval: float = 0.0) -> None:
        self.streams = 0
        self.messages = 0
        self.ping_interval = ping_interval
        # The streams to ping, and when each is next due.
        self.due: dict[grpc.aio.ServicerContext, float] = {}
        self.writes: set[asyncio.Task[None]] = set()
        self.seq = 0

    async def ping(self) -> None:
        """Ping the streams whose ping is due, every PING_TICK."""
        while True:
            await asyncio.sleep(PING_TICK)
            now = time.monotonic()
            for context, at in list(self.due.items()):
                if at > now:
                    continue
                self.due[context] = now + self.ping_interval
                self.seq += 1
                ping = fleet_pb2.Ping(seq=self.seq, sent_at_unix_ns=time.time_ns())
                write = asyncio.create_task(context.write(gateway_pb2.ControllerMessage(ping=ping)))
                self.writes.add(write)
                write.add_done_callback(self.writes.discard)

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        hello = await context.read()
        if hello is grpc.aio.EOF:
            return
        await context.write(
            gateway_pb2.ControllerMessage(welcome=fleet_pb2.Welcome(drone_id=hello.hello.drone_id))
        )
        del hello  # nothing of it is kept for the stream's life, as in the controller
        self.streams += 1
        if self.ping_interval:
            self.due[context] = time.monotonic() + random.uniform(0.0, self.ping_interval)
        try:
            while await context.read() is not grpc.aio.EOF:
                self.messages += 1
        finally:
            self.due.pop(context, None)
            self.streams -= 1


async def serve(
    port: int, ready_file: Path, tls: tuple[bytes, bytes, bytes] | None, ping_interval: float = 0.0
) -> None:
    """Serve until SIGTERM or SIGINT; ``tls`` is (key, chain, client CA)."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    gateway = BareGateway(ping_interval)
    gateway_pb2_grpc.add_DroneGatewayServicer_to_server(gateway, server)
    address = f"127.0.0.1:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        key, chain, client_ca = tls
        credentials = grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=client_ca, require_client_auth=True
        )
        bound = server.add_secure_port(address, credentials)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    pinger = asyncio.create_task(gateway.ping()) if ping_interval else None
    await asyncio.to_thread(ready_file.write_text, json.dumps({"port": bound}))
    await stop.wait()
    if pinger is not None:
        pinger.cancel()
        await asyncio.gather(pinger, return_exceptions=True)
    await server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description="a bare grpc.aio DroneGateway (the floor of bench/fleet.py)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument(
        "--ready-file", type=Path, required=True, help='where {"port": N} goes once listening'
    )
    parser.add_argument(
        "--tls-dir",
        type=Path,
        help=f"mutual TLS with {SERVER_KEY}, {SERVER_CHAIN} and {CLIENT_CA} from here (default: plaintext)",
    )
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=0.0,
        help="ping every stream this often, seconds, and read the pongs (default 0: no pings)",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="asyncio",
        help="the event loop to serve on (default: asyncio, Python's own)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="bare %(levelname)s %(message)s")
    tls = None
    if args.tls_dir is not None:
        tls = tuple((args.tls_dir / name).read_bytes() for name in (SERVER_KEY, SERVER_CHAIN, CLIENT_CA))
    loop_runner(args.event_loop)(serve(args.port, args.ready_file, tls, args.ping_interval))


if __name__ == "__main__":
    main()
