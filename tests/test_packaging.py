"""What gets installed: import names and the agent's small dependency set."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTROLLER_ONLY = ("aiohttp", "peewee", "psycopg2", "prometheus_client")


def test_agent_runs_without_the_controller_dependencies() -> None:
    # Make the controller's libraries unimportable, as on a drone.
    blocker = "; ".join(f"sys.modules[{name!r}] = None" for name in CONTROLLER_ONLY)
    code = f"import sys; {blocker}; import swarm.agent.main, swarm.agent.link; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; {blocker}; import swarm.agent.main as m; m.main()", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and "swarm-agent" in result.stdout


def test_base_dependencies_are_the_agents_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {dep.split(">")[0].split("=")[0].split("[")[0].strip() for dep in project["dependencies"]}
    assert base == {"grpcio", "protobuf", "psutil", "cryptography"}
    assert {"aiohttp", "peewee"} <= {d.split(">")[0] for d in project["optional-dependencies"]["controller"]}
    assert set(project["scripts"]) >= {"swarm-agent", "swarm-controller", "swarm-cli", "swarm-upgrade"}


def test_everything_installs_under_swarm() -> None:
    import swarm.agent
    import swarm.controller
    import swarm.v1

    for module in (swarm.agent, swarm.controller, swarm.v1):
        assert module.__name__.startswith("swarm.")
    result = subprocess.run([sys.executable, "-c", "import agent"], capture_output=True, timeout=30, cwd="/")
    assert result.returncode != 0, "a bare 'agent' package must not be importable"
