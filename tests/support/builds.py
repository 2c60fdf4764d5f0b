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
BUILD_TIMEOUT = 180.0
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

    def session_by_id(self, session_id: str) -> dict[str, Any] | None:
        sessions = self.controller.get("/api/v1/sessions")["sessions"]
        return next((s for s in sessions if s["id"] == session_id), None)

    def wait_under_way(
        self, session_id: str, *, done: int = 1, timeout: float = BUILD_TIMEOUT
    ) -> dict[str, int]:
        """Wait until ``done`` jobs of the session are done and one is building; its counts."""
        counts: dict[str, int] = wait_for(
            lambda: (
                (s := self.session_by_id(session_id))
                and s["jobs"]["done"] >= done
                and s["jobs"]["building"] >= 1
                and s["jobs"]
            ),
            timeout=timeout,
            interval=0.05,
            what=f"session {session_id} under way ({done} done, one building)",
        )
        return counts

    def wait_complete(self, session_id: str, *, timeout: float = BUILD_TIMEOUT) -> None:
        wait_for(
            lambda: (s := self.session_by_id(session_id)) and s["state"] == "complete",
            timeout=timeout,
            interval=0.25,
            what=f"session {session_id} complete",
        )

    def drone_packages(self, drone: str, cpv: str) -> list[Path]:
        """The binary packages of ``cpv`` in a drone's PKGDIR (built there, or fetched)."""
        category, _, pf = cpv.partition("/")
        pkgdir = self.root / f"{drone}-prefix" / "var" / "cache" / "binpkgs" / category
        return sorted(pkgdir.rglob(f"{pf}*.gpkg.tar"))

    def agent_dirs(self) -> dict[str, Path]:
        """Drone name -> the agent's state dir (its builds/ holds a log per build it ran)."""
        return {a.name: a.state_dir for a in self.agents}


def upload_refused_line(agent: Agent, build_id: str) -> str | None:
    """The agent's log line saying the upload of the build was refused as UNAVAILABLE."""
    needle = f"build {build_id}: upload of "
    return next(
        (line for line in agent.log().splitlines() if needle in line and "interrupted (UNAVAILABLE" in line),
        None,
    )


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
