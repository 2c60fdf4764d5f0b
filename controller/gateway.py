"""The gRPC gateway: one control stream per drone.

Each stream is read in grpc's own task for the call (its handler), and
written by a task that lives while there is something to write: it drains
a bounded outbox, so a drone that stops reading pushes back on us instead
of growing memory; whoever wants a stream ended calls ``close``. (A
reader and a writer task beside the handler, for the stream's whole life,
cost every drone their frames, contexts and futures, and each message a
wake-up more than the read needs.) The core
speaks to a stream through the verbs of ``fleet.Link`` (DroneSession),
and the reader hands it what drones say as ``domain`` dataclasses: serde
does every conversion, once per message.

The control stream carries bytes between grpc and the gateway (``serve``
registers Connect without a (de)serializer): the gateway parses what
comes and serializes what goes itself, once, and the protocol log keeps
those same bytes. (With grpc's own serializer every message went out
serialized twice, grpc's and the log's, and came in through a parse
wrapper, then a ByteSize and a serialization for the log.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from sys import intern
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from swarm.clock import iso
from swarm.controller import channel_serde, serde
from swarm.controller.alerts import Alerter
from swarm.controller.authz import AGENT, current_identity
from swarm.controller.bounds import BoundSettings, StreamBounds, bound_key, peer_host
from swarm.controller.builds import BuildQueue
from swarm.controller.channel_frames import ChannelRequest
from swarm.controller.domain import HelloData
from swarm.controller.errors import SwarmError
from swarm.controller.events import EventLog
from swarm.controller.fleet import DroneState, Fleet
from swarm.controller.inbox import Inbox
from swarm.controller.metrics import Metrics
from swarm.controller.protolog import IN, OUT, ProtocolLog
from swarm.protocol import DUPLICATE_NOTICE, speaks
from swarm.v1 import fleet_pb2, gateway_pb2, gateway_pb2_grpc

if TYPE_CHECKING:
    from swarm.controller.payloads import Payloads
    from swarm.controller.testrunner import TestRunner
    from swarm.controller.trust import Trust

log = logging.getLogger(__name__)

OUTBOX_SIZE = 64
WRITE_GRACE = 1.0
UNPARSABLE = "a message that does not parse as swarm.v1.AgentMessage"
# What a newer agent sends that this controller does not know: ignored, and
# counted in the protocol log under this kind (docs/protocol.md, versioning).
UNKNOWN_KIND = "unknown"
HEARTBEAT = "heartbeat"
PONG = "pong"
SERVICE = "swarm.v1.DroneGateway"
parse_agent_message = gateway_pb2.AgentMessage.FromString
plain_heartbeat = serde.plain_heartbeat


def carried_unknown(message: gateway_pb2.AgentMessage, raw: bytes) -> tuple[bytes, bool]:
    """A message of a known kind as the protocol log keeps it: serialized
    without the fields this controller does not know (at any depth; they are
    dropped here), and whether it carried any. ``raw`` is how it came. About
    0.6 us a message (a heartbeat parses in 0.3 us)."""
    message.DiscardUnknownFields()
    kept = message.SerializeToString()
    if len(kept) == len(raw):
        return raw, False  # the bytes that came: the same, and no second copy
    return kept, True


def beat_carries_unknown(message: gateway_pb2.AgentMessage, heartbeat: fleet_pb2.Heartbeat) -> bool:
    """Whether a heartbeat without a pong carried fields this controller does
    not know. Every field of Heartbeat but its pong is a scalar, so unknown
    ones can only be on the message or the heartbeat itself: asking those two
    is exact, and it serializes nothing (0.9 us here where carried_unknown
    takes 1.4, for each heartbeat that serde.plain_heartbeat leaves to the
    parser). A test keeps Heartbeat's message fields to the pong."""
    return bool(UnknownFieldSet(message)) or bool(UnknownFieldSet(heartbeat))


