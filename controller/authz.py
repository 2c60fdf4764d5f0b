"""Who is calling, and may they: deny by default, on every RPC.

An identity comes from the TLS layer only, never from a message field:

- ``anonymous``: TLS without a client certificate (the enrollment port);
- ``agent``: a client certificate this controller issued, not revoked,
  naming the drone id in its subjectAltName;
- ``insecure``: plaintext, only when the controller runs with
  ``--insecure`` (development), treated like an agent that says who it is.

``RULES`` lists, per method, which identity kinds may call it. A method
without a rule is refused, so a new RPC cannot go out unguarded (a test
enumerates the services and fails on a missing rule).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from cryptography import x509

from swarm.controller.bounds import BurstLog, peer_host
from swarm.pki import drone_id_of

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
AGENT = "agent"
INSECURE = "insecure"

RULES: dict[str, frozenset[str]] = {
    "/swarm.v1.DroneGateway/Connect": frozenset({AGENT, INSECURE}),
    "/swarm.v1.Enrollment/Enroll": frozenset({ANONYMOUS}),
    "/swarm.v1.Enrollment/Renew": frozenset({AGENT}),
    # The service also checks that the build belongs to the calling drone.
    "/swarm.v1.Builds/BuildLog": frozenset({AGENT, INSECURE}),
    "/swarm.v1.Builds/QueryUpload": frozenset({AGENT, INSECURE}),
    "/swarm.v1.Builds/Upload": frozenset({AGENT, INSECURE}),
    # The service also checks that the channel was opened for the calling drone.
    "/swarm.v1.Channels/Shell": frozenset({AGENT, INSECURE}),
    # The service also checks that the payload is deployed to the calling drone.
    "/swarm.v1.Payloads/Fetch": frozenset({AGENT}),
}


@dataclass(frozen=True, slots=True)
class Identity:
    kind: str
    drone_id: str | None = None
    serial: int | None = None


CURRENT: contextvars.ContextVar[Identity] = contextvars.ContextVar("swarm_identity")


def current_identity() -> Identity:
    """The caller of the RPC being served (set by the interceptor)."""
    return CURRENT.get()


class Certificates(Protocol):
    def is_active(self, serial: int, drone_id: str) -> bool: ...


class Denied(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def identify(context: grpc.aio.ServicerContext, certificates: Certificates | None) -> Identity:
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        if certificates is None:
            return Identity(INSECURE)
        raise Denied(grpc.StatusCode.UNAUTHENTICATED, "plaintext connections are not accepted")
    pem = auth.get("x509_pem_cert")
    if not pem:
        return Identity(ANONYMOUS)
    cert = x509.load_pem_x509_certificate(pem[0])
    drone_id = drone_id_of(cert)
    if drone_id is None:
        raise Denied(grpc.StatusCode.UNAUTHENTICATED, "the client certificate names no drone")
    if certificates is not None and not certificates.is_active(cert.serial_number, drone_id):
        raise Denied(grpc.StatusCode.UNAUTHENTICATED, "the client certificate is revoked or unknown")
    return Identity(AGENT, drone_id, cert.serial_number)


def _guard(
    method: str,
    allowed: frozenset[str],
    certificates: Certificates | None,
    refusals: BurstLog | None,
    behavior: Callable[..., Any],
) -> Callable[..., Any]:
    def note(why: str, peer: str) -> None:
        # A revoked drone retrying, or a stranger in a loop: a few lines per
        # address and reason, then a count (bounds.BurstLog).
        if refusals is None:
            log.warning("refused %s from %s: %s", method, peer, why)
        else:
            refusals.warning(f"refused: {why}", peer_host(peer), "refused %s from %s: %s", method, peer, why)

    async def check(context: grpc.aio.ServicerContext) -> Identity:
        try:
            identity = identify(context, certificates)
        except Denied as exc:
            note(exc.details, context.peer())
            await context.abort(exc.code, exc.details)
        if identity.kind not in allowed:
            note(f"not allowed for {identity.kind}", context.peer())
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"{method} is not allowed for {identity.kind}"
            )
        CURRENT.set(identity)
        return identity

    if inspect.isasyncgenfunction(behavior):

        async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            async for item in behavior(request, context):
                yield item

        return guarded_stream

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        return await behavior(request, context)

    return guarded


def per_method(
    made: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]],
    method: str,
    handler: grpc.RpcMethodHandler,
    make: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler],
) -> grpc.RpcMethodHandler:
    """An interceptor's handler for ``handler`` of ``method``, made once while
    grpc hands it the same handler (it does, per method): a control stream
    lasts as long as its drone, and new closures and a new handler per call
    cost every drone a kilobyte. ``made`` has one entry per method served."""
    known = made.get(method)
    if known is not None and known[0] is handler:
        return known[1]
    ours = make(method, handler)
    made[method] = (handler, ours)
    return ours


class AuthzInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, certificates: Certificates | None, refusals: BurstLog | None = None) -> None:
        # None means --insecure: plaintext allowed, no certificate checks.
        self._certificates = certificates
        self._refusals = refusals
        # The guarded handler of each method, made once (per_method).
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        return per_method(self._guarded, details.method, handler, self._guard)

    def _guard(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        allowed = RULES.get(method)
        if allowed is None:
            log.error("refused %s: no authorization rule for it", method)
            allowed = frozenset()
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _guard(method, allowed, self._certificates, self._refusals, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _guard(method, allowed, self._certificates, self._refusals, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _guard(method, allowed, self._certificates, self._refusals, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _guard(method, allowed, self._certificates, self._refusals, handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
