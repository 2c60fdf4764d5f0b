"""Layered configuration: defaults < TOML < environment < flags."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from swarm.agent.config import AgentConfig
from swarm.config import ConfigError, add_arguments, resolve
from swarm.controller.config import ControllerConfig


def load(argv: list[str], env: dict[str, str], toml: str | None, tmp_path: Path) -> AgentConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser, AgentConfig)
    path = None
    if toml is not None:
        path = tmp_path / "agent.toml"
        path.write_text(toml)
    return resolve(
        AgentConfig,
        parser.parse_args(argv),
        env_prefix="SWARM_AGENT_",
        default_path=None,
        explicit_path=path,
        environ=env,
    )


def test_defaults(tmp_path: Path) -> None:
    config = load([], {}, None, tmp_path)
    assert config.controller == "127.0.0.1:8094"
    assert config.heartbeat_interval == 1.0
    assert config.backoff_max == 30.0
    assert config.log_file == Path("/var/log/swarm-drone.log")
    assert config.drone_type == "auto"  # detected at start (tests/test_dronetype.py)


def test_each_layer_overrides_the_one_before(tmp_path: Path) -> None:
    toml = 'controller = "toml:1"\nname = "from-toml"\nnetwork = "tailscale"\nheartbeat-interval = 2.5\n'
    env = {"SWARM_AGENT_CONTROLLER": "env:2", "SWARM_AGENT_NAME": "from-env"}
    config = load(["--name", "from-flag"], env, toml, tmp_path)
    assert config.name == "from-flag"
    assert config.controller == "env:2"
    assert config.network == "tailscale"
    assert config.heartbeat_interval == 2.5


@pytest.mark.parametrize(
    ("argv", "env", "toml", "needle"),
    [
        ([], {}, "bogus = 1\n", "unknown option 'bogus'"),
        ([], {}, "name = [1, 2]\n", "expected str"),
        ([], {}, "this is not toml", "not valid TOML"),
        ([], {"SWARM_AGENT_HEARTBEAT_INTERVAL": "often"}, None, "expected float"),
        (["--drone-type", "vm"], {}, None, "drone_type must be one of"),
        (["--controller", "nohost"], {}, None, "HOST:PORT"),
        (["--heartbeat-interval", "0"], {}, None, "heartbeat_interval"),
        (["--name", "bad name"], {}, None, "name 'bad name'"),
    ],
)
def test_bad_values_are_config_errors(
    tmp_path: Path, argv: list[str], env: dict[str, str], toml: str | None, needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load(argv, env, toml, tmp_path)


def test_controller_config_derives_paths() -> None:
    config = ControllerConfig(data_dir=Path("/srv/swarm"))
    assert config.db_url == "sqlite:////srv/swarm/swarm.db"
    assert config.admin_key_path == Path("/srv/swarm/admin.key")
    with pytest.raises(ValueError, match="db must be"):
        ControllerConfig(db="mysql://x")


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"mirror_parallel": 0}, "mirror_parallel must be between 1 and 64"),
        ({"mirror_parallel": 65}, "mirror_parallel must be between 1 and 64"),
        ({"mirror_check_interval": 1.0}, "mirror_check_interval must be between 5 and 86400"),
    ],
)
def test_mirror_options_out_of_range_are_refused(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        ControllerConfig(**options)


@pytest.mark.parametrize(
    ("module", "flag", "value", "needle"),
    [
        ("swarm.agent.main", "--heartbeat-interval", "abc", "expected float"),
        ("swarm.controller.main", "--ping-interval", "abc", "expected float"),
        (
            "swarm.controller.main",
            "--event-loop",
            "tokio",
            "event_loop must be uvloop or asyncio, got 'tokio'",
        ),
    ],
)
def test_cli_bad_flag_exits_2_with_one_line(module: str, flag: str, value: str, needle: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, flag, value], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


@pytest.mark.parametrize("module", ["swarm.agent.main", "swarm.controller.main"])
def test_cli_help_documents_every_option(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    cls = AgentConfig if "agent" in module else ControllerConfig
    for name in cls.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in result.stdout
    # A path worked out at start is no "." (its help names the real default).
    assert "(default: .)" not in " ".join(result.stdout.split())


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "swarm.agent.main", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "cannot read config file" in result.stderr
