"""swarm-cli against a real controller and agent: what an admin types,
what they read, and the exit codes scripts rely on. One controller and one
drone for the module: no test changes what another reads. The installed
console script runs end to end in the first test; the others run its code
in this process (support/cli.run_here), against the same real controller."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.cli import CLI_ENV, run_here
from support.procs import Agent, Controller, enroll, wait_for

# The installed console script, as an admin runs it (the venv's bin/).
SWARM_CLI = Path(sys.executable).with_name("swarm-cli")


def cli(controller: Controller, *args: str) -> subprocess.CompletedProcess[str]:
    """swarm-cli's code in this process (support/cli.run_here)."""
    return run_here(controller.admin_url, controller.info["admin_key_file"], *args)


def installed_cli(url: str, key_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``swarm-cli`` console script, a process of its own."""
    return subprocess.run(
        [str(SWARM_CLI), "--url", url, "--key-file", str(key_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=CLI_ENV,
    )


def cli_json(controller: Controller, *args: str) -> Any:
    result = cli(controller, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """One controller for the module (overrides conftest's, one a test)."""
    proc = Controller(tmp_path_factory.mktemp("cli"), "--ping-interval", "0.5")
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def drone(controller: Controller) -> Iterator[str]:
    agent = Agent(controller.root, "cli-drone", controller.grpc_target, drone_type="bare-metal")
    result = enroll(controller, "cli-drone", agent.state_dir)
    assert result.returncode == 0, result.stderr
    agent.start()
    try:
        wait_for(
            lambda: (n := controller.node("cli-drone")) and n["status"] == "online", what="the drone online"
        )
        yield "cli-drone"
    finally:
        agent.kill()


def test_the_installed_command_works_and_its_exit_codes_say_what_went_wrong(
    controller: Controller, tmp_path: Path
) -> None:
    """The console script end to end (the rest of the module runs its code in this process)."""
    key = Path(controller.info["admin_key_file"])
    status = installed_cli(controller.admin_url, key, "--json", "status")
    assert status.returncode == 0 and "drones" in json.loads(status.stdout), status.stderr
    missing = installed_cli(controller.admin_url, tmp_path / "no-such-key", "status")
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1
    assert "cannot read the admin key file" in missing.stderr
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not-the-admin-key-at-all\n")
    refused = installed_cli(controller.admin_url, wrong, "status")
    assert refused.returncode == 1 and "401" in refused.stderr
    gone = installed_cli("http://127.0.0.1:9", wrong, "status")
    assert gone.returncode == 3 and "cannot reach the controller" in gone.stderr
    assert installed_cli(controller.admin_url, key, "frobnicate").returncode == 2


def test_tokens_round_trip(controller: Controller) -> None:
    made = cli_json(controller, "token", "create", "--ttl", "10m", "--name", "newbie")
    listed = cli_json(controller, "token", "list")["tokens"]
    # The module's other tokens (the drone's enrollment) are spent: only this one is active.
    assert [(t["id"], t["state"], t["name"]) for t in listed if t["state"] == "active"] == [
        (made["id"], "active", "newbie")
    ]
    revoked = cli(controller, "token", "revoke", made["id"])
    assert revoked.returncode == 0 and made["id"] in revoked.stdout
    states = {t["id"]: t["state"] for t in cli_json(controller, "token", "list")["tokens"]}
    assert states[made["id"]] == "revoked"


def test_status_ping_and_exec_on_a_drone(controller: Controller, drone: str) -> None:
    status = cli(controller, "status")
    assert status.returncode == 0 and "drones     1: 1 online" in status.stdout, status.stdout
    listed = cli(controller, "drones")
    assert listed.returncode == 0 and drone in listed.stdout and "bare-metal" in listed.stdout

    def all_checks() -> bool:
        pong = cli_json(controller, "ping", drone)
        return len(pong["checks"]) == 4  # each appears once it has run

    wait_for(all_checks, what="a pong with every check")
    pinged = cli(controller, "ping", drone)
    assert pinged.returncode == 0 and f"{drone}: seq" in pinged.stdout
    assert pinged.stdout.count("ok   ") == 4, pinged.stdout

    ran = cli(controller, "exec", drone, "--", "echo", "out;", "echo", "err", ">&2;", "exit", "3")
    assert (ran.returncode, ran.stdout, ran.stderr) == (3, "out\n", "err\n")
    assert cli(controller, "exec", drone, "--", "true").returncode == 0
    audit = cli_json(controller, "events", "--type", "drone_exec", "--drone", drone)["events"]
    assert [e["data"]["command"] for e in audit][-2:] == ["echo out; echo err >&2; exit 3", "true"]


def test_healing_commands(controller: Controller, drone: str) -> None:
    paused = cli(controller, "healing", "pause", "--drone", drone)
    assert paused.returncode == 0 and f"paused for drones: {drone}" in paused.stdout
    health = cli(controller, "health", drone)
    assert health.returncode == 0 and f"{drone}: online (bare-metal)" in health.stdout
    refused = cli(controller, "reboot", drone)
    assert refused.returncode == 1 and "409" in refused.stderr and "bare-metal" in refused.stderr
    assert cli(controller, "healing", "resume", "--drone", drone).returncode == 0
    assert cli_json(controller, "status")["healing"] == {"paused": False, "fleet_dark": False}
