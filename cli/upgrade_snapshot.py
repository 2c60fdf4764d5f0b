"""A btrfs snapshot before swarm-upgrade changes a system, where snapper is installed.

Only for a whole system (EROOT is /): snapper's ``root`` configuration is
the root filesystem, not a prefix. Without snapper this is a no-op that
says so; a failing snapper stops the change (the snapshot was asked for).
"""

from __future__ import annotations

import logging
import shutil
import subprocess

from swarm.cli.upgrade_errors import UpgradeError

log = logging.getLogger(__name__)

SNAPPER_TIMEOUT = 300.0


def snapper_command(snapper: str, description: str) -> list[str]:
    """A single pre-change snapshot of the root config, cleaned up by snapper's number rule.

    --no-dbus: snapper works on the filesystem itself, without snapperd
    (none on an OpenRC machine unless D-Bus starts it).
    """
    return [
        snapper,
        "--no-dbus",
        "--config",
        "root",
        "create",
        "--type",
        "single",
        "--cleanup-algorithm",
        "number",
        "--print-number",
        "--description",
        description,
    ]


def take_snapshot(description: str, *, whole_system: bool) -> str | None:
    """The snapshot's number, or None when there is nothing to snapshot with."""
    if not whole_system:
        print("==> no snapshot: this is a prefix, not a whole system")
        return None
    snapper = shutil.which("snapper")
    if snapper is None:
        print("==> no snapshot: snapper is not installed")
        return None
    argv = snapper_command(snapper, description)
    print(f"==> btrfs snapshot first: {' '.join(argv)}", flush=True)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SNAPPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UpgradeError(f"snapper failed, nothing was changed: {exc}") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise UpgradeError(f"snapper failed, nothing was changed: {why}")
    number = done.stdout.strip()
    print(f"==> snapshot {number} taken (snapper rollback {number} undoes what follows)")
    return number
