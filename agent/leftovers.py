"""What a build leaves on the drone, and deleting it once the build is given up on.

A build the controller gave up on (its drone was away too long, the agent
was killed during the upload, the build was cancelled) leaves a binary
package in PKGDIR that nobody will upload, and Portage's temporary build
directory (PORTAGE_TMPDIR/portage/<category>/<PF>) when emerge was killed
in the middle. The agent notes each build in a small journal in its state
dir, so that it can still find them after a restart of its own, and
deletes them when the controller cancels the build or the build ends
cancelled. An emerge that outlived a killed agent (it runs in a session of
its own) is killed first, if it is still the same process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

KEPT = 32  # builds remembered; one runs at a time, so this reaches far back
PKG_SUFFIX = ".gpkg.tar"


@dataclass(frozen=True, slots=True)
class BuildTrace:
    build_id: str
    cpv: str
    started: float  # wall clock: packages written since then are this build's
    pgid: int = 0  # emerge's process group (0: not started)
    pgid_created: float = 0.0  # its leader's start time, so a reused pid is left alone
    ended: float = 0.0  # wall clock; 0: running, or the agent died with it


class BuildJournal:
    """The drone's recent builds, in one JSON file rewritten atomically."""

    def __init__(self, path: Path | None) -> None:
        self._path = path  # None: kept in memory only
        self._traces: dict[str, BuildTrace] = {}
        self._loaded = False

    def _load(self) -> None:
        if self._loaded or self._path is None:
            return
        self._loaded = True
        try:
            raw = json.loads(self._path.read_text())
            self._traces = {t["build_id"]: BuildTrace(**t) for t in raw}
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("build journal %s is unreadable (%s); starting a new one", self._path, exc)

    def _save(self) -> None:
        traces = list(self._traces.values())[-KEPT:]
        self._traces = {t.build_id: t for t in traces}
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        part = self._path.with_name(self._path.name + ".part")
        part.write_text(json.dumps([asdict(t) for t in traces]))
        part.replace(self._path)

    def note(self, trace: BuildTrace) -> None:
        self._load()
        self._traces.pop(trace.build_id, None)
        self._traces[trace.build_id] = trace
        self._save()

    def ended(self, build_id: str, at: float) -> None:
        self._load()
        trace = self._traces.get(build_id)
        if trace is not None:
            self._traces[build_id] = replace(trace, ended=at)
            self._save()

    def get(self, build_id: str) -> BuildTrace | None:
        self._load()
        return self._traces.get(build_id)

    def forget(self, build_id: str) -> None:
        self._load()
        if self._traces.pop(build_id, None) is not None:
            self._save()


def packages_of(pkgdir: Path, cpv: str, since: float, until: float = 0.0) -> list[Path]:
    """The binary packages of ``cpv`` in PKGDIR written between since and until
    (0: no end), one second of slack each side (file times are coarse)."""
    category, _, pf = cpv.partition("/")
    folder = pkgdir / category
    found = []
    for candidate in sorted(folder.glob(f"*/{pf}*{PKG_SUFFIX}")) + sorted(folder.glob(f"{pf}*{PKG_SUFFIX}")):
        stem = candidate.name[: -len(PKG_SUFFIX)]
        if stem != pf and not re.fullmatch(re.escape(pf) + r"-\d+", stem):
            continue
        with contextlib.suppress(FileNotFoundError):
            mtime = candidate.stat().st_mtime
            if mtime >= since - 1 and (not until or mtime <= until + 1):
                found.append(candidate)
    return found


def _kill_orphan(trace: BuildTrace) -> None:
    """Kill the build's emerge if it outlived the agent (an ended build's group
    was killed by the agent itself)."""
    if not trace.pgid or trace.ended:
        return
    try:
        if abs(psutil.Process(trace.pgid).create_time() - trace.pgid_created) >= 1.0:
            return  # the pid belongs to another process now
    except psutil.NoSuchProcess:
        pass  # the leader is gone; what is left of its group goes too
    except psutil.Error:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(trace.pgid, signal.SIGKILL)
        log.info("build %s: killed its emerge left running (process group %d)", trace.build_id, trace.pgid)


def remove_leftovers(trace: BuildTrace, pkgdir: Path, tmpdir: Path, busy_cpv: str = "") -> list[Path]:
    """Delete what the build left (blocking: run it in a thread); returns what went.

    ``tmpdir`` is Portage's PORTAGE_TMPDIR/portage; ``busy_cpv`` the package the
    drone builds now, whose temporary directory is the running build's."""
    _kill_orphan(trace)
    removed = []
    for package in packages_of(pkgdir, trace.cpv, trace.started, trace.ended):
        with contextlib.suppress(FileNotFoundError):
            package.unlink()
            removed.append(package)
    if trace.cpv != busy_cpv:
        category, _, pf = trace.cpv.partition("/")
        build_dir = tmpdir / category / pf
        if build_dir.is_dir():
            shutil.rmtree(build_dir, ignore_errors=True)
            removed.append(build_dir)
        lock = tmpdir / category / f".{pf}.portage_lockfile"
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
            removed.append(lock)
    return removed
