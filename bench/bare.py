"""The floor under the controller: a bare grpc.aio DroneGateway for ``bench/fleet.py``.

It serves the same proto with the controller's server options (and with
``--tls-dir``, mutual TLS as the controller does: a server certificate of
the controller's CA, client certificates required), answers each Hello
with a Welcome (the simulated drones wait for one before they beat) and
then only reads the stream: no pings, no state, no log. What the
controller costs beyond this per drone is what its own work costs.

It writes ``{"port": N}`` to ``--ready-file`` once it listens, and stops
on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Any

import grpc

from swarm.grpcopts import SERVER_OPTIONS
from swarm.v1 import fleet_pb2, gateway_pb2, gateway_pb2_grpc

log = logging.getLogger("bench.bare")

# Files in --tls-dir (written by bench/fleet.py from the controller's CA).
SERVER_KEY, SERVER_CHAIN, CLIENT_CA = "server.key", "server.pem", "ca.pem"


class BareGateway(gateway_pb2_grpc.DroneGatewayServicer):
    def __init__(self) -> None:
        self.streams = 0
        self.messages = 0

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        hello = await context.read()
        if hello is grpc.aio.EOF:
            return
        await context.write(
            gateway_pb2.ControllerMessage(welcome=fleet_pb2.Welcome(drone_id=hello.hello.drone_id))
        )
        del hello  # nothing of it is kept for the stream's life, as in the controller
        self.streams += 1
        try:
            while await context.read() is not grpc.aio.EOF:
                self.messages += 1
        finally:
            self.streams -= 1


async def serve(port: int, ready_file: Path, tls: tuple[bytes, bytes, bytes] | None) -> None:
    """Serve until SIGTERM or SIGINT; ``tls`` is (key, chain, client CA)."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    gateway_pb2_grpc.add_DroneGatewayServicer_to_server(BareGateway(), server)
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
    await asyncio.to_thread(ready_file.write_text, json.dumps({"port": bound}))
    await stop.wait()
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="bare %(levelname)s %(message)s")
    tls = None
    if args.tls_dir is not None:
        tls = tuple((args.tls_dir / name).read_bytes() for name in (SERVER_KEY, SERVER_CHAIN, CLIENT_CA))
    asyncio.run(serve(args.port, args.ready_file, tls))


if __name__ == "__main__":
    main()
