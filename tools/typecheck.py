"""Run mypy --strict on the installed layout (swarm.agent, swarm.controller, ...).

The source tree maps directories onto ``swarm.*`` through setuptools'
package-dir, which mypy cannot follow; so this lays out a tree of
symlinks in .typecheck/ that mirrors the installed package and checks it,
and with it everything under tests/ as pytest imports it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".typecheck"
TESTS = ROOT / "tests"


def build_tree() -> Path:
    if TREE.exists():
        shutil.rmtree(TREE)
    pkg = TREE / "swarm"
    pkg.mkdir(parents=True)
    for path in (ROOT / "common").glob("*.py"):
        (pkg / path.name).symlink_to(path)
    (pkg / "py.typed").touch()
    (pkg / "agent").symlink_to(ROOT / "agent")
    (pkg / "controller").symlink_to(ROOT / "controller")
    (pkg / "cli").symlink_to(ROOT / "cli")
    (pkg / "v1").symlink_to(ROOT / "protos" / "swarm" / "v1")
    return pkg


def main() -> int:
    build_tree()
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        # Outside the tree, which is rebuilt each run: a second run rechecks only what changed.
        "--cache-dir",
        str(ROOT / ".mypy_cache"),
        "-p",
        "swarm.agent",
        "-p",
        "swarm.controller",
        "-p",
        "swarm.cli",
        # The tests' helpers, and the fakes checked against the interfaces they stand for.
        "-p",
        "support",
        "-p",
        "fakes",
    ]
    modules = sorted(p.stem for p in (ROOT / "common").glob("*.py") if p.stem != "__init__")
    for name in modules:
        cmd += ["-m", f"swarm.{name}"]
    # The test modules and conftest.py, as pytest imports them: top-level
    # modules with tests/ and tools/ (prefix.py, ...) on the path.
    for path in sorted(TESTS.glob("*.py")):
        cmd += ["-m", path.stem]
    mypypath = os.pathsep.join(str(p) for p in (TREE, TESTS, ROOT / "tools"))
    return subprocess.call(cmd, cwd=TREE, env={"MYPYPATH": mypypath, "PATH": "/usr/bin:/bin"})


if __name__ == "__main__":
    raise SystemExit(main())
