"""The Enrollment service: join token for certificate, and renewal.

A refused enrollment is an ``enrollment_failed`` event (who tried, as
what, and why), a few per address per window and then one with a count
(bounds.PeerEvents): a stranger guessing tokens leaves a trace without
flooding the event log. The token's secret never appears in it.
"""

from __future__ import annotations

import re

import grpc

from swarm.controller.authz import current_identity
from swarm.controller.bounds import PeerEvents, peer_host
from swarm.controller.errors import SwarmError
from swarm.controller.gateway import grpc_status
from swarm.controller.trust import Trust
from swarm.pki import cert_pem
from swarm.printable import printable
from swarm.v1 import enroll_pb2, enroll_pb2_grpc

TOKEN_ID_RE = re.compile(r"[0-9a-f]{12}")


def token_id(token: str) -> str | None:
    """The id part of a join token as sent (not secret), if it looks like one."""
    head = token.partition(".")[0]
    return head if TOKEN_ID_RE.fullmatch(head) else None


class EnrollmentService(enroll_pb2_grpc.EnrollmentServicer):
    def __init__(
        self, trust: Trust, failures: PeerEvents | None = None, payload_public_key: bytes = b""
    ) -> None:
        self._trust = trust
        self._failures = failures
        # The drones pin it with their certificate (payloadkey.py).
        self._payload_key = payload_public_key

    async def Enroll(
        self, request: enroll_pb2.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> enroll_pb2.EnrollResponse:
        try:
            issued = await self._trust.enroll(request.token, request.csr_pem, request.drone_id, request.name)
        except SwarmError as exc:
            code, details = grpc_status(exc)
            self._failed(request, context.peer(), code, details)
            await context.abort(code, details)
        return enroll_pb2.EnrollResponse(
            certificate_pem=issued.pem,
            ca_pem=cert_pem(self._trust.ca.cert),
            drone_id=request.drone_id,
            not_after_unix=int(issued.not_after),
            payload_public_key=self._payload_key,
        )

    def _failed(
        self, request: enroll_pb2.EnrollRequest, peer: str, code: grpc.StatusCode, details: str
    ) -> None:
        if self._failures is None:
            return
        name = printable(request.name, 64)
        drone_id = printable(request.drone_id, 64)
        self._failures.emit(
            "enrollment_failed",
            "enroll",
            peer_host(peer),
            f"enrollment of {name or '(no name)'!r} refused ({code.name}): {details}",
            drone_id=None,
            peer=peer,
            name=name,
            claimed_drone_id=drone_id,
            token_id=token_id(request.token),
            code=code.name,
            reason=details,
        )

    async def Renew(
        self, request: enroll_pb2.RenewRequest, context: grpc.aio.ServicerContext
    ) -> enroll_pb2.RenewResponse:
        identity = current_identity()
        assert identity.drone_id is not None  # authz admits only agents here
        try:
            issued = await self._trust.renew(identity.drone_id, request.csr_pem)
        except SwarmError as exc:
            await context.abort(*grpc_status(exc))
        return enroll_pb2.RenewResponse(
            certificate_pem=issued.pem,
            not_after_unix=int(issued.not_after),
            payload_public_key=self._payload_key,
        )
