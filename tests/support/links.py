"""A stand-in for the gateway's control stream, for in-process tests of
what the controller does with drones (the fleet, the healer)."""

from __future__ import annotations

from typing import Any

from swarm.controller.channel_frames import ChannelRequest


class FakeLink:
    """fleet.Link: a control stream that only records what happens to it."""

    def __init__(self, drone_id: str) -> None:
        self.drone_id = drone_id
        self.peer = "ipv4:127.0.0.1:1"
        self.sent: list[Any] = []
        self.channels: list[tuple[str, ChannelRequest]] = []
        self.closed: tuple[str, str] | None = None

    def send(self, message: Any) -> bool:
        self.sent.append(message)
        return True

    def open_channel(self, channel_id: str, request: ChannelRequest) -> bool:
        self.channels.append((channel_id, request))
        return True

    def close(self, code: str, details: str) -> None:
        self.closed = (code, details)
