"""What swarm-upgrade tells the shell when it fails: one line and an exit code.

The codes are swarm-cli's (swarm.cli.errors): 0 done; 1 failed (emerge
failed or Portage refused a package, drift remains, a file is malformed);
2 bad usage; 3 the controller could not be reached, or what it served is
not trusted (no ``trust`` yet, a manifest whose signature does not verify
against the trusted release key).
"""

from __future__ import annotations

from swarm.cli.errors import EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE

EXIT_FAILED = EXIT_REFUSED
EXIT_UNTRUSTED = EXIT_UNREACHABLE

__all__ = ["EXIT_FAILED", "EXIT_UNREACHABLE", "EXIT_UNTRUSTED", "EXIT_USAGE", "UpgradeError"]


class UpgradeError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code
