"""Admin tier authentication: named keys stored hashed, browser sessions
with CSRF tokens, the limiter for wrong keys, websocket upgrades; every
refusal changes nothing and no key ever reaches a log, an event or the
public tier."""

from __future__ import annotations

import asyncio
import http.client
import json
import stat
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from support.procs import Controller, wait_for

IDLE, LIFETIME = 1.5, 4.0
BURST, WINDOW = 3, 3.0  # three wrong keys, then one more try a second
ALLOWED_ORIGIN = "https://console.example.org"
EVIL_ORIGIN = "http://evil.example"


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Controller]:
    proc = Controller(
        tmp_path,
        "--admin-session-idle",
        str(IDLE),
        "--admin-session-lifetime",
        str(LIFETIME),
        "--admin-auth-failures",
        str(BURST),
        "--admin-auth-window",
        str(WINDOW),
        "--admin-origins",
        ALLOWED_ORIGIN,
    )
    proc.start()
    yield proc
    proc.kill()


def call(
    url: str,
    method: str = "GET",
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
    source: str | None = None,
) -> tuple[int, http.client.HTTPMessage, Any]:
    """One request: (status, response headers, parsed JSON or text); ``source`` picks the client address."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=10, source_address=(source, 0) if source else None
    )
    data = None if body is None else json.dumps(body).encode()
    sent = dict(headers or {})
    if data is not None:
        sent["Content-Type"] = "application/json"
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=data, headers=sent)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    kind = response.headers.get("Content-Type", "")
    return response.status, response.headers, json.loads(raw) if "json" in kind else raw.decode()


@dataclass
class Browser:
    """A logged-in browser: its session cookie and CSRF token."""

    session_id: str
    csrf: str
    set_cookie: str

    def headers(self, csrf: str | None = "", origin: str | None = None) -> dict[str, str]:
        headers = {"Cookie": f"swarm_session={self.session_id}"}
        token = self.csrf if csrf == "" else csrf
        if token is not None:
            headers["X-CSRF-Token"] = token
        if origin is not None:
            headers["Origin"] = origin
        return headers


def login(ctl: Controller, key: str | None = None) -> Browser:
    status, headers, body = call(
        ctl.admin_url + "/admin/api/login", "POST", body={"key": key or ctl.admin_key}
    )
    assert status == 200, body
    cookie = SimpleCookie(headers["Set-Cookie"])
    return Browser(cookie["swarm_session"].value, body["csrf_token"], headers["Set-Cookie"])


def key_headers(key: str) -> dict[str, str]:
    return {"X-Admin-Key": key}


def tokens(ctl: Controller) -> list[dict[str, Any]]:
    status, body = ctl.admin("GET", "/admin/api/tokens")
    assert status == 200
    return list(body["tokens"])


def own_origin(ctl: Controller) -> str:
    return ctl.admin_url


def test_refused_requests_change_nothing(ctl: Controller) -> None:
    url = ctl.admin_url + "/admin/api/tokens"
    assert call(url, "POST", body={})[0] == 401
    status, _, body = call(url, "POST", headers=key_headers("not-the-key-" * 3), body={})
    assert status == 401 and body["error"]["message"] == "missing or wrong X-Admin-Key"
    browser = login(ctl)
    status, _, body = call(url, "POST", headers=browser.headers(csrf=None), body={})
    assert status == 403 and "X-CSRF-Token" in body["error"]["message"]
    status, _, body = call(url, "POST", headers=browser.headers(csrf="forged"), body={})
    assert status == 403 and "X-CSRF-Token" in body["error"]["message"]
    status, _, body = call(url, "POST", headers=browser.headers(origin=EVIL_ORIGIN), body={})
    assert status == 403 and "cross-origin" in body["error"]["message"]
    status, _, body = call(url, "DELETE", headers=browser.headers(csrf=None))
    assert status == 403
    assert tokens(ctl) == []
    assert not ctl.events(type="token_created")

    # Reads need no CSRF token; changes with the right token (and origin) work.
    assert call(url, headers=browser.headers(csrf=None))[0] == 200
    status, _, made = call(url, "POST", headers=browser.headers(origin=own_origin(ctl)), body={})
    assert status == 201 and made["created_by"] == "admin"
    status, _, made = call(url, "POST", headers=browser.headers(origin=ALLOWED_ORIGIN), body={})
    assert status == 201
    # A program with the key needs no CSRF token.
    status, _, made = call(url, "POST", headers=key_headers(ctl.admin_key), body={})
    assert status == 201
    assert len(tokens(ctl)) == 3


def test_login_session_and_logout(ctl: Controller) -> None:
    url = ctl.admin_url
    browser = login(ctl)
    cookie = browser.set_cookie
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/", f"Max-Age={int(LIFETIME)}"):
        assert attribute in cookie, cookie
    assert "Secure" not in cookie  # plain http on 127.0.0.1; Secure is set over TLS

    status, _, me = call(url + "/admin/api/session", headers=browser.headers(csrf=None))
    assert status == 200
    assert me["key"] == "admin" and me["via"] == "session" and me["csrf_token"] == browser.csrf
    assert me["idle_timeout_s"] == IDLE
    status, _, me = call(url + "/admin/api/session", headers=key_headers(ctl.admin_key))
    assert status == 200 and me == {"key": "admin", "via": "key", "expires_at": None}
    assert call(url + "/admin/api/whoami", headers=browser.headers(csrf=None))[2] == {"key": "admin"}

    assert call(url + "/admin/api/logout", "POST", headers=browser.headers(csrf=None))[0] == 403
    assert call(url + "/admin/api/session", headers=browser.headers(csrf=None))[0] == 200
    assert call(url + "/admin/api/logout", "POST", headers=key_headers(ctl.admin_key))[0] == 409
    status, headers, body = call(url + "/admin/api/logout", "POST", headers=browser.headers())
    assert status == 200 and body == {"logged_out": "admin"}
    cleared = SimpleCookie(headers["Set-Cookie"])["swarm_session"]
    assert cleared.value == "" and cleared["max-age"] == "0"
    status, _, body = call(url + "/admin/api/session", headers=browser.headers(csrf=None))
    assert status == 401 and "log in again" in body["error"]["message"]

    assert call(url + "/admin/api/login", "POST", body={"key": "wrong-key-" * 4})[0] == 401
    assert call(url + "/admin/api/login", "POST", body={"nokey": 1})[0] == 400
    assert (
        call(url + "/admin/api/login", "POST", body={"key": ctl.admin_key}, headers={"Origin": EVIL_ORIGIN})[
            0
        ]
        == 403
    )

    logins = ctl.events(type="admin_login")
    assert [(e["data"]["by"], e["data"]["address"]) for e in logins] == [("admin", "127.0.0.1")]
    assert [e["data"]["by"] for e in ctl.events(type="admin_logout")] == ["admin"]
    failed = ctl.events(type="admin_login_failed")
    assert [(e["data"]["address"], e["data"]["via"]) for e in failed] == [("127.0.0.1", "login")]


def test_sessions_expire_when_idle_and_after_their_lifetime(ctl: Controller) -> None:
    session_url = ctl.admin_url + "/admin/api/session"
    tokens_url = ctl.admin_url + "/admin/api/tokens"
    idle = login(ctl)
    assert call(session_url, headers=idle.headers(csrf=None))[0] == 200
    time.sleep(IDLE + 0.3)
    assert call(session_url, headers=idle.headers(csrf=None))[0] == 401
    assert call(tokens_url, "POST", headers=idle.headers(), body={})[0] == 401

    busy = login(ctl)
    started = time.monotonic()
    while call(session_url, headers=busy.headers(csrf=None))[0] == 200:
        assert time.monotonic() - started < LIFETIME + 2, "the session outlived its lifetime"
        time.sleep(0.3)  # well within the idle timeout: only the lifetime ends it
    assert time.monotonic() - started >= LIFETIME - 0.5
    assert call(tokens_url, "POST", headers=busy.headers(), body={})[0] == 401
    assert tokens(ctl) == []


def test_wrong_keys_are_rate_limited_per_address_and_recover(ctl: Controller) -> None:
    url = ctl.admin_url + "/admin/api/whoami"
    browser = login(ctl)  # a session opened before the lockout keeps working
    for _ in range(BURST):
        assert call(url, headers=key_headers("guess-" * 6))[0] == 401
    status, headers, body = call(url, headers=key_headers("guess-" * 6))
    assert status == 429 and "too many wrong admin keys" in body["error"]["message"]
    retry = int(headers["Retry-After"])
    assert 1 <= retry <= WINDOW
    # The right key is refused too while locked: otherwise 200 against 429 would still answer guesses.
    assert call(url, headers=key_headers(ctl.admin_key))[0] == 429
    assert call(ctl.admin_url + "/admin/api/login", "POST", body={"key": ctl.admin_key})[0] == 429
    assert call(url, headers=browser.headers(csrf=None))[0] == 200
    # Per address: another client is not affected.
    assert call(url, headers=key_headers(ctl.admin_key), source="127.0.0.2")[2] == {"key": "admin"}

    time.sleep(retry + 0.1)
    assert call(url, headers=key_headers(ctl.admin_key))[2] == {"key": "admin"}
    locked = ctl.events(type="admin_auth_locked")
    assert [e["data"]["address"] for e in locked] == ["127.0.0.1"]
    assert len(ctl.events(type="admin_login_failed")) == BURST
    # One attempt came back, not the whole burst.
    assert call(url, headers=key_headers("guess-" * 6))[0] == 401
    assert call(url, headers=key_headers("guess-" * 6))[0] == 429


def test_keys_are_named_stored_hashed_and_managed(ctl: Controller) -> None:
    keys_file = ctl.data_dir / "admin-keys"
    key_file = Path(ctl.info["admin_key_file"])
    admin_key = ctl.admin_key
    for path in (keys_file, key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [x for x in keys_file.read_text().splitlines() if x and not x.startswith("#")]
    assert len(lines) == 1 and lines[0].startswith("admin:scrypt$16384$8$1$")
    assert admin_key not in keys_file.read_text()

    url = ctl.admin_url + "/admin/api/keys"
    admin = key_headers(admin_key)
    status, headers, added = call(url, "POST", headers=admin, body={"name": "ci"})
    assert status == 201 and added["name"] == "ci" and len(added["key"]) >= 40
    assert headers["Cache-Control"] == "no-store"
    ci_key = added["key"]
    assert "ci:scrypt$" in keys_file.read_text() and ci_key not in keys_file.read_text()
    assert call(url, "POST", headers=admin, body={"name": "ci"})[0] == 409
    assert call(url, "POST", headers=admin, body={"name": "no:colons"})[0] == 400
    assert call(url, "POST", headers=admin, body={})[0] == 400

    assert call(ctl.admin_url + "/admin/api/whoami", headers=key_headers(ci_key))[2] == {"key": "ci"}
    status, _, token = call(ctl.admin_url + "/admin/api/tokens", "POST", headers=key_headers(ci_key), body={})
    assert status == 201 and token["created_by"] == "ci"
    ci_browser = login(ctl, ci_key)
    status, _, listed = call(url, headers=admin)
    assert listed == {"keys": [{"name": "admin", "sessions": 0}, {"name": "ci", "sessions": 1}]}

    status, _, removed = call(url + "/ci", "DELETE", headers=admin)
    assert status == 200 and removed == {"removed": "ci", "sessions_ended": 1}
    assert call(ctl.admin_url + "/admin/api/whoami", headers=key_headers(ci_key))[0] == 401
    assert call(ctl.admin_url + "/admin/api/session", headers=ci_browser.headers(csrf=None))[0] == 401
    assert call(url + "/ci", "DELETE", headers=admin)[0] == 404
    status, _, body = call(url + "/admin", "DELETE", headers=admin)
    assert status == 409 and "last admin key" in body["error"]["message"]
    assert [(e["data"]["key_name"], e["data"]["by"]) for e in ctl.events(type="admin_key_added")] == [
        ("ci", "admin")
    ]
    assert [e["data"]["key_name"] for e in ctl.events(type="admin_key_removed")] == ["ci"]

    # Keys survive a restart; removing "admin" also removes admin.key, so a
    # restart does not bring it back.
    status, _, added = call(url, "POST", headers=admin, body={"name": "ops"})
    ops = key_headers(added["key"])
    ctl.kill()
    ctl.restart()
    assert call(ctl.admin_url + "/admin/api/whoami", headers=admin)[2] == {"key": "admin"}
    assert call(url + "/admin", "DELETE", headers=ops)[0] == 200
    assert not key_file.exists()
    ctl.kill()
    ctl.restart()
    assert not key_file.exists()
    assert call(ctl.admin_url + "/admin/api/whoami", headers=admin)[0] == 401
    assert call(url, headers=ops)[2] == {"keys": [{"name": "ops", "sessions": 0}]}


def test_a_new_admin_key_file_rotates_the_admin_key(ctl: Controller) -> None:
    key_file = Path(ctl.info["admin_key_file"])
    old = ctl.admin_key
    new = "a-key-the-admin-chose-" + "x" * 10
    key_file.write_text(new + "\n")
    ctl.kill()
    ctl.restart()
    whoami = ctl.admin_url + "/admin/api/whoami"
    assert call(whoami, headers=key_headers(new))[2] == {"key": "admin"}
    assert call(whoami, headers=key_headers(old))[0] == 401
    assert new not in (ctl.data_dir / "admin-keys").read_text()


async def _upgrade(url: str, headers: dict[str, str], origin: str | None) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, headers=headers, origin=origin) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def upgrade(ctl: Controller, headers: dict[str, str], origin: str | None, path: str = "/ws/events") -> int:
    return asyncio.run(_upgrade(ctl.admin_url + path, headers, origin))


def test_websocket_upgrades_need_auth_and_an_allowed_origin(ctl: Controller) -> None:
    key = key_headers(ctl.admin_key)
    browser = login(ctl)
    cookie = browser.headers(csrf=None)
    for path in ("/ws/events", "/ws/protocol"):
        assert upgrade(ctl, {}, own_origin(ctl), path) == 401
        assert upgrade(ctl, key_headers("wrong-" * 6), own_origin(ctl), path) == 401
        assert upgrade(ctl, key, EVIL_ORIGIN, path) == 403
        assert upgrade(ctl, cookie, EVIL_ORIGIN, path) == 403
        assert upgrade(ctl, cookie, None, path) == 403  # a browser always sends Origin
        assert upgrade(ctl, cookie, own_origin(ctl), path) == 101
        assert upgrade(ctl, cookie, ALLOWED_ORIGIN, path) == 101
        assert upgrade(ctl, key, None, path) == 101  # a program with the key
    assert upgrade(ctl, key, None, "/ws/events?drone=ghost") == 404
    assert upgrade(ctl, key, None, "/ws/protocol?sample=0") == 400


async def _closed_when_session_ends(ctl: Controller, browser: Browser) -> tuple[int, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            ctl.admin_url + "/ws/events", headers=browser.headers(csrf=None), origin=own_origin(ctl)
        ) as ws,
    ):
        started = time.monotonic()
        status, _, _ = await asyncio.to_thread(
            call, ctl.admin_url + "/admin/api/logout", "POST", headers=browser.headers()
        )
        assert status == 200
        message = await asyncio.wait_for(ws.receive(), 10)
        while message.type is aiohttp.WSMsgType.TEXT:
            message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return int(message.data), time.monotonic() - started


def test_a_stream_ends_with_its_session(ctl: Controller) -> None:
    code, took = asyncio.run(_closed_when_session_ends(ctl, login(ctl)))
    assert code == 1008 and took < 6


def test_the_key_never_appears_in_logs_events_or_the_public_tier(ctl: Controller) -> None:
    admin_key = ctl.admin_key
    near_miss = admin_key[:-1] + ("x" if admin_key[-1] != "x" else "y")
    admin = key_headers(admin_key)
    _, _, added = call(ctl.admin_url + "/admin/api/keys", "POST", headers=admin, body={"name": "ci"})
    ci_key = added["key"]
    browser = login(ctl)
    login(ctl, ci_key)
    call(ctl.admin_url + "/admin/api/login", "POST", body={"key": near_miss})
    call(ctl.admin_url + "/admin/api/whoami", headers=key_headers(near_miss))
    call(ctl.admin_url + "/admin/api/tokens", "POST", headers=browser.headers(), body={})
    call(ctl.admin_url + "/admin/api/logout", "POST", headers=browser.headers())
    assert upgrade(ctl, key_headers(ci_key), None) == 101
    call(ctl.admin_url + "/admin/api/keys/ci", "DELETE", headers=admin)
    wait_for(lambda: ctl.events(type="admin_key_removed"), what="key removal event")

    secrets = {
        "admin key": admin_key,
        "added key": ci_key,
        "wrong key": near_miss,
        "session": browser.session_id,
    }
    everything = json.dumps(ctl.events())
    public = [
        call(ctl.public_url + path)[2]
        for path in ("/api/v1/status", "/api/v1/nodes", "/api/v1/health", "/api/v1/openapi.json")
    ]
    for what, secret in secrets.items():
        assert secret not in ctl.log(), f"{what} in the controller log"
        assert secret not in everything, f"{what} in the events"
        assert secret not in json.dumps(public), f"{what} in the public tier"
    assert admin_key not in (ctl.data_dir / "admin-keys").read_text()
    assert ci_key not in (ctl.data_dir / "admin-keys").read_text()
    # The audit trail is there, by name.
    types = {e["type"] for e in ctl.events()}
    assert {
        "admin_login",
        "admin_logout",
        "admin_login_failed",
        "admin_key_added",
        "admin_key_removed",
    } <= types
    # ...for admins only: the public tier shows none of it.
    shown = {e["type"] for e in call(ctl.public_url + "/api/v1/events?limit=1000")[2]["events"]}
    assert shown and not {t for t in shown if t.startswith("admin_")}


def test_limiter_and_sessions_keep_memory_bounded() -> None:
    from swarm.controller.adminkey import StoredKey
    from swarm.controller.web.auth import FailureLimiter, Sessions

    limiter = FailureLimiter(burst=3, window=3.0, limit=100)
    for i in range(10_000):
        limiter.fail(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 1000.0)
    assert len(limiter) == 100
    assert limiter.retry_after("10.0.39.15", 1000.0) == 0  # the last one failed only once
    # Over the limit, refilled buckets are forgotten first.
    assert not limiter.fail("192.0.2.1", 2000.0)
    assert len(limiter) == 1

    sessions = Sessions(idle=10.0, lifetime=100.0, limit=5)
    key = StoredKey("admin", "scrypt$16384$8$1$c2FsdA$aGFzaA")
    made = [sessions.create(key, "127.0.0.1", 1000.0 + i) for i in range(12)]
    assert len(sessions) == 5
    assert sessions.find(made[0][1], 1012.0, touch=False) is None  # least recently used: ended
    assert sessions.find(made[-1][1], 1012.0, touch=True) is not None
    assert sessions.find(made[-1][1], 1012.0 + 10.5, touch=False) is None  # idle
