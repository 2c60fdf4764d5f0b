"""A fleet for tests: one real controller process and real agents on 127.0.0.1,
optionally with builds on (the controller's own Gentoo prefix, and drones
running real emerge in prefixes of their own).

``start_fleet`` is the one way a test module starts a fleet; the handle it
returns adds agents later, answers the questions most tests ask (a drone
online, a session complete) and stops everything it started.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prefix as pfx

from swarm.agent.logs import build_log_name

from support.procs import EMERGE, Agent, Controller, enroll_here, wait_for

BUILD_TIMEOUT = 180.0
SESSION_TIMEOUT = 300.0
BUILD_COMMAND = f"{sys.executable} {EMERGE} --oneshot --buildpkg --usepkg --getbinpkg --quiet-build=n"
ONLINE_TIMEOUT = 60.0


@dataclass
class Fleet:
    """A running controller and the agents started for it (by name)."""

    root: Path
    controller: Controller
    controller_prefix: pfx.Prefix | None = None
    agents: dict[str, Agent] = field(default_factory=dict)
    # Process groups a killed agent left behind (a build's emerge): killed by stop().
    orphans: list[int] = field(default_factory=list)

    @property
    def staging_pkgdir(self) -> Path:
        """The controller prefix's PKGDIR: the staging binhost of a fleet with builds."""
        assert self.controller_prefix is not None, "a fleet without builds has no staging binhost"
        return self.controller_prefix.pkgdir

    # -- drones ------------------------------------------------------------------------

    def add_agent(
        self,
        name: str,
        *extra: str,
        portage: bool | None = None,
        command: str = BUILD_COMMAND,
        package_env: Mapping[str, Mapping[str, str]] | None = None,
        clean_build_dir: bool = True,
        env: Mapping[str, str] | None = None,
        online: bool = False,
        **agent_kwargs: Any,
    ) -> Agent:
        """Enroll and start an agent (extra: its flags, after the fleet's own).

        portage: a drone prefix of its own that builds from the staging
        binhost (default: when the controller has builds on). clean_build_dir:
        the agent's --cache-path is Portage's build directory in that prefix,
        so the agent deletes there what a build given up on left. env: the
        agent's environment on top of the test's.
        online: wait until the controller reports it online (else wait_online,
        once for all of them, after starting several)."""
        if portage is None:
            portage = self.controller_prefix is not None
        args: list[str] = []
        if portage:
            drone_prefix = pfx.create_prefix(
                pfx.PrefixConfig(
                    self.root / f"{name}-prefix",
                    pfx.Role.DRONE,
                    binhost=self.controller.info["staging_url"],
                    package_env=package_env or {},
                )
            )
            args += ["--portage-eprefix", str(drone_prefix.root), "--pkgdir", str(drone_prefix.pkgdir)]
            if clean_build_dir:
                args += ["--cache-path", str(drone_prefix.tmpdir / "portage")]
            args += ["--emerge-command", command, "--min-free-disk-mb", "1"]
        agent = Agent(self.root, name, self.controller.grpc_target, *args, *extra, **agent_kwargs)
        agent.env = dict(env) if env is not None else None
        if not (agent.state_dir / "drone.crt").exists():
            # In this process, without a Python started for `swarm-agent enroll`
            # (tests/test_trust.py and test_cli.py run the command itself).
            enroll_here(self.controller, name, agent.state_dir)
        agent.start()
        self.agents[name] = agent
        if online:
            self.wait_online(name)
        return agent

    def wait_online(self, *names: str, timeout: float = ONLINE_TIMEOUT) -> None:
        """Wait until each named drone (default: every agent) is online."""
        for name in names or tuple(self.agents):
            wait_for(functools.partial(self.online, name), timeout=timeout, what=f"{name} online")

    @contextlib.contextmanager
    def dispatching_only_to(self, name: str) -> Iterator[None]:
        """Every other agent drained meanwhile: a job queued now starts on ``name``."""
        others = [other for other in self.agents if other != name]
        for other in others:
            self._drone_action(other, "drain")
        try:
            yield
        finally:
            for other in others:
                self._drone_action(other, "undrain")

    def _drone_action(self, name: str, action: str) -> None:
        status, body = self.controller.admin("POST", f"/admin/api/drones/{name}/{action}")
        assert status == 200, body

    def online(self, name: str) -> bool:
        node = self.controller.node(name)
        return node is not None and node["status"] == "online"

    def agent_dirs(self) -> dict[str, Path]:
        """Drone name -> the agent's state dir (its builds/ holds a log per build it ran)."""
        return {name: agent.state_dir for name, agent in self.agents.items()}

    def drone_packages(self, drone: str, cpv: str) -> list[Path]:
        """The binary packages of ``cpv`` in a drone's PKGDIR (built there, or fetched)."""
        category, _, pf = cpv.partition("/")
        pkgdir = self.root / f"{drone}-prefix" / "var" / "cache" / "binpkgs" / category
        return sorted(pkgdir.rglob(f"{pf}*.gpkg.tar"))

    def stage_packages(self, *cpvs: str) -> None:
        """Binary packages of ``cpvs`` built straight into the staging binhost:
        real emerge --buildpkgonly in the controller's prefix (its PKGDIR is
        staging; emerge indexes them there), about a second a package, for a
        test that needs staging's contents (a release), not a session's
        builds. They have no upload record, so the staging binhost does not
        count them as staged until the controller restarts: leave them out of
        the sessions of a test."""
        assert self.controller_prefix is not None, "a fleet without builds has no staging binhost"
        atoms = [f"={cpv}" for cpv in cpvs]
        result = pfx.run_emerge(self.controller_prefix, "--oneshot", "--buildpkgonly", *atoms, timeout=120)
        assert result.ok, result.output[-3000:]

    # -- builds ------------------------------------------------------------------------

    def build_log(self, job: Mapping[str, Any]) -> str:
        """The build log its drone keeps of the job's current attempt ("" until there is one)."""
        path = self.agents[job["drone"]].state_dir / "builds" / build_log_name(job["id"], job["build_id"])
        return path.read_text(errors="replace") if path.exists() else ""

    def queue(self, *atoms: str) -> dict[str, Any]:
        status, body = self.controller.admin(
            "POST", "/admin/api/queue", json.dumps({"atoms": list(atoms)}).encode()
        )
        assert status == 201 and isinstance(body, dict), body
        return body

    def session(self) -> dict[str, Any]:
        """The newest session."""
        newest: dict[str, Any] = self.controller.get("/api/v1/sessions")["sessions"][0]
        return newest

    def session_by_id(self, session_id: str) -> dict[str, Any] | None:
        sessions = self.controller.get("/api/v1/sessions")["sessions"]
        return next((s for s in sessions if s["id"] == session_id), None)

    def jobs(self) -> dict[str, dict[str, Any]]:
        return {j["cpv"]: j for j in self.controller.get("/api/v1/queue?limit=5000")["jobs"]}

    def wait_building(self, cpv: str, *, timeout: float = BUILD_TIMEOUT) -> dict[str, Any]:
        """Wait until the job of ``cpv`` is building on some drone; the job."""
        job: dict[str, Any] = wait_for(
            lambda: (j := self.jobs().get(cpv)) and j["state"] == "building" and j,
            timeout=timeout,
            interval=0.05,
            what=f"{cpv} building",
        )
        return job

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

    def wait_complete(self, session_id: str, *, timeout: float = SESSION_TIMEOUT) -> dict[str, Any]:
        """Wait until the session is complete; the session."""
        session: dict[str, Any] = wait_for(
            lambda: (s := self.session_by_id(session_id)) and s["state"] == "complete" and s,
            timeout=timeout,
            interval=0.25,
            what=f"session {session_id} complete",
        )
        return session

    def events(self, kind: str, job_id: str | None = None) -> list[dict[str, Any]]:
        """Events of one type (of one job if given), oldest first."""
        found = sorted(self.controller.events(type=kind), key=lambda e: e["id"])
        return [e for e in found if job_id is None or e["data"].get("job_id") == job_id]

    # -- the end -----------------------------------------------------------------------

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Kill the controller, every agent, and what killed agents left behind.
        The controller first: a healer that saw a drone go dark would start it
        again (--restart-command) behind the teardown's back."""
        self.controller.kill()
        for agent in self.agents.values():
            agent.kill()
        for pgid in self.orphans:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


