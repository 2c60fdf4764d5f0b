"""The controller (installed as ``swarm.controller``)."""

import os

# grpc-core writes a line to stderr for every failed TLS handshake (a port
# scan, plaintext or HTTP/1.1 on a TLS port): any peer could fill the
# controller's log with them. Only grpc's errors go there, unless the admin
# sets GRPC_VERBOSITY. This runs before grpc is first imported.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# The controller's children (ssh, rsync, gpg, the commands an admin runs)
# exec at once and never use gRPC, and on uvloop, the controller's default
# loop, they are started with fork() (Python's own subprocess uses vfork()):
# gRPC's fork handlers then ran in a process whose gRPC threads were busy,
# and under load about one child in ten crashed (SIGSEGV, SIGABRT) before
# its exec. Off, whatever the environment says: nothing here needs them.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"
