"""The Payloads servicer (Fetch: a payload's bytes for the drone it is
deployed to, from an offset) and the signer of the core's offers: the two
places where payloads meet protobuf (payload.proto).

Fetch answers NOT_FOUND for an unknown kind or version, PERMISSION_DENIED
for a version not deployed to the calling drone (its certificate says
which drone that is), OUT_OF_RANGE for an offset past the end; then
chunks of at most CHUNK bytes, each read in a thread, so a resumed fetch
asks for the rest and gets exactly that.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm import payloadsig
from swarm.controller.authz import current_identity
from swarm.controller.errors import SwarmError
from swarm.controller.gateway import grpc_status
from swarm.controller.payloads import Offer, Payloads, Signer
from swarm.v1 import payload_pb2, payload_pb2_grpc

log = logging.getLogger(__name__)

CHUNK = 256 * 1024


def signer(key: Ed25519PrivateKey) -> Signer:
    """Sign the core's offers with the payload key."""

    def sign(offer: Offer) -> tuple[bytes, bytes]:
        meta = payload_pb2.PayloadMeta(
            kind=offer.kind,
            version=offer.version,
            sha256=offer.sha256,
            size=offer.size,
            expires_at_unix=int(offer.expires_at),
            rollback=offer.rollback,
            drone_id=offer.drone_id,
            deploy_id=offer.deploy_id,
        )
        signed = payloadsig.sign(key, meta)
        return signed.meta, signed.signature

    return sign


class PayloadsService(payload_pb2_grpc.PayloadsServicer):
    def __init__(self, payloads: Payloads) -> None:
        self._payloads = payloads

    async def Fetch(
        self, request: payload_pb2.PayloadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[payload_pb2.PayloadChunk]:
        drone_id = current_identity().drone_id
        try:
            path, size = self._payloads.fetchable(drone_id, request.kind, request.version)
        except SwarmError as exc:
            await context.abort(*grpc_status(exc))
        if request.offset > size:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE, f"offset {request.offset} is past the end ({size})"
            )
        try:
            fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
        except OSError as exc:
            log.error("payload %s %d cannot be read: %s", request.kind, request.version, exc)
            await context.abort(grpc.StatusCode.INTERNAL, "the payload cannot be read")
        try:
            offset = request.offset
            while offset < size:
                data = await asyncio.to_thread(os.pread, fd, min(CHUNK, size - offset), offset)
                if not data:
                    break
                yield payload_pb2.PayloadChunk(offset=offset, data=data)
                offset += len(data)
        finally:
            os.close(fd)
