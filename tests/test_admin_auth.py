"""Admin tier authentication: named keys stored hashed, browser sessions
with CSRF tokens, the limiter for wrong keys, websocket upgrades; every
refusal changes nothing and no key ever reaches a log, an event or the
public tier.

The tests of one running controller use one in this process (support/inproc.py:
the real application and its web tiers on real sockets, a fresh one a
test) on a manual clock, which the timer tests (session expiry, the
limiter's refill, a stream ending with its session) move instead of
waiting; key management across restarts, and the edge (proxies, host names,
origins), run controller processes with the same flags on their command line."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import secrets
import stat
import subprocess
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fakes.clock import ManualClock
from support.inproc import InProcessController, LogLines, local_config, swarm_log
from support.procs import Controller, ControllerApi, wait_for

IDLE, LIFETIME = 1.5, 4.0
BURST, WINDOW = 3, 3.0  # three wrong keys, then one more try a second
ALLOWED_ORIGIN = "https://console.example.org"
EVIL_ORIGIN = "http://evil.example"


@pytest.fixture
def records() -> Iterator[LogLines]:
    with swarm_log() as lines:
        yield lines


@pytest.fixture
def ctl(tmp_path: Path, records: LogLines) -> Iterator[InProcessController]:
    """A controller of the test's own, in this process, on a manual clock
    (``advance``), its log in ``records``."""
    config = local_config(
        tmp_path,
        admin_session_idle=IDLE,
        admin_session_lifetime=LIFETIME,
        admin_auth_failures=BURST,
        admin_auth_window=WINDOW,
        admin_origins=ALLOWED_ORIGIN,
    )
    proc = InProcessController(config, ManualClock()).start()
    yield proc
    proc.stop()


def advance(ctl: InProcessController, seconds: float) -> None:
    """Move the controller's clock forward; what falls due on the way runs."""
    clock = ctl.controller.clock
    assert isinstance(clock, ManualClock)
    ctl.run(lambda: clock.advance(seconds))


@pytest.fixture
def ctl_process(tmp_path: Path) -> Iterator[Controller]:
    """The same as a controller process, for what lasts across restarts."""
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


def login(ctl: ControllerApi, key: str | None = None) -> Browser:
    status, headers, body = call(
        ctl.admin_url + "/admin/api/login", "POST", body={"key": key or ctl.admin_key}
    )
    assert status == 200, body
    cookie = SimpleCookie(headers["Set-Cookie"])
    return Browser(cookie["swarm_session"].value, body["csrf_token"], headers["Set-Cookie"])


def key_headers(key: str) -> dict[str, str]:
    return {"X-Admin-Key": key}


def tokens(ctl: ControllerApi) -> list[dict[str, Any]]:
    status, body = ctl.admin("GET", "/admin/api/tokens")
    assert status == 200
    return list(body["tokens"])


def own_origin(ctl: ControllerApi) -> str:
    return ctl.admin_url


def test_refused_requests_change_nothing(ctl: InProcessController) -> None:
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


def test_login_session_and_logout(ctl: InProcessController) -> None:
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


def test_sessions_expire_when_idle_and_after_their_lifetime(ctl: InProcessController) -> None:
    session_url = ctl.admin_url + "/admin/api/session"
    tokens_url = ctl.admin_url + "/admin/api/tokens"
    idle = login(ctl)
    for _ in range(2):  # each request is activity: the idle timeout starts again
        advance(ctl, 1.0)
        assert call(session_url, headers=idle.headers(csrf=None))[0] == 200
    advance(ctl, IDLE + 0.1)  # idle for longer than IDLE, still within LIFETIME
    assert call(session_url, headers=idle.headers(csrf=None))[0] == 401
    assert call(tokens_url, "POST", headers=idle.headers(), body={})[0] == 401

    busy = login(ctl)
    for step in (1.0, 1.0, 1.0, 0.9):  # well within the idle timeout: only the lifetime ends it
        advance(ctl, step)
        assert call(session_url, headers=busy.headers(csrf=None))[0] == 200
    advance(ctl, 0.2)  # past LIFETIME
    assert call(session_url, headers=busy.headers(csrf=None))[0] == 401
    assert call(tokens_url, "POST", headers=busy.headers(), body={})[0] == 401
    assert tokens(ctl) == []


