"""``swarm-agent``: the resident agent on every drone.

``swarm-agent enroll --token T --ca-pin sha256:...`` once, then
``swarm-agent`` (usually from its OpenRC service) for good.
``swarm-agent check`` says in one line whether the agent can start (the
service runs it first).

When the controller sends RestartService the agent stops as on SIGTERM
(the running build is cancelled, its process group killed, the stream
closed) and then replaces itself with a fresh process of the same program
and command line (``os.execv``: same pid, so a supervisor sees no exit and
a drone without one still comes back, and the pid file stays right). The
fresh process reads its configuration again and says Hello with a new
instance id.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import grpc

from swarm import __version__
from swarm.agent import credentials, dronetype, pidfile, preflight, selfupdate
from swarm.agent.config import DEFAULT_PATH, ENV_PREFIX, AgentConfig
from swarm.agent.identity import IdentityError, load_or_create_drone_id
from swarm.config import ConfigError, add_arguments, resolve
from swarm.logsetup import setup_logging
from swarm.pki import PkiError

if TYPE_CHECKING:
    from swarm.agent.serde import HelloInfo

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
# How long what is queued for the controller (a cancelled build's outcome)
# may take to leave before the stream is closed.
FLUSH_TIMEOUT = 2.0
# Handed from a process to the one it execs: when the fresh program started.
# Not an option; removed from the environment at start, so builds never see it.
EXECED_AT_ENV = "SWARM_AGENT_EXECED_AT_NS"
INSTANCE_ID = uuid.uuid4().hex
EPILOG = (
    f"Options also come from {DEFAULT_PATH} (or --config) and from {ENV_PREFIX}<OPTION> environment "
    "variables; flags win."
)


class NotEnrolled(Exception):
    """The drone has no certificate yet."""


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=EPILOG)
    parser.add_argument("--config", type=Path, help=f"TOML config file (default: {DEFAULT_PATH} if present)")
    parser.add_argument("--version", action="version", version=f"swarm-agent {__version__}")
    add_arguments(parser, AgentConfig)
    return parser


def _resolve(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> AgentConfig:
    try:
        return resolve(
            AgentConfig, ns, env_prefix=ENV_PREFIX, default_path=DEFAULT_PATH, explicit_path=ns.config
        )
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")


def config_path(argv: list[str]) -> Path:
    """The config file the agent reads (an agent-config payload replaces it):
    --config, else SWARM_AGENT_CONFIG, else the default path."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config", type=Path)
    given = parser.parse_known_args(argv)[0].config
    return Path(given or os.environ.get(f"{ENV_PREFIX}CONFIG") or DEFAULT_PATH)


def parse_args(argv: list[str] | None) -> AgentConfig:
    parser = _parser(
        "swarm-agent",
        "Build Swarm drone agent: keeps a control stream to the controller, sends "
        "heartbeats and runs what the controller asks. First enrol the drone: "
        "swarm-agent enroll --help; swarm-agent check says whether it can start.",
    )
    return _resolve(parser, parser.parse_args(argv))


def parse_enroll_args(argv: list[str]) -> tuple[AgentConfig, str, str]:
    parser = _parser(
        "swarm-agent enroll",
        "Enrol this drone: trade a one-time join token (from "
        "`swarm-cli token create`) for a client certificate, after checking the controller's "
        "CA against the pin.",
    )
    parser.add_argument(
        "--token", default=os.environ.get("SWARM_AGENT_TOKEN"), help="join token (or SWARM_AGENT_TOKEN)"
    )
    parser.add_argument("--ca-pin", required=True, help="controller CA pin, sha256:<hex>")
    ns = parser.parse_args(argv)
    if not ns.token:
        parser.exit(2, "swarm-agent enroll: a join token is needed: --token or SWARM_AGENT_TOKEN\n")
    return _resolve(parser, ns), ns.token, ns.ca_pin


def parse_check_args(argv: list[str]) -> AgentConfig:
    parser = _parser(
        "swarm-agent check",
        "Check that the agent can start with this configuration (the options are the agent's): "
        "prints one line, and exits 0 when it can, 1 when it cannot (not enrolled, or the "
        "certificate is not this drone's), 2 for a bad configuration.",
    )
    return _resolve(parser, parser.parse_args(argv))


def process_started_at_ns() -> int:
    """When this agent program started: the process's creation time, or the
    time it was exec'd by a restart (exec keeps the process, and its creation time)."""
    import psutil  # the daemon's, as in run()

    execed = os.environ.pop(EXECED_AT_ENV, "")
    if execed.isdigit():
        return int(execed)
    return round(psutil.Process().create_time() * 1e9)


