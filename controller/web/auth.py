"""Authentication of the admin tier: API keys, browser sessions, CSRF
tokens, websocket upgrades, and a limiter for wrong keys.

- ``X-Admin-Key``, or ``Authorization: Bearer`` with the key (what
  Prometheus and other scrapers send): any request, no CSRF token. A web
  page cannot send either header to another origin without a CORS
  preflight, which this tier never grants, and a browser never adds them
  by itself, so it cannot be tricked into sending one.
- Session cookie from ``POST /admin/api/login``: HttpOnly, SameSite=Strict,
  Path=/ (and Secure when the request came over TLS). Requests with a
  state-changing method (POST, PUT, PATCH, DELETE) must also carry the
  session's CSRF token in ``X-CSRF-Token``, and their ``Origin``, if sent,
  must be allowed (web/hosts.py: one of the tier's names on its own port,
  or one of --admin-origins; never compared with the request's own Host,
  which a DNS-rebinding page chooses). Sessions live in memory (a restart
  logs everyone out), keyed by the SHA-256 of their id, with an idle
  timeout and an absolute lifetime; at most ``--admin-session-max`` of
  them, the least recently used ending first.
- Websocket upgrades: :func:`authorize_websocket`.

A right key or a live session always works. Only wrong keys are limited:
each spends a token bucket of its client's address (``--admin-auth-failures``
per ``--admin-auth-window``) and one shared by all addresses
(``--admin-auth-global-failures``); while either is empty, a key that
matches nothing gets 429 with Retry-After before any further work, and no
log line or event. A right key is recognised by its SHA-256 before the
limiter is asked (adminkey.py), so a neighbour behind the same address
or proxy, or a page in the admin's own browser, sending wrong keys cannot
lock the admin out.

That a 200 still answers a guess while wrong keys get 429 is deliberate:
the limiter is not what makes guessing hopeless. Keys are long random
values (256 bits when the controller makes them; an admin who writes one
must give 32 characters at least and is asked for random ones;
adminkey.py): at a million guesses a second, 128 random bits take some
10^25 years. What the limiter
bounds is what wrong keys cost: log lines, events (each a database
write), and the slow scrypt check that keys from before the SHA-256 form
still need until they are first used (adminkey.py); the global bucket
bounds it whatever the number of addresses.

The client's address is the TCP peer, or, from a peer in
``--trusted-proxies``, the rightmost untrusted address in
``X-Forwarded-For`` (web/forwarded.py).

Logs and events name the key (its name, the audit trail), never its value.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Final

from aiohttp import web

from swarm.clock import SYSTEM, Clock, iso
from swarm.controller.adminkey import ADMIN, KeyStore, StoredKey, check_name
from swarm.controller.adminkey import NAME_RE as KEY_NAME_RE
from swarm.controller.config import ControllerConfig
from swarm.controller.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from swarm.controller.events import EventLog
from swarm.controller.web.common import Handler, json_body, json_response
from swarm.controller.web.forwarded import Network
from swarm.controller.web.forwarded import client_address as forwarded_client
from swarm.controller.web.healing import KEY_NAME
from swarm.controller.web.hosts import HostPolicy, local_port
from swarm.controller.web.routes import Body, Routes, path_param
from swarm.controller.web.views.admin import (
    BrowserSessionView,
    KeyFileView,
    KeyPrincipalView,
    KeyRemovedView,
    KeysView,
    KeyView,
    LoggedOutView,
    NewKeyView,
)
from swarm.controller.web.views.base import Doc, Pattern

log = logging.getLogger(__name__)

COOKIE = "swarm_session"
KEY_HEADER = "X-Admin-Key"
BEARER = "bearer"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Open without a key or session: the login call, and the login page with
# its own folder of assets (web/console.py); nothing else.
OPEN_PATHS = frozenset({"/admin/api/login", "/login"})
OPEN_PREFIXES = ("/login/",)
VIA_KEY: Final = "key"
VIA_SESSION: Final = "session"
LIMITED_ADDRESSES = 10_000
WRONG_KEY = "missing or wrong X-Admin-Key"
EVERYONE = "*"  # the global bucket's name in events
routes = Routes()
SessionInfo = KeyPrincipalView | BrowserSessionView


@dataclass(frozen=True, slots=True)
class AuthSettings:
    session_idle: float
    session_lifetime: float
    session_max: int
    failures: int
    global_failures: int
    failure_window: float
    trusted_proxies: tuple[Network, ...] = ()

    @classmethod
    def from_config(cls, config: ControllerConfig) -> AuthSettings:
        return cls(
            session_idle=config.admin_session_idle,
            session_lifetime=config.admin_session_lifetime,
            session_max=config.admin_session_max,
            failures=config.admin_auth_failures,
            global_failures=config.admin_auth_global_failures,
            failure_window=config.admin_auth_window,
            trusted_proxies=config.trusted_proxy_networks,
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as. ``name`` (the key's name) is the audit trail."""

    name: str
    via: str  # VIA_KEY or VIA_SESSION
    key_hash: str  # the stored hash of the key: it identifies the key
    session: str | None = None  # SHA-256 (hex) of the session id


