"""What a program imports to start, and the bytecode the test run writes.

Start-up cost is measured by bench/startup.py, not here; these tests keep
the cuts it found from coming back unnoticed: a module imported at the top
again where only one path needs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.util import cache_from_source
from pathlib import Path

import pytest

from support.bytecode import compile_sources


def loaded(imports: str, *names: str) -> set[str]:
    """Which of ``names`` a fresh interpreter has in sys.modules after ``imports``."""
    code = f"import sys; {imports}; print(' '.join(n for n in {names!r} if n in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_a_plain_cli_call_imports_no_asyncio_nor_the_terminal() -> None:
    # The live commands and shell import them when they run (swarm.cli.streams, logs, main.shell).
    assert loaded("import swarm.cli.main", "asyncio", "swarm.cli.live", "swarm.cli.terminal") == set()


def test_enroll_and_check_import_none_of_the_agents_daemon() -> None:
    daemon = ("swarm.agent.builder", "swarm.agent.link", "swarm.agent.shell", "swarm.agent.checks", "psutil")
    assert loaded("import swarm.agent.main", *daemon) == set()
    # ...which run() does import: the names above are the daemon's.
    assert loaded("import swarm.agent.main, swarm.agent.link", *daemon) == set(daemon)


def test_the_controller_starts_without_psutil() -> None:
    assert loaded("import swarm.controller.app", "psutil", "aiohttp") == {"aiohttp"}


def test_compile_sources_writes_bytecode_even_where_python_would_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # as PYTHONDONTWRITEBYTECODE sets it
    (tmp_path / "common").mkdir()
    good = tmp_path / "common" / "good.py"
    good.write_text("VALUE = 1\n")
    (tmp_path / "common" / "broken.py").write_text("def (:\n")
    assert compile_sources(tmp_path) is False  # broken.py does not compile; good.py still does
    cached = Path(cache_from_source(str(good)))
    first = cached.read_bytes()
    # A changed source (its mtime and size in the .pyc's header no longer match) is compiled again.
    good.write_text("VALUE = 22\n")
    later = cached.stat().st_mtime + 10
    os.utime(good, (later, later))
    compile_sources(tmp_path)
    assert cached.read_bytes() != first
