"""The controller's certificate authority.

Created on first start in DATA_DIR/pki (the key readable by the
controller's user only). It signs the gRPC server certificate, for the
names and addresses the admin configures, and one client certificate per
enrolled drone, bound to the drone id.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swarm.pki import (
    DRONE_URI_PREFIX,
    PkiError,
    cert_pem,
    key_pem,
    load_cert,
    load_key,
    new_key,
    spki_pin,
    write_private,
)

log = logging.getLogger(__name__)

CA_LIFETIME = datetime.timedelta(days=3650)
SERVER_LIFETIME = datetime.timedelta(days=365)
CLOCK_SKEW = datetime.timedelta(minutes=5)


# The client keys the gateway's TLS stack can verify in a handshake. An
# Ed25519 or P-521 certificate would be issued fine and then fail every
# connection (NO_COMMON_SIGNATURE_ALGORITHMS), so such requests are refused
# before anything is spent on them.
CLIENT_CURVES = (ec.SECP256R1, ec.SECP384R1)
RSA_BITS = (2048, 8192)
KEYS_THAT_WORK = "an ECDSA key on P-256 (what swarm-agent makes) or P-384, or an RSA key of 2048 to 8192 bits"


def check_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """The parsed request if a drone certificate made from it can connect, else PkiError saying why."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise PkiError("the certificate request is not a PEM CSR") from None
    try:
        if not csr.is_signature_valid:
            raise PkiError("the certificate request's signature does not verify")
    except InvalidSignature:
        raise PkiError("the certificate request's signature does not verify") from None
    try:
        key = csr.public_key()
    except (ValueError, TypeError):  # e.g. an algorithm this build of OpenSSL does not know
        key = None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, CLIENT_CURVES):
            raise PkiError(f"ECDSA curve {key.curve.name} is not supported: use {KEYS_THAT_WORK}")
    elif isinstance(key, rsa.RSAPublicKey):
        if not RSA_BITS[0] <= key.key_size <= RSA_BITS[1]:
            raise PkiError(f"an RSA key of {key.key_size} bits is not supported: use {KEYS_THAT_WORK}")
    else:
        kind = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "this key type"
        raise PkiError(f"{kind} is not supported for drone certificates: use {KEYS_THAT_WORK}")
    return csr


@dataclass(frozen=True, slots=True)
class Issued:
    serial: int
    pem: bytes
    not_after: float


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Build Swarm"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class CertificateAuthority:
    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self.cert = cert
        self.pem = cert_pem(cert)
        self.pin = spki_pin(cert)

    @classmethod
    def load_or_create(cls, directory: Path) -> CertificateAuthority:
        key_path, cert_path = directory / "ca.key", directory / "ca.crt"
        if key_path.exists() and cert_path.exists():
            return cls(load_key(key_path.read_bytes()), load_cert(cert_path.read_bytes()))
        key = new_key()
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Build Swarm controller CA"))
            .issuer_name(_name("Build Swarm controller CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(key_path, key_pem(key))
        cert_path.write_bytes(cert_pem(cert))
        log.warning("created a new controller CA in %s (pin %s)", directory, spki_pin(cert))
        return cls(key, cert)

    def _builder(
        self,
        subject: x509.Name,
        public_key: object,
        lifetime: datetime.timedelta,
        usage: x509.ObjectIdentifier,
    ) -> x509.CertificateBuilder:
        now = _now()
        # Backdate a little for clocks running behind, but never by a large
        # share of a short lifetime: the agent renews at 2/3 of it.
        skew = min(CLOCK_SKEW, lifetime / 10)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - skew)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )

    def issue_server(self, names: list[str]) -> tuple[bytes, bytes]:
        """A server key and its chain (server certificate, then the CA)."""
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        key = new_key()
        cert = (
            self._builder(
                _name(names[0] if names else "controller"),
                key.public_key(),
                SERVER_LIFETIME,
                ExtendedKeyUsageOID.SERVER_AUTH,
            )
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return key_pem(key), cert_pem(cert) + self.pem

    def sign_drone(self, csr_pem: bytes, drone_id: str, lifetime: datetime.timedelta) -> Issued:
        """A client certificate for the drone; only the CSR's key is taken from it."""
        csr = check_csr(csr_pem)
        cert = (
            self._builder(_name(drone_id), csr.public_key(), lifetime, ExtendedKeyUsageOID.CLIENT_AUTH)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(DRONE_URI_PREFIX + drone_id)]),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return Issued(
            serial=cert.serial_number, pem=cert_pem(cert), not_after=cert.not_valid_after_utc.timestamp()
        )

    def verify_issued(self, cert: x509.Certificate) -> bool:
        """True if this CA signed the certificate."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True