@dataclass(slots=True)
class Session:
    name: str
    key_hash: str
    csrf: str
    address: str
    created: float
    last_seen: float


class Sessions:
    """Browser sessions in memory, bounded, keyed by the SHA-256 of their id
    (so neither a lookup's timing nor a memory dump hands out a live id)."""

    def __init__(self, idle: float, lifetime: float, limit: int) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self._limit = limit
        self._by_digest: OrderedDict[str, Session] = OrderedDict()

    @staticmethod
    def digest(session_id: str) -> str:
        return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()

    def __len__(self) -> int:
        return len(self._by_digest)

    def expires_at(self, session: Session) -> float:
        return min(session.last_seen + self.idle, session.created + self.lifetime)

    def create(self, key: StoredKey, address: str, now: float) -> tuple[str, str, Session]:
        """A new session: (its id for the cookie, the id's digest, the session)."""
        self.purge(now)
        while len(self._by_digest) >= self._limit:
            _, oldest = self._by_digest.popitem(last=False)
            log.info("session limit reached: ended the least recently used session (key %s)", oldest.name)
        session_id = secrets.token_urlsafe(32)
        digest = self.digest(session_id)
        session = Session(key.name, key.hash, secrets.token_urlsafe(32), address, now, now)
        self._by_digest[digest] = session
        return session_id, digest, session

    def find(self, digest: str, now: float, *, touch: bool) -> Session | None:
        session = self._by_digest.get(digest)
        if session is None:
            return None
        if self.expires_at(session) <= now:
            del self._by_digest[digest]
            return None
        if touch:
            session.last_seen = now
            self._by_digest.move_to_end(digest)
        return session

    def end(self, digest: str) -> Session | None:
        return self._by_digest.pop(digest, None)

    def end_key(self, name: str) -> int:
        ended = [d for d, s in self._by_digest.items() if s.name == name]
        for digest in ended:
            del self._by_digest[digest]
        return len(ended)

    def count(self, name: str, now: float) -> int:
        return sum(1 for s in self._by_digest.values() if s.name == name and self.expires_at(s) > now)

    def purge(self, now: float) -> None:
        for digest in [d for d, s in self._by_digest.items() if self.expires_at(s) <= now]:
            del self._by_digest[digest]


