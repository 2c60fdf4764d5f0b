"""Signed payload metadata (common/payloadsig.py): what the agent refuses."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm import payloadsig
from swarm.payloadsig import PayloadRefused, Signed
from swarm.v1 import payload_pb2

NOW = 1_800_000_000.0
KEY = Ed25519PrivateKey.generate()
PUBLIC = payloadsig.public_bytes(KEY)
BODY = b"agent wheel bytes"


def meta(**fields: str | int | bool) -> payload_pb2.PayloadMeta:
    made = payload_pb2.PayloadMeta(
        kind="agent",
        version=3,
        sha256=hashlib.sha256(BODY).hexdigest(),
        size=len(BODY),
        expires_at_unix=int(NOW) + 3600,
        drone_id="d-1",
    )
    for name, value in fields.items():
        setattr(made, name, value)
    return made


def verify(signed: Signed, running: int = 2, public: bytes = PUBLIC) -> payload_pb2.PayloadMeta:
    return payloadsig.verify(public, signed, now=NOW, drone_id="d-1", running=running)


def test_a_payload_signed_by_the_pinned_key_verifies_and_its_bytes_are_checked() -> None:
    got = verify(payloadsig.sign(KEY, meta()))
    assert (got.kind, got.version) == ("agent", 3)
    payloadsig.check_bytes(got, len(BODY), hashlib.sha256(BODY).hexdigest())
    with pytest.raises(PayloadRefused, match="size"):
        payloadsig.check_bytes(got, len(BODY) + 1, hashlib.sha256(BODY).hexdigest())
    with pytest.raises(PayloadRefused, match="sha256"):
        payloadsig.check_bytes(got, len(BODY), hashlib.sha256(b"tampered").hexdigest())


@pytest.mark.parametrize(
    ("signed", "running", "reason"),
    [
        (payloadsig.sign(Ed25519PrivateKey.generate(), meta()), 2, "signature"),
        (Signed(meta(version=9).SerializeToString(), payloadsig.sign(KEY, meta()).signature), 2, "signature"),
        (payloadsig.sign(KEY, meta(expires_at_unix=int(NOW))), 2, "expired"),
        (payloadsig.sign(KEY, meta(drone_id="d-2")), 2, "another drone"),
        (payloadsig.sign(KEY, meta(version=1)), 2, "older than the running 2"),
        (payloadsig.sign(KEY, meta(version=3)), 3, "already runs"),
        (payloadsig.sign(KEY, meta(version=4, rollback=True)), 3, "not older"),
        (Signed(b"\xff\xff", b""), 2, "signature"),
    ],
    ids=[
        "other-key",
        "tampered-meta",
        "expired",
        "other-drone",
        "downgrade",
        "same",
        "rollback-up",
        "garbage",
    ],
)
def test_refused(signed: Signed, running: int, reason: str) -> None:
    with pytest.raises(PayloadRefused, match=reason):
        verify(signed, running)


def test_a_rollback_signed_as_such_may_go_down_and_any_drone_payload_fits_every_drone() -> None:
    assert verify(payloadsig.sign(KEY, meta(version=2, rollback=True)), running=3).version == 2
    assert verify(payloadsig.sign(KEY, meta(drone_id="")), running=0).version == 3


def test_the_controller_does_not_sign_what_no_agent_would_take() -> None:
    with pytest.raises(ValueError, match="kind"):
        payloadsig.sign(KEY, meta(kind="kernel"))
    with pytest.raises(ValueError, match="sha256"):
        payloadsig.sign(KEY, meta(sha256="ABC"))
