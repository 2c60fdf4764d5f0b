"""The bounds' bookkeeping in-process, with a clock moved by hand (the gRPC
behaviour is in test_gateway_protocol.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from swarm.controller.authz import AGENT, INSECURE, Identity
from swarm.controller.bounds import BurstLog, Bursts, Replacements, Slots, bound_key, noise_key, peer_host


def test_replacements_are_limited_per_drone_in_a_sliding_window() -> None:
    now = [100.0]
    limit = Replacements(3, 10.0, clock=lambda: now[0])
    assert [limit.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.allow("a") == 10.0  # all three were just now
    assert limit.allow("b") == 0.0  # another drone has its own budget
    now[0] += 4
    assert limit.allow("a") == 6.0
    now[0] += 6  # the three are 10 s old now: out of the window
    assert [limit.allow("a") for _ in range(4)] == [0.0, 0.0, 0.0, 10.0]


def test_slots_cap_per_key_and_in_all_and_free_on_give() -> None:
    slots = Slots("streams", per_key=2, total=3)
    assert slots.take("a") is None and slots.take("a") is None
    assert "limit per drone is 2" in (slots.take("a") or "")
    assert slots.take("b") is None
    assert "limit in all is 3" in (slots.take("c") or "")
    slots.give("a")
    assert slots.take("c") is None
    for key in ("a", "b", "c"):
        slots.give(key)
    assert slots.held_total == 0 and slots.held("a") == 0


def test_bound_key_is_the_certificates_drone_else_the_connection() -> None:
    assert bound_key(Identity(AGENT, "d1", 7), "ipv4:127.0.0.1:5000") == "d1"
    assert bound_key(Identity(INSECURE), "ipv4:127.0.0.1:5000") == "ipv4:127.0.0.1:5000"


async def after_windows() -> None:
    """Scheduled after the windows open now, with the same delay: done after they end."""
    ended = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.05, ended.set_result, None)
    await asyncio.wait_for(ended, 5)


def test_a_burst_reports_its_first_hit_at_once_and_the_rest_as_one_count() -> None:
    async def scenario() -> tuple[list[bool], list[int], list[int]]:
        bursts = Bursts(0.05)
        more: list[int] = []
        lone: list[int] = []
        firsts = [bursts.hit("k", more.append) for _ in range(5)]
        firsts.append(bursts.hit("single", lone.append))
        await after_windows()
        firsts.append(bursts.hit("k", more.append))  # a new burst
        firsts.append(bursts.hit("k", more.append))
        bursts.close()  # its timer is cancelled: its count of 1 more is never reported
        await after_windows()
        return firsts, more, lone

    firsts, more, lone = asyncio.run(scenario())
    assert firsts == [True, False, False, False, False, True, True, False]
    assert more == [4]  # the four after the first, in one report
    assert lone == []  # a burst of one needs no summary


def test_an_allowance_reports_a_few_hits_of_a_burst_at_once_then_counts_the_rest() -> None:
    async def scenario() -> tuple[list[bool], list[int]]:
        bursts = Bursts(0.05, allowance=3)
        more: list[int] = []
        firsts = [bursts.hit("k", more.append) for _ in range(7)]
        await after_windows()
        firsts += [bursts.hit("k", more.append) for _ in range(2)]  # a new burst, within its allowance
        await after_windows()
        bursts.close()
        return firsts, more

    firsts, more = asyncio.run(scenario())
    assert firsts == [True, True, True, False, False, False, False, True, True]
    assert more == [4]  # and none for the second burst: it stayed within the allowance


def test_peer_log_writes_a_few_lines_per_kind_and_key_then_one_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.peerlog")

    async def scenario() -> None:
        bursts = Bursts(0.05, allowance=2)
        lines = BurstLog(logger, bursts)
        for attempt in range(6):
            lines.warning("revoked", "ipv4:10.0.0.5", "refused call %d from %s", attempt, "10.0.0.5:1000")
        lines.warning("revoked", "ipv4:10.0.0.6", "refused call %d from %s", 0, "10.0.0.6:1000")
        await after_windows()
        bursts.close()

    with caplog.at_level(logging.WARNING, logger="test.peerlog"):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        "refused call 0 from 10.0.0.5:1000",
        "refused call 1 from 10.0.0.5:1000",
        "refused call 0 from 10.0.0.6:1000",
        "4 more like this within 0.05s; the latest: refused call 5 from 10.0.0.5:1000",
    ]


def test_a_peer_counts_by_its_drone_else_by_its_address_without_the_port() -> None:
    assert peer_host("ipv4:10.0.0.5:41234") == "ipv4:10.0.0.5"
    assert peer_host("ipv6:[::1]:5000") == "ipv6:[::1]"
    assert peer_host("unix:/run/x.sock") == "unix:/run/x.sock"
    assert noise_key(Identity(AGENT, "d1", 7), "ipv4:10.0.0.5:1") == "d1"
    assert noise_key(None, "ipv4:10.0.0.5:1") == noise_key(Identity(INSECURE), "ipv4:10.0.0.5:2")