class FailureLimiter:
    """Token buckets spent by wrong keys only: one per client address, and
    one for all addresses together.

    ``burst`` wrong keys in a row empty an address's bucket, ``total`` those
    of all addresses the shared one; each refills completely in ``window``
    seconds. Memory is bounded: a full address bucket is forgotten, and at
    most ``limit`` addresses are kept (the one that failed least recently
    is forgotten first)."""

    def __init__(
        self, burst: int, window: float, limit: int = LIMITED_ADDRESSES, total: int | None = None
    ) -> None:
        self._burst = float(burst)
        self._rate = burst / window
        self._limit = limit
        self._total = float(total if total is not None else burst * limit)
        self._total_rate = self._total / window
        self._shared = (self._total, 0.0)  # (tokens, at)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, address: str, now: float) -> float:
        entry = self._buckets.get(address)
        if entry is None:
            return self._burst
        tokens, at = entry
        return min(self._burst, tokens + max(0.0, now - at) * self._rate)

    def _shared_tokens(self, now: float) -> float:
        tokens, at = self._shared
        return min(self._total, tokens + max(0.0, now - at) * self._total_rate)

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try a wrong key again (0: now)."""
        tokens = self._tokens(address, now)
        return 0.0 if tokens >= 1 else (1 - tokens) / self._rate

    def retry_after_all(self, now: float) -> float:
        """Seconds until any address may try a wrong key again (0: now)."""
        tokens = self._shared_tokens(now)
        return 0.0 if tokens >= 1 else (1 - tokens) / self._total_rate

    def fail(self, address: str, now: float) -> tuple[bool, bool]:
        """Spend one attempt of ``address`` and one of everyone's; whether
        that used up (the address's allowance, the shared one)."""
        tokens = self._tokens(address, now) - 1
        self._buckets[address] = (tokens, now)
        self._buckets.move_to_end(address)
        shared = self._shared_tokens(now) - 1
        self._shared = (shared, now)
        if len(self._buckets) > self._limit:
            for full in [a for a in self._buckets if self._tokens(a, now) >= self._burst]:
                del self._buckets[full]
            while len(self._buckets) > self._limit:
                self._buckets.popitem(last=False)
        return tokens < 1, shared < 1

    def refund(self, address: str, now: float) -> None:
        """Give back an attempt spent ahead of a check that then succeeded."""
        if address in self._buckets:
            self._buckets[address] = (min(self._burst, self._tokens(address, now) + 1), now)
        self._shared = (min(self._total, self._shared_tokens(now) + 1), now)


class AdminAuth:
    """Keys, sessions and the limiter of one admin tier. ``clock`` is
    injected so that tests move time instead of waiting for it (the
    websockets' session watchers read and wait on it too)."""

    def __init__(
        self,
        keys: KeyStore,
        settings: AuthSettings,
        events: EventLog,
        hosts: HostPolicy,
        clock: Clock = SYSTEM,
    ) -> None:
        self.keys = keys
        self.settings = settings
        self.events = events
        self.hosts = hosts
        self.clock = clock
        self.sessions = Sessions(settings.session_idle, settings.session_lifetime, settings.session_max)
        self.limiter = FailureLimiter(
            settings.failures, settings.failure_window, total=settings.global_failures
        )
        self._all_locked_at = -math.inf

    def client_address(self, request: web.Request) -> str:
        return forwarded_client(
            request.remote, request.headers.getall("X-Forwarded-For", ()), self.settings.trusted_proxies
        )

    async def authenticate(self, request: web.Request) -> Principal:
        """Who the request is from (X-Admin-Key or a bearer key first, then the session
        cookie); raises Unauthenticated (401) or HTTPTooManyRequests (429)."""
        presented = request.headers.get(KEY_HEADER)
        if presented is None:
            presented = bearer_token(request)
        if presented is not None:
            key = await self.check_key(self.client_address(request), presented, "header", WRONG_KEY)
            return Principal(key.name, VIA_KEY, key.hash)
        session_id = request.cookies.get(COOKIE)
        if session_id:
            digest = Sessions.digest(session_id)
            session = self.sessions.find(digest, self.clock.time(), touch=True)
            if session is not None and self.keys.holds(session.key_hash):
                return Principal(session.name, VIA_SESSION, session.key_hash, digest)
            raise Unauthenticated("the session has ended: log in again")
        raise Unauthenticated(WRONG_KEY)

    async def check_key(self, address: str, presented: str, via: str, refusal: str) -> StoredKey:
        """The key ``presented`` from ``address``; Unauthenticated (401) with
        ``refusal`` if it is wrong, HTTPTooManyRequests (429) if it is wrong
        while wrong keys are limited. A right key never waits for the limiter."""
        key = self.keys.find(presented)
        if key is not None:
            return key
        now = self.clock.time()
        self.refuse_if_limited(address, now)
        # Spent before the slow check, so that concurrent wrong keys cannot
        # all pass the limiter while their checks run; refunded on a match.
        address_used_up, all_used_up = self.limiter.fail(address, now)
        if self.keys.has_legacy:
            key = await self.keys.check_legacy(presented)
            if key is not None:
                self.limiter.refund(address, self.clock.time())
                return key
        self._report_failure(address, via, now, address_used_up, all_used_up)
        raise Unauthenticated(refusal)

    def refuse_if_limited(self, address: str, now: float) -> None:
        everyone = self.limiter.retry_after_all(now)
        retry = max(everyone, self.limiter.retry_after(address, now))
        if retry > 0:
            seconds = max(1, math.ceil(retry))
            source = "from all addresses" if everyone >= retry else "from this address"
            raise web.HTTPTooManyRequests(
                headers={"Retry-After": str(seconds)},
                text=f"too many wrong admin keys {source}: a wrong key is refused for {seconds}s",
            )

    def _report_failure(self, address: str, via: str, now: float, used_up: bool, all_used_up: bool) -> None:
        # Bounded by the limiter: at most the global allowance of lines and
        # events per window, whatever the number of addresses.
        log.warning("wrong admin key from %s (%s)", address, via)
        self.events.emit("admin_login_failed", f"wrong admin key from {address}", address=address, via=via)
        if used_up:
            retry = self.limiter.retry_after(address, now)
            self.events.emit(
                "admin_auth_locked",
                f"too many wrong admin keys from {address}: its wrong keys are refused for {retry:.0f}s",
                address=address,
                retry_after_s=round(retry, 1),
            )
        if all_used_up and now - self._all_locked_at >= self.settings.failure_window:
            # Once per window: under a steady stream of wrong keys the shared
            # allowance empties again with every attempt it refills.
            self._all_locked_at = now
            retry = self.limiter.retry_after_all(now)
            log.warning("too many wrong admin keys from all addresses: refusing wrong keys for %.0fs", retry)
            self.events.emit(
                "admin_auth_locked",
                f"too many wrong admin keys from all addresses: wrong keys are refused for {retry:.0f}s",
                address=EVERYONE,
                retry_after_s=round(retry, 1),
            )

    def check_change(self, request: web.Request, principal: Principal) -> None:
        """A browser session's state-changing request needs its CSRF token
        and, if it sends an Origin, an allowed one (PermissionDenied, 403)."""
        if principal.via != VIA_SESSION or request.method in SAFE_METHODS or principal.session is None:
            return
        origin = request.headers.get("Origin")
        if origin is not None and not self.origin_allowed(request, origin):
            raise PermissionDenied("cross-origin request refused")
        session = self.sessions.find(principal.session, self.clock.time(), touch=False)
        token = request.headers.get(CSRF_HEADER, "").encode("utf-8", "replace")
        if session is None or not hmac.compare_digest(token, session.csrf.encode()):
            raise PermissionDenied(f"missing or wrong {CSRF_HEADER}")

    def origin_allowed(self, request: web.Request, origin: str) -> bool:
        """One of the tier's names on the scheme and port the request came
        in on, or one of --admin-origins (web/hosts.py)."""
        return self.hosts.allows_origin(origin, request.scheme, local_port(request))

    def expires_at(self, principal: Principal, now: float) -> float | None:
        """When the principal's session ends if idle from now on (None for keys)."""
        if principal.session is None:
            return None
        session = self.sessions.find(principal.session, now, touch=False)
        return now if session is None else self.sessions.expires_at(session)

    def still_valid(self, principal: Principal, *, touch: bool = False) -> bool:
        """Whether a long-lived connection (a websocket) may go on: its key
        still exists and, for a session, the session has not ended. With
        ``touch`` this counts as activity of the session."""
        if not self.keys.holds(principal.key_hash):
            return False
        if principal.session is None:
            return True
        return self.sessions.find(principal.session, self.clock.time(), touch=touch) is not None

    def session_view(self, principal: Principal) -> SessionInfo:
        if principal.session is None:
            return KeyPrincipalView(principal.name, VIA_KEY)
        session = self.sessions.find(principal.session, self.clock.time(), touch=False)
        if session is None:
            raise Unauthenticated("the session has ended: log in again")
        return BrowserSessionView(
            key=session.name,
            via=VIA_SESSION,
            csrf_token=session.csrf,
            created_at=iso(session.created),
            expires_at=iso(self.sessions.expires_at(session)),
            ends_at=iso(session.created + self.sessions.lifetime),
            idle_timeout_s=self.sessions.idle,
        )


AUTH = web.AppKey("admin_auth", AdminAuth)
PRINCIPAL = web.RequestKey("admin_principal", Principal)


def bearer_token(request: web.Request) -> str | None:
    """The key of an ``Authorization: Bearer KEY`` header; None without one
    (another scheme is no key either)."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == BEARER and token else None


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every admin request but the login needs a key or a session (and, for
    a session's changes, the CSRF token)."""
    if request.path not in OPEN_PATHS and not request.path.startswith(OPEN_PREFIXES):
        auth = request.app[AUTH]
        principal = await auth.authenticate(request)
        auth.check_change(request, principal)
        request[PRINCIPAL] = principal
        request[KEY_NAME] = principal.name
    return await handler(request)


def principal_of(request: web.Request) -> Principal:
    principal = request.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise Unauthenticated(WRONG_KEY)
    return principal


async def authorize_websocket(request: web.Request) -> Principal:
    """Check a websocket upgrade; call it before ``WebSocketResponse.prepare``.

    The request must be authenticated (X-Admin-Key, or a session cookie;
    the admin tier's middleware has done that, else it is done here) and
    its Origin allowed: one of the tier's host names on its own port, or
    one of --admin-origins (web/hosts.py; its Host was checked by the
    tier's middleware, hosts.check_host). A browser always sends Origin on an upgrade, so one
    without it is accepted only with X-Admin-Key (a program, not a page).
    Returns the principal, whose ``name`` is the audit trail; raises
    Unauthenticated (401), HTTPTooManyRequests (429) or PermissionDenied
    (403), which the tier's error middleware turns into JSON answers.
    A connection that lives on should end once
    ``request.app[AUTH].still_valid(principal, touch=True)`` turns false."""
    auth = request.app[AUTH]
    principal = request.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        principal = await auth.authenticate(request)
    origin = request.headers.get("Origin")
    if origin is None:
        if principal.via != VIA_KEY:
            raise PermissionDenied("a websocket upgrade with a session cookie must send Origin")
    elif not auth.origin_allowed(request, origin):
        log.warning(
            "websocket %s from %s refused: origin %.100s", request.path, auth.client_address(request), origin
        )
        raise PermissionDenied(f"websocket origin not allowed: {origin[:100]}")
    return principal


@dataclass(frozen=True, slots=True)
class LoginRequest:
    key: Annotated[str, Doc("an admin key")]


@routes.declare(
    "POST",
    "/admin/api/login",
    BrowserSessionView,
    summary="log in with an admin key: sets the HttpOnly, SameSite=Strict session cookie "
    "swarm_session and returns the CSRF token",
    body=Body(LoginRequest, required=("key",)),
    errors=(401, 403, 429),
    open=True,
)
async def login(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    origin = request.headers.get("Origin")
    if origin is not None and not auth.origin_allowed(request, origin):
        raise PermissionDenied("cross-origin login refused")
    body = await json_body(request)
    presented = body.get("key")
    if not isinstance(presented, str) or not presented:
        raise InvalidArgument('send {"key": "<an admin key>"}')
    address = auth.client_address(request)
    key = await auth.check_key(address, presented, "login", "wrong key")
    now = auth.clock.time()
    session_id, digest, session = auth.sessions.create(key, address, now)
    auth.events.emit("admin_login", f"{key.name} logged in from {address}", by=key.name, address=address)
    response = json_response(
        auth.session_view(Principal(key.name, VIA_SESSION, key.hash, digest)),
        headers={"Cache-Control": "no-store"},
    )
    response.set_cookie(
        COOKIE,
        session_id,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=True if request.secure else None,
        max_age=max(1, math.ceil(session.created + auth.sessions.lifetime - now)),
    )
    return response


@routes.declare(
    "POST",
    "/admin/api/logout",
    LoggedOutView,
    summary="end this browser session (needs X-CSRF-Token) and clear its cookie",
    errors=(409,),
)
async def logout(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    principal = principal_of(request)
    if principal.session is None:
        raise FailedPrecondition("this request authenticated with X-Admin-Key: there is no session to end")
    auth.sessions.end(principal.session)
    address = auth.client_address(request)
    auth.events.emit(
        "admin_logout", f"{principal.name} logged out from {address}", by=principal.name, address=address
    )
    response = json_response(LoggedOutView(principal.name))
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
    return response


@routes.declare(
    "GET",
    "/admin/api/session",
    SessionInfo,
    summary="who this request is (key name, key or session) and when its session ends",
)
async def session(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    return json_response(auth.session_view(principal_of(request)), headers={"Cache-Control": "no-store"})


@routes.declare(
    "GET",
    "/admin/api/keys",
    KeysView,
    summary="admin keys by name (never their values) and their open sessions",
)
async def list_keys(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    now = auth.clock.time()
    return json_response(KeysView(tuple(KeyView(n, auth.sessions.count(n, now)) for n in auth.keys.names())))


@dataclass(frozen=True, slots=True)
class KeyRequest:
    name: Annotated[str, Doc("the key's name (the audit trail)"), Pattern(KEY_NAME_RE)]


@routes.declare(
    "POST",
    "/admin/api/keys",
    NewKeyView,
    status=201,
    summary="add a random admin key (256 bits): the answer shows it once; only its SHA-256 is kept",
    body=Body(KeyRequest, required=("name",)),
    errors=(409,),
)
async def add_key(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    by = principal_of(request).name
    name = check_name((await json_body(request)).get("name"))
    key = await auth.keys.add(name)
    auth.events.emit("admin_key_added", f"admin key {name} added by {by}", key_name=name, by=by)
    return json_response(NewKeyView(name, key), status=201, headers={"Cache-Control": "no-store"})


@routes.declare(
    "DELETE",
    "/admin/api/keys/{name}",
    KeyRemovedView,
    summary="remove an admin key and end its sessions and streams (409 for the key this request "
    "authenticated with, by header or session, and for the last key)",
    params=(path_param("name", "key name"),),
    errors=(404, 409),
)
async def remove_key(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    principal = principal_of(request)
    by = principal.name
    name = request.match_info["name"]
    if name == principal.name:
        how = "this session was opened with it" if principal.via == VIA_SESSION else "this request sent it"
        raise FailedPrecondition(
            f"key {name[:64]!r} is the one this request authenticated with ({how}): removing it would "
            "cut you off; remove it with another key"
        )
    action = await auth.keys.remove(name)
    ended = auth.sessions.end_key(name)
    key_file = (
        None
        if action is None
        else KeyFileView(str(auth.keys.admin_key_path), "deleted" if action == "deleted" else "kept")
    )
    note = {
        None: "",
        "deleted": f"; {auth.keys.admin_key_path} held it and was deleted (the next start would bring "
        "it back)",
        "kept": f"; {auth.keys.admin_key_path} holds another key and was kept: it becomes key {ADMIN!r} "
        "at the next start",
    }[action]
    auth.events.emit(
        "admin_key_removed",
        f"admin key {name} removed by {by}" + (f"; {ended} session(s) ended" if ended else "") + note,
        key_name=name,
        by=by,
        sessions_ended=ended,
        admin_key_file=key_file,
    )
    return json_response(KeyRemovedView(name, ended, key_file))
