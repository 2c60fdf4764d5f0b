"""``swarm-agent check`` (what the OpenRC service runs before it starts the
agent) and the agent's pid file, against drones enrolled with a real
controller."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm.agent import credentials, preflight
from swarm.agent.config import AgentConfig

from support.procs import Agent, Controller, enroll, wait_for


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Controller, Path]]:
    """A controller and two enrolled drones' state dirs, ``root/one`` and ``root/two``."""
    root = tmp_path_factory.mktemp("check")
    controller = Controller(root, "--ping-interval", "0.5")
    controller.start()
    try:
        for name in ("one", "two"):
            result = enroll(controller, name, root / name)
            assert result.returncode == 0, result.stderr
        yield controller, root
    finally:
        controller.kill()


def check(state_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarm.agent.main", "check", "--state-dir", str(state_dir), *flags],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_an_enrolled_drone_is_ready(fleet: tuple[Controller, Path]) -> None:
    controller, root = fleet
    result = check(root / "one", "--name", "one", "--controller", controller.grpc_target)
    drone_id = (root / "one" / "drone-id").read_text().strip()
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith(f"swarm-agent: ready: drone one ({drone_id}), certificate valid until ")
    assert result.stdout.endswith(f", controller {controller.grpc_target}\n")


def test_a_drone_that_never_enrolled_is_told_how(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    result = check(state_dir)
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"swarm-agent: this drone is not enrolled (no certificate in {state_dir})")
    assert "swarm-agent enroll --controller HOST:8094 --token TOKEN --ca-pin sha256:" in line
    assert not state_dir.exists()  # a check writes nothing, not even a drone id


def test_someone_elses_certificate_or_key_is_refused(fleet: tuple[Controller, Path], tmp_path: Path) -> None:
    _, root = fleet
    other_id = (root / "two" / "drone-id").read_text()
    copied = shutil.copytree(root / "one", tmp_path / "id")
    (copied / "drone-id").write_text(other_id)
    result = check(copied)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert f"is for drone {(root / 'one' / 'drone-id').read_text().strip()}, not this drone" in line

    copied = shutil.copytree(root / "one", tmp_path / "key")
    shutil.copy(root / "two" / credentials.KEY_FILE, copied / credentials.KEY_FILE)
    result = check(copied)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert f"the key in {copied} does not belong to its certificate" in line


def test_an_expired_certificate_is_refused(fleet: tuple[Controller, Path]) -> None:
    _, root = fleet
    config = AgentConfig(state_dir=root / "one")
    creds = credentials.load(root / "one")
    assert creds is not None
    assert preflight.check(config, now=creds.not_after - 60).startswith("ready: ")
    with pytest.raises(preflight.NotReady, match=r"expired on \d{4}-\d\d-\d\d .*: run `swarm-agent enroll"):
        preflight.check(config, now=creds.not_after + 1)


def test_a_bad_option_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = check(tmp_path, "--heartbeat-interval", "0")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "swarm-agent check: heartbeat_interval must be between 0.05 and 60 seconds"
    ]


def test_the_pid_file_lives_as_long_as_the_agent(fleet: tuple[Controller, Path]) -> None:
    controller, root = fleet
    agent = Agent(root, "one", controller.grpc_target, state_dir=root / "one")
    pid_file = root / "one" / "agent.pid"
    agent.start()
    try:
        node = wait_for(
            lambda: (n := controller.node("one")) and n["status"] == "online" and n, what="one online"
        )
        assert pid_file.read_text() == f"{agent.pid}\n"
        status, body = controller.admin("POST", "/admin/api/drones/one/restart")
        assert status == 200 and body["done"], body
        wait_for(
            lambda: (n := controller.node("one")) and n["instance_id"] != node["instance_id"],
            what="the restarted agent back",
        )
        # The same process (exec), the same pid file.
        assert agent.alive() and pid_file.read_text() == f"{agent.pid}\n"
        assert agent.terminate() == 0
        assert not pid_file.exists()
    finally:
        agent.kill()
