"""A stand-in for the gateway's control stream, for in-process tests of
what the controller does with drones (the fleet, the healer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarm.controller import serde
from swarm.controller.channel_frames import ChannelRequest
from swarm.controller.domain import HelloData, PongData
from swarm.controller.fleet import DroneState, Fleet, Link


class FakeLink:
    """fleet.Link: a control stream that only records what happens to it.
    ``sent`` holds what the gateway would write for the verbs that carry one
    message (built by serde, as DroneSession does), so a test reads it as
    the drone would; ``channels`` the channels asked for."""

    def __init__(self, drone_id: str) -> None:
        self.drone_id = drone_id
        self.peer = "ipv4:127.0.0.1:1"
        self.sent: list[Any] = []
        self.channels: list[tuple[str, ChannelRequest]] = []
        self.closed: tuple[str, str] | None = None

    def _write(self, message: Any) -> bool:
        self.sent.append(message)
        return True

    def ping(self, seq: int, sent_at_ns: int, answer_within_ms: int = 0) -> bool:
        return self._write(serde.ping(seq, sent_at_ns, answer_within_ms))

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
        return self._write(serde.start_build(job_id, build_id, cpv, timeout_s, binhost_url, test_build, env))

    def cancel_build(self, build_id: str, reason: str) -> bool:
        return self._write(serde.cancel_build(build_id, reason))

    def restart_service(self, reason: str) -> bool:
        return self._write(serde.restart_service(reason))

    def open_channel(self, channel_id: str, request: ChannelRequest) -> bool:
        self.channels.append((channel_id, request))
        return True

    def apply_payload(self, meta: bytes, signature: bytes, confirm_within_s: int) -> bool:
        return self._write(serde.apply_payload(meta, signature, confirm_within_s))

    def close(self, code: str, details: str) -> None:
        self.closed = (code, details)


def connect(fleet: Fleet, name: str, instance: str = "", cores: int = 2) -> tuple[DroneState, FakeLink]:
    """An agent process (``instance``) connects as ``name`` (its id derived
    from the name) and answers its first ping at once, by the fleet's clock:
    the drone is online."""
    drone_id = name.ljust(32, "0")
    hello = HelloData(drone_id, name, cores, "lxc", "lan", "test", 1000, "host", "", "", instance, None)
    link = FakeLink(drone_id)
    state = fleet.attach(hello, link)
    sent = fleet.clock.time_ns()
    fleet.on_ping_sent(state, state.ping_seq + 1, sent)
    fleet.on_pong(state, PongData(state.ping_seq, sent, False, "", 0.0, 1.0, 1))
    return state, link


_checked: Link = FakeLink("")  # mypy: the fake has what fleet.Link asks for (make typecheck)
