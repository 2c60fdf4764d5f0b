"""Trust between agents and controller: join tokens and drone certificates.

A join token is ``<id>.<secret>``; only a hash of the secret is stored.
It is single-use, expires (1 h by default, 24 h at most) and may name
the one drone allowed to use it. At most ``--join-tokens-max`` tokens are
live (unused, unrevoked, unexpired) at once: each is a way in until it
expires, and an admin script stuck in a loop should not mint thousands. Spending it is one conditional UPDATE,
so two drones racing with the same token cannot both win.

Every certificate the CA issues is recorded; the gateway accepts a client
certificate only while its record is neither revoked nor expired. That
check runs on every RPC, in memory.

A drone's name is bound to its id at enrollment: no other enrolled drone can
enroll with it or say it in a Hello (PERMISSION_DENIED), so an admin action
by name reaches the drone that was enrolled under it. A drone whose Hello
says another, free name keeps its bound one (renaming is an admin action);
a drone enrolled before names were bound is bound to the name of its first
Hello. The name of a revoked drone is free again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from swarm.clock import SYSTEM, Clock
from swarm.controller.ca import CertificateAuthority, Issued, check_csr
from swarm.controller.domain import ID_RE, NAME_RE
from swarm.controller.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from swarm.controller.events import EventLog
from swarm.controller.fleet import Fleet
from swarm.controller.store.records import CertRecord, NameRecord, TokenRecord
from swarm.controller.store.runner import StoreRunner
from swarm.pki import PkiError

log = logging.getLogger(__name__)

DEFAULT_TTL = 3600.0
MAX_TTL = 24 * 3600.0
MIN_TTL = 60.0
DEFAULT_MAX_TOKENS = 100


@dataclass(frozen=True, slots=True)
class NewToken:
    token: str
    record: TokenRecord


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Trust:
    def __init__(
        self,
        ca: CertificateAuthority,
        runner: StoreRunner,
        events: EventLog,
        fleet: Fleet,
        cert_lifetime: float,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        clock: Clock = SYSTEM,
    ) -> None:
        self.ca = ca
        self._clock = clock
        self._max_tokens = max_tokens
        self._minting = asyncio.Lock()  # the count and the insert of one new token go together
        self._runner = runner
        self._events = events
        self._fleet = fleet
        self._lifetime = datetime.timedelta(seconds=cert_lifetime)
        # serial (hex) -> certificate record; only unexpired ones matter.
        self._certs: dict[str, CertRecord] = {}
        # drone id -> the serials of its certificates (the healer asks
        # ``enrolled`` of its sick drones every tick: not a scan of them all)
        self._serials: dict[str, list[str]] = {}
        # drone id -> its bound name
        self._names: dict[str, NameRecord] = {}

    async def start(self) -> None:
        for record in await self._runner.call(self._runner.store.list_certificates, self._clock.time()):
            self._keep(record)
        for name in await self._runner.call(self._runner.store.list_names):
            self._names[name.drone_id] = name

    # -- checks on every RPC (sync, in memory) ---------------------------

    def is_active(self, serial: int, drone_id: str) -> bool:
        record = self._certs.get(format(serial, "x"))
        return (
            record is not None
            and record.drone_id == drone_id
            and record.revoked_at is None
            and record.not_after > self._clock.time()
        )

    def enrolled(self, drone_id: str) -> bool:
        now = self._clock.time()
        certs = self._certs
        return any(
            (r := certs[serial]).revoked_at is None and r.not_after > now
            for serial in self._serials.get(drone_id, ())
        )

    def _keep(self, record: CertRecord) -> None:
        if record.serial not in self._certs:
            self._serials.setdefault(record.drone_id, []).append(record.serial)
        self._certs[record.serial] = record

    # -- names ---------------------------------------------------------------

    def name_of(self, drone_id: str) -> str | None:
        record = self._names.get(drone_id)
        return record.name if record is not None else None

    def holder(self, name: str, other_than: str) -> str | None:
        """The enrolled drone, other than ``other_than``, that the name is bound to."""
        for record in self._names.values():
            if record.name == name and record.drone_id != other_than and self.enrolled(record.drone_id):
                return record.drone_id
        return None

    async def _bind(self, drone_id: str, name: str, by: str) -> None:
        record = NameRecord(drone_id, name, self._clock.time(), by)
        await self._runner.call(self._runner.store.bind_name, record)
        for other in [r.drone_id for r in self._names.values() if r.name == name and r.drone_id != drone_id]:
            del self._names[other]
        self._names[drone_id] = record

    async def claim(self, drone_id: str, claimed: str, peer: str) -> str:
        """The name a connecting drone goes by: its bound one. PermissionDenied
        if the Hello claims the name of another enrolled drone."""
        holder = self.holder(claimed, other_than=drone_id)
        if holder is not None:
            raise PermissionDenied(
                f"the name {claimed!r} belongs to another drone ({holder}); "
                "an admin can rename drones (swarm-cli drones rename)"
            )
        bound = self.name_of(drone_id)
        if bound is None:
            await self._bind(drone_id, claimed, "hello")
            return claimed
        if bound != claimed:
            self._events.emit(
                "drone_name_mismatch",
                f"{bound}: its agent calls itself {claimed!r}; it keeps the name it is bound to "
                "(an admin renames drones; set the agent's name to match)",
                drone_id=drone_id,
                drone_name=bound,
                claimed=claimed,
                peer=peer,
            )
        return bound

    async def rename(self, drone_id: str, new_name: str, by: str) -> str:
        """Bind a new name to an enrolled drone (an admin's action); its old name."""
        if not NAME_RE.match(new_name):
            raise InvalidArgument(f"name {new_name[:64]!r}: use letters, digits, '.', '_' or '-' (max 63)")
        if not self.enrolled(drone_id):
            raise FailedPrecondition(f"drone {drone_id} is not enrolled: only enrolled drones have names")
        holder = self.holder(new_name, other_than=drone_id)
        if holder is not None:
            raise FailedPrecondition(f"the name {new_name!r} belongs to another drone ({holder})")
        state = self._fleet.get(drone_id)
        old = self.name_of(drone_id) or (state.name if state is not None else drone_id)
        await self._bind(drone_id, new_name, by)
        if state is not None:
            self._fleet.rename(state, new_name)
        self._events.emit(
            "drone_renamed",
            f"{old} renamed {new_name} by {by}",
            drone_id=drone_id,
            drone_name=new_name,
            old_name=old,
            by=by,
        )
        return old

    # -- tokens ------------------------------------------------------------

    async def create_token(self, ttl: float | None, name: str | None, created_by: str) -> NewToken:
        ttl = DEFAULT_TTL if ttl is None else ttl
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise InvalidArgument(f"ttl must be between {MIN_TTL:.0f} s and {MAX_TTL:.0f} s (24 h)")
        if name is not None and not NAME_RE.match(name):
            raise InvalidArgument(f"name {name[:64]!r}: use letters, digits, '.', '_' or '-' (max 63)")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        async with self._minting:
            now = self._clock.time()
            live = await self._runner.call(self._runner.store.count_live_tokens, now)
            if live >= self._max_tokens:
                raise FailedPrecondition(
                    f"{live} join tokens are live (unused, unrevoked and unexpired), the most allowed "
                    f"(--join-tokens-max {self._max_tokens}): revoke unneeded ones "
                    "(DELETE /admin/api/tokens/ID) or let them expire"
                )
            record = TokenRecord(
                id=token_id,
                secret_hash=_hash(secret),
                name=name,
                created_at=now,
                expires_at=now + ttl,
                created_by=created_by,
            )
            await self._runner.call(self._runner.store.add_token, record)
        self._events.emit(
            "token_created",
            f"join token {token_id} created by {created_by}" + (f" for {name}" if name else ""),
            token_id=token_id,
            name=name,
            expires_at=record.expires_at,
            by=created_by,
        )
        return NewToken(f"{token_id}.{secret}", record)

    async def list_tokens(self) -> list[TokenRecord]:
        return await self._runner.call(self._runner.store.list_tokens)

    async def revoke_token(self, token_id: str, by: str) -> None:
        if not await self._runner.call(self._runner.store.revoke_token, token_id, self._clock.time()):
            raise NotFound(f"no unused join token {token_id[:32]!r}")
        self._events.emit("token_revoked", f"join token {token_id} revoked by {by}", token_id=token_id, by=by)

    async def _valid_token(self, token: str, name: str) -> TokenRecord:
        """The token's record if it may be spent now by a drone of this name."""
        token_id, _, secret = token.partition(".")
        refused = Unauthenticated("the join token is unknown, spent, revoked or expired")
        record = await self._runner.call(self._runner.store.get_token, token_id) if token_id else None
        if record is None or not hmac.compare_digest(record.secret_hash, _hash(secret)):
            raise refused
        now = self._clock.time()
        if record.used_at is not None or record.revoked_at is not None or record.expires_at <= now:
            raise refused
        if record.name is not None and record.name != name:
            raise PermissionDenied(f"this join token is for drone {record.name!r}, not {name!r}")
        return record

    # -- certificates --------------------------------------------------------

    async def _issue(self, csr_pem: bytes, drone_id: str) -> Issued:
        try:
            issued = self.ca.sign_drone(csr_pem, drone_id, self._lifetime)
        except PkiError as exc:
            raise InvalidArgument(str(exc)) from None
        record = CertRecord(
            serial=format(issued.serial, "x"),
            drone_id=drone_id,
            issued_at=self._clock.time(),
            not_after=issued.not_after,
        )
        await self._runner.call(self._runner.store.add_certificate, record)
        self._keep(record)
        return issued

    async def enroll(self, token: str, csr_pem: bytes, drone_id: str, name: str) -> Issued:
        if not ID_RE.match(drone_id):
            raise InvalidArgument("drone_id is not a valid drone id")
        if not NAME_RE.match(name):
            raise InvalidArgument(f"name {name[:64]!r}: use letters, digits, '.', '_' or '-' (max 63)")
        # Who has no valid token learns nothing more, not even whether an id is enrolled.
        record = await self._valid_token(token, name)
        if self.enrolled(drone_id):
            raise FailedPrecondition(
                f"drone id {drone_id} is already enrolled; revoke it first (swarm-cli drones revoke NAME)"
            )
        # What the drone can fix is refused before the token is spent, so it can try again.
        holder = self.holder(name, other_than=drone_id)
        if holder is not None:
            raise FailedPrecondition(
                f"the name {name!r} belongs to enrolled drone {holder}: choose another name, "
                f"or revoke that drone first (swarm-cli drones revoke {name})"
            )
        try:
            check_csr(csr_pem)
        except PkiError as exc:
            raise InvalidArgument(str(exc)) from None
        if not await self._runner.call(self._runner.store.use_token, record.id, drone_id, self._clock.time()):
            # Spent by a concurrent enrollment.
            raise Unauthenticated("the join token is unknown, spent, revoked or expired")
        issued = await self._issue(csr_pem, drone_id)
        await self._bind(drone_id, name, "enrollment")
        self._events.emit(
            "drone_enrolled",
            f"{name} enrolled with join token {record.id}",
            drone_id=drone_id,
            drone_name=name,
            token_id=record.id,
            serial=format(issued.serial, "x"),
        )
        return issued

    async def renew(self, drone_id: str, csr_pem: bytes) -> Issued:
        issued = await self._issue(csr_pem, drone_id)
        state = self._fleet.get(drone_id)
        self._events.emit(
            "certificate_renewed",
            f"{state.name if state else drone_id}: certificate renewed",
            drone_id=drone_id,
            drone_name=state.name if state else None,
            serial=format(issued.serial, "x"),
        )
        return issued

    async def revoke_drone(self, drone_id: str, by: str) -> int:
        now = self._clock.time()
        count = await self._runner.call(self._runner.store.revoke_certificates, drone_id, now)
        for serial in self._serials.get(drone_id, ()):
            record = self._certs[serial]
            if record.revoked_at is None:
                self._certs[serial] = dataclasses.replace(record, revoked_at=now)
        state = self._fleet.get(drone_id)
        name = state.name if state is not None else drone_id
        if state is not None and state.link is not None:
            state.link.close("UNAUTHENTICATED", "the drone's certificate was revoked")
        self._events.emit(
            "drone_revoked",
            f"{name}: certificates revoked by {by}",
            drone_id=drone_id,
            drone_name=name,
            certificates=count,
            by=by,
        )
        return int(count)
