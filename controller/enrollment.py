"""The Enrollment service: join token for certificate, and renewal."""

from __future__ import annotations

import grpc

from swarm.controller.authz import current_identity
from swarm.controller.errors import SwarmError
from swarm.controller.gateway import grpc_status
from swarm.controller.trust import Trust
from swarm.pki import cert_pem
from swarm.v1 import enroll_pb2, enroll_pb2_grpc


class EnrollmentService(enroll_pb2_grpc.EnrollmentServicer):
    def __init__(self, trust: Trust) -> None:
        self._trust = trust

    async def Enroll(
        self, request: enroll_pb2.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> enroll_pb2.EnrollResponse:
        try:
            issued = await self._trust.enroll(request.token, request.csr_pem, request.drone_id, request.name)
        except SwarmError as exc:
            await context.abort(*grpc_status(exc))
        return enroll_pb2.EnrollResponse(
            certificate_pem=issued.pem,
            ca_pem=cert_pem(self._trust.ca.cert),
            drone_id=request.drone_id,
            not_after_unix=int(issued.not_after),
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
        return enroll_pb2.RenewResponse(certificate_pem=issued.pem, not_after_unix=int(issued.not_after))
