"""Logging for swarm processes: stderr plus an optional log file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str, log_file: Path | None) -> None:
    """Log to stderr and, when it can be opened, to log_file.

    A log file that cannot be opened is reported and skipped rather than
    fatal: a drone without /var/log write access must still come up.
    """
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level.upper())
    formatter = logging.Formatter(FORMAT)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter)
    root.addHandler(stderr)
    if log_file is not None and str(log_file) not in ("", "."):
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            # WatchedFileHandler reopens the file after logrotate moves it.
            from logging.handlers import WatchedFileHandler

            handler = WatchedFileHandler(log_file)
        except OSError as exc:
            logging.getLogger(__name__).warning(
                "cannot open log file %s (%s); logging to stderr only", log_file, exc.strerror
            )
        else:
            handler.setFormatter(formatter)
            root.addHandler(handler)
    # grpc's own loggers are chatty at INFO about reconnects we already report.
    logging.getLogger("grpc").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
