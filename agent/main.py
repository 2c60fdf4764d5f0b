"""``swarm-agent``: the resident agent on every drone."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from swarm import __version__
from swarm.agent.config import DEFAULT_PATH, ENV_PREFIX, AgentConfig
from swarm.agent.identity import IdentityError, load_or_create_drone_id
from swarm.agent.link import ControlLink
from swarm.agent.probes import SystemProbe
from swarm.agent.serde import HelloInfo
from swarm.backoff import Backoff
from swarm.config import ConfigError, add_arguments, resolve
from swarm.logsetup import setup_logging

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0


def parse_args(argv: list[str] | None) -> AgentConfig:
    parser = argparse.ArgumentParser(
        prog="swarm-agent",
        description="Build Swarm drone agent: keeps a control stream to the controller, "
        "sends heartbeats and runs what the controller asks.",
        epilog=f"Options also come from {DEFAULT_PATH} (or --config) and from "
        f"{ENV_PREFIX}<OPTION> environment variables; flags win.",
    )
    parser.add_argument("--config", type=Path, help=f"TOML config file (default: {DEFAULT_PATH} if present)")
    parser.add_argument("--version", action="version", version=f"swarm-agent {__version__}")
    add_arguments(parser, AgentConfig)
    ns = parser.parse_args(argv)
    try:
        return resolve(
            AgentConfig, ns, env_prefix=ENV_PREFIX, default_path=DEFAULT_PATH, explicit_path=ns.config
        )
    except ConfigError as exc:
        parser.exit(2, f"swarm-agent: {exc}\n")


async def run(config: AgentConfig) -> None:
    drone_id = load_or_create_drone_id(config.state_dir)
    hello = HelloInfo(
        drone_id=drone_id,
        name=config.drone_name,
        cores=os.cpu_count() or 1,
        drone_type=config.drone_type,
        network=config.network,
        agent_version=__version__,
        heartbeat_interval=config.heartbeat_interval,
        hostname=socket.gethostname(),
    )
    link = ControlLink(
        config.controller,
        hello,
        SystemProbe(config.cache_path),
        Backoff(initial=config.backoff_initial, cap=config.backoff_max),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "swarm-agent %s starting: drone %s (%s), controller %s",
        __version__,
        hello.name,
        drone_id,
        config.controller,
    )
    await link.start()
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await asyncio.wait_for(link.stop(), STOP_TIMEOUT)
        log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    setup_logging(config.log_level, config.log_file)
    try:
        asyncio.run(run(config))
    except IdentityError as exc:
        print(f"swarm-agent: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        print(f"swarm-agent: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
