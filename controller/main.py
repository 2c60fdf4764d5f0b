"""``swarm-controller``: the controller daemon."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path

from swarm import __version__
from swarm.config import ConfigError, add_arguments, resolve
from swarm.controller.config import DEFAULT_PATH, ENV_PREFIX, ControllerConfig
from swarm.controller.eventloop import describe_loop, loop_runner
from swarm.logsetup import setup_logging

log = logging.getLogger(__name__)

# Allocations of tracked objects between two young collections (Python's
# default is 700). See tune_gc.
YOUNG_THRESHOLD = 10_000


def parse_args(argv: list[str] | None) -> ControllerConfig:
    parser = argparse.ArgumentParser(
        prog="swarm-controller",
        description="Build Swarm controller: gRPC gateway for drones, public and admin web tiers, "
        "fleet health.",
        epilog=f"Options also come from {DEFAULT_PATH} (or --config) and from "
        f"{ENV_PREFIX}<OPTION> environment variables; flags win.",
    )
    parser.add_argument("--config", type=Path, help=f"TOML config file (default: {DEFAULT_PATH} if present)")
    parser.add_argument("--version", action="version", version=f"swarm-controller {__version__}")
    add_arguments(parser, ControllerConfig)
    ns = parser.parse_args(argv)
    try:
        return resolve(
            ControllerConfig, ns, env_prefix=ENV_PREFIX, default_path=DEFAULT_PATH, explicit_path=ns.config
        )
    except ConfigError as exc:
        parser.exit(2, f"swarm-controller: {exc}\n")


def tune_gc() -> None:
    """Once started: what start-up made (modules, the fleet loaded from the
    database) is kept out of every collection from now on (``gc.freeze``),
    and the young generation is collected every YOUNG_THRESHOLD allocations
    rather than every 700. At 2,000 drones the heartbeats, pings and the
    persistence batches had the collector run 10-20 times a second, moving
    short-lived objects into the older generations and scanning them there
    again: about 4 % of a core (gc.callbacks, thread time); with this, one
    young collection in 30 s. Memory does not change: objects are still
    freed when their last reference goes; only cycles wait a little longer."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


async def run(config: ControllerConfig) -> None:
    # Imported here so that --help works without the controller extras.
    from swarm.controller.app import Controller

    controller = Controller(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    log.info("event loop: %s", describe_loop(loop))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await controller.start()
        tune_gc()
        gc.enable()  # off since main(): the controller serves now
        await stop.wait()
        log.info("stopping")
    finally:
        await controller.stop()
        log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    # No cyclic garbage collection until the controller serves (run() turns it
    # back on): importing and starting it makes some 70,000 objects that live
    # as long as it does, and looking for garbage among them again and again
    # as they arrive finds none (bench/startup.py: 5-10 % of the start's CPU).
    gc.disable()
    try:
        _main(argv)
    finally:
        gc.enable()


def _main(argv: list[str] | None) -> None:
    config = parse_args(argv)
    setup_logging(config.log_level, config.log_file)
    try:
        from swarm.controller.app import StartupError
        from swarm.controller.store.migrations import SchemaTooNew
        from swarm.controller.store.sql import StoreError
    except ImportError as exc:
        sys.exit(f"swarm-controller: missing dependency {exc.name}: install build-swarm[controller]")
    try:
        runner = loop_runner(config.event_loop)
    except ImportError as exc:
        sys.exit(
            f"swarm-controller: missing dependency {exc.name}: install build-swarm[controller], "
            "or run on Python's own loop (--event-loop asyncio)"
        )
    try:
        runner(run(config))
    except (StartupError, StoreError, SchemaTooNew) as exc:
        sys.exit(f"swarm-controller: {exc}")


if __name__ == "__main__":
    main()
