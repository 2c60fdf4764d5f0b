"""Keys, certificate requests and pins, shared by agent and controller.

Everything cryptographic is done by the ``cryptography`` library. A drone
is identified by a URI in its certificate's subjectAltName
(``urn:build-swarm:drone:<drone id>``); a controller CA is pinned by the
SHA-256 of its SubjectPublicKeyInfo, written ``sha256:<hex>``.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from swarm.files import write_atomic

DRONE_URI_PREFIX = "urn:build-swarm:drone:"
PrivateKey = ec.EllipticCurvePrivateKey


class PkiError(Exception):
    """A certificate, key or pin is malformed or does not match."""


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("expected an EC private key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate: {exc}") from None


def make_csr(key: PrivateKey, drone_id: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, drone_id)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def spki_pin(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def check_pin_format(pin: str) -> str:
    value = pin.strip().lower()
    hexpart = value.removeprefix("sha256:")
    if (
        not value.startswith("sha256:")
        or len(hexpart) != 64
        or any(c not in "0123456789abcdef" for c in hexpart)
    ):
        raise PkiError("a CA pin looks like sha256:<64 hex digits>")
    return value


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def drone_id_of(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(DRONE_URI_PREFIX):
            return uri[len(DRONE_URI_PREFIX) :]
    return None


def presented_chain(host: str, port: int, timeout: float = 10.0) -> list[x509.Certificate]:
    """The certificates a TLS server presents, unverified.

    Used once, at enrollment: the caller trusts none of them until one
    matches the CA pin the admin gave it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        # Public from Python 3.13; the same method lives on the SSL object before.
        getter = getattr(tls, "get_unverified_chain", None) or tls._sslobj.get_unverified_chain  # type: ignore[attr-defined]
        chain = getter() or []
        return [
            x509.load_der_x509_certificate(c.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
            for c in chain
        ]


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, 0o600)
