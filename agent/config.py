"""The agent's configuration: one frozen object per process."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path

from swarm.config import option

DEFAULT_PATH = Path("/etc/build-swarm/agent.toml")
ENV_PREFIX = "SWARM_AGENT_"
DRONE_TYPES = ("auto", "lxc", "qemu", "bare-metal", "unknown")
ENROLL_PORT = 8095
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    controller: str = option("127.0.0.1:8094", "controller gRPC address", metavar="HOST:PORT")
    name: str = option("", "drone name shown in the console (default: the host name)")
    drone_type: str = option(
        "auto",
        "what this drone is: auto (detect it at start: LXC container, QEMU/KVM guest, bare metal; "
        "any other container or VM is unknown) or lxc, qemu, bare-metal, unknown to say so",
    )
    network: str = option("lan", "network the drone is on, e.g. lan or tailscale")
    state_dir: Path = option(Path("/var/lib/build-swarm/agent"), "where the drone id and keys are kept")
    cache_path: Path = option(
        Path("/var/tmp/portage"),
        "Portage's build directory (PORTAGE_TMPDIR/portage): its disk use is reported, and what a "
        "build given up on left in it is deleted",
    )
    enroll_address: str = option(
        "", "controller enrollment address (default: the controller host, port 8095)", metavar="HOST:PORT"
    )
    insecure: bool = option(False, "plaintext connection without certificates (development controllers only)")
    heartbeat_interval: float = option(1.0, "seconds between heartbeats")
    backoff_initial: float = option(0.5, "first reconnect delay ceiling in seconds")
    backoff_max: float = option(30.0, "largest reconnect delay in seconds")
    refused_backoff_initial: float = option(
        30.0,
        "first reconnect delay ceiling in seconds after the controller refused this agent (revoked, "
        "another agent with this drone's id connected, name taken); doubles per refusal in a row",
    )
    refused_backoff_max: float = option(900.0, "largest reconnect delay in seconds after refusals")
    emerge_command: str = option(
        "emerge --oneshot --buildpkg --usepkg --getbinpkg --quiet-build=n",
        "command that builds one package; --usepkg-exclude=CATEGORY/PN =CATEGORY/PF is appended (a test "
        "build runs it three times: with --pretend --onlydeps, --onlydeps, then --buildpkgonly)",
    )
    pkgdir: Path = option(Path("/var/cache/binpkgs"), "where emerge writes binary packages (PKGDIR)")
    portage_eprefix: str = option("", "run emerge in this Gentoo prefix (PORTAGE_OVERRIDE_EPREFIX); empty: /")
    min_free_disk_mb: int = option(
        1024, "refuse builds, and report the drone unhealthy, when the build cache has less free space (MiB)"
    )
    build_nice: int = option(
        10,
        "niceness of emerge and everything it starts (0-19): a build filling the drone's CPUs "
        "must not delay the agent's heartbeats and answers",
    )
    builder_stall_timeout: float = option(
        1800.0,
        "a build with no output and no CPU time for this many seconds is wedged: the drone reports "
        "itself unhealthy until the build moves or ends",
    )
    shell: str = option(
        "",
        "command line of the shell for admin terminals (default: $SHELL or the user's login shell, "
        "else /bin/sh, run with -l); used as given when set",
    )
    log_file: Path = option(Path("/var/log/swarm-drone.log"), "log file (empty: stderr only)")
    pid_file: Path = option(
        Path("/run/swarm-agent.pid"),
        "file holding the agent's pid while it runs, by which a hard restart finds it (empty: none)",
    )
    portage_log_dir: Path | None = option(
        None,
        "PORT_LOGDIR for builds: where Portage's build logs are kept for the portage/<cat>/<pkg> "
        "log source (default: STATE_DIR/portage-logs)",
    )
    log_level: str = option("info", "debug, info, warning or error")

    def __post_init__(self) -> None:
        if self.drone_type not in DRONE_TYPES:
            raise ValueError(f"drone_type must be one of {', '.join(DRONE_TYPES)}, got {self.drone_type!r}")
        if self.name and not NAME_RE.match(self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, '.', '_' or '-' (at most 63)")
        host, sep, port = self.controller.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"controller must be HOST:PORT, got {self.controller!r}")
        if self.enroll_address:
            host, sep, port = self.enroll_address.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"enroll_address must be HOST:PORT, got {self.enroll_address!r}")
        if not 0.05 <= self.heartbeat_interval <= 60:
            raise ValueError("heartbeat_interval must be between 0.05 and 60 seconds")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("backoff needs 0 < backoff_initial <= backoff_max")
        if not 0 < self.refused_backoff_initial <= self.refused_backoff_max:
            raise ValueError("backoff needs 0 < refused_backoff_initial <= refused_backoff_max")
        if not self.emerge_command.strip():
            raise ValueError("emerge_command must not be empty")
        if self.min_free_disk_mb < 0:
            raise ValueError("min_free_disk_mb must not be negative")
        if not 0 <= self.build_nice <= 19:
            raise ValueError(f"build_nice must be between 0 and 19, got {self.build_nice}")
        if not self.builder_stall_timeout > 0:
            raise ValueError("builder_stall_timeout must be more than 0 seconds")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"log_level must be debug, info, warning or error, got {self.log_level!r}")

    @property
    def enroll_target(self) -> str:
        if self.enroll_address:
            return self.enroll_address
        host = self.controller.rpartition(":")[0]
        return f"{host}:{ENROLL_PORT}"

    @property
    def drone_name(self) -> str:
        if self.name:
            return self.name
        host = socket.gethostname().split(".")[0]
        return host if NAME_RE.match(host) else "drone"
