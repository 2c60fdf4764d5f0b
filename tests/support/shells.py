"""A drone whose admin terminals run a plain bash, for the terminal, CLI
and console tests: a controller, one enrolled agent with a home of its
own (bash's history and the shell's cwd stay in the test's directory), and
the processes its shells run."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import psutil

from support.fleet import start_fleet
from support.procs import Agent, Controller

SHELL = "/bin/bash --noprofile --norc"


@dataclass
class ShellDrone:
    controller: Controller
    agent: Agent
    home: Path

    @property
    def name(self) -> str:
        return self.agent.name

    def processes(self, name: str) -> list[psutil.Process]:
        """The agent's descendants called ``name`` (what runs in its shells)."""
        found = []
        for proc in psutil.Process(self.agent.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if proc.name() == name and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        return found

    def stop(self) -> None:
        self.agent.kill()
        self.controller.kill()


def start_shell_drone(
    root: Path,
    name: str,
    *controller_flags: str,
    heartbeat_interval: float = 1.0,
    drone_type: str = "unknown",
) -> ShellDrone:
    fleet = start_fleet(root, (), "--ping-interval", "0.5", *controller_flags)
    home = root / "home"
    home.mkdir()
    try:
        agent = fleet.add_agent(
            name,
            "--shell",
            SHELL,
            env={"HOME": str(home), "HISTFILE": "/dev/null", "SHELL": "/bin/bash"},
            heartbeat_interval=heartbeat_interval,
            drone_type=drone_type,
            online=True,
        )
    except BaseException:
        fleet.stop()
        raise
    return ShellDrone(fleet.controller, agent, home)
