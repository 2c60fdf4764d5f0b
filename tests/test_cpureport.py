"""``--cpu-report`` (support/cpureport.py) on a pytest run of its own: a
module's CPU counts what the processes its tests waited for used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent
BURN = 0.3  # CPU-seconds the child uses


def test_a_module_is_charged_the_cpu_of_the_processes_its_test_waited_for(tmp_path: Path) -> None:
    (tmp_path / "test_busy.py").write_text(
        textwrap.dedent(
            f"""
            import subprocess, sys

            BURN = "import time\\nend = time.process_time() + {BURN}\\nwhile time.process_time() < end: pass"

            def test_a_child_burns_cpu():
                subprocess.run([sys.executable, "-c", BURN], check=True)
            """
        )
    )
    figures = tmp_path / "cpu.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *("-q", "-p", "no:cacheprovider", "--disable-plugin-autoload", "-p", "support.cpureport"),
            *("--cpu-report", "--cpu-report-json", str(figures), "test_busy.py"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout.split("CPU by module (--cpu-report)", 1)[1]
    assert next(line for line in table.splitlines() if line.startswith("test_busy ")), table
    busy = json.loads(figures.read_text())["test_busy"]
    assert BURN * 0.9 <= busy["cpu"]["ended"] < BURN + 2, busy
    assert busy["cpu"]["pytest"] > 0, busy
