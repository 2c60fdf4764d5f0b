"""Start, stop and restart local agent processes, as a service manager would.

On a real drone OpenRC does this (``rc-service swarm-agent restart``). The
demo and the tests run several drones on one machine without OpenRC; the
healer's restart and reboot commands there are this tool, run over real
SSH (tests) or locally (demo). Each drone has a directory under --state
holding ``agent.json`` (its command line), ``agent.pid`` and ``agent.out``.

  dronectl.py --state DIR start NAME          start unless running
  dronectl.py --state DIR stop NAME           SIGTERM, then SIGKILL after --timeout
  dronectl.py --state DIR restart NAME        stop, then start
  dronectl.py --state DIR kill NAME           SIGKILL at once
  dronectl.py --state DIR hard-restart NAME   kill, then start
  dronectl.py --state DIR status NAME         exit 0 if running, 3 if not
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

NOT_RUNNING = 3


class DroneCtlError(Exception):
    pass


def write_spec(state: Path, name: str, argv: list[str], env: dict[str, str] | None = None) -> Path:
    """Record how to start a drone's agent (used by the demo and tests)."""
    folder = state / name
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "agent.json"
    spec.write_text(json.dumps({"argv": argv, "env": env or {}}, indent=2))
    return spec


def _running(folder: Path) -> psutil.Process | None:
    try:
        pid, started = json.loads((folder / "agent.pid").read_text())
        proc = psutil.Process(pid)
        # Same pid, same start time: not a recycled pid.
        if abs(proc.create_time() - started) < 0.5 and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def start(folder: Path) -> str:
    if (proc := _running(folder)) is not None:
        return f"already running (pid {proc.pid})"
    try:
        spec = json.loads((folder / "agent.json").read_text())
    except (OSError, ValueError) as exc:
        raise DroneCtlError(f"no usable {folder / 'agent.json'}: {exc}") from None
    with (folder / "agent.out").open("ab") as out:
        # Its own session: it outlives the shell (or SSH session) that started it.
        child = subprocess.Popen(
            spec["argv"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **spec.get("env", {})},
        )
    tmp = folder / "agent.pid.tmp"
    tmp.write_text(json.dumps([child.pid, psutil.Process(child.pid).create_time()]))
    tmp.replace(folder / "agent.pid")
    return f"started (pid {child.pid})"


def _signal_group(proc: psutil.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _gone(proc: psutil.Process, timeout: float) -> bool:
    """Whether it ended within timeout. Not our child, so no wait(): a
    zombie left for its reaper counts as gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def stop(folder: Path, timeout: float) -> str:
    """SIGTERM to the agent's process group, SIGKILL if it is still there
    after ``timeout`` (0: SIGKILL at once); returns once it is gone."""
    proc = _running(folder)
    if proc is None:
        return "not running"
    if timeout > 0:
        _signal_group(proc, signal.SIGTERM)
        if _gone(proc, timeout):
            return f"stopped (pid {proc.pid})"
    _signal_group(proc, signal.SIGKILL)
    if not _gone(proc, 10):
        raise DroneCtlError(f"pid {proc.pid} survived SIGKILL")
    return f"killed (pid {proc.pid})" + (f" after {timeout:g}s" if timeout > 0 else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, required=True, help="directory of the drones' folders")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds from SIGTERM to SIGKILL")
    parser.add_argument("action", choices=("start", "stop", "restart", "kill", "hard-restart", "status"))
    parser.add_argument("name", help="drone name (its folder under --state)")
    ns = parser.parse_args(argv)
    folder = ns.state / ns.name
    if not folder.is_dir():
        print(f"dronectl: no drone {ns.name!r} under {ns.state}", file=sys.stderr)
        return 2
    try:
        if ns.action == "status":
            proc = _running(folder)
            print(f"{ns.name}: running (pid {proc.pid})" if proc else f"{ns.name}: not running")
            return 0 if proc else NOT_RUNNING
        said = []
        if ns.action in ("stop", "restart"):
            said.append(stop(folder, ns.timeout))
        if ns.action in ("kill", "hard-restart"):
            said.append(stop(folder, 0.0))
        if ns.action in ("start", "restart", "hard-restart"):
            said.append(start(folder))
        print(f"{ns.name}: " + ", ".join(said))
        return 0
    except DroneCtlError as exc:
        print(f"dronectl: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
