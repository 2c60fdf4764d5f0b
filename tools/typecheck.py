"""Run mypy --strict on the installed layout (swarm.agent, swarm.controller, ...).

The source tree maps directories onto ``swarm.*`` through setuptools'
package-dir, which mypy cannot follow; so this lays out a tree of
symlinks in .typecheck/ that mirrors the installed package and checks it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".typecheck"


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
    # The tests' fakes, checked against the interfaces they stand for.
    (TREE / "fakes").symlink_to(ROOT / "tests" / "fakes")
    return pkg


def main() -> int:
    build_tree()
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "-p",
        "swarm.agent",
        "-p",
        "swarm.controller",
        "-p",
        "swarm.cli",
        "-p",
        "fakes",
    ]
    modules = sorted(p.stem for p in (ROOT / "common").glob("*.py") if p.stem != "__init__")
    for name in modules:
        cmd += ["-m", f"swarm.{name}"]
    return subprocess.call(cmd, cwd=TREE, env={"MYPYPATH": str(TREE), "PATH": "/usr/bin:/bin"})


if __name__ == "__main__":
    raise SystemExit(main())
