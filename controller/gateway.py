"""The gRPC gateway: one control stream per drone.

Each stream has one reader task and one writer task. The writer drains a
bounded outbox, so a drone that stops reading pushes back on us instead
of growing memory; whoever wants a stream ended calls ``close``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from swarm.clock import iso
from swarm.controller import channel_serde, serde
from swarm.controller.alerts import Alerter
from swarm.controller.authz import AGENT, current_identity
from swarm.controller.bounds import BoundSettings, StreamBounds, bound_key, peer_host
from swarm.controller.builds import BuildQueue
from swarm.controller.channel_frames import ChannelRequest
from swarm.controller.errors import SwarmError
from swarm.controller.events import EventLog
from swarm.controller.fleet import DroneState, Fleet
from swarm.controller.metrics import Metrics
from swarm.controller.protolog import IN, OUT, ProtocolLog
from swarm.protocol import DUPLICATE_NOTICE, speaks
from swarm.v1 import gateway_pb2, gateway_pb2_grpc

if TYPE_CHECKING:
    from swarm.controller.trust import Trust

log = logging.getLogger(__name__)

OUTBOX_SIZE = 64
WRITE_GRACE = 1.0
UNPARSABLE = "a message that does not parse as swarm.v1.AgentMessage"
# What a newer agent sends that this controller does not know: ignored, and
# counted in the protocol log under this kind (docs/protocol.md, versioning).
UNKNOWN_KIND = "unknown"


def carried_unknown(message: gateway_pb2.AgentMessage, size: int) -> bool:
    """Whether a message of a known kind carried fields this controller does
    not know, at any depth; they are dropped here. ``size`` is its ByteSize
    with them. About 0.45 us a message (a heartbeat parses in 0.3 us)."""
    message.DiscardUnknownFields()
    return message.ByteSize() != size


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping from our errors to a gRPC status; others stay private."""
    if isinstance(exc, SwarmError) and type(exc) is not SwarmError:
        return grpc.StatusCode[exc.grpc_code], exc.message
    return grpc.StatusCode.INTERNAL, "internal error"


