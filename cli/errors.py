"""What swarm-cli tells the shell when it fails: one line and an exit code.

Exit codes: 0 done, 1 the controller refused or failed, 2 bad usage (or a
missing key or dependency), 3 the controller could not be reached.
``swarm-cli shell`` and ``exec`` exit with the remote command's own code
once it ran.
"""

from __future__ import annotations

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code
