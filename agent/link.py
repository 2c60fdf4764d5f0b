"""The agent's control stream to the controller.

One ``ControlLink`` keeps one ``Connect`` stream open for the life of the
agent: it says Hello, waits for Welcome, then sends heartbeats and answers
pings (each Pong carries the latest functional checks; a ping that allows
it is answered in the next heartbeat instead, pong-in-heartbeat). When the stream
breaks it reconnects with exponential backoff and full jitter, forever,
until ``stop()``. A RestartService from the controller is handed to
``on_restart`` (main.py stops the agent and execs a fresh one).

A *refusal* (REFUSED: revoked, another agent process holds the drone, the
name belongs to another drone) will not go away by itself in seconds: the
link then backs off on a second, longer schedule (minutes), never less
than half its ceiling. The log says when the link's state changes (a new
way of failing, connected again), not at every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable

import grpc

from swarm.agent import serde
from swarm.agent.builder import Builder
from swarm.agent.checks import HealthChecks
from swarm.agent.config import AgentConfig
from swarm.agent.payloads import PayloadManager
from swarm.agent.probes import Sample, SystemProbe
from swarm.agent.shell import Channels
from swarm.backoff import Backoff
from swarm.grpcopts import CLIENT_OPTIONS
from swarm.printable import printable
from swarm.protocol import read_features
from swarm.tasks import race, wait_event
from swarm.v1 import fleet_pb2, gateway_pb2, gateway_pb2_grpc

log = logging.getLogger(__name__)

WELCOME_TIMEOUT = 10.0
OUTBOX_SIZE = 32
HEARTBEAT_JITTER = 0.05
# Statuses that say the controller will not take this agent as it is; each
# is retried on the refused backoff (docs/protocol.md, reconnect).
REFUSED = {
    grpc.StatusCode.UNAUTHENTICATED: "its certificate is revoked, unknown or expired",
    grpc.StatusCode.ALREADY_EXISTS: "another agent process holds this drone's control stream",
    grpc.StatusCode.PERMISSION_DENIED: "it may not connect as this drone or under this name",
}
_DEFAULTS = AgentConfig()
REFUSED_BACKOFF = Backoff(initial=_DEFAULTS.refused_backoff_initial, cap=_DEFAULTS.refused_backoff_max)


class StreamEnded(Exception):
    """The controller closed the control stream."""


class EndedBeforeHello(Exception):
    """The controller ended the stream before the agent's Hello went out, and
    grpc.aio hid why: it reports a write to a stream the peer has already
    ended as INTERNAL "Internal error from Core", in place of the peer's own
    status (grpc/grpc#36066). The controller's refusals end a stream that
    early, so on a loaded machine a refusal now and then arrives as this."""


class ControlLink:
    def __init__(
        self,
        target: str,
        hello: serde.HelloInfo,
        probe: SystemProbe,
        backoff: Backoff,
        credentials: Callable[[], grpc.ChannelCredentials | None],
        *,
        refused_backoff: Backoff = REFUSED_BACKOFF,
    ) -> None:
        self._target = target
        self._refused_backoff = refused_backoff
        self._credentials = credentials
        self._hello = hello
        self._probe = probe
        self._backoff = backoff
        self._interval = hello.heartbeat_interval
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._latest: Sample | None = None
        # A ping to answer in the next heartbeat (pong-in-heartbeat), and when
        # it came (monotonic); when that heartbeat is due (monotonic).
        self._held: tuple[fleet_pb2.Ping, float] | None = None
        self._next_beat_at = 0.0
        self._seq = 0
        self._welcomed = False
        self._switch = asyncio.Event()
        self._outbox: asyncio.Queue[gateway_pb2.AgentMessage] | None = None
        self.builder: Builder | None = None
        self.checks: HealthChecks | None = None
        self.channels: Channels | None = None
        self.payloads: PayloadManager | None = None
        self.on_restart: Callable[[str], None] | None = None
        self.connected = asyncio.Event()
        self.sessions = 0
        # From the latest Welcome: what the controller speaks (swarm.protocol).
        self.controller_revision = 0
        self.controller_features: tuple[str, ...] = ()
        # The controller's refusals in a row, and the last other agent process
        # it told us about (each logged once).
        self.refusals = 0
        self._duplicate_seen = ""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="control-link")

    async def stop(self, flush: float = 0.0) -> None:
        """End the link; with ``flush``, first give what is queued (say, a
        build's CANCELLED) up to that many seconds to reach the stream."""
        outbox = self._outbox
        if flush > 0 and outbox is not None and self.connected.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(outbox.join(), flush)
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        attempt = 0
        last = ""  # how the previous attempt ended: logged again only when that changes
        while not self._stopping.is_set():
            self._welcomed = False
            code: grpc.StatusCode | None = None
            hidden = False
            try:
                await self._session()
                ended = f"control stream to {self._target} ended"
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                ended = f"control stream to {self._target} ended: {code.name} {exc.details()}"
            except StreamEnded:
                ended = f"controller {self._target} closed the control stream"
            except EndedBeforeHello:
                hidden = True
                ended = f"controller {self._target} ended the control stream before Hello (status unknown)"
            except TimeoutError:
                ended = f"controller {self._target} did not answer Hello in {WELCOME_TIMEOUT:.0f}s"
            except Exception:
                # A bug of ours must not leave the drone dark for good.
                log.exception("control stream to %s failed", self._target)
                ended = f"control stream to {self._target} failed"
            finally:
                self.connected.clear()
            if self._welcomed:
                attempt, last = 0, ""
            # While refused, an early end whose status grpc hid is taken as the
            # same refusal: neither a change to log nor a reason to retry fast.
            refused = REFUSED.get(code) if code is not None else None
            if refused is not None or (hidden and self.refusals):
                # Retrying soon cannot help: minutes, and never in quick succession.
                delay = self._refused_backoff.delay(self.refusals, least=0.5)
                self.refusals += 1
                why = f"{ended}: refused ({refused})" if refused is not None else last
                if why != last:
                    log.warning(
                        "%s; retrying in %.1fs (refusal %d in a row), backing off up to %.0fs "
                        "(logged again only when this changes)",
                        why,
                        delay,
                        self.refusals,
                        self._refused_backoff.cap,
                    )
                else:
                    log.debug("refused again (%d in a row); retrying in %.1fs", self.refusals, delay)
                last = why
            else:
                self.refusals = 0
                delay = self._backoff.delay(attempt)
                attempt += 1
                if ended != last:
                    log.warning("%s; reconnecting in %.2fs", ended, delay)
                else:
                    log.debug("%s again; reconnecting in %.2fs", ended, delay)
                last = ended
            await wait_event(self._stopping, delay)

    def credentials_changed(self) -> None:
        """Move to a new stream opened with the current credentials (after a
        renewal), make-before-break: the new stream replaces the old one at
        the controller, so the drone never shows as offline."""
        self._switch.set()

    def _current_build(self) -> str:
        return self.builder.current_build_id if self.builder is not None else ""

    def send(self, message: gateway_pb2.AgentMessage) -> bool:
        """Queue a message on the current stream; False if there is none or it is full
        (build outcomes are also kept in Builder.recent and sent again with Hello)."""
        outbox = self._outbox
        if outbox is None or not self.connected.is_set():
            return False
        try:
            outbox.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True

    def new_channel(self) -> grpc.aio.Channel:
        """A channel of its own for bulk data (logs, uploads), with the current credentials."""
        return self._channel()

    def _channel(self) -> grpc.aio.Channel:
        creds = self._credentials()
        if creds is None:
            return grpc.aio.insecure_channel(self._target, options=CLIENT_OPTIONS)
        return grpc.aio.secure_channel(self._target, creds, options=CLIENT_OPTIONS)

    async def _open(self) -> tuple[grpc.aio.Channel, grpc.aio.StreamStreamCall]:
        """A new channel and control stream, through Hello and Welcome."""
        channel = self._channel()
        try:
            call = gateway_pb2_grpc.DroneGatewayStub(channel).Connect()
            recent = self.builder.recent if self.builder is not None else ()
            running = self.payloads.state.all() if self.payloads is not None else ()
            hello = serde.hello(
                self._hello, self._current_build(), recent, ((r.kind, r.version, r.sha256) for r in running)
            )
            try:
                await call.write(hello)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.INTERNAL:
                    raise
                raise EndedBeforeHello(exc.details()) from exc
            first = await asyncio.wait_for(call.read(), WELCOME_TIMEOUT)
            if first is grpc.aio.EOF:
                await self._raise_status(call)
            if first.WhichOneof("body") != "welcome":
                raise StreamEnded(f"expected welcome, got {first.WhichOneof('body')}")
            welcome = first.welcome
            # Recorded, not yet switched on: nothing this agent sends needs a
            # feature (a controller of any revision takes all of it).
            self.controller_revision = welcome.protocol_revision or 1
            self.controller_features = read_features(welcome.features)
        except BaseException:
            await channel.close()
            raise
        return channel, call

    async def _switch_when_renewed(self) -> tuple[grpc.aio.Channel, grpc.aio.StreamStreamCall]:
        await self._switch.wait()
        return await self._open()

    async def _session(self) -> None:
        """One control stream from Hello to its end (possibly handed over to
        a fresh stream after a certificate renewal)."""
        channel, call = await self._open()
        self._welcomed = True
        self.sessions += 1
        self.connected.set()
        log.info(
            "connected to controller %s as %s (%s); protocol revision %d, it speaks: %s",
            self._target,
            self._hello.name,
            self._hello.drone_id,
            self.controller_revision,
            ", ".join(self.controller_features) or "(no feature list: an older controller)",
        )
        self.refusals = 0
        try:
            while True:
                self._switch.clear()
                outbox: asyncio.Queue[gateway_pb2.AgentMessage] = asyncio.Queue(OUTBOX_SIZE)
                self._outbox = outbox
                self._held = None  # a ping of the stream before is not answered on this one
                if self.payloads is not None:
                    # Queued ahead of the first heartbeat: confirms a switch to this version.
                    self.payloads.connected()
                try:
                    new_channel, call = await race(
                        self._switch_when_renewed(),
                        self._heartbeats(outbox),
                        self._unless_replaced(self._writer(call, outbox)),
                        self._unless_replaced(self._reader(call, outbox)),
                        names=("switch", "heartbeats", "stream-writer", "stream-reader"),
                    )
                except StreamEnded:
                    await self._raise_status(call)
                # The new stream is up and has replaced the old one at the
                # controller; only now is the old one let go.
                old, channel = channel, new_channel
                await old.close()
                log.info("switched the control stream to the renewed certificate")
        finally:
            await channel.close()

    async def _unless_replaced(self, stream: Awaitable[None]) -> None:
        """The controller ends the old stream as soon as the new one says
        Hello, possibly before the new one's Welcome is here: while a switch
        is under way that end is expected, and the switch decides how the
        session goes on (its failure ends the session)."""
        try:
            await stream
        except (StreamEnded, grpc.aio.AioRpcError):
            if not self._switch.is_set():
                raise
            await asyncio.Event().wait()

    @staticmethod
    async def _raise_status(call: grpc.aio.StreamStreamCall) -> None:
        code = await call.code()
        if code != grpc.StatusCode.OK:
            raise grpc.aio.AioRpcError(
                code, await call.initial_metadata(), await call.trailing_metadata(), await call.details()
            )
        raise StreamEnded()

    async def _heartbeats(self, outbox: asyncio.Queue[gateway_pb2.AgentMessage]) -> None:
        next_at = time.monotonic()
        while True:
            self._latest = await asyncio.to_thread(self._probe.sample)
            self._seq += 1
            sample = self._latest
            if self.builder is not None and self.builder.current is not None:
                sample = dataclasses.replace(sample, emerge_running=True)
            held, pong = self._held, None
            if held is not None:
                ping, since = held
                checks = self.checks.latest() if self.checks is not None else ()
                pong = serde.pong_of(
                    ping, sample, self._current_build(), checks, round((time.monotonic() - since) * 1e9)
                )
            message = serde.heartbeat(self._seq, sample, self._current_build(), pong)
            try:
                outbox.put_nowait(message)
                if held is self._held:
                    self._held = None
            except asyncio.QueueFull:
                # The controller is not reading; the next heartbeat says the same, newer
                # (and answers the held ping, if that is still in time).
                log.debug("outbox full, heartbeat %d dropped", self._seq)
            jitter = random.uniform(-HEARTBEAT_JITTER, HEARTBEAT_JITTER) * self._interval
            next_at = max(next_at + self._interval, time.monotonic()) + jitter
            self._next_beat_at = next_at
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _writer(
        self, call: grpc.aio.StreamStreamCall, outbox: asyncio.Queue[gateway_pb2.AgentMessage]
    ) -> None:
        while True:
            message = await outbox.get()
            try:
                await call.write(message)
            except asyncio.InvalidStateError:
                raise StreamEnded() from None  # the call ended between two writes
            finally:
                outbox.task_done()

    async def _reader(
        self, call: grpc.aio.StreamStreamCall, outbox: asyncio.Queue[gateway_pb2.AgentMessage]
    ) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                raise StreamEnded()
            kind = message.WhichOneof("body")
            if kind == "ping":
                ping = message.ping
                now = time.monotonic()
                if (
                    ping.answer_within_ms
                    and self._held is None
                    and self._next_beat_at - now <= ping.answer_within_ms / 1000
                ):
                    # Answered by the next heartbeat, due within the time allowed.
                    self._held = (ping, now)
                    continue
                checks = self.checks.latest() if self.checks is not None else ()
                # Backpressure: if the controller stops reading, so do we.
                await outbox.put(serde.pong(ping, self._latest, self._current_build(), checks))
            elif kind == "start_build" and self.builder is not None:
                self.builder.start(message.start_build)
            elif kind == "cancel_build" and self.builder is not None:
                self.builder.cancel(message.cancel_build.build_id, message.cancel_build.reason)
            elif kind == "open_channel" and self.channels is not None:
                self.channels.open(message.open_channel)
            elif kind == "apply_payload" and self.payloads is not None:
                self.payloads.apply(message.apply_payload)
            elif kind == "duplicate_drone":
                self._on_duplicate(message.duplicate_drone)
            elif kind == "restart_service" and self.on_restart is not None:
                reason = message.restart_service.reason or "no reason given"
                log.warning("the controller asked for a restart of this agent: %s", reason)
                self.on_restart(reason)
            else:
                log.warning("ignoring unexpected %s from controller", kind)

    def _on_duplicate(self, notice: fleet_pb2.DuplicateDrone) -> None:
        """Another agent process with this drone's id was refused; said once per other process."""
        if notice.instance_id == self._duplicate_seen:
            log.debug("the other agent process %s was refused again", notice.instance_id[:12])
            return
        self._duplicate_seen = notice.instance_id
        log.warning(
            "another agent process says it is this drone (instance %s on %s, from %s): the controller "
            "refused it and this agent keeps the drone. Two agents share one identity (a cloned "
            "machine or a copied state directory?): stop the other, or enroll it as a drone of its own",
            printable(notice.instance_id, 64),
            printable(notice.hostname, 255) or "an unnamed host",
            printable(notice.peer, 128),
        )