def test_wrong_keys_are_limited_but_never_the_right_key(ctl: InProcessController) -> None:
    url = ctl.admin_url + "/admin/api/whoami"
    browser = login(ctl)
    for _ in range(BURST):
        assert call(url, headers=key_headers("guess-" * 6))[0] == 401
    status, headers, body = call(url, headers=key_headers("guess-" * 6))
    assert status == 429 and "too many wrong admin keys from this address" in body["error"]["message"]
    retry = int(headers["Retry-After"])
    assert 1 <= retry <= WINDOW
    assert call(ctl.admin_url + "/admin/api/login", "POST", body={"key": "guess-" * 6})[0] == 429
    # The right key works all the same, from the same address: as a header, at login, as a session.
    assert call(url, headers=key_headers(ctl.admin_key))[2] == {"key": "admin"}
    assert login(ctl).csrf
    assert call(url, headers=browser.headers(csrf=None))[0] == 200
    # Per address: another client's wrong key is checked (401), not refused.
    assert call(url, headers=key_headers("guess-" * 6), source="127.0.0.2")[0] == 401

    locked = ctl.events(type="admin_auth_locked")
    assert [e["data"]["address"] for e in locked] == ["127.0.0.1"]
    assert len(ctl.events(type="admin_login_failed")) == BURST + 1  # a refused key is not one

    advance(ctl, retry - 0.1)
    assert call(url, headers=key_headers("guess-" * 6))[0] == 429  # not yet
    advance(ctl, 0.2)
    assert call(url, headers=key_headers("guess-" * 6))[0] == 401
    # One attempt came back, not the whole burst.
    assert call(url, headers=key_headers("guess-" * 6))[0] == 429
    assert call(url, headers=key_headers(ctl.admin_key))[0] == 200


def stored_form(key: str) -> str:
    """A key as the keys file stores it: the SHA-256, unpadded base64url."""
    return "sha256$" + base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()).rstrip(b"=").decode()