class DroneSession:
    __slots__ = ("close_code", "close_details", "closed", "drone_id", "outbox", "peer", "writing")

    def __init__(self, drone_id: str, peer: str) -> None:
        self.drone_id = drone_id
        self.peer = peer
        self.outbox: asyncio.Queue[gateway_pb2.ControllerMessage] = asyncio.Queue(OUTBOX_SIZE)
        self.closed = asyncio.Event()
        self.close_code: grpc.StatusCode | None = None
        self.close_details = ""
        self.writing = False

    def send(self, message: gateway_pb2.ControllerMessage) -> bool:
        """Queue a message; False if the drone is not keeping up."""
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True

    def open_channel(self, channel_id: str, request: ChannelRequest) -> bool:
        return self.send(channel_serde.open_channel(channel_id, request))

    def on_task_done(self, task: asyncio.Task[None]) -> None:
        """The reader or writer ended: the stream is over. A peer's mistakes
        are answered where they are read; anything else is ours."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self.close("OK", "")
        else:
            log.error("control stream of %s (%s) failed", self.drone_id, self.peer, exc_info=exc)
            self.close("INTERNAL", "internal error")

    def close(self, code: str, details: str) -> None:
        if not self.closed.is_set():
            self.close_code = grpc.StatusCode[code]
            self.close_details = details
            self.closed.set()


class Gateway(gateway_pb2_grpc.DroneGatewayServicer):
    def __init__(
        self,
        fleet: Fleet,
        events: EventLog,
        protolog: ProtocolLog,
        *,
        hello_timeout: float,
        bounds: StreamBounds | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._fleet = fleet
        self._events = events
        self._protolog = protolog
        self._hello_timeout = hello_timeout
        self.bounds = bounds or StreamBounds(events, BoundSettings())
        self._metrics = metrics
        self.sessions: set[DroneSession] = set()
        self.builds: BuildQueue | None = None
        # Binds names to drone ids (absent with --insecure: no identities to bind to).
        self.trust: Trust | None = None
        # Where a duplicate drone is reported besides the event log (the admin's webhook).
        self.alerter: Alerter | None = None

    def _reject(self, peer: str, drone_id: str, message: str, kind: str) -> None:
        """A protocol_error event, a few per drone (else address) and kind per window."""
        self.bounds.peer_events.emit(
            "protocol_error", kind, drone_id or peer_host(peer), message, drone_id=drone_id or None, peer=peer
        )

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        """One control stream. Before anything is read, the caller must have
        room among the streams waiting to say Hello (bounds.py); after Hello,
        a stream of another agent process while the drone's stream is live
        is refused (ALREADY_EXISTS, Fleet.duplicate), and a stream that would
        replace the drone's live one must be within the replacement rate
        (else RESOURCE_EXHAUSTED, like the first bound)."""
        peer = context.peer()
        identity = current_identity()
        bounds = self.bounds
        key = bound_key(identity, peer)
        full = bounds.pending.take(key)
        if full is not None:
            bounds.refusals.note("pending", key, identity.drone_id, peer, full)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"{full}: say Hello on the open ones first"
            )
            return
        # Refusals before the Hello name the drone its certificate says.
        who = identity.drone_id or ""
        try:
            first = await asyncio.wait_for(context.read(), self._hello_timeout)
        except TimeoutError:
            self._reject(peer, who, f"no hello within {self._hello_timeout:g}s", "no hello")
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no hello received in time")
            return
        except DecodeError:
            self._reject(peer, who, UNPARSABLE, "unparsable")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNPARSABLE)
            return
        finally:
            bounds.pending.give(key)
        if first is grpc.aio.EOF:
            return
        try:
            hello = serde.read_hello(first)
        except SwarmError as exc:
            self._protolog.record(IN, who, first.WhichOneof("body") or "empty", first.ByteSize())
            self._reject(peer, who, exc.message, "bad hello")
            code, details = grpc_status(exc)
            await context.abort(code, details)
            return
        size = first.ByteSize()
        self._protolog.record(IN, hello.drone_id, "hello", size, unknown_fields=carried_unknown(first, size))
        if identity.kind == AGENT and identity.drone_id != hello.drone_id:
            # The certificate, not the message, says who this is.
            self._reject(
                peer,
                identity.drone_id or "",
                f"certificate of drone {identity.drone_id} claimed drone id {hello.drone_id}",
                "other id",
            )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this certificate is for drone {identity.drone_id}, not {hello.drone_id}",
            )
            return
        if identity.kind == AGENT and self.trust is not None:
            try:
                name = await self.trust.claim(hello.drone_id, hello.name, peer)
            except SwarmError as exc:
                self._reject(peer, hello.drone_id, exc.message, "name")
                await context.abort(*grpc_status(exc))
                return
            hello = dataclasses.replace(hello, name=name)

        # From here to attach nothing awaits: the check and the replacement are one step.
        current = self._fleet.get(hello.drone_id)
        announce = True
        if current is not None and self._fleet.duplicate(hello) is current:
            details = self._refuse_duplicate(current, hello, peer)
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, details)
            return
        if current is not None and current.link is not None:
            wait = bounds.replacements.allow(hello.drone_id)
            if wait:
                why = (
                    f"the control stream of drone {hello.drone_id} was replaced "
                    f"{bounds.replacements.limit} times within {bounds.replacements.window:g}s"
                )
                bounds.refusals.note("replacements", hello.drone_id, hello.drone_id, peer, why)
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{why}; the stream in place stays: retry in {wait:.1f}s",
                )
                return
            announce = bounds.bursts.hit(("replaced", hello.drone_id), self._replaced_summary(current))

        session = DroneSession(hello.drone_id, peer)
        self.sessions.add(session)
        state = self._fleet.attach(hello, session, announce=announce)
        if self.builds is not None:
            self.builds.on_hello(state, hello.current_job_id, serde.recent_builds(first.hello))
        session.send(serde.welcome(hello.drone_id))
        reader = asyncio.create_task(self._read(session, state, context), name=f"read:{hello.name}")
        writer = asyncio.create_task(self._write(session, context), name=f"write:{hello.name}")
        for task in (reader, writer):
            task.add_done_callback(session.on_task_done)
        try:
            await session.closed.wait()
        finally:
            # Before any await: grpc may cancel this handler again while we
            # wait below, and the drone must be offline at once regardless.
            self.sessions.discard(session)
            self._fleet.detach(session, session.close_details or "stream closed by the drone")
            reader.cancel()
            if session.writing:
                # Cancelling grpc.aio in the middle of a write can leave the
                # call unable to end: let the write finish (the writer stops
                # after it), within reason.
                await asyncio.wait({writer}, timeout=WRITE_GRACE)
            writer.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
        if session.close_code not in (None, grpc.StatusCode.OK):
            await context.abort(session.close_code, session.close_details)

    def _refuse_duplicate(self, state: DroneState, hello: serde.HelloData, peer: str) -> str:
        """A second live agent process with this drone's id: it is refused (the
        status says why), and once per DUPLICATE_WINDOW the admin gets a
        drone_duplicate event and an alert, and the agent in place is told."""
        kept = state.link
        assert kept is not None
        details = (
            f"drone {state.name} is connected already from another agent process "
            f"(instance {state.instance_id[:12]}, {kept.peer}): two agents with one identity "
            "(a cloned machine or a copied state directory?); this one is refused, the other stays"
        )
        duplicates = self.bounds.duplicates
        other = {"instance_id": hello.instance_id, "peer": peer, "hostname": hello.hostname}
        in_place = {"instance_id": state.instance_id, "peer": kept.peer, "hostname": state.hostname}

        def summary(more: int) -> None:
            self._events.emit(
                "drone_duplicate",
                f"{state.name}: {more} more streams of another agent process refused "
                f"within {duplicates.window:g}s",
                drone_id=state.id,
                drone_name=state.name,
                refused=more,
                duplicate=other,
            )

        if not duplicates.hit(state.id, summary):
            return details
        now = time.time()
        message = (
            f"{state.name}: a second agent process (instance {hello.instance_id[:12]} on "
            f"{hello.hostname or 'an unnamed host'}, {peer}) says it is this drone while the one "
            f"from {kept.peer} is connected: refused; stop one, or enroll it as a drone of its own"
        )
        self._events.emit(
            "drone_duplicate",
            message,
            drone_id=state.id,
            drone_name=state.name,
            refused=1,
            duplicate=other,
            kept=in_place,
        )
        if self.alerter is not None:
            self.alerter.alert(
                {
                    "type": "drone_duplicate",
                    "message": message,
                    "drone": {"id": state.id, "name": state.name, "status": state.status},
                    "duplicate": other,
                    "kept": in_place,
                    "at": iso(now),
                }
            )
        if speaks(state.features, DUPLICATE_NOTICE):
            kept.send(serde.duplicate_drone(hello.instance_id, peer, hello.hostname, now))
        return details

    def _replaced_summary(self, state: DroneState) -> Callable[[int], None]:
        """The one drone_replaced event for the rest of a burst of replacements."""
        window = self.bounds.bursts.window

        def summary(more: int) -> None:
            holder = state.link.peer if state.link is not None else "nobody (disconnected)"
            self._events.emit(
                "drone_replaced",
                f"{state.name}: its control stream was replaced {more} more times within {window:g}s; "
                f"now held by {holder}",
                drone_id=state.id,
                drone_name=state.name,
                replaced=more,
                new_peer=holder,
            )

        return summary

    async def _read(
        self, session: DroneSession, state: DroneState, context: grpc.aio.ServicerContext
    ) -> None:
        record = self._protolog.record
        drone_id = session.drone_id
        while True:
            try:
                message = await context.read()
            except DecodeError:
                self._reject(session.peer, drone_id, UNPARSABLE, "unparsable")
                session.close("INVALID_ARGUMENT", UNPARSABLE)
                return
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("body")
            size = message.ByteSize()
            # A kind of a newer protocol revision (or none at all) is recorded and
            # otherwise ignored: a newer agent must be able to talk to this controller.
            # Unknown fields in a known kind are ignored as well, and noted.
            unknown = kind is not None and carried_unknown(message, size)
            if kind == "pong":
                # Recorded after the fleet took it: the entry shows the round trip.
                latency = self._fleet.on_pong(state, serde.read_pong(message.pong))
                record(IN, drone_id, kind, size, message, latency, unknown)
                if latency is not None and self._metrics is not None:
                    self._metrics.ping_rtt.observe(latency / 1000)
                continue
            record(IN, drone_id, kind or UNKNOWN_KIND, size, message, unknown_fields=unknown)
            if kind == "heartbeat":
                self._fleet.on_heartbeat(state, serde.read_heartbeat(message.heartbeat))
            elif kind == "build_event" and self.builds is not None:
                event = serde.read_build_event(message.build_event)
                if event is not None:
                    self.builds.on_build_event(state, event)
            elif kind == "hello":
                self._reject(session.peer, drone_id, "hello sent twice on one stream", "hello twice")
                session.close("FAILED_PRECONDITION", "hello may only be the first message of a stream")
                return

    async def _write(self, session: DroneSession, context: grpc.aio.ServicerContext) -> None:
        record = self._protolog.record
        while not session.closed.is_set():
            message = await session.outbox.get()
            session.writing = True
            try:
                await context.write(message)
            finally:
                session.writing = False
            record(OUT, session.drone_id, message.WhichOneof("body") or "empty", message.ByteSize(), message)

    def close_all(self, details: str) -> None:
        for session in list(self.sessions):
            session.close("UNAVAILABLE", details)
        self.bounds.close()