def start_fleet(
    root: Path,
    drones: Iterable[str] = (),
    *controller_args: str,
    portage: bool = False,
    agent_args: Iterable[str] = (),
    **agent_kwargs: Any,
) -> Fleet:
    """A started controller (controller_args: its flags) and the named drones, all online.

    portage: builds on; the controller gets a Gentoo prefix (and a short
    --build-grace, which controller_args may override), each drone a prefix
    of its own (Fleet.add_agent). agent_args and agent_kwargs go to every
    drone's add_agent. On any failure what was started is stopped."""
    ctl_prefix = None
    args: list[str] = []
    if portage:
        ctl_prefix = pfx.create_prefix(pfx.PrefixConfig(root / "ctl-prefix", pfx.Role.CONTROLLER))
        args = ["--portage-eprefix", str(ctl_prefix.root), "--build-grace", "5"]
    fleet = Fleet(root, Controller(root, *args, *controller_args), ctl_prefix)
    try:
        fleet.controller.start()
        names = list(drones)
        for name in names:
            fleet.add_agent(name, *agent_args, **agent_kwargs)
        fleet.wait_online(*names)
    except BaseException:
        fleet.stop()
        raise
    return fleet


def admin(swarm: Fleet, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The admin API's answer to a call that must succeed (any 2xx)."""
    status, answer = swarm.controller.admin(method, path, None if body is None else json.dumps(body).encode())
    assert 200 <= status < 300, (method, path, status, answer)
    return answer


def builders(count: int) -> list[str]:
    """Names of ``count`` build drones: builder-0, builder-1, ..."""
    return [f"builder-{i}" for i in range(count)]


def upload_refused_line(agent: Agent, build_id: str) -> str | None:
    """The agent's log line saying the upload of the build was refused as UNAVAILABLE."""
    needle = f"build {build_id}: upload of "
    return next(
        (line for line in agent.log().splitlines() if needle in line and "interrupted (UNAVAILABLE" in line),
        None,
    )