def serve_gateway(gateway: Gateway, server: grpc.aio.Server) -> None:
    """Serve ``gateway`` on ``server`` (DroneGateway, its one method Connect),
    passing bytes both ways: the gateway parses and serializes each message
    itself, once (the module's docstring). A request that does not parse is
    the gateway's to answer (ParseGuard leaves a method without a
    deserializer alone), as it did."""
    handlers = {"Connect": grpc.stream_stream_rpc_method_handler(gateway.Connect)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping from our errors to a gRPC status; others stay private."""
    if isinstance(exc, SwarmError) and type(exc) is not SwarmError:
        return grpc.StatusCode[exc.grpc_code], exc.message
    return grpc.StatusCode.INTERNAL, "internal error"


class DroneSession:
    """One control stream, as the core uses it (fleet.Link).

    There is one per connected drone, so it is kept small. The stream's
    gRPC handler is its reader (Gateway._serve): no task of its own per
    stream. Its writer is a task that exists only while the outbox holds
    something: it drains the outbox, a bounded list, and ends (a ping every
    few seconds is most of what a drone is sent). A drone that stops
    reading keeps the writer in its write until the outbox is full, and
    then the verbs answer False: it pushes back instead of growing memory.
    ``close`` ends the stream: it interrupts the handler's read (a cancel
    that the handler takes back), and the handler answers with the status.
    A list rather than a deque: an empty deque takes 760 bytes, an empty
    list 56, and taking the head of at most OUTBOX_SIZE pointers costs
    nothing worth a deque."""

    __slots__ = (
        "_context",
        "_handler",
        "_log",
        "_writer",
        "close_code",
        "close_details",
        "closed",
        "drone_id",
        "interrupted",
        "outbox",
        "peer",
        "reading",
        "writing",
    )

    def __init__(
        self, drone_id: str, peer: str, context: grpc.aio.ServicerContext, protolog: ProtocolLog
    ) -> None:
        self.drone_id = drone_id
        self.peer = peer
        # (kind, serialized message): written as they are, and logged.
        self.outbox: list[tuple[str, bytes]] = []
        self._context = context
        self._log = protolog
        # The stream's handler: the one task that reads it (made in it).
        self._handler = asyncio.current_task()
        self._writer: asyncio.Task[None] | None = None
        self.closed = False
        self.close_code: grpc.StatusCode | None = None
        self.close_details = ""
        # The handler waits in a read (close interrupts it), and close did.
        self.reading = False
        self.interrupted = False
        self.writing = False

    def send(self, message: gateway_pb2.ControllerMessage) -> bool:
        """Queue a message (serialized here, once: grpc writes these bytes
        and the protocol log keeps them); False if the drone is not keeping up."""
        if self.closed:
            return True  # the stream is ending: dropped, as its writer stops
        if len(self.outbox) >= OUTBOX_SIZE:
            return False
        self.outbox.append((intern(message.WhichOneof("body") or "empty"), message.SerializeToString()))
        writer = self._writer
        # A writer that is done (its outbox was empty) but whose done
        # callback has not run yet writes nothing more: a new one takes over.
        if writer is None or writer.done():
            writer = self._writer = asyncio.get_running_loop().create_task(self._write())
            writer.add_done_callback(self._written)
        return True

    async def _write(self) -> None:
        """Write what is queued, oldest first, then end."""
        outbox, context, record = self.outbox, self._context, self._log.record
        while outbox and not self.closed:
            kind, raw = outbox.pop(0)
            self.writing = True
            try:
                await context.write(raw)
            finally:
                self.writing = False
            record(OUT, self.drone_id, kind, len(raw), raw)

    def _written(self, task: asyncio.Task[None]) -> None:
        if self._writer is task:
            self._writer = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("control stream of %s (%s) failed", self.drone_id, self.peer, exc_info=exc)
            self.close("INTERNAL", "internal error")

    async def stop_writing(self) -> None:
        """The stream is over: the writer goes (after a write it is in,
        within WRITE_GRACE: cancelling grpc.aio in the middle of a write can
        leave the call unable to end)."""
        writer = self._writer
        if writer is None:
            return
        if self.writing:
            await asyncio.wait({writer}, timeout=WRITE_GRACE)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)

    # -- fleet.Link's verbs ----------------------------------------------

    def ping(self, seq: int, sent_at_ns: int, answer_within_ms: int = 0) -> bool:
        return self.send(serde.ping(seq, sent_at_ns, answer_within_ms))

    def start_build(
        self,
        job_id: str,
        build_id: str,
        cpv: str,
        timeout_s: int,
        binhost_url: str,
        test_build: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> bool:
        return self.send(serde.start_build(job_id, build_id, cpv, timeout_s, binhost_url, test_build, env))

    def cancel_build(self, build_id: str, reason: str) -> bool:
        return self.send(serde.cancel_build(build_id, reason))

    def restart_service(self, reason: str) -> bool:
        return self.send(serde.restart_service(reason))

    def open_channel(self, channel_id: str, request: ChannelRequest) -> bool:
        return self.send(channel_serde.open_channel(channel_id, request))

    def apply_payload(self, meta: bytes, signature: bytes, confirm_within_s: int) -> bool:
        return self.send(serde.apply_payload(meta, signature, confirm_within_s))

    def close(self, code: str, details: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code = grpc.StatusCode[code]
        self.close_details = details
        handler = self._handler
        # From another task while the handler waits for the drone: interrupt
        # the read. (From the handler itself it sees ``closed`` before it reads.)
        if self.reading and handler is not None and handler is not asyncio.current_task():
            self.interrupted = True
            handler.cancel()


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
        # Test builds' events go to their runner (with test builds on).
        self.tests: TestRunner | None = None
        # Binds names to drone ids (absent with --insecure: no identities to bind to).
        self.trust: Trust | None = None
        # Where a duplicate drone is reported besides the event log (the admin's webhook).
        self.alerter: Alerter | None = None
        # Takes Hello.payloads and PayloadStatus (absent with --insecure).
        self.payloads: Payloads | None = None
        # What the readers read, taken in batches (inbox.py): (session, its
        # drone, the message as it came, when it came in the fleet clock's ns).
        self.inbox: Inbox[tuple[DroneSession, DroneState, bytes, int]] = Inbox(self._take_read)
        # The health monitor judges silence on everything read so far.
        fleet.take_pending = self.inbox.drain
        fleet.read_beat = serde.read_heartbeat_bytes

    def _reject(self, peer: str, drone_id: str, message: str, kind: str) -> None:
        """A protocol_error event, a few per drone (else address) and kind per window."""
        self.bounds.peer_events.emit(
            "protocol_error", kind, drone_id or peer_host(peer), message, drone_id=drone_id or None, peer=peer
        )

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        """One control stream: accepted (the Hello, ``_accept``), then read
        here, in grpc's own task for the call, until it ends (``_serve``).
        Nothing of the Hello is kept in this frame for the stream's life."""
        accepted = await self._accept(context)
        if accepted is not None:
            await self._serve(*accepted, context)

    async def _accept(self, context: grpc.aio.ServicerContext) -> tuple[DroneSession, DroneState] | None:
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
            return None
        # Refusals before the Hello name the drone its certificate says.
        who = identity.drone_id or ""
        try:
            raw = await asyncio.wait_for(context.read(), self._hello_timeout)
        except TimeoutError:
            self._reject(peer, who, f"no hello within {self._hello_timeout:g}s", "no hello")
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no hello received in time")
            return None
        finally:
            bounds.pending.give(key)
        if raw is grpc.aio.EOF:
            return None
        try:
            first = parse_agent_message(raw)
        except DecodeError:
            self._reject(peer, who, UNPARSABLE, "unparsable")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNPARSABLE)
            return None
        try:
            hello = serde.read_hello(first)
        except SwarmError as exc:
            self._protolog.record(IN, who, first.WhichOneof("body") or "empty", len(raw))
            self._reject(peer, who, exc.message, "bad hello")
            code, details = grpc_status(exc)
            await context.abort(code, details)
            return None
        _kept, unknown = carried_unknown(first, raw)
        self._protolog.record(IN, hello.drone_id, "hello", len(raw), unknown_fields=unknown)
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
            return None
        if identity.kind == AGENT and self.trust is not None:
            try:
                name = await self.trust.claim(hello.drone_id, hello.name, peer)
            except SwarmError as exc:
                self._reject(peer, hello.drone_id, exc.message, "name")
                await context.abort(*grpc_status(exc))
                return None
            hello = dataclasses.replace(hello, name=name)

        # From here to attach nothing awaits: the check and the replacement are one step.
        current = self._fleet.get(hello.drone_id)
        announce = True
        if current is not None and self._fleet.duplicate(hello) is current:
            details = self._refuse_duplicate(current, hello, peer)
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, details)
            return None
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
                return None
            announce = bounds.bursts.hit(("replaced", hello.drone_id), self._replaced_summary(current))

        session = DroneSession(hello.drone_id, peer, context, self._protolog)
        self.sessions.add(session)
        state = self._fleet.attach(hello, session, announce=announce)
        if self.builds is not None:
            recent = serde.recent_builds(first.hello)
            self.builds.on_hello(state, hello.current_job_id, recent)
            if self.tests is not None:
                self.tests.on_hello(state, hello.current_job_id, recent)
        if self.payloads is not None:
            self.payloads.on_hello(state)
        session.send(serde.welcome(hello.drone_id))
        return session, state

    async def _serve(
        self, session: DroneSession, state: DroneState, context: grpc.aio.ServicerContext
    ) -> None:
        """Read the stream until it ends; then the drone is offline at once
        and the stream ends with the status ``close`` was given."""
        try:
            try:
                put, now_ns, read, eof = self.inbox.put, self._fleet.clock.time_ns, context.read, grpc.aio.EOF
                # The read below is this loop's only await: whenever another
                # task runs (and may close the session), the handler is in it.
                session.reading = True
                while not session.closed:
                    raw = await read()
                    if raw is eof:
                        break
                    put((session, state, raw, now_ns()), len(raw))
                    # Not kept while the next one is awaited (the inbox has it).
                    del raw
            except asyncio.CancelledError:
                handler = asyncio.current_task()
                # Our own interrupt (close), unless grpc cancelled the call as well.
                if not session.interrupted or handler is None or handler.uncancel() > 0:
                    raise
            except Exception:
                log.error("control stream of %s (%s) failed", session.drone_id, session.peer, exc_info=True)
                session.close("INTERNAL", "internal error")
        finally:
            session.reading = False
            # Before any await: grpc may cancel this handler while we wait
            # below, and the drone must be offline at once regardless; what
            # it said before it went is taken first.
            self.inbox.drain()
            session.closed = True
            self.sessions.discard(session)
            self._fleet.detach(session, session.close_details or "stream closed by the drone")
            await session.stop_writing()
        if session.close_code not in (None, grpc.StatusCode.OK):
            await context.abort(session.close_code, session.close_details)

    def _refuse_duplicate(self, state: DroneState, hello: HelloData, peer: str) -> str:
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
        # A notice of the gateway's own (no verb of the core): its links are DroneSessions.
        if speaks(state.features, DUPLICATE_NOTICE) and isinstance(kept, DroneSession):
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

    def _take_read(self, read: tuple[DroneSession, DroneState, bytes, int]) -> None:
        """One message of the inbox's batch. A stream closed since it was read
        (refused, revoked, replaced, or a message of it before this one ended
        it) says nothing more: its messages are dropped, as its reader stopped."""
        session, state, raw, at_ns = read
        if session.closed:
            return
        try:
            if plain_heartbeat(raw):
                # Nearly every message: a heartbeat with its figures alone, told
                # from its bytes and kept as they came (DroneState.beat reads them).
                self._protolog.record(IN, session.drone_id, HEARTBEAT, len(raw), raw)
                self._fleet.on_heartbeat(state, raw, at_ns / 1e9)
            else:
                self._take(session, state, raw, at_ns)
        except Exception:
            log.error("control stream of %s (%s) failed", session.drone_id, session.peer, exc_info=True)
            session.close("INTERNAL", "internal error")

    def _take(self, session: DroneSession, state: DroneState, raw: bytes, at_ns: int) -> None:
        """What a drone said (as it came, bytes, at ``at_ns``), to the core; a
        message that ends the stream closes the session. Heartbeats come
        first: those with a pong, a job id or fields of a newer protocol
        (the others do not come here: ``_take_read``)."""
        try:
            message = parse_agent_message(raw)
        except DecodeError:
            self._reject(session.peer, session.drone_id, UNPARSABLE, "unparsable")
            session.close("INVALID_ARGUMENT", UNPARSABLE)
            return
        record = self._protolog.record
        drone_id = session.drone_id
        kind = message.WhichOneof("body")
        if kind == HEARTBEAT:
            heartbeat = message.heartbeat
            if heartbeat.HasField("pong"):
                # Unknown fields in a known kind are ignored, and noted.
                kept, unknown = carried_unknown(message, raw)
                # A pong riding on the heartbeat (pong-in-heartbeat), taken
                # first: the heartbeat then settles the status on its checks.
                # Logged as two entries, the heartbeat and the pong (with the
                # round trip), as the drone said them, their sizes adding up.
                pong = heartbeat.pong
                latency = self._pong(state, pong, at_ns)
                pong_raw = gateway_pb2.AgentMessage(pong=pong).SerializeToString()
                record(IN, drone_id, HEARTBEAT, len(raw) - len(pong_raw), kept, unknown_fields=unknown)
                record(IN, drone_id, PONG, len(pong_raw), pong_raw, latency)
            elif beat_carries_unknown(message, heartbeat):
                kept, unknown = carried_unknown(message, raw)
                record(IN, drone_id, HEARTBEAT, len(raw), kept, None, unknown)
            else:
                record(IN, drone_id, HEARTBEAT, len(raw), raw)
            # Its figures stay in the bytes until somebody asks (DroneState.beat).
            self._fleet.on_heartbeat(state, raw, at_ns / 1e9)
            return
        # A kind of a newer protocol revision (or none at all) is recorded and
        # otherwise ignored: a newer agent must be able to talk to this controller.
        if kind is None:
            kept, unknown = raw, False
        else:
            # The protocol log keeps it for each entry: one string per kind, not per message.
            kind = intern(kind)
            kept, unknown = carried_unknown(message, raw)
        if kind == PONG:
            # Recorded after the fleet took it: the entry shows the round trip.
            record(IN, drone_id, kind, len(raw), kept, self._pong(state, message.pong, at_ns), unknown)
            return
        record(IN, drone_id, kind or UNKNOWN_KIND, len(raw), kept, unknown_fields=unknown)
        if kind == "build_event" and self.builds is not None:
            event = serde.read_build_event(message.build_event)
            if event is None:
                pass
            elif self.tests is not None and self.tests.owns(event.build_id):
                self.tests.on_build_event(state, event)
            else:
                self.builds.on_build_event(state, event)
        elif kind == "payload_status" and self.payloads is not None:
            status = serde.read_payload_status(message.payload_status)
            if status is not None:
                self.payloads.on_status(state, status)
        elif kind == "hello":
            self._reject(session.peer, drone_id, "hello sent twice on one stream", "hello twice")
            session.close("FAILED_PRECONDITION", "hello may only be the first message of a stream")

    def _pong(self, state: DroneState, pong: fleet_pb2.Pong, at_ns: int) -> float | None:
        """A pong to the fleet; its round trip in ms, None if it answers no recent ping."""
        latency = self._fleet.on_pong(state, serde.read_pong(pong), at_ns)
        if latency is not None and self._metrics is not None:
            self._metrics.ping_rtt.observe(latency / 1000)
        return latency

    def close_all(self, details: str) -> None:
        self.inbox.drain()
        for session in list(self.sessions):
            session.close("UNAVAILABLE", details)
        self.bounds.close()
