"""The checkout's bytecode, written once before a test run.

The suite starts several hundred Python processes from this checkout
(controllers, agents, ``swarm-agent enroll``, swarm-cli). Where
PYTHONDONTWRITEBYTECODE is set (some sandboxes and CI images set it), no
process writes the ``.pyc`` of a module it compiles, so every one of them
compiled every swarm module it imported again: about 0.2 s of CPU per
controller start, 0.05 s per agent (``bench/startup.py`` shows it).
``compileall`` writes them even then, and every process reads them.
Installed packages are not concerned: pip compiled them when it installed them.
"""

from __future__ import annotations

import compileall
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# The installed packages' source trees (pyproject's package-dir), the tools
# the tests import, and the tests' helpers.
SOURCES = ("common", "agent", "controller", "cli", "protos", "tools", "tests/support", "tests/fakes")


def compile_sources(root: Path = ROOT) -> bool:
    """Write what is missing or stale; True if every file compiled (a file
    that does not compile fails its tests on import anyway, with the error)."""
    ok = True
    for name in SOURCES:
        if (root / name).is_dir():
            ok = bool(compileall.compile_dir(root / name, quiet=2)) and ok
    return ok
