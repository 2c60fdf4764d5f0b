"""The controller's configuration: one frozen object per process."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from swarm.config import option
from swarm.controller.eventloop import EVENT_LOOPS
from swarm.controller.notify import STARTTLS_MODES, SmtpSettings
from swarm.controller.oob import HARD_RESTART_COMMAND, RESTART_COMMAND
from swarm.controller.release_cadence import Cadence, parse_duration, parse_schedule
from swarm.controller.testbuild_rules import USE_RE
from swarm.controller.web.forwarded import Network, parse_networks
from swarm.controller.web.hostname import normalize

DEFAULT_PATH = Path("/etc/build-swarm/controller.toml")
DEFAULT_DRONES_FILE = Path("/etc/build-swarm/drones.toml")
DEFAULT_BINHOSTS_FILE = Path("/etc/build-swarm/binhosts.toml")
ENV_PREFIX = "SWARM_CONTROLLER_"


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    data_dir: Path = option(Path("/var/lib/build-swarm"), "state: database, keys, binhosts")
    db: str = option(
        "",
        "database URL: sqlite:///PATH or postgresql://USER@HOST/DB (default: SQLite in the data dir)",
        metavar="URL",
    )
    bind: str = option("0.0.0.0", "address for the gRPC gateway and the public tier", metavar="ADDR")
    admin_bind: str = option("127.0.0.1", "address for the admin tier", metavar="ADDR")
    grpc_port: int = option(8094, "gRPC gateway port for agents (0: any free port)", metavar="PORT")
    public_port: int = option(8100, "public read-only HTTP port (0: any free port)", metavar="PORT")
    admin_port: int = option(8093, "admin HTTP port (0: any free port)", metavar="PORT")
    metrics_port: int | None = option(
        None,
        "also serve GET /metrics WITHOUT authentication on this port of the admin bind address, "
        "for Prometheus on a trusted network (0: any free port; default: off, /metrics is on the "
        "admin tier only, with the admin key as a bearer token)",
        metavar="PORT",
    )
    enroll_port: int = option(
        8095, "TLS port where new drones trade a join token for a certificate", metavar="PORT"
    )
    tls_names: str = option(
        "",
        "extra names and addresses (comma-separated) for the controller's TLS "
        "certificate; localhost, the host name and 127.0.0.1 are always included",
    )
    cert_lifetime: float = option(30 * 86400.0, "lifetime of drone certificates in seconds (renewed at 2/3)")
    insecure: bool = option(False, "plaintext gRPC without certificates (development only; logs a warning)")
    admin_key_file: Path = option(
        Path(""),
        "file holding the admin API key; created with a random key if missing (default: DATA_DIR/admin.key)",
    )
    admin_keys_file: Path = option(
        Path(""),
        "file of named admin keys, stored hashed (SHA-256); managed through /admin/api/keys "
        "(default: DATA_DIR/admin-keys)",
    )
    admin_session_idle: float = option(
        1800.0, "seconds without a request (or an open websocket) after which a browser session ends"
    )
    admin_session_lifetime: float = option(
        12 * 3600.0, "seconds after login at which a browser session ends however active it is"
    )
    admin_session_max: int = option(
        1000, "browser sessions kept at most; the least recently used one ends first"
    )
    admin_origins: str = option(
        "",
        "extra browser origins (comma-separated, e.g. https://console.example.org) allowed for "
        "websockets and cookie-authenticated changes, besides the admin tier's own",
        metavar="ORIGINS",
    )
    admin_auth_failures: int = option(
        10,
        "wrong admin keys one client address may send in a burst before its wrong keys get 429 "
        "(a right key or a session always works)",
    )
    admin_auth_global_failures: int = option(
        100,
        "wrong admin keys all addresses together may send in a burst before every wrong key gets "
        "429 (bounds the CPU, log lines and events that wrong keys cost)",
    )
    admin_auth_window: float = option(
        60.0,
        "seconds in which an allowance of wrong keys (an address's, and the global one) refills completely",
    )
    trusted_proxies: str = option(
        "",
        "reverse proxies (comma-separated addresses or CIDR networks, e.g. 127.0.0.1,10.0.0.0/8) "
        "whose X-Forwarded-For names the client: the rightmost address in it that is not one of "
        "these is the client for the wrong-key limiter and audit events; from anyone else the header "
        "is ignored (default: none)",
        metavar="CIDRS",
    )
    allowed_hosts: str = option(
        "",
        "extra host names (comma-separated) the public and admin tiers answer to, besides localhost, "
        "127.0.0.1, ::1, the host name, the bind addresses, --tls-names, --public-url and "
        "--admin-origins; a request naming another host in its Host header gets 421 (against DNS rebinding)",
        metavar="NAMES",
    )
    join_tokens_max: int = option(
        100, "live join tokens (unused, unrevoked, unexpired) at most; creating one more is refused (409)"
    )
    ws_queue: int = option(
        1000,
        "messages a websocket client (/ws/events, /ws/protocol) may fall behind; "
        "beyond that they are dropped and the client is told how many",
    )
    http_connections: int = option(
        0,
        "open HTTP connections each web tier (public, admin) holds at most; a new one beyond "
        "closes the longest-idle one, or gets 503 if none is idle (0: a third of the open-files "
        "limit, less a reserve)",
    )
    http_connections_per_address: int = option(
        0,
        "open HTTP connections one client address may hold on a tier; beyond, as for "
        "http_connections, among that address's own (0: half of the tier's cap)",
    )
    http_header_timeout: float = option(
        10.0,
        "seconds a client has to send a complete request head, from connecting or from the first "
        "byte of its next request; slower connections are closed",
    )
    http_keepalive_timeout: float = option(
        60.0, "seconds an HTTP connection may stay idle between requests before it is closed"
    )
    http_keepalive_requests: int = option(
        1000, "requests one HTTP connection may carry; the answer to the last says Connection: close"
    )
    binhost_senders: int = option(
        16,
        "binhost downloads (staging, releases) sent at once by threads with blocking sendfile, "
        "beside the event loop; more, and slow clients, are sent by the event loop. 0: all by the loop",
    )
    portage_eprefix: Path = option(
        Path(""),
        "Gentoo prefix with the swarm's Portage configuration (repos, "
        "profile); its PKGDIR is the staging binhost. Empty: no builds",
    )
    public_url: str = option(
        "",
        "URL drones reach the public tier at, for the staging binhost (default: http://HOSTNAME:PUBLIC_PORT)",
        metavar="URL",
    )
    releases_dir: Path = option(
        Path(""),
        "directory of the releases, their key and the current/previous links; on the staging "
        "binhost's filesystem, since a release hard-links its packages (default: DATA_DIR/releases)",
    )
    release_keep: int = option(
        10, "releases kept; after each cut the oldest beyond are deleted (never current or previous)"
    )
    release_key: Path = option(
        Path(""),
        "armored secret GnuPG key without passphrase (gpg --armor --export-secret-keys) imported at "
        "start to sign releases (default: a key made on first use in RELEASES_DIR/gnupg)",
    )
    test_build_max_queued: int = option(
        100, "test builds queued at once over all tokens, at most; beyond, a request gets 429"
    )
    test_build_webhook_hosts: str = option(
        "",
        "host names (comma-separated) a test build's webhook may name, '*' for any; default: none, "
        "so a token holder cannot have the controller post inside its network",
        metavar="HOSTS",
    )
    test_build_use: str = option(
        "",
        "USE flags (comma-separated) a test build may ask to enable or disable; default: none",
        metavar="FLAGS",
    )
    payload_max_bytes: int = option(
        64 * 2**20, "bytes an uploaded payload (POST /admin/api/payloads) may have at most"
    )
    payload_expiry: float = option(
        3600.0, "seconds a deployed payload's signature is good for: a drone refuses it after"
    )
    payload_confirm_within: int = option(
        60, "seconds a newly deployed agent has to connect before it restores the previous version"
    )
    payload_deploy_timeout: float = option(
        3600.0, "seconds a deploy waits for the drone to say how it went (it waits for a build to end)"
    )
    build_timeout: float = option(4 * 3600.0, "seconds a build may take before it is cancelled and requeued")
    build_grace: float = option(60.0, "seconds a build's drone may be gone before its job is requeued")
    build_start_timeout: float = option(
        60.0, "seconds a drone may take to start a build it was sent before the job is requeued"
    )
    test_build_parallel: int = option(
        1, "test builds running at once at most (1-64); they run only on drones no regular job is ready for"
    )
    test_build_drones: str = option(
        "",
        "drones (names, comma-separated) marked for test builds: they take test builds even while "
        "regular jobs are ready (other drones only when none is)",
        metavar="NAMES",
    )
    test_build_keep_days: float = option(
        7.0, "days a finished test build (its record, log and packages) is kept", metavar="DAYS"
    )
    smtp_url: str = option(
        "",
        "mail server for test-build notifications: smtp://[USER:PASS@]HOST[:PORT] (empty: no email)",
        metavar="URL",
    )
    smtp_starttls: str = option(
        "auto",
        "STARTTLS to the mail server: required (no mail without it), auto (when offered) or off",
        metavar="MODE",
    )
    smtp_from: str = option("", "From address of test-build notifications (needed with smtp_url)")
    smtp_ca_file: Path = option(
        Path(""),
        "PEM file of the CA that the mail server's STARTTLS certificate is checked against "
        "(default: the system's)",
    )
    ground_after: int = option(
        3, "consecutive build failures after which a drone is grounded (circuit breaker)"
    )
    ground_cooldown: float = option(
        300.0, "seconds a grounded drone gets no builds before one probe build (half-open)"
    )
    ping_interval: float = option(5.0, "seconds between proof-of-life pings to each drone")
    ping_rate: float = option(
        50.0,
        "proof-of-life pings a second to the whole fleet at most: with more than ping_rate x "
        "ping_interval drones connected, each is pinged every drones / ping_rate seconds instead "
        "(0: no limit)",
    )
    ping_timeout: float = option(
        5.0, "seconds a pong may take: a later one answers nothing and is not recorded as a latency"
    )
    missed_pings: int = option(
        3, "pings in a row a drone may leave unanswered before it is unhealthy (gets no jobs, is healed)"
    )
    suspect_phi: float = option(8.0, "phi-accrual threshold at which a silent drone becomes suspect")
    offline_after_intervals: float = option(
        10.0, "heartbeat intervals of silence before a drone is declared offline and its stream closed"
    )
    hello_timeout: float = option(10.0, "seconds a new stream may take to say Hello")
    stream_pending_per_peer: int = option(
        8,
        "streams (control or channel) one drone, by its certificate (with --insecure: one "
        "connection), may hold before they say Hello or Attach; more are refused (RESOURCE_EXHAUSTED)",
    )
    stream_pending_total: int = option(
        1000, "streams of all drones together that have not said Hello or Attach yet; more are refused"
    )
    stream_replace_max: int = option(
        3,
        "times a drone's control stream may be replaced by a new one within stream_replace_window; "
        "beyond, the new stream is refused (RESOURCE_EXHAUSTED) and the one in place stays",
    )
    stream_replace_window: float = option(
        10.0,
        "seconds over which stream_replace_max counts; also the burst window in which replacements "
        "and refused streams are reported as one event with a count",
    )
    channel_streams_per_drone: int = option(
        24,
        "channel streams (terminals, commands, logs) one drone may hold at once; more are refused "
        "(above the agent's own 16, so that its answer 'too many channels' still gets through)",
    )
    drones_file: Path = option(
        DEFAULT_DRONES_FILE,
        "TOML file of [drones.NAME] tables (type, ssh, host, vmid, reboot): out-of-band "
        "access per drone, applied at every start",
    )
    binhosts_file: Path = option(
        DEFAULT_BINHOSTS_FILE,
        "TOML file of [binhosts.NAME] tables (kind, url, destination, networks, priority, enabled): "
        "binhost targets, applied at every start (it wins over what the API set)",
    )
    heal_grace: float = option(
        3.0, "seconds a sick drone gets to come back by itself before the first healing step"
    )
    heal_restart_timeout: float = option(
        6.0, "seconds an agent restart (step 1) gets to bring the drone back"
    )
    heal_hard_restart_timeout: float = option(15.0, "seconds a hard restart over SSH (step 2) gets")
    heal_reboot_timeout: float = option(180.0, "seconds a container or VM reboot (step 3) gets")
    heal_command_timeout: float = option(30.0, "seconds an out-of-band command may run before it is killed")
    heal_cooloff: float = option(
        10.0,
        "seconds after a healing action before that drone's next incident gets its first step; "
        "each further incident in a row that needs healing doubles it (a per-drone backoff, as "
        "Kubernetes backs off a crashing container; 0: none)",
    )
    heal_cooloff_max: float = option(300.0, "the longest a drone's cool-off grows to, in seconds")
    heal_cooloff_reset: float = option(
        600.0, "seconds a drone stays healthy after an incident before its cool-off starts over"
    )
    heal_dark_share: float = option(
        0.5,
        "share of the fleet going dark at once above which the controller blames its own network and waits",
    )
    heal_dark_window: float = option(30.0, "seconds within which drones going dark count as 'at once'")
    heal_dark_min_fleet: int = option(3, "fleets smaller than this are never considered dark")
    heal_max_actions: int = option(10, "healing actions allowed per window across the fleet")
    heal_action_window: float = option(300.0, "the window of heal_max_actions, in seconds")
    heal_startup_grace: float = option(
        30.0,
        "seconds after the controller starts that drones it knew before get to reconnect by "
        "themselves before they are healed; over as soon as all are back (at once on a first start)",
    )
    restart_command: str = option(
        RESTART_COMMAND,
        "healing step 1 over SSH when the drone is not connected; placeholders {name} {drone_id}",
    )
    hard_restart_command: str = option(
        HARD_RESTART_COMMAND, "healing step 2 over SSH; placeholders {name} {drone_id}"
    )
    ssh_identity: Path = option(Path(""), "private key for out-of-band SSH (default: ssh's own)")
    ssh_known_hosts: Path = option(
        Path(""), "known_hosts file for out-of-band SSH (default: ssh's own; host keys are always checked)"
    )
    ssh_connect_timeout: int = option(5, "seconds ssh may take to connect")
    mirror_parallel: int = option(
        4, "releases pushed to this many binhost mirrors at once at most (rsync over SSH, 1-64)"
    )
    mirror_check_interval: float = option(
        300.0,
        "seconds between health checks of each binhost mirror (its current manifest and a few "
        "packages' sha256 over HTTP; 5-86400); also run at start and after each push",
    )
    alert_webhook: str = option(
        "", "URL that gets a JSON POST when the healer alerts the admin", metavar="URL"
    )
    release_schedule: str = option(
        "",
        "cut a release at this slot of the controller's local time, weekly:DAY:HH:MM or daily:HH:MM "
        "(e.g. weekly:sun:03:00), after the session running then ends; skipped with an event when "
        "nothing changed or the last session left failed packages (default: off)",
        metavar="WHEN",
    )
    auto_promote_after: str = option(
        "",
        "promote a scheduled cut this long after it was cut (e.g. 24h, 2d) unless someone promoted, "
        "rolled back or deleted a release in the meantime (default: off, an admin promotes)",
        metavar="DURATION",
    )
    shell_grace: float = option(
        300.0,
        "seconds a terminal whose websocket dropped stays open for a reattach before its shell is hung up",
    )
    shell_idle_timeout: float = option(
        3600.0, "seconds without input or output after which a terminal is closed"
    )
    shell_max_lifetime: float = option(43200.0, "seconds after which any terminal is closed")
    shell_max_sessions: int = option(32, "terminals and one-off commands open at once, fleet-wide")
    shell_replay_kb: int = option(64, "KiB of recent output replayed to a client that reattaches")
    shell_open_timeout: float = option(10.0, "seconds a drone may take to open a terminal or command channel")
    shell_recording_max_mb: float = option(
        50.0, "MiB at which a terminal's recording (asciinema cast) stops growing"
    )
    shell_recordings_max_mb: float = option(
        1024.0, "MiB all recordings may take together; the oldest are deleted beyond it"
    )
    shell_recording_retention_days: float = option(90.0, "days a recording is kept")
    exec_max_output_kb: int = option(1024, "KiB of stdout, and of stderr, kept from a one-off command")
    exec_max_timeout: float = option(
        3600.0, "largest timeout a one-off command may ask for, in seconds (0.1 to 86400)"
    )
    # Live figures in the database only matter across a restart (the API
    # answers from memory, a status change is written at once): every 10 s is
    # a fifth of the writes of every 2 s, on PostgreSQL too.
    persist_interval: float = option(10.0, "seconds between batched writes of live drone state")
    event_retention: int = option(100_000, "events kept in the database; older ones are deleted")
    event_pending_max: int = option(
        50_000,
        "events kept in memory while the database is unavailable; beyond, the oldest are dropped "
        "and an events_dropped event says how many once the database is back",
    )
    health_interval: float = option(
        2.0,
        "seconds between the controller's checks of itself: a probe write to the database "
        "(which also reconnects a lost one) and the data disk's free space",
    )
    db_stall_after: float = option(
        10.0, "seconds one database call may run before health reports the database as not answering"
    )
    db_retry_max: float = option(
        5.0,
        "longest wait, in seconds, between attempts to reconnect to a lost database and between "
        "retries of writes that failed (exponential backoff with jitter up to it)",
    )
    disk_min_free_mb: float = option(
        512.0, "MiB of free space on the data directory's filesystem below which health is degraded (0: off)"
    )
    event_buffer: int = option(5_000, "recent events kept in memory")
    protocol_buffer: int = option(20_000, "recent protocol messages kept in memory")
    ready_file: Path = option(Path(""), "write the bound ports here as JSON once serving")
    log_file: Path = option(Path("/var/log/swarm-controller.log"), "log file (empty: stderr only)")
    log_level: str = option("info", "debug, info, warning or error")
    event_loop: str = option(
        "uvloop",
        "the event loop the controller runs on: uvloop (libuv's, written in C; at 2,000 drones "
        "its loop thread takes 1.7 points of a core less) or asyncio (Python's own)",
    )

    def __post_init__(self) -> None:
        if self.cert_lifetime < 5:
            raise ValueError("cert_lifetime must be at least 5 seconds")
        for name in ("grpc_port", "public_port", "admin_port", "enroll_port", "metrics_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{name} must be 0..65535, got {port}")
        if not 0.1 <= self.ping_interval <= 3600:
            raise ValueError("ping_interval must be between 0.1 and 3600 seconds")
        if not (self.ping_rate == 0 or 1 <= self.ping_rate <= 100_000):
            raise ValueError("ping_rate must be 0 (no limit) or between 1 and 100000 pings a second")
        if not 0.1 <= self.ping_timeout <= 3600 or self.missed_pings < 1:
            raise ValueError("ping_timeout must be between 0.1 and 3600 seconds and missed_pings at least 1")
        if self.suspect_phi <= 0:
            raise ValueError("suspect_phi must be positive")
        if self.offline_after_intervals < 2:
            raise ValueError("offline_after_intervals must be at least 2")
        if self.release_keep < 1:
            raise ValueError("release_keep must be at least 1")
        if not 1 <= self.test_build_max_queued <= 100_000:
            raise ValueError("test_build_max_queued must be between 1 and 100000")
        for flag in self.test_build_use_flags:
            if not USE_RE.fullmatch(flag):
                raise ValueError(f"test_build_use: {flag!r} is not a USE flag")
        if not 1 <= self.payload_max_bytes <= 2**40:
            raise ValueError("payload_max_bytes must be between 1 and 2^40")
        if not 60 <= self.payload_expiry <= 30 * 86400:
            raise ValueError("payload_expiry must be between 60 seconds and 30 days")
        if not 5 <= self.payload_confirm_within <= 3600:
            raise ValueError("payload_confirm_within must be between 5 and 3600 seconds")
        if not 1 <= self.payload_deploy_timeout <= 7 * 86400:
            raise ValueError("payload_deploy_timeout must be between 1 second and 7 days")
        if not 1 <= self.mirror_parallel <= 64:
            raise ValueError("mirror_parallel must be between 1 and 64")
        if not 5 <= self.mirror_check_interval <= 86400:
            raise ValueError("mirror_check_interval must be between 5 and 86400 seconds")
        if str(self.releases_dir) in ("", "."):
            # Resolved here, not in a property: the web tier serves files from it.
            object.__setattr__(self, "releases_dir", self.data_dir / "releases")
        if self.ground_after < 1 or self.ground_cooldown < 0:
            raise ValueError("ground_after must be at least 1 and ground_cooldown not negative")
        for name in (
            "stream_pending_per_peer",
            "stream_pending_total",
            "stream_replace_max",
            "channel_streams_per_drone",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0.1 <= self.stream_replace_window <= 3600:
            raise ValueError("stream_replace_window must be between 0.1 and 3600 seconds")
        if self.persist_interval <= 0 or self.hello_timeout <= 0:
            raise ValueError("persist_interval and hello_timeout must be positive")
        if not 0.05 <= self.health_interval <= 3600 or self.db_stall_after <= 0 or self.db_retry_max <= 0:
            raise ValueError(
                "health_interval must be between 0.05 and 3600 seconds, db_stall_after and "
                "db_retry_max positive"
            )
        if self.event_pending_max < 100 or self.disk_min_free_mb < 0:
            raise ValueError("event_pending_max must be at least 100 and disk_min_free_mb not negative")
        if self.event_retention < 100 or self.event_buffer < 10 or self.protocol_buffer < 10:
            raise ValueError("event_retention >= 100, event_buffer >= 10, protocol_buffer >= 10")
        if self.db and not self.db.startswith(("sqlite:", "postgresql://", "postgres://")):
            raise ValueError(f"db must be a sqlite:/// or postgresql:// URL, got {self.db.split(':')[0]}:...")
        if not 0 < self.heal_dark_share <= 1:
            raise ValueError("heal_dark_share must be in (0, 1]")
        if self.heal_cooloff < 0 or self.heal_startup_grace < 0 or self.heal_cooloff_reset <= 0:
            raise ValueError(
                "heal_cooloff and heal_startup_grace must not be negative, "
                "heal_cooloff_reset must be positive"
            )
        if self.heal_cooloff_max < self.heal_cooloff:
            raise ValueError(
                f"heal_cooloff_max ({self.heal_cooloff_max:g}) must be at least heal_cooloff "
                f"({self.heal_cooloff:g}): a drone's cool-off doubles from heal_cooloff "
                "up to heal_cooloff_max"
            )
        if self.heal_max_actions < 1 or self.heal_action_window <= 0:
            raise ValueError("heal_max_actions must be at least 1 and heal_action_window positive")
        if self.alert_webhook and not self.alert_webhook.startswith(("http://", "https://")):
            raise ValueError("alert_webhook must be an http:// or https:// URL")
        if self.admin_session_idle <= 0 or self.admin_session_lifetime <= 0 or self.admin_session_max < 1:
            raise ValueError(
                "admin_session_idle and admin_session_lifetime must be positive, admin_session_max >= 1"
            )
        if self.admin_auth_failures < 1 or self.admin_auth_global_failures < 1 or self.admin_auth_window <= 0:
            raise ValueError(
                "admin_auth_failures and admin_auth_global_failures must be at least 1, "
                "admin_auth_window positive"
            )
        if self.join_tokens_max < 1:
            raise ValueError("join_tokens_max must be at least 1")
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ValueError(f"trusted_proxies: {exc}") from None
        for name in self.allowed_host_list:
            if normalize(name) is None:
                raise ValueError(f"allowed_hosts: {name[:60]!r} is not a host name or address")
        for origin in self.admin_origin_list:
            if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
                raise ValueError(f"admin_origins: {origin!r} is not an origin like https://host[:port]")
        if not 10 <= self.ws_queue <= 1_000_000:
            raise ValueError("ws_queue must be between 10 and 1000000")
        if self.http_connections < 0 or self.http_connections_per_address < 0:
            raise ValueError("http_connections and http_connections_per_address must not be negative")
        if not 0 < self.http_header_timeout <= 3600 or not 0 < self.http_keepalive_timeout <= 86400:
            raise ValueError(
                "http_header_timeout must be in (0, 3600] and http_keepalive_timeout in (0, 86400] seconds"
            )
        if self.http_keepalive_requests < 1:
            raise ValueError("http_keepalive_requests must be at least 1")
        if not 0 <= self.binhost_senders <= 1024:
            raise ValueError("binhost_senders must be from 0 to 1024")
        for name in (
            "shell_grace",
            "shell_idle_timeout",
            "shell_max_lifetime",
            "shell_open_timeout",
            "shell_recording_max_mb",
            "shell_recordings_max_mb",
            "shell_recording_retention_days",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.shell_max_sessions < 1 or not 1 <= self.shell_replay_kb <= 16384:
            raise ValueError("shell_max_sessions must be at least 1 and shell_replay_kb 1-16384")
        if self.exec_max_output_kb < 1 or not 0.1 <= self.exec_max_timeout <= 86400:
            raise ValueError("exec_max_output_kb must be at least 1 and exec_max_timeout 0.1-86400 seconds")
        self.release_cadence  # noqa: B018 -- checked now, so a typo stops the start
        if self.auto_promote_seconds is not None and self.release_cadence is None:
            raise ValueError("auto_promote_after promotes scheduled cuts: it needs release_schedule")
        if self.release_cadence is not None and str(self.portage_eprefix) in ("", "."):
            raise ValueError(
                "release_schedule cuts releases from the staging binhost: it needs portage_eprefix"
            )
        if not 1 <= self.test_build_parallel <= 64:
            raise ValueError("test_build_parallel must be between 1 and 64")
        if not 0 < self.test_build_keep_days <= 3650:
            raise ValueError("test_build_keep_days must be more than 0 and at most 3650")
        self.smtp  # noqa: B018 -- checked now, so a typo stops the start
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"log_level must be debug, info, warning or error, got {self.log_level!r}")
        if self.event_loop not in EVENT_LOOPS:
            raise ValueError(f"event_loop must be {' or '.join(EVENT_LOOPS)}, got {self.event_loop!r}")

    @property
    def test_build_drone_names(self) -> frozenset[str]:
        return frozenset(n.strip() for n in self.test_build_drones.split(",") if n.strip())

    @property
    def smtp(self) -> SmtpSettings | None:
        """The mail server's settings, None without smtp_url (ValueError if they do not fit)."""
        if not self.smtp_url:
            return None
        if self.smtp_starttls not in STARTTLS_MODES:
            raise ValueError(f"smtp_starttls must be one of {', '.join(STARTTLS_MODES)}")
        ca = self.smtp_ca_file if str(self.smtp_ca_file) not in ("", ".") else None
        return SmtpSettings(self.smtp_url, self.smtp_from, self.smtp_starttls, ca)

    @property
    def tls_name_list(self) -> list[str]:
        names = ["localhost", socket.gethostname(), socket.getfqdn(), "127.0.0.1", "::1"]
        if self.bind not in ("0.0.0.0", "::", ""):
            names.append(self.bind)
        names += [n.strip() for n in self.tls_names.split(",") if n.strip()]
        return list(dict.fromkeys(names))

    @property
    def admin_key_path(self) -> Path:
        return (
            self.admin_key_file if str(self.admin_key_file) not in ("", ".") else self.data_dir / "admin.key"
        )

    @property
    def admin_keys_path(self) -> Path:
        return (
            self.admin_keys_file
            if str(self.admin_keys_file) not in ("", ".")
            else self.data_dir / "admin-keys"
        )

    @property
    def test_build_webhook_host_set(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.test_build_webhook_hosts.split(",") if h.strip())

    @property
    def test_build_use_flags(self) -> frozenset[str]:
        return frozenset(f.strip() for f in self.test_build_use.split(",") if f.strip())

    @property
    def admin_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/").lower() for o in self.admin_origins.split(",") if o.strip()]

    @property
    def trusted_proxy_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.trusted_proxies)

    @property
    def allowed_host_list(self) -> list[str]:
        return [n.strip() for n in self.allowed_hosts.split(",") if n.strip()]

    @property
    def release_cadence(self) -> Cadence | None:
        return parse_schedule(self.release_schedule) if self.release_schedule.strip() else None

    @property
    def auto_promote_seconds(self) -> float | None:
        text = self.auto_promote_after.strip()
        return parse_duration(text, "auto_promote_after") if text else None

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.data_dir / 'swarm.db'}"
