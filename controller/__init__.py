"""The controller (installed as ``swarm.controller``)."""

import os

# grpc-core writes a line to stderr for every failed TLS handshake (a port
# scan, plaintext or HTTP/1.1 on a TLS port): any peer could fill the
# controller's log with them. Only grpc's errors go there, unless the admin
# sets GRPC_VERBOSITY. This runs before grpc is first imported.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