def hello_info(
    config: AgentConfig, drone_id: str, kind: dronetype.Detection, started_at_ns: int = 0
) -> HelloInfo:
    from swarm.agent.serde import HelloInfo  # the daemon's, as in run()

    return HelloInfo(
        drone_id=drone_id,
        name=config.drone_name,
        cores=os.cpu_count() or 1,
        drone_type=kind.drone_type,
        drone_type_reason=kind.reason,
        network=config.network,
        agent_version=__version__,
        heartbeat_interval=config.heartbeat_interval,
        hostname=socket.gethostname(),
        instance_id=INSTANCE_ID,
        process_started_at_ns=started_at_ns,
    )


async def run(config: AgentConfig, started_at_ns: int = 0, config_file: Path = DEFAULT_PATH) -> str | None:
    """Run until SIGTERM/SIGINT (None) or a restart asked by the controller (its reason)."""
    # The daemon's parts are imported here, not at the top: `swarm-agent enroll`
    # and `swarm-agent check` need none of them, and importing them (protobuf
    # modules, psutil, the builder, the shells) cost each of those some 35 ms of CPU.
    from swarm.agent.builder import Builder
    from swarm.agent.checks import HealthChecks
    from swarm.agent.link import ControlLink
    from swarm.agent.logs import LogSources
    from swarm.agent.payloads import PayloadManager
    from swarm.agent.payloadstate import PayloadState
    from swarm.agent.probes import SystemProbe
    from swarm.agent.shell import Channels
    from swarm.backoff import Backoff

    drone_id = load_or_create_drone_id(config.state_dir)
    creds = None if config.insecure else credentials.load(config.state_dir)
    if creds is None and not config.insecure:
        raise NotEnrolled(
            f"this drone is not enrolled (no certificate in {config.state_dir}): run "
            "`swarm-agent enroll --token TOKEN --ca-pin sha256:...` first"
        )
    if creds is not None and creds.drone_id != drone_id:
        raise NotEnrolled(
            f"the certificate in {config.state_dir} is for drone {creds.drone_id}, not {drone_id}"
        )
    if config.insecure:
        log.warning("--insecure: talking to the controller in plaintext, without certificates")

    renewer: credentials.Renewer | None = None

    def channel_credentials() -> grpc.ChannelCredentials | None:
        current = renewer.current if renewer is not None else creds
        return None if current is None else current.channel_credentials()

    # A few small files under /proc and /sys, read once, off the loop.
    kind = await asyncio.to_thread(dronetype.resolve, config.drone_type)
    hello = hello_info(config, drone_id, kind, started_at_ns)
    link = ControlLink(
        config.controller,
        hello,
        SystemProbe(config.cache_path),
        Backoff(initial=config.backoff_initial, cap=config.backoff_max),
        channel_credentials,
        refused_backoff=Backoff(initial=config.refused_backoff_initial, cap=config.refused_backoff_max),
    )
    log_sources = LogSources(
        agent_log=config.log_file if str(config.log_file) not in ("", ".") else None,
        builds=config.state_dir / "builds",
        portage=config.portage_log_dir or config.state_dir / "portage-logs",
    )
    link.builder = Builder(
        emerge_command=config.emerge_command,
        pkgdir=config.pkgdir,
        eprefix=config.portage_eprefix,
        logs=log_sources,
        cache_path=config.cache_path,
        min_free_bytes=config.min_free_disk_mb * 2**20,
        nice=config.build_nice,
        send=link.send,
        channel=link.new_channel,
        journal=config.state_dir / "build-journal.json",
        scratch=config.state_dir / "test-pkgdirs",
    )
    checks = HealthChecks(
        builder=link.builder,
        cache_path=config.cache_path,
        min_free_bytes=config.min_free_disk_mb * 2**20,
        stall_timeout=config.builder_stall_timeout,
    )
    link.checks = checks
    channels = Channels(link.new_channel, config.shell, log_sources)
    link.channels = channels
    link.payloads = PayloadManager(
        state_dir=config.state_dir,
        drone_id=drone_id,
        state=await asyncio.to_thread(PayloadState, config.state_dir),
        builder=link.builder,
        send=link.send,
        channel=link.new_channel,
        config_path=config_file,
        eprefix=config.portage_eprefix,
        emerge_info=checks.emerge_info,
        config_change=checks.config_change,
        restart=lambda reason: restart_requested(reason),
        restart_argv=restart_argv,
    )
    if creds is not None:
        renewer = credentials.Renewer(config.state_dir, config.controller, creds, link.credentials_changed)
    stop = asyncio.Event()
    restart: list[str] = []

    def restart_requested(reason: str) -> None:
        if not stop.is_set():
            restart.append(reason)
            stop.set()

    def terminate() -> None:
        # A signal means stop for good, even in the middle of a restart.
        restart.clear()
        stop.set()

    link.on_restart = restart_requested
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate)
    log.info(
        "swarm-agent %s starting: drone %s (%s), instance %s, controller %s",
        __version__,
        hello.name,
        drone_id,
        hello.instance_id,
        config.controller,
    )
    log.info("drone type %s: %s", kind.drone_type, kind.reason)
    await checks.start()
    await link.start()
    gc.enable()  # off since main(): the agent is up
    if renewer is not None:
        await renewer.start()
    try:
        await stop.wait()
    finally:
        why = f"restarting: {restart[0]}" if restart else "stopping"
        log.info("%s", why)
        if renewer is not None:
            await renewer.stop()
        await link.payloads.stop()
        await link.builder.stop(reason=f"the agent is {why}")
        await channels.stop(reason=f"the agent is {why}")
        await asyncio.wait_for(link.stop(flush=FLUSH_TIMEOUT), STOP_TIMEOUT + FLUSH_TIMEOUT)
        await checks.stop()
        log.info("stopped")
    return restart[0] if restart else None


