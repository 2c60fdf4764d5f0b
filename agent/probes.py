"""System probes for heartbeats. Blocking: call them from a thread."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

EMERGE_SCAN_EVERY = 5.0


@dataclass(frozen=True, slots=True)
class Sample:
    load1: float
    load5: float
    load15: float
    cpu_percent: float
    memory_percent: float
    disk_percent: float
    disk_free_bytes: int
    emerge_running: bool


def existing(path: Path) -> Path:
    """The path itself or its nearest existing parent: a cache dir that is
    not created yet still lives on some disk we can measure."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


class SystemProbe:
    def __init__(self, cache_path: Path) -> None:
        self._cache_path = cache_path
        self._emerge_running = False
        self._emerge_checked = 0.0
        psutil.cpu_percent(interval=None)  # primes the counter; the first call returns 0

    def _scan_emerge(self) -> bool:
        # A process scan costs milliseconds; heartbeats come every second, so
        # the answer is refreshed only every few seconds.
        now = time.monotonic()
        if now - self._emerge_checked >= EMERGE_SCAN_EVERY:
            self._emerge_checked = now
            running = False
            for proc in psutil.process_iter(["name"]):
                if proc.info["name"] == "emerge":
                    running = True
                    break
            self._emerge_running = running
        return self._emerge_running

    def sample(self) -> Sample:
        load1, load5, load15 = os.getloadavg()
        disk = psutil.disk_usage(str(existing(self._cache_path)))
        return Sample(
            load1=load1,
            load5=load5,
            load15=load15,
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_percent=psutil.virtual_memory().percent,
            disk_percent=disk.percent,
            disk_free_bytes=disk.free,
            emerge_running=self._scan_emerge(),
        )