@pytest.mark.real
def test_keys_are_named_stored_hashed_and_managed(ctl_process: Controller) -> None:
    ctl = ctl_process
    keys_file = ctl.data_dir / "admin-keys"
    key_file = Path(ctl.info["admin_key_file"])
    admin_key = ctl.admin_key
    for path in (keys_file, key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [x for x in keys_file.read_text().splitlines() if x and not x.startswith("#")]
    assert lines == [f"admin:{stored_form(admin_key)}"]
    assert admin_key not in keys_file.read_text()

    url = ctl.admin_url + "/admin/api/keys"
    admin = key_headers(admin_key)
    status, headers, added = call(url, "POST", headers=admin, body={"name": "ci"})
    assert status == 201 and added["name"] == "ci" and len(added["key"]) >= 40
    assert headers["Cache-Control"] == "no-store"
    ci_key = added["key"]
    assert f"ci:{stored_form(ci_key)}" in keys_file.read_text().splitlines()
    assert call(url, "POST", headers=admin, body={"name": "ci"})[0] == 409
    assert call(url, "POST", headers=admin, body={"name": "no:colons"})[0] == 400
    assert call(url, "POST", headers=admin, body={})[0] == 400

    assert call(ctl.admin_url + "/admin/api/whoami", headers=key_headers(ci_key))[2] == {"key": "ci"}
    status, _, token = call(ctl.admin_url + "/admin/api/tokens", "POST", headers=key_headers(ci_key), body={})
    assert status == 201 and token["created_by"] == "ci"
    ci_browser = login(ctl, ci_key)
    status, _, listed = call(url, headers=admin)
    assert listed == {"keys": [{"name": "admin", "sessions": 0}, {"name": "ci", "sessions": 1}]}

    # A key cannot remove itself, neither by its header nor from a session opened with it.
    status, _, body = call(url + "/ci", "DELETE", headers=key_headers(ci_key))
    assert status == 409 and "the one this request authenticated with" in body["error"]["message"]
    status, _, body = call(url + "/ci", "DELETE", headers=ci_browser.headers())
    assert status == 409 and "this session was opened with it" in body["error"]["message"]
    status, _, body = call(url + "/admin", "DELETE", headers=admin)
    assert status == 409 and "remove it with another key" in body["error"]["message"]
    assert call(url, headers=admin)[2]["keys"][1] == {"name": "ci", "sessions": 1}

    status, _, removed = call(url + "/ci", "DELETE", headers=admin)
    assert status == 200 and removed == {"removed": "ci", "sessions_ended": 1, "admin_key_file": None}
    assert call(ctl.admin_url + "/admin/api/whoami", headers=key_headers(ci_key))[0] == 401
    assert call(ctl.admin_url + "/admin/api/session", headers=ci_browser.headers(csrf=None))[0] == 401
    assert call(url + "/ci", "DELETE", headers=admin)[0] == 404
    assert [(e["data"]["key_name"], e["data"]["by"]) for e in ctl.events(type="admin_key_added")] == [
        ("ci", "admin")
    ]
    assert [e["data"]["key_name"] for e in ctl.events(type="admin_key_removed")] == ["ci"]

    # Keys survive a restart. Removing "admin" while admin.key holds another
    # key (a rotation written for the next start) keeps the file: that key
    # becomes "admin" at the next start.
    status, _, added = call(url, "POST", headers=admin, body={"name": "ops"})
    ops = key_headers(added["key"])
    ctl.kill()
    ctl.restart()
    assert call(ctl.admin_url + "/admin/api/whoami", headers=admin)[2] == {"key": "admin"}
    rotated = secrets.token_urlsafe(32)
    key_file.write_text(rotated + "\n")
    status, _, removed = call(url + "/admin", "DELETE", headers=ops)
    assert status == 200 and removed["admin_key_file"] == {"path": str(key_file), "action": "kept"}
    assert key_file.read_text().strip() == rotated
    removals = ctl.admin_url + "/admin/api/events?limit=1000&type=admin_key_removed"
    event = call(removals, headers=ops)[2]["events"][-1]
    assert event["data"]["admin_key_file"] == removed["admin_key_file"] and "was kept" in event["message"]
    assert call(ctl.admin_url + "/admin/api/whoami", headers=admin)[0] == 401
    ctl.kill()
    ctl.restart()
    assert call(ctl.admin_url + "/admin/api/whoami", headers=key_headers(rotated))[2] == {"key": "admin"}

    # Removing "admin" while admin.key holds it deletes the file, so a restart does not bring it back.
    status, _, removed = call(url + "/admin", "DELETE", headers=ops)
    assert status == 200 and removed["admin_key_file"] == {"path": str(key_file), "action": "deleted"}
    assert "was deleted" in call(removals, headers=ops)[2]["events"][-1]["message"]
    assert not key_file.exists()
    ctl.kill()
    ctl.restart()
    assert not key_file.exists()
    assert call(ctl.admin_url + "/admin/api/whoami", headers=key_headers(rotated))[0] == 401
    assert call(url, headers=ops)[2] == {"keys": [{"name": "ops", "sessions": 0}]}


@pytest.mark.real
def test_a_new_admin_key_file_rotates_the_admin_key(ctl_process: Controller) -> None:
    ctl = ctl_process
    key_file = Path(ctl.info["admin_key_file"])
    old = ctl.admin_key
    new = "a-key-the-admin-chose-" + secrets.token_hex(8)
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


def upgrade(ctl: ControllerApi, headers: dict[str, str], origin: str | None, path: str = "/ws/events") -> int:
    return asyncio.run(_upgrade(ctl.admin_url + path, headers, origin))


def test_websocket_upgrades_need_auth_and_an_allowed_origin(ctl: InProcessController) -> None:
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


async def _closed_when_session_ends(ctl: ControllerApi, browser: Browser, end: Callable[[], None]) -> int:
    """The close code of a /ws/events stream of ``browser``'s session once ``end`` has run."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            ctl.admin_url + "/ws/events", headers=browser.headers(csrf=None), origin=own_origin(ctl)
        ) as ws,
    ):
        await asyncio.to_thread(end)
        message = await asyncio.wait_for(ws.receive(), 10)
        while message.type is aiohttp.WSMsgType.TEXT:
            message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return int(message.data)


def test_a_stream_ends_with_its_session(ctl: InProcessController) -> None:
    """Logged out, or past its lifetime (an open stream is activity, so it never
    idles): the stream closes with 1008 at its next look at the session."""
    browser = login(ctl)

    def log_out() -> None:
        assert call(ctl.admin_url + "/admin/api/logout", "POST", headers=browser.headers())[0] == 200
        advance(ctl, IDLE)  # the stream looks again by then at the latest

    assert asyncio.run(_closed_when_session_ends(ctl, browser, log_out)) == 1008

    streaming = login(ctl)

    def outlive() -> None:
        for _ in range(3):
            advance(ctl, 1.0)
        # Twice IDLE without a request: the open stream kept the session.
        assert call(ctl.admin_url + "/admin/api/session", headers=streaming.headers(csrf=None))[0] == 200
        advance(ctl, LIFETIME - 3.0 + 0.1)

    assert asyncio.run(_closed_when_session_ends(ctl, streaming, outlive)) == 1008


def test_the_key_never_appears_in_logs_events_or_the_public_tier(
    ctl: InProcessController, records: LogLines
) -> None:
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
    log = records.text()
    assert "event admin_login:" in log, "the controller's log was not collected"
    for what, secret in secrets.items():
        assert secret not in log, f"{what} in the controller log"
        assert secret not in everything, f"{what} in the events"
        assert secret not in json.dumps(public), f"{what} in the public tier"
    assert admin_key not in (ctl.config.data_dir / "admin-keys").read_text()
    assert ci_key not in (ctl.config.data_dir / "admin-keys").read_text()
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


# -- the edge: who the client is behind a proxy, which hosts and origins
# each tier answers to, the cap on join tokens. One controller for the
# module; each test uses addresses and names of its own.

PROXY = "127.0.0.3"
EXTRA_HOST = "swarm.example.test"
EDGE_BURST = 2
TOKENS_MAX = 3


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    proc = Controller(
        tmp_path_factory.mktemp("edge"),
        "--trusted-proxies",
        f"{PROXY},10.250.0.0/16",
        "--allowed-hosts",
        EXTRA_HOST,
        "--admin-origins",
        ALLOWED_ORIGIN,
        "--admin-auth-failures",
        str(EDGE_BURST),
        "--admin-auth-window",
        "600",
        "--join-tokens-max",
        str(TOKENS_MAX),
    )
    proc.start()
    yield proc
    proc.kill()


def failed_from(ctl: Controller, addresses: set[str]) -> list[str]:
    return [
        e["data"]["address"]
        for e in ctl.events(type="admin_login_failed")
        if e["data"]["address"] in addresses
    ]


@pytest.mark.real
def test_x_forwarded_for_names_the_client_only_from_a_trusted_proxy(edge: Controller) -> None:
    url = edge.admin_url + "/admin/api/whoami"
    wrong = key_headers("guess-" * 6)

    def via(client: str, source: str = PROXY, key: dict[str, str] = wrong) -> int:
        return call(url, headers={**key, "X-Forwarded-For": client}, source=source)[0]

    # From anyone else the header is ignored: the limiter keys on the TCP peer.
    assert [via("10.9.0.1", source="127.0.0.4") for _ in range(EDGE_BURST + 1)] == [401] * EDGE_BURST + [429]
    assert via("10.9.0.2", source="127.0.0.4") == 429  # a forged header does not get a fresh allowance
    assert failed_from(edge, {"127.0.0.4", "10.9.0.1"}) == ["127.0.0.4"] * EDGE_BURST

    # Through the proxy: the rightmost address that is not a proxy is the client.
    assert [via("10.9.0.1") for _ in range(EDGE_BURST + 1)] == [401] * EDGE_BURST + [429]
    assert via("10.9.0.3") == 401  # another client behind the same proxy
    assert via("10.9.0.1, 10.9.0.4") == 401  # a client's own entries on the left change nothing
    assert via("10.9.0.4, 10.9.0.1") == 429
    assert via("10.9.0.1, 10.250.3.3") == 429  # 10.250/16 are proxies too: skipped
    assert failed_from(edge, {PROXY, "10.9.0.1", "10.9.0.3", "10.9.0.4"}) == ["10.9.0.1"] * EDGE_BURST + [
        "10.9.0.3",
        "10.9.0.4",
    ]
    # The right key from a limited client works, and its login is audited under the client's address.
    assert via("10.9.0.1", key=key_headers(edge.admin_key)) == 200
    status, _, _ = call(
        edge.admin_url + "/admin/api/login",
        "POST",
        body={"key": edge.admin_key},
        headers={"X-Forwarded-For": "10.9.0.1"},
        source=PROXY,
    )
    assert status == 200
    assert edge.events(type="admin_login")[-1]["data"]["address"] == "10.9.0.1"


@pytest.mark.real
def test_each_tier_answers_only_to_its_names(edge: Controller) -> None:
    admin_port, public_port = edge.info["admin_port"], edge.info["public_port"]
    key = key_headers(edge.admin_key)
    whoami, status_url = edge.admin_url + "/admin/api/whoami", edge.public_url + "/api/v1/status"
    for url, port, headers in ((whoami, admin_port, key), (status_url, public_port, {})):
        for name in ("127.0.0.1", "localhost", "LocalHost.", EXTRA_HOST, "console.example.org"):
            assert call(url, headers={**headers, "Host": f"{name}:{port}"})[0] == 200, name
        status, _, body = call(url, headers={**headers, "Host": f"rebound.example:{port}"})
        assert status == 421 and "--allowed-hosts" in body["error"]["message"], body
        assert call(url, headers={**headers, "Host": "127.0.0.2"})[0] == 421
        status, _, body = call(url, headers={**headers, "Host": "a b"})
        assert status == 400 and "Host" in body["error"]["message"]
    # Before anything else: the login, the console's pages, a websocket upgrade.
    rebound = {"Host": f"rebound.example:{admin_port}", "Origin": f"http://rebound.example:{admin_port}"}
    assert (
        call(edge.admin_url + "/admin/api/login", "POST", body={"key": edge.admin_key}, headers=rebound)[0]
        == 421
    )
    assert call(edge.admin_url + "/", headers=rebound)[0] == 421
    handshake = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(secrets.token_bytes(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    assert call(edge.admin_url + "/ws/events", headers={**key, **handshake, **rebound})[0] == 421


@pytest.mark.real
def test_origins_are_the_tiers_names_on_its_port(edge: Controller) -> None:
    port = edge.info["admin_port"]
    login_url = edge.admin_url + "/admin/api/login"

    def log_in(origin: str) -> int:
        return call(login_url, "POST", body={"key": edge.admin_key}, headers={"Origin": origin})[0]

    # Compared with the tier's names, not with this request's Host (127.0.0.1:PORT).
    for allowed in (
        f"http://localhost:{port}",
        f"http://{EXTRA_HOST}:{port}",
        f"http://127.0.0.1:{port}",
        ALLOWED_ORIGIN,
    ):
        assert log_in(allowed) == 200, allowed
    for refused in (
        f"http://rebound.example:{port}",
        f"http://{EXTRA_HOST}:{port + 1}",
        f"https://localhost:{port}",
        "null",
    ):
        assert log_in(refused) == 403, refused
    browser = login(edge)
    tokens_url = edge.admin_url + "/admin/api/tokens"
    assert (
        call(tokens_url, "POST", headers=browser.headers(origin=f"http://rebound.example:{port}"), body={})[0]
        == 403
    )
    cookie = browser.headers(csrf=None)
    assert upgrade(edge, cookie, f"http://localhost:{port}") == 101
    assert upgrade(edge, cookie, f"http://rebound.example:{port}") == 403


@pytest.mark.real
def test_live_join_tokens_are_capped(edge: Controller) -> None:
    made = [edge.admin("POST", "/admin/api/tokens", b"{}") for _ in range(TOKENS_MAX)]
    assert [status for status, _ in made] == [201] * TOKENS_MAX
    status, body = edge.admin("POST", "/admin/api/tokens", b"{}")
    assert status == 409, body
    assert f"{TOKENS_MAX} join tokens are live" in body["error"]["message"]
    assert f"--join-tokens-max {TOKENS_MAX}" in body["error"]["message"]
    # A revoked (or used, or expired) one no longer counts.
    assert edge.admin("DELETE", f"/admin/api/tokens/{made[0][1]['id']}")[0] == 200
    assert edge.admin("POST", "/admin/api/tokens", b"{}")[0] == 201
    assert edge.admin("POST", "/admin/api/tokens", b"{}")[0] == 409
    assert len([t for t in tokens(edge) if t["state"] == "active"]) == TOKENS_MAX


@pytest.mark.real
def test_a_weak_key_in_the_key_file_stops_the_start(tmp_path: Path) -> None:
    proc = Controller(tmp_path)
    key_file = proc.data_dir / "admin.key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text("password123\n")
    result = subprocess.run(proc.args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"swarm-controller: the admin key in {key_file} is refused: it has 11 characters, at least 32 "
        f"are needed; write a random one (openssl rand -hex 32 > {key_file}) or delete the file for a new one"
    )
    assert not (proc.data_dir / "admin-keys").exists()