def restart_argv() -> list[str]:
    """The command line that started this program.

    Started from its entry-point script (``/usr/bin/swarm-agent``, as the
    service does), the script is exec'd again, so the kernel reads its
    ``#!`` line once more: the process keeps the script's name (what
    ``ps`` and ``pkill -x`` see) and its command line, exactly as at the
    first start. Exec'ing the interpreter instead would rename the process
    after the interpreter (``python3.12``). Otherwise (``python -m
    swarm.agent.main``) the interpreter runs again with its original
    command line, the name it had from the start."""
    script = sys.argv[0]
    if os.path.isfile(script) and os.access(script, os.X_OK) and not script.endswith(".py"):
        return [script, *sys.argv[1:]]
    return [sys.executable, *sys.orig_argv[1:]]


def exec_fresh(reason: str, state_dir: Path) -> NoReturn:
    """Replace this process with a fresh run of the same program and command
    line, or of the agent version the state dir's ``current`` names (an
    agent payload: selfupdate.py). Descriptors Python opened (log file,
    sockets) are close-on-exec; what is buffered is written out first."""
    argv = selfupdate.launch_argv(state_dir, __version__, sys.argv[1:]) or restart_argv()
    log.info("restarting (%s): exec %s", reason, " ".join(argv))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ[EXECED_AT_ENV] = str(time.time_ns())
    try:
        os.execv(argv[0], argv)
    except OSError as exc:
        # Exit non-zero: a supervisor, if there is one, starts us again.
        sys.exit(f"swarm-agent: cannot restart ({' '.join(argv)}): {exc}")


async def run_enroll(config: AgentConfig, token: str, pin: str) -> None:
    drone_id = load_or_create_drone_id(config.state_dir)
    creds = await credentials.enroll(
        config.state_dir, drone_id, config.drone_name, config.enroll_target, token, pin
    )
    print(f"enrolled {config.drone_name} ({creds.drone_id}); start the agent: swarm-agent")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["enroll"]:
            config, token, pin = parse_enroll_args(args[1:])
            setup_logging(config.log_level, None)
            asyncio.run(run_enroll(config, token, pin))
        elif args[:1] == ["check"]:
            print(f"swarm-agent: {preflight.check(parse_check_args(args[1:]))}")
        else:
            # No cyclic garbage collection until the agent is up (run() turns it
            # back on): what it imports and builds to start lives as long as it
            # does, and looking for garbage among that as it arrives finds none.
            gc.disable()
            started_at_ns = process_started_at_ns()
            config = parse_args(args)
            setup_logging(config.log_level, config.log_file)
            switch = selfupdate.launch_argv(config.state_dir, __version__, args)
            if switch is not None:
                # The service starts the installed agent (the floor); it runs the
                # version deployed to this drone, when there is one (selfupdate.py).
                log.info("running the deployed agent: exec %s", " ".join(switch))
                try:
                    os.execv(switch[0], switch)
                except OSError as exc:
                    log.error("cannot exec the deployed agent %s (%s): running this one", switch[0], exc)
            pid_file = None if str(config.pid_file) in ("", ".") else config.pid_file
            if pid_file is not None:
                pidfile.write(pid_file)
            reason = None
            try:
                reason = asyncio.run(run(config, started_at_ns, config_path(args)))
            finally:
                gc.enable()
                # A restart keeps the pid (exec), and so the file.
                if pid_file is not None and reason is None:
                    pidfile.remove(pid_file)
            if reason is not None:
                exec_fresh(reason, config.state_dir)
    except preflight.NotReady as exc:
        sys.exit(f"swarm-agent: {exc}")
    except (IdentityError, NotEnrolled, credentials.EnrollError, PkiError) as exc:
        sys.exit(f"swarm-agent: {exc}")
    except OSError as exc:
        sys.exit(f"swarm-agent: {exc}")


if __name__ == "__main__":
    main()
