"""Records that cross the storage boundary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class NodeRecord:
    id: str
    name: str
    drone_type: str = "unknown"
    cores: int = 0
    network: str = ""
    hostname: str = ""
    agent_version: str = ""
    payload_version: str = ""
    heartbeat_interval_ms: int = 1000
    status: str = "offline"
    first_seen_at: float = 0.0
    last_seen_at: float | None = None
    last_heartbeat_at: float | None = None
    last_ping_at: float | None = None
    last_pong_at: float | None = None
    ping_latency_ms: float | None = None
    load1: float = 0.0
    load5: float = 0.0
    load15: float = 0.0
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    disk_percent: float = 0.0
    disk_free_bytes: int = 0
    emerge_running: bool = False
    current_job_id: str = ""


class NodeLive(NamedTuple):
    """The columns of a node that its heartbeats and pongs change, for a
    narrow update of a drone already stored (``Store.update_nodes_live``).
    A tuple rather than a dataclass: the whole fleet's are built every
    persist interval, and a tuple is built in one call from a DroneState's
    attributes."""

    id: str
    last_seen_at: float | None
    last_heartbeat_at: float | None
    last_ping_at: float | None
    last_pong_at: float | None
    ping_latency_ms: float | None
    load1: float
    load5: float
    load15: float
    cpu_percent: float
    memory_percent: float
    disk_percent: float
    disk_free_bytes: int
    emerge_running: bool
    current_job_id: str


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    ts: float
    type: str
    message: str
    drone_id: str | None = None
    drone_name: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    secret_hash: str
    name: str | None
    created_at: float
    expires_at: float
    created_by: str = ""
    used_at: float | None = None
    used_by: str | None = None
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class NameRecord:
    """A drone's name, bound to its id: given at enrollment, changed by an admin."""

    drone_id: str
    name: str
    bound_at: float
    bound_by: str  # "enrollment", "hello" (a drone enrolled before names were bound) or an admin


@dataclass(frozen=True, slots=True)
class CertRecord:
    serial: str  # hex: X.509 serials are up to 159 bits, more than a BIGINT holds
    drone_id: str
    issued_at: float
    not_after: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    name: str
    state: str
    atoms: tuple[str, ...]
    created_at: float
    created_by: str = ""
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    session_id: str
    cpv: str
    deps: tuple[str, ...]
    state: str
    attempts: int = 0
    failed_on: tuple[str, ...] = ()
    drone_id: str | None = None
    build_id: str | None = None
    reason: str = ""
    priority: float = 0.0
    created_at: float = 0.0
    ready_at: float | None = None
    assigned_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True, slots=True)
class BuildRecord:
    """One attempt of a job on one drone."""

    id: str
    job_id: str
    session_id: str
    cpv: str
    drone_id: str
    state: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    build_id: str
    filename: str
    cpv: str
    sha256: str
    size: int
    stored_at: float


@dataclass(frozen=True, slots=True)
class PackageStat:
    cpn: str
    mean_seconds: float
    builds: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """How to reach a drone out of band, as the admin set it."""

    drone_id: str
    drone_type: str = ""  # overrides the type the drone reports; "" keeps it
    ssh: str = ""  # SSH target of the drone itself: [user@]host[:port]
    host: str = ""  # SSH target of its hypervisor host (lxc, qemu)
    vmid: str = ""
    reboot: str = ""  # a preset name or a command template run on the host
    healing_paused: bool = False
    updated_at: float = 0.0
    updated_by: str = ""


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """One stretch of a drone being down or unhealthy, and how it ended."""

    id: str
    drone_id: str
    kind: str  # offline, suspect, unhealthy
    reason: str
    failed_at: float  # best estimate of when it broke (the last sign of life)
    detected_at: float
    recovered_at: float | None = None
    level: int = 0  # highest ladder step taken
    outcome: str = ""  # recovered, recovered-by-itself, exhausted, ...


@dataclass(frozen=True, slots=True)
class BinhostRecord:
    """A binhost target as stored (controller/binhosts.py validates it)."""

    name: str
    kind: str  # local or rsync
    url: str = ""
    destination: str = ""
    networks: tuple[str, ...] = ()
    priority: int = 0
    enabled: bool = True
    updated_at: float = 0.0
    updated_by: str = ""


@dataclass(frozen=True, slots=True)
class TestBuildRecord:
    """A test build (controller/testbuilds.py): a token holder's "does it
    build?", queued apart from sessions, its package never released."""

    __test__ = False  # not a pytest class, whatever its name

    id: str  # "tb-" + 12 hex
    package: str  # the atom as asked ("app-misc/foo" or "=app-misc/foo-1.0")
    cpv: str  # what it resolved to in the controller's tree
    user: str  # the token's user
    token_id: str
    state: str  # queued, running, succeeded, failed, cancelled
    queued_at: float
    use: tuple[str, ...] = ()  # USE flags asked for ("foo", "-bar"), from the allowed list
    started_at: float | None = None
    finished_at: float | None = None
    drone: str = ""  # drone name, "" until it runs
    build_id: str = ""  # the StartBuild's build_id, "" until it runs
    exit_code: int | None = None
    reason: str = ""  # one line: why it failed or was cancelled
    log_tail: str = ""  # the last lines of the build log
    packages: tuple[str, ...] = ()  # files under the test PKGDIR
    notify_email: str = ""
    webhook_url: str = ""
    notified: str = ""  # "" not yet, "sent", "failed: <why>"


@dataclass(frozen=True, slots=True)
class TestBuildTokenRecord:
    """A test-build token: only the hash of its secret is kept."""

    __test__ = False

    id: str
    user: str
    secret_hash: str  # SHA-256 hex of the secret
    rate: str  # "5/h": requests per period, refilling the bucket
    burst: int  # the bucket's size
    max_queued: int  # its builds queued at once, at most
    created_at: float
    created_by: str = ""
    revoked_at: float | None = None
    last_used_at: float | None = None


@dataclass(frozen=True, slots=True)
class PayloadRecord:
    """One uploaded version of a payload kind (controller/payloads.py); its
    bytes are a file under the data dir, named by kind and version."""

    kind: str  # agent, agent-config or portage-config
    version: int  # monotonic per kind, from 1
    sha256: str
    size: int
    uploaded_by: str
    uploaded_at: float
    notes: str = ""
    state: str = "uploaded"  # uploaded, staged, deployed


@dataclass(frozen=True, slots=True)
class DronePayloadRecord:
    """What one drone is to run of a payload kind and what it runs."""

    drone_id: str
    kind: str
    expected_version: int = 0  # 0: nothing deployed to it
    running_version: int = 0  # as the drone last said (0: what it was installed with)
    sha256: str = ""  # of the running version
    state: str = ""  # sent, waiting, fetching, applied, refused, failed, rolled_back, timed_out
    reason: str = ""
    deploy_id: str = ""
    updated_at: float = 0.0
