"""The admin tier's key checks and their limits, in process, with a clock
the test moves: a right key always passes; wrong keys are limited per
address and in all, and never cost scrypt; keys of an earlier version
still work and turn fast; weak keys in the key file are refused; who the
client is behind a proxy; which hosts and origins each tier accepts.
tests/test_admin_auth.py proves the same end to end on a real controller.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from swarm.controller import adminkey
from swarm.controller.adminkey import AdminKeyError, KeyStore, StoredKey
from swarm.controller.errors import InvalidArgument, Unauthenticated
from swarm.controller.events import EventLog
from swarm.controller.store.records import EventRecord
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore
from swarm.controller.web.auth import AdminAuth, AuthSettings, FailureLimiter, Sessions
from swarm.controller.web.forwarded import client_address, parse_networks
from swarm.controller.web.hostname import split_host
from swarm.controller.web.hosts import HostPolicy

from fakes.clock import ManualClock

pytestmark = pytest.mark.timeout(60)

BURST, GLOBAL, WINDOW = 3, 20, 60.0


def legacy_hash(key: str) -> str:
    """A key file line's hash as earlier versions wrote it (scrypt, N=2^14)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(key.encode(), salt=salt, n=2**14, r=8, p=1, maxmem=64 * 2**20, dklen=32)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"scrypt$16384$8$1${b64(salt)}${b64(digest)}"


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts hashlib.scrypt calls (the slow path), running them for real."""
    calls: list[int] = []
    real = hashlib.scrypt

    def counted(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counted)
    return calls


class Tier:
    """An admin tier's AdminAuth over a real key file and event log."""

    def __init__(self, tmp_path: Path, keys: list[StoredKey]) -> None:
        self.clock = ManualClock(start=1_000_000.0)
        self.events = EventLog(
            StoreRunner(SqlStore(f"sqlite:///{tmp_path}/unused.db")), buffer=100, retention=100
        )
        self.seen: list[EventRecord] = []
        self.events.subscribe(self.seen.append)
        self.keys_path = tmp_path / "admin-keys"
        adminkey.write_keys(self.keys_path, keys)
        settings = AuthSettings(
            session_idle=60.0,
            session_lifetime=600.0,
            session_max=10,
            failures=BURST,
            global_failures=GLOBAL,
            failure_window=WINDOW,
        )
        self.auth = AdminAuth(
            KeyStore(self.keys_path, tmp_path / "admin.key", keys),
            settings,
            self.events,
            HostPolicy(frozenset({"127.0.0.1"}), frozenset()),
            clock=self.clock,
        )

    async def try_key(self, address: str, key: str) -> int:
        """The status the admin tier answers a request with this key."""
        try:
            await self.auth.check_key(address, key, "header", "wrong key")
        except Unauthenticated:
            return 401
        except web.HTTPTooManyRequests:
            return 429
        return 200

    def count(self, event_type: str) -> int:
        return sum(1 for e in self.seen if e.type == event_type)


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())


@pytest.fixture
def right_key() -> str:
    return adminkey.new_key()


@pytest.fixture
def tier(tmp_path: Path, right_key: str) -> Iterator[Tier]:
    yield Tier(tmp_path, [StoredKey("admin", adminkey.hash_key(right_key))])


def test_a_trickle_of_wrong_keys_never_locks_out_the_right_key(tier: Tier, right_key: str) -> None:
    """One wrong key every 5.5 s from the admin's own address (the probe
    that kept the admin out for as long as it went on), for an hour."""

    async def scenario() -> list[int]:
        wrong = []
        for _ in range(655):
            await tier.clock.advance(5.5)
            wrong.append(await tier.try_key("192.0.2.7", "guess-" + secrets.token_urlsafe(30)))
            assert await tier.try_key("192.0.2.7", right_key) == 200
        return wrong

    wrong = run(scenario)
    # The trickle is faster than the allowance refills (one per 20 s), so the address is limited...
    assert wrong.count(401) < 200 and wrong.count(429) > 400
    assert tier.count("admin_auth_locked") >= 1
    # ...while a login with the right key opens a session all along.
    assert run(lambda: tier.try_key("192.0.2.7", right_key)) == 200


