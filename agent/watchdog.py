"""The watchdog of an agent switch: ``python -m swarm.agent.watchdog STATE_DIR``.

The agent starts it just before it execs a newly installed version
(selfupdate.start_trial). It runs the *previous* version's code, with the
standard library only, so a new version that does not even import cannot
take it down. It waits for the trial to end:

- the new version connects (Welcome) and claims the trial as confirmed:
  the watchdog exits;
- the deadline passes, or the agent process dies, first: the watchdog
  claims the trial as failed, points ``current`` back at the previous
  version, leaves a rolled-back record (the restored agent reports
  ROLLED_BACK after its Welcome), stops the new process if it still runs,
  and starts the previous version: itself, or, under a supervisor
  (supervise-daemon), by letting the supervisor start the service again.

No controller is needed for any of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from swarm.agent import selfupdate

log = logging.getLogger("swarm.agent.watchdog")

POLL = 0.2
STOP_GRACE = 8.0  # the agent stops within its own 5 s plus its flush


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our parent died, we never reaped it... or it is not ours) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def stop(pid: int) -> None:
    """SIGTERM, then SIGKILL after STOP_GRACE."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(POLL)


def watch(state_dir: Path) -> str:
    """Wait out the trial; what happened, in one line."""
    trial = selfupdate.read_trial(state_dir)
    if trial is None:
        return "no trial"
    log.info(
        "watching version %d (pid %d) for %.0fs",
        trial.version,
        trial.pid,
        max(0.0, trial.deadline - time.time()),
    )
    while True:
        current = selfupdate.read_trial(state_dir)
        if current is None or current != trial:
            return f"version {trial.version} confirmed"
        if time.time() >= trial.deadline:
            why = f"version {trial.version} did not connect within its window"
            break
        if not alive(trial.pid):
            why = f"version {trial.version} exited before it connected"
            break
        time.sleep(POLL)
    if selfupdate.claim_trial(state_dir, "failed") is None:
        return f"version {trial.version} confirmed"  # at the last moment
    selfupdate.point_current(state_dir, trial.previous)
    selfupdate.write_rolled_back(
        state_dir, selfupdate.RolledBack(trial.version, trial.deploy_id, f"rolled back: {why}")
    )
    log.warning(
        "%s: restoring %s", why, (trial.previous and f"version {trial.previous}") or "the installed agent"
    )
    if alive(trial.pid):
        stop(trial.pid)
    if not trial.supervised:
        # Beside the watchdog, in the agent's process group and with its output.
        subprocess.Popen(list(trial.argv), stdin=subprocess.DEVNULL, close_fds=True)
    return f"rolled back: {why}"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--detach"] and len(args) == 2:
        # Started by the agent, which waits for this first process only: the
        # watchdog proper is then no child of the agent's (never its zombie)
        # and outlives the exec and the agent.
        subprocess.Popen([sys.executable, "-m", "swarm.agent.watchdog", args[1]], stdin=subprocess.DEVNULL)
        return
    if len(args) != 1:
        sys.exit("usage: python -m swarm.agent.watchdog [--detach] STATE_DIR")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s swarm-agent watchdog: %(message)s")
    log.info("%s", watch(Path(args[0])))


if __name__ == "__main__":
    main()
