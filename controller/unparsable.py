"""A request that does not parse: INVALID_ARGUMENT and a protocol_error event, on every RPC.

grpc parses a unary request before the servicer runs, and a failure there
becomes ``UNKNOWN`` with Python internals in the status and a traceback
in the log; a streaming read raises ``DecodeError`` into whatever code
reads. A peer's mistake deserves neither, so ``ParseGuard``, a server
interceptor, rebuilds every method handler with a deserializer of its own
(generated code stays untouched):

- unary request: a failure yields an ``Unparsable`` value instead of
  raising, and the call is refused before the servicer sees it;
- streaming request: a failure raises ``Unparsable`` (a ``DecodeError``,
  so code that already catches that, like the gateway, still does) and
  marks the call. Whether the servicer lets it escape or a reader task
  swallows it, the call ends ``INVALID_ARGUMENT``, unless the servicer
  ended it with a status of its own (it then answered the peer itself).

A method served without a deserializer is left alone: the control
stream (gateway.serve_gateway) passes bytes, and the gateway parses each
message itself and answers one that does not parse the same way.

It must come after the authorization interceptor: the caller is checked
first, and the event names the drone of the certificate. The events come a
few per peer (its drone, else its address) and method per window, then one
with a count (bounds.PeerEvents): garbage in a loop floods nothing.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from swarm.controller.authz import CURRENT, per_method
from swarm.controller.bounds import PeerEvents, noise_key

log = logging.getLogger(__name__)

Deserializer = Callable[[bytes], Any]
Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


class Unparsable(DecodeError):
    """Bytes from a peer that are not the message the method takes."""

    def __init__(self, type_name: str) -> None:
        self.reason = f"a message that does not parse as {type_name}"
        super().__init__(self.reason)


# The parse failures of the call being served (set per call; reader tasks
# the servicer starts share the list through their copy of the context).
_FAILED: ContextVar[list[Unparsable] | None] = ContextVar("swarm_unparsable", default=None)


def type_name(deserializer: Deserializer) -> str:
    """``swarm.v1.LogChunk`` for ``LogChunk.FromString``."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return str(descriptor.full_name) if descriptor is not None else "the method's request"


def lenient(deserializer: Deserializer) -> Deserializer:
    name = type_name(deserializer)

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError:
            return Unparsable(name)

    return parse


def strict(deserializer: Deserializer) -> Deserializer:
    name = type_name(deserializer)

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError:
            failure = Unparsable(name)
            failed = _FAILED.get()
            if failed is not None:
                failed.append(failure)
            raise failure from None

    return parse


class ParseGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, events: PeerEvents) -> None:
        self._events = events
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def _refuse(self, method: str, failure: Unparsable, context: grpc.aio.ServicerContext) -> None:
        peer = context.peer()
        identity = CURRENT.get(None)
        drone_id = identity.drone_id if identity is not None else None
        self._events.emit(
            "protocol_error",
            f"unparsable {method}",
            noise_key(identity, peer),
            failure.reason,
            drone_id=drone_id,
            peer=peer,
            method=method,
        )
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, failure.reason)

    def _unary(self, method: str, behavior: Behavior) -> Behavior:
        if inspect.isasyncgenfunction(behavior):

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                if isinstance(request, Unparsable):
                    await self._refuse(method, request, context)
                async for item in behavior(request, context):
                    yield item

            return unary_stream

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Unparsable):
                await self._refuse(method, request, context)
            return await behavior(request, context)

        return unary

    def _stream(self, method: str, behavior: Behavior) -> Behavior:
        if inspect.isasyncgenfunction(behavior):

            async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                failed: list[Unparsable] = []
                _FAILED.set(failed)
                try:
                    async for item in behavior(requests, context):
                        yield item
                except Unparsable as exc:
                    await self._refuse(method, exc, context)
                if failed:
                    await self._refuse(method, failed[0], context)

            return stream_stream

        async def stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            failed: list[Unparsable] = []
            _FAILED.set(failed)
            try:
                result = await behavior(requests, context)
            except Unparsable as exc:
                await self._refuse(method, exc, context)
            if failed:
                # A reader task met it and the servicer ended without a status.
                await self._refuse(method, failed[0], context)
            return result

        return stream

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return per_method(self._guarded, details.method, handler, self._guard)

    def _guard(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        parse = handler.request_deserializer
        serialize = handler.response_serializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary), lenient(parse), serialize
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._unary(method, handler.unary_stream), lenient(parse), serialize
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._stream(method, handler.stream_unary), strict(parse), serialize
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(method, handler.stream_stream), strict(parse), serialize
        )