def test_wrong_keys_are_limited_per_address_and_in_all(tier: Tier, right_key: str) -> None:
    async def scenario() -> None:
        for _ in range(BURST):
            assert await tier.try_key("192.0.2.1", "wrong-" * 6) == 401
        assert await tier.try_key("192.0.2.1", "wrong-" * 6) == 429
        assert await tier.try_key("192.0.2.2", "wrong-" * 6) == 401  # per address
        assert await tier.try_key("192.0.2.1", right_key) == 200
        await tier.clock.advance(WINDOW / BURST)  # one attempt back
        assert await tier.try_key("192.0.2.1", "wrong-" * 6) == 401
        assert await tier.try_key("192.0.2.1", "wrong-" * 6) == 429
        # Many addresses: the global allowance (19 left of 20) runs out, for every
        # address, fresh ones too.
        statuses = [await tier.try_key(f"198.51.100.{i}", "wrong-" * 6) for i in range(GLOBAL)]
        assert statuses.count(401) == GLOBAL - 1 and statuses[-1] == 429
        assert await tier.try_key("203.0.113.9", "wrong-" * 6) == 429
        assert await tier.try_key("203.0.113.9", right_key) == 200
        await tier.clock.advance(WINDOW / GLOBAL)  # one back for everyone: the next wrong key spends it
        assert await tier.try_key("203.0.113.9", "wrong-" * 6) == 401
        assert await tier.try_key("203.0.113.10", "wrong-" * 6) == 429
        await tier.clock.advance(WINDOW)  # everything refilled
        assert await tier.try_key("203.0.113.9", "wrong-" * 6) == 401

    run(scenario)
    locked = [e.data["address"] for e in tier.seen if e.type == "admin_auth_locked"]
    assert locked == ["192.0.2.1", "192.0.2.1", "*"]  # the shared allowance's: once a window
    # Each wrong key that was checked is one line and one event; refused ones are neither.
    assert tier.count("admin_login_failed") == BURST + 1 + 1 + (GLOBAL - 1) + 2


def test_a_thousand_wrong_keys_take_the_fast_path(
    tier: Tier, right_key: str, scrypt_calls: list[int]
) -> None:
    """No scrypt, not even for the first wrong keys (bench/wrong_keys.py
    prints what 1,000 of them cost a real controller)."""

    async def scenario() -> list[int]:
        statuses = []
        for i in range(1000):
            statuses.append(await tier.try_key(f"10.0.{i % 100}.1", secrets.token_urlsafe(32)))
        return statuses

    statuses = run(scenario)
    assert not scrypt_calls
    assert statuses.count(401) == GLOBAL and statuses.count(429) == 1000 - GLOBAL
    assert tier.count("admin_login_failed") == GLOBAL
    assert run(lambda: tier.try_key("10.0.0.1", right_key)) == 200


def test_keys_of_an_earlier_version_work_and_turn_fast(tmp_path: Path, scrypt_calls: list[int]) -> None:
    """A keys file with scrypt lines: a wrong key costs scrypt only within
    the budget of failed checks; a right one verifies once, is rewritten
    as SHA-256 and is fast from then on."""
    old_key, admin_key = adminkey.new_key(), adminkey.new_key()
    tier = Tier(
        tmp_path, [StoredKey("admin", adminkey.hash_key(admin_key)), StoredKey("ci", legacy_hash(old_key))]
    )
    scrypt_calls.clear()

    async def scenario() -> None:
        statuses = [await tier.try_key(f"10.1.{i}.1", "wrong-" * 6) for i in range(200)]
        assert statuses.count(401) == GLOBAL
        assert len(scrypt_calls) == GLOBAL  # the budget bounds the slow path
        # While wrong keys are limited, an unconverted key is one too: this is
        # the one thing the limiter can refuse a right key for.
        assert await tier.try_key("10.2.0.1", old_key) == 429
        await tier.clock.advance(WINDOW)
        calls = len(scrypt_calls)
        assert await tier.try_key("10.2.0.1", old_key) == 200
        assert len(scrypt_calls) == calls + 1
        assert await tier.try_key("10.2.0.1", old_key) == 200
        assert await tier.try_key("10.2.0.1", admin_key) == 200
        assert len(scrypt_calls) == calls + 1  # converted: no more scrypt
        # Its check spent nothing of the allowance: refunded when it matched.
        for _ in range(BURST):
            assert await tier.try_key("10.2.0.1", "wrong-" * 6) == 401

    run(scenario)
    lines = tier.keys_path.read_text().splitlines()
    assert f"ci:{adminkey.hash_key(old_key)}" in lines
    assert not [x for x in lines if "scrypt$" in x]
    assert not tier.auth.keys.has_legacy


def test_start_converts_the_admin_key_and_refuses_weak_ones(tmp_path: Path, scrypt_calls: list[int]) -> None:
    keys_path, key_path = tmp_path / "admin-keys", tmp_path / "admin.key"
    key = adminkey.new_key()
    key_path.write_text(key + "\n")
    adminkey.write_keys(keys_path, [StoredKey("admin", legacy_hash(key))])
    scrypt_calls.clear()
    assert adminkey.prepare(keys_path, key_path) == [StoredKey("admin", adminkey.hash_key(key))]
    assert not scrypt_calls  # admin.key is authoritative: no need to verify the old hash
    assert f"admin:{adminkey.hash_key(key)}" in keys_path.read_text().splitlines()

    for weak, why in [
        ("short-key-of-a-person", "21 characters, at least 32"),
        ("ab" * 20, "2 distinct"),
        ("a key with spaces in it, long enough", "one word"),
        ("é" * 40, "printable ASCII"),
    ]:
        key_path.write_text(weak + "\n")
        with pytest.raises(AdminKeyError, match=why) as refused:
            adminkey.prepare(keys_path, key_path)
        assert "\n" not in str(refused.value) and str(key_path) in str(refused.value)
    key_path.write_text("3f9a0c7e51b2d486aa19c0e7f35d2b64\n")  # like `openssl rand -hex 16`
    assert adminkey.prepare(keys_path, key_path)


