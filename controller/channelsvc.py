"""The Channels service: the drones' side of channels (shell.proto).

Each ``Channels.Shell`` call attaches to a channel the controller opened
(channels.py) and becomes its far end (``CallEnd``); frames cross as
channel_frames, converted by channel_serde.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from swarm.controller import channel_serde
from swarm.controller.authz import Identity, current_identity
from swarm.controller.bounds import BurstLog, StreamBounds, bound_key, noise_key
from swarm.controller.channel_frames import InFrame, OutFrame
from swarm.controller.channels import BrokenChannel, Channels
from swarm.controller.errors import PermissionDenied, SwarmError
from swarm.controller.events import EventLog
from swarm.controller.gateway import grpc_status
from swarm.controller.unparsable import Unparsable
from swarm.v1 import shell_pb2_grpc

log = logging.getLogger(__name__)

ATTACH_TIMEOUT = 10.0  # for the first frame of a Shell call


class CallEnd:
    """A drone's Shell call as a channel's far end (channels.FarEnd)."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    async def read(self) -> InFrame | None:
        while True:
            try:
                message = await self._context.read()
            except Unparsable as exc:
                # The call ends INVALID_ARGUMENT all the same (unparsable.py).
                raise BrokenChannel(exc.reason) from None
            if message is grpc.aio.EOF:
                return None
            frame = channel_serde.read_frame(message)
            if frame is not None:
                return frame

    async def write(self, frame: OutFrame) -> None:
        await self._context.write(channel_serde.write_frame(frame))


class ChannelsService(shell_pb2_grpc.ChannelsServicer):
    """Each Shell call attaches to a channel the controller opened."""

    def __init__(self, channels: Channels, bounds: StreamBounds, events: EventLog) -> None:
        self._channels = channels
        self._bounds = bounds
        self._events = events
        self._refusals = BurstLog(log, bounds.noise)

    async def Shell(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        """A drone's channel stream. It counts against the drone's channel
        streams from its start to its end, and against the streams waiting
        to speak until its Attach (bounds.py): beyond either cap it is
        RESOURCE_EXHAUSTED. Only a channel the controller asked this drone
        for can be attached, once (``Channels.claim``)."""
        peer = context.peer()
        identity = current_identity()
        bounds = self._bounds
        key = bound_key(identity, peer)
        full = bounds.channels.take(key)
        if full is not None:
            bounds.refusals.note("channels", key, identity.drone_id, peer, full)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{full}: end some first")
            return
        try:
            await self._attach(context, identity, peer, key)
        finally:
            bounds.channels.give(key)

    async def _attach(
        self, context: grpc.aio.ServicerContext, identity: Identity, peer: str, key: str
    ) -> None:
        bounds = self._bounds
        full = bounds.pending.take(key)
        if full is not None:
            bounds.refusals.note("pending", key, identity.drone_id, peer, full)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{full}: attach the open ones first")
            return
        try:
            first = await asyncio.wait_for(context.read(), ATTACH_TIMEOUT)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no attach received in time")
            return
        finally:
            bounds.pending.give(key)
        if first is grpc.aio.EOF:
            return
        kind = first.WhichOneof("body")
        if kind != "attach":
            bounds.peer_events.emit(
                "protocol_error",
                "attach first",
                noise_key(identity, peer),
                f"channel stream began with {kind or 'an empty frame'}, not attach",
                drone_id=identity.drone_id,
                peer=peer,
                method="/swarm.v1.Channels/Shell",
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first frame must be attach")
            return
        try:
            channel = self._channels.claim(first.attach.channel_id, identity)
        except SwarmError as exc:
            if isinstance(exc, PermissionDenied):
                self._refusals.warning(
                    "other drone's channel",
                    key,
                    "drone %s tried to attach to channel %s of another drone",
                    identity.drone_id,
                    first.attach.channel_id[:12],
                )
            await context.abort(*grpc_status(exc))
            return
        await channel.serve(CallEnd(context))
