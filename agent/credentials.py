"""The drone's TLS identity: enrollment, loading, renewal.

Files in the state dir: ``drone.key`` (never leaves the drone, mode 0600),
``drone.crt`` (issued by the controller CA, bound to the drone id) and
``ca.crt`` (the controller CA this drone pinned when it enrolled) and
``payload.pub`` (the controller's payload key, raw ed25519, pinned at
enrollment or, for a drone enrolled before payloads, at its first renewal:
payloads.py applies only what it signed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from swarm.files import write_atomic
from swarm.pki import (
    PkiError,
    cert_pem,
    check_pin_format,
    drone_id_of,
    is_ca,
    key_pem,
    load_cert,
    load_key,
    make_csr,
    new_key,
    presented_chain,
    spki_pin,
    write_private,
)
from swarm.v1 import enroll_pb2, enroll_pb2_grpc

log = logging.getLogger(__name__)

KEY_FILE, CERT_FILE, CA_FILE = "drone.key", "drone.crt", "ca.crt"
PAYLOAD_KEY_FILE = "payload.pub"
PAYLOAD_KEY_SIZE = 32
ENROLL_TIMEOUT = 30.0
# Renew once two thirds of the certificate's lifetime have passed.
RENEW_AT = 2 / 3


class EnrollError(Exception):
    """Enrollment failed; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class Credentials:
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    drone_id: str
    not_before: float
    not_after: float

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )

    @property
    def renew_at(self) -> float:
        return self.not_before + (self.not_after - self.not_before) * RENEW_AT


def _parse(key: bytes, cert_pem: bytes, ca_pem: bytes) -> Credentials:
    cert = load_cert(cert_pem)
    drone_id = drone_id_of(cert)
    if drone_id is None:
        raise PkiError("the certificate names no drone")
    return Credentials(
        key,
        cert_pem,
        ca_pem,
        drone_id,
        cert.not_valid_before_utc.timestamp(),
        cert.not_valid_after_utc.timestamp(),
    )


def load(state_dir: Path) -> Credentials | None:
    """The stored credentials, or None if this drone never enrolled."""
    paths = [state_dir / name for name in (KEY_FILE, CERT_FILE, CA_FILE)]
    if not all(p.exists() for p in paths):
        return None
    return _parse(*(p.read_bytes() for p in paths))


def _save_cert(state_dir: Path, cert_pem: bytes) -> None:
    write_atomic(state_dir / CERT_FILE, cert_pem)


def load_payload_key(state_dir: Path) -> bytes | None:
    """The pinned payload key, or None if this drone has none yet."""
    try:
        key = (state_dir / PAYLOAD_KEY_FILE).read_bytes()
    except FileNotFoundError:
        return None
    return key if len(key) == PAYLOAD_KEY_SIZE else None


def pin_payload_key(state_dir: Path, key: bytes) -> bool:
    """Pin ``key`` unless one is pinned already (True if it is now).

    A pinned key is never replaced by what a controller says later: a
    controller that could swap it could sign anything. An empty key (a
    controller from before payloads) pins nothing."""
    if len(key) != PAYLOAD_KEY_SIZE:
        if key:
            log.warning("ignoring a payload key of %d bytes (ed25519 keys have 32)", len(key))
        return False
    pinned = load_payload_key(state_dir)
    if pinned is not None:
        if pinned != key:
            log.warning(
                "the controller offers another payload key than the pinned one; keeping the pinned "
                "one (enroll the drone again to take a new key)"
            )
        return pinned == key
    write_atomic(state_dir / PAYLOAD_KEY_FILE, key)
    log.info("pinned the controller's payload key")
    return True


def split_target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


def pinned_ca(enroll_target: str, pin: str) -> bytes:
    """The controller CA from the chain its enrollment port presents, if it matches the pin."""
    host, port = split_target(enroll_target)
    try:
        chain = presented_chain(host, port)
    except OSError as exc:
        raise EnrollError(f"cannot reach the enrollment port {enroll_target}: {exc}") from None
    for cert in chain:
        if spki_pin(cert) == pin and is_ca(cert):
            return cert_pem(cert)
    raise EnrollError(
        f"{enroll_target} presented no CA matching {pin}: wrong --ca-pin, or not our controller"
    )


async def enroll(
    state_dir: Path, drone_id: str, name: str, enroll_target: str, token: str, pin: str
) -> Credentials:
    try:
        pin = check_pin_format(pin)
    except PkiError as exc:
        raise EnrollError(str(exc)) from None
    ca_pem = await asyncio.to_thread(pinned_ca, enroll_target, pin)
    key = new_key()
    request = enroll_pb2.EnrollRequest(
        token=token, csr_pem=make_csr(key, drone_id), drone_id=drone_id, name=name
    )
    channel_creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    async with grpc.aio.secure_channel(enroll_target, channel_creds) as channel:
        try:
            reply = await enroll_pb2_grpc.EnrollmentStub(channel).Enroll(request, timeout=ENROLL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise EnrollError(f"enrollment refused: {exc.details() or exc.code().name}") from None
    if reply.ca_pem.strip() != ca_pem.strip():
        raise EnrollError("the controller answered with a CA other than the pinned one")
    creds = _parse(key_pem(key), reply.certificate_pem, ca_pem)
    if creds.drone_id != drone_id:
        raise EnrollError(f"the certificate is for drone {creds.drone_id}, not {drone_id}")
    write_private(state_dir / KEY_FILE, creds.key_pem)
    (state_dir / CA_FILE).write_bytes(ca_pem)
    _save_cert(state_dir, creds.cert_pem)
    # A new enrollment pins the key anew: the drone may be enrolled with another controller.
    (state_dir / PAYLOAD_KEY_FILE).unlink(missing_ok=True)
    pin_payload_key(state_dir, reply.payload_public_key)
    log.info("enrolled as %s; certificate valid until %s", drone_id, time.ctime(creds.not_after))
    return creds


async def renew(state_dir: Path, target: str, creds: Credentials) -> Credentials:
    """A fresh certificate for the same key, over the authenticated channel."""
    key = load_key(creds.key_pem)
    request = enroll_pb2.RenewRequest(csr_pem=make_csr(key, creds.drone_id))
    async with grpc.aio.secure_channel(target, creds.channel_credentials()) as channel:
        reply = await enroll_pb2_grpc.EnrollmentStub(channel).Renew(request, timeout=ENROLL_TIMEOUT)
    fresh = _parse(creds.key_pem, reply.certificate_pem, creds.ca_pem)
    if fresh.drone_id != creds.drone_id:
        raise PkiError(f"renewed certificate is for {fresh.drone_id}, not {creds.drone_id}")
    _save_cert(state_dir, fresh.cert_pem)
    pin_payload_key(state_dir, reply.payload_public_key)
    log.info("certificate renewed; valid until %s", time.ctime(fresh.not_after))
    return fresh


class Renewer:
    """Keeps the drone's certificate fresh: renews at two thirds of its
    lifetime, then asks the link to reconnect with the new one."""

    def __init__(
        self, state_dir: Path, target: str, creds: Credentials, on_renewed: Callable[[], None]
    ) -> None:
        self._state_dir = state_dir
        self._target = target
        self.current = creds
        self._on_renewed = on_renewed
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="cert-renewer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(max(0.0, self.current.renew_at - time.time()))
            try:
                self.current = await renew(self._state_dir, self._target, self.current)
            except (grpc.aio.AioRpcError, PkiError, OSError) as exc:
                failures += 1
                delay = min(60.0, 2.0**failures)
                log.warning("certificate renewal failed (%s); retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self._on_renewed()
