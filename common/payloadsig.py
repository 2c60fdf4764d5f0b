"""Signed payload metadata, shared by the controller (signs) and the agent
(verifies before it fetches or applies anything).

The controller signs the serialized ``PayloadMeta`` with its payload key
(ed25519) and sends those exact bytes with the signature; the agent checks
the signature over the bytes it received before it parses them, so both
sides never need a canonical encoding. After the signature, the meta is
held against the drone's state: expiry, the drone it is meant for, and
rollback protection (a lower version than the one running only when the
controller signed it as a rollback), in the spirit of TUF.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf.message import DecodeError

from swarm.v1 import payload_pb2

AGENT: Final = "agent"
AGENT_CONFIG: Final = "agent-config"
PORTAGE_CONFIG: Final = "portage-config"
KINDS: Final = (AGENT, AGENT_CONFIG, PORTAGE_CONFIG)

SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")


class PayloadRefused(Exception):
    """The payload must not be applied; the message is one line saying why."""


@dataclass(frozen=True, slots=True)
class Signed:
    """A payload's metadata as it travels: the signed bytes and their signature."""

    meta: bytes
    signature: bytes


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32 bytes a drone pins (EnrollResponse.payload_public_key)."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def fingerprint(public: bytes) -> str:
    """A short name for a payload key, for events and the console."""
    return hashlib.sha256(public).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, meta: payload_pb2.PayloadMeta) -> Signed:
    if meta.kind not in KINDS:
        raise ValueError(f"unknown payload kind {meta.kind!r}")
    if meta.version < 1 or not SHA256_RE.fullmatch(meta.sha256):
        raise ValueError("a payload needs a version from 1 and a lowercase hex sha256")
    raw = meta.SerializeToString()
    return Signed(raw, key.sign(raw))


def verify(
    public: bytes,
    signed: Signed,
    *,
    now: float,
    drone_id: str,
    running: int,
) -> payload_pb2.PayloadMeta:
    """The meta if the drone may apply it; PayloadRefused saying why if not.

    ``running`` is the version of this kind the drone runs now (0: none).
    """
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signed.signature, signed.meta)
    except (InvalidSignature, ValueError):
        raise PayloadRefused("signature does not verify against the pinned payload key") from None
    meta = payload_pb2.PayloadMeta()
    try:
        meta.ParseFromString(signed.meta)
    except DecodeError:
        raise PayloadRefused("signed metadata does not parse") from None
    if meta.kind not in KINDS:
        raise PayloadRefused(f"unknown payload kind {meta.kind!r}")
    if meta.drone_id and meta.drone_id != drone_id:
        raise PayloadRefused("signed for another drone")
    if meta.expires_at_unix <= now:
        raise PayloadRefused("expired")
    if not SHA256_RE.fullmatch(meta.sha256) or meta.version < 1:
        raise PayloadRefused("metadata without a version or sha256")
    if meta.version == running:
        raise PayloadRefused(f"version {meta.version} already runs")
    if meta.version < running and not meta.rollback:
        raise PayloadRefused(
            f"version {meta.version} is older than the running {running} and not signed as a rollback"
        )
    if meta.version > running and meta.rollback:
        raise PayloadRefused(f"a rollback to {meta.version} is not older than the running {running}")
    return meta


def check_bytes(meta: payload_pb2.PayloadMeta, size: int, sha256: str) -> None:
    """What was fetched against what was signed (PayloadRefused if it differs)."""
    if size != meta.size:
        raise PayloadRefused(f"size {size} differs from the signed {meta.size}")
    if sha256 != meta.sha256:
        raise PayloadRefused("sha256 differs from the signed one")