def test_limiter_and_sessions_keep_memory_bounded() -> None:
    limiter = FailureLimiter(burst=3, window=3.0, limit=100, total=1_000_000)
    for i in range(10_000):
        limiter.fail(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 1000.0)
    assert len(limiter) == 100
    assert limiter.retry_after("10.0.39.15", 1000.0) == 0  # the last one failed only once
    # Over the limit, refilled buckets are forgotten first.
    assert limiter.fail("192.0.2.1", 2000.0) == (False, False)
    assert len(limiter) == 1

    sessions = Sessions(idle=10.0, lifetime=100.0, limit=5)
    key = StoredKey("admin", adminkey.hash_key(adminkey.new_key()))
    made = [sessions.create(key, "127.0.0.1", 1000.0 + i) for i in range(12)]
    assert len(sessions) == 5
    assert sessions.find(made[0][1], 1012.0, touch=False) is None  # least recently used: ended
    assert sessions.find(made[-1][1], 1012.0, touch=True) is not None
    assert sessions.find(made[-1][1], 1012.0 + 10.5, touch=False) is None  # idle


def test_forwarded_for_counts_only_from_trusted_proxies() -> None:
    proxies = parse_networks("127.0.0.3, 10.0.0.0/8, ::1")
    # From an untrusted peer the header is anyone's invention.
    assert client_address("192.0.2.5", ["203.0.113.1"], proxies) == "192.0.2.5"
    assert client_address("192.0.2.5", ["203.0.113.1"], ()) == "192.0.2.5"
    # From a proxy: the rightmost address that is not a proxy.
    assert client_address("127.0.0.3", ["203.0.113.1"], proxies) == "203.0.113.1"
    assert client_address("127.0.0.3", ["198.51.100.9, 203.0.113.1, 10.1.2.3"], proxies) == "203.0.113.1"
    assert client_address("127.0.0.3", ["198.51.100.9", "203.0.113.1"], proxies) == "203.0.113.1"
    assert client_address("::1", ["[2001:db8::7]"], proxies) == "2001:db8::7"
    assert client_address("::ffff:127.0.0.3", ["203.0.113.1"], proxies) == "203.0.113.1"
    # Nothing, only proxies, or garbage: the last hop a proxy vouches for.
    assert client_address("127.0.0.3", [], proxies) == "127.0.0.3"
    assert client_address("127.0.0.3", ["10.9.9.9, 10.1.1.1"], proxies) == "10.9.9.9"
    assert client_address("127.0.0.3", ["203.0.113.1, not-an-address"], proxies) == "127.0.0.3"
    assert client_address(None, ["203.0.113.1"], proxies) == "unknown"
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33' is not an address or a network")):
        parse_networks("127.0.0.1,10.0.0.0/33")


def test_each_tier_answers_to_its_names_and_their_origins() -> None:
    policy = HostPolicy(
        frozenset({"localhost", "127.0.0.1", "::1", "swarm.example.org"}),
        frozenset({"https://console.example.org"}),
    )
    for host in ("localhost", "LOCALHOST:8093", "127.0.0.1:8093", "[::1]:8093", "swarm.example.org.", None):
        assert policy.allows_host(host), host
    for host in ("evil.example", "evil.example:8093", "127.0.0.2", "swarm.example.org.evil.example"):
        assert not policy.allows_host(host), host
    for malformed in ("a b", "localhost:port", "localhost:99999", "[::1", "::1", "[localhost]:80", ""):
        assert split_host(malformed) is None, malformed
    with pytest.raises(InvalidArgument, match="malformed Host header"):
        policy.allows_host("a b")

    assert policy.allows_origin("http://127.0.0.1:8093", "http", 8093)
    assert policy.allows_origin("http://localhost:8093", "http", 8093)  # not the request's Host: a known name
    assert policy.allows_origin("http://[::1]:8093", "http", 8093)
    assert policy.allows_origin("https://console.example.org", "http", 8093)  # --admin-origins
    assert policy.allows_origin("HTTPS://Console.Example.Org/", "http", 8093)
    for origin in (
        "http://evil.example:8093",  # a rebinding page, whatever its Host says
        "http://127.0.0.1:8100",  # another port: another origin
        "https://127.0.0.1:8093",  # another scheme
        "http://127.0.0.1",
        "null",
        "http://user@127.0.0.1:8093",
        "http://127.0.0.1:8093/path",
        "http://127.0.0.1:80000",
    ):
        assert not policy.allows_origin(origin, "http", 8093), origin
    assert not policy.allows_origin("http://127.0.0.1:8093", "http", None)
