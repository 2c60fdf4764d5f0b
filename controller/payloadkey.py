"""The payload key: the ed25519 key the controller signs payloads with
(swarm.payloadsig).

Made once, on the first start that needs it, in ``DATA_DIR/pki/payload.key``
(PKCS#8 PEM, mode 0600, written atomically like the CA's key); the drones
pin its public half (32 raw bytes) from EnrollResponse, or from
RenewResponse for a drone enrolled before payloads existed. Losing it means
every drone refuses every payload until it is enrolled again: back it up
with the CA.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from swarm.payloadsig import fingerprint, public_bytes
from swarm.pki import PkiError, write_private

log = logging.getLogger(__name__)

FILE_NAME = "payload.key"


def load_or_create(directory: Path) -> Ed25519PrivateKey:
    """The key in ``directory``, made there first if there is none (blocking)."""
    path = directory / FILE_NAME
    if path.exists():
        try:
            key = load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise PkiError(f"the payload key {path} does not load: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise PkiError(f"the payload key {path} is not an ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    write_private(path, pem)
    log.info("made the payload key %s in %s", fingerprint(public_bytes(key)), path)
    return key
