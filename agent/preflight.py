"""``swarm-agent check``: can the agent start with this configuration?

The OpenRC service runs it before starting the agent, so a drone that is
not enrolled (or whose state dir holds someone else's certificate) gets
one line saying why and a service that did not start, instead of an agent
that exits and is respawned every few seconds. Nothing here writes: a
check never creates a drone id or a directory.
"""

from __future__ import annotations

import time

from cryptography.hazmat.primitives import serialization

from swarm.agent import credentials
from swarm.agent.config import AgentConfig
from swarm.agent.identity import ID_FILE, ID_RE
from swarm.pki import PkiError, load_cert, load_key

ENROLL_HINT = (
    "run `swarm-agent enroll --controller HOST:8094 --token TOKEN --ca-pin sha256:...` "
    "(`swarm-cli token create` prints it)"
)


class NotReady(Exception):
    """The agent would not start; the message says why in one line."""


def _public(pem_key: bytes, pem_cert: bytes) -> tuple[bytes, bytes]:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return load_key(pem_key).public_key().public_bytes(*fmt), load_cert(pem_cert).public_key().public_bytes(
        *fmt
    )


def _date(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def check(config: AgentConfig, now: float | None = None) -> str:
    """One line saying the agent is ready to start, or NotReady saying why not."""
    state_dir = config.state_dir
    if config.insecure:
        return f"ready: drone {config.drone_name}, insecure (no certificate), controller {config.controller}"
    try:
        creds = credentials.load(state_dir)
        drone_id = (state_dir / ID_FILE).read_text().strip() if creds is not None else ""
    except (OSError, ValueError, PkiError) as exc:
        raise NotReady(f"cannot read the drone's identity in {state_dir}: {exc}") from None
    if creds is None:
        raise NotReady(f"this drone is not enrolled (no certificate in {state_dir}): {ENROLL_HINT}")
    if not ID_RE.match(drone_id):
        raise NotReady(f"{state_dir / ID_FILE} does not hold a drone id: {ENROLL_HINT}")
    if creds.drone_id != drone_id:
        raise NotReady(
            f"the certificate in {state_dir} is for drone {creds.drone_id}, not this drone ({drone_id}): "
            f"{ENROLL_HINT}"
        )
    try:
        key_public, cert_public = _public(creds.key_pem, creds.cert_pem)
    except (ValueError, PkiError) as exc:
        raise NotReady(f"the key in {state_dir} is unusable: {exc}") from None
    if key_public != cert_public:
        raise NotReady(f"the key in {state_dir} does not belong to its certificate: {ENROLL_HINT}")
    now = time.time() if now is None else now
    if creds.not_after <= now:
        raise NotReady(f"the certificate in {state_dir} expired on {_date(creds.not_after)}: {ENROLL_HINT}")
    return (
        f"ready: drone {config.drone_name} ({drone_id}), certificate valid until {_date(creds.not_after)}, "
        f"controller {config.controller}"
    )
