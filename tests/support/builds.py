"""A small build swarm for tests: a controller with builds on (its own
Gentoo prefix) and drones running real emerge in prefixes of their own."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prefix as pfx

from support.procs import Agent, Controller, enroll, wait_for

EMERGE = Path(sys.executable).parent / "emerge"
BUILD_COMMAND = f"{sys.executable} {EMERGE} --oneshot --buildpkg --usepkg --getbinpkg --quiet-build=n"


@dataclass
class Swarm:
    root: Path
    controller: Controller
    agents: list[Agent]

    def queue(self, *atoms: str) -> dict[str, Any]:
        status, body = self.controller.admin(
            "POST", "/admin/api/queue", json.dumps({"atoms": list(atoms)}).encode()
        )
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    def session(self) -> dict[str, Any]:
        sessions = self.controller.get("/api/v1/sessions")["sessions"]
        return sessions[0]  # type: ignore[no-any-return]

    def jobs(self) -> dict[str, dict[str, Any]]:
        return {j["cpv"]: j for j in self.controller.get("/api/v1/queue?limit=5000")["jobs"]}


def start_swarm(
    root: Path, drones: int, *extra: str, package_env: dict[str, dict[str, str]] | None = None
) -> Swarm:
    """A controller (extra: its flags) and drones; package_env: per-package
    environment in every drone's prefix (e.g. SWARM_TEST_SLEEP for the sleeper)."""
    ctl_prefix = pfx.create_prefix(pfx.PrefixConfig(root / "ctl-prefix", pfx.Role.CONTROLLER))
    controller = Controller(root, "--portage-eprefix", str(ctl_prefix.root), "--build-grace", "5", *extra)
    controller.start()
    staging = controller.info["staging_url"]
    agents = []
    for i in range(drones):
        name = f"builder-{i}"
        drone_prefix = pfx.create_prefix(
            pfx.PrefixConfig(
                root / f"{name}-prefix", pfx.Role.DRONE, binhost=staging, package_env=package_env or {}
            )
        )
        agent = Agent(
            root,
            name,
            controller.grpc_target,
            "--portage-eprefix",
            str(drone_prefix.root),
            "--pkgdir",
            str(drone_prefix.pkgdir),
            # Portage's build directory in the prefix: the agent deletes there what a
            # build given up on left.
            "--cache-path",
            str(drone_prefix.tmpdir / "portage"),
            "--emerge-command",
            BUILD_COMMAND,
            "--min-free-disk-mb",
            "1",
        )
        assert enroll(controller, name, agent.state_dir).returncode == 0
        agent.start()
        agents.append(agent)
    for agent in agents:
        wait_for(
            lambda a=agent: (n := controller.node(a.name)) and n["status"] == "online", what=f"{agent.name}"
        )
    return Swarm(root, controller, agents)
