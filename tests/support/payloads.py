"""Agent payloads for tests: wheels of this project built from the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(into: Path, version: str, patches: dict[str, tuple[str, str]] | None = None) -> Path:
    """A wheel of the checkout as committed or not (its tracked files), with
    ``version`` as its package version and ``patches`` (path: (old, new))
    applied to a copy; built without the network, in a few seconds."""
    src = into / "src"
    files = (
        subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        if not (ROOT / name).is_file() or name.startswith(("tests/", "bench/", "docs/")):
            continue
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    edits = {
        "pyproject.toml": ('version = "0.1.0"', f'version = "{version}"'),
        "common/__init__.py": ('__version__ = "0.1.0"', f'__version__ = "{version}"'),
        **(patches or {}),
    }
    for name, (old, new) in edits.items():
        text = (src / name).read_text()
        assert old in text, f"{name}: {old!r} not found"
        (src / name).write_text(text.replace(old, new, 1))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(into),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = into.glob("build_swarm-*.whl")
    return wheel
