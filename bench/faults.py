"""Faults of the controller's own parts during real build sessions (issue 14).

Each fault is repeated ``--rounds`` times (default 5). A round is one real
session: a fresh controller (SQLite, or a private PostgreSQL for the
PostgreSQL faults), two real ``swarm-agent`` drones running real emerge in
Gentoo prefixes, and every good package of the test overlay
(tests/fixtures/overlay, 12 jobs) queued at once. When the session is
under way (2 jobs done, one building) the fault is injected; the bench then
waits for the session to complete and reads the database directly.

Printed per fault: jobs lost (queued but never done), duplicate builds
(builds beyond one per attempt that history shows: the drones' build logs,
one per build a drone ran, against the attempts in the database; a requeue
is an attempt, a build no attempt accounts for is a duplicate), good
packages failed (``job_failed_on_drone`` events and failed jobs: every
package here builds), events lost (served to a client following
/api/v1/events during the round, not in the database afterwards) and
seconds to recover without a human: from the dependency being back until
every drone is online again and /api/v1/health answers 200 without
``degraded``. Targets: 0, 0, 0, 0 and under 10 s.

Faults: ``controller-kill9`` (SQLite: kill -9, restarted at once),
``controller-kill9-postgres`` (the same with the database on PostgreSQL),
``postgres-kill9`` (the PostgreSQL server killed, restarted after
``--pg-down`` s; the server runs with fsync and synchronous_commit on, so
that what it acknowledged survives its kill), ``postgres-stop`` (SIGSTOP for ``--freeze`` s),
``agent-kill9-upload`` (a drone killed while its upload waits: the
database's write lock is held so that the upload is retrying when the
kill comes; the agent is then started again, as its supervisor would) and
``disk-full`` (the data dir on a ``--disk-mb`` MiB tmpfs, filled for
``--full-seconds`` s; needs root for the mount).

Run from the repository root::

    .venv/bin/python bench/faults.py --rounds 1
    .venv/bin/python bench/faults.py --faults controller-kill9,agent-kill9-upload --rounds 3 --keep
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    HOST,
    PYTHON,
    ROOT,
    Api,
    BenchError,
    Children,
    Controller,
    flag_supported,
    own_pid_group,
    say,
    wait_api,
)

sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))
import prefix as pfx

from support.postgres import PostgresServer
from support.session_faults import EventFollower, said, session_outcome

FAULTS = (
    "controller-kill9",
    "controller-kill9-postgres",
    "postgres-kill9",
    "postgres-stop",
    "agent-kill9-upload",
    "disk-full",
)
OVERLAY = ROOT / "tests" / "fixtures" / "overlay"
CATEGORY = "swarm-test"
BAD = frozenset({"broken"})  # fails on purpose: not a good package
DRONES = 2
VENV_BIN = Path(PYTHON).parent
EMERGE_FLAGS = ("--oneshot", "--buildpkg", "--usepkg", "--getbinpkg", "--quiet-build=n")
RECOVER_LIMIT = 120.0
TARGET_RECOVER_S = 10.0
DISK_MIN_FREE_MB = 4  # health's "data disk nearly full" on the small tmpfs of disk-full


@dataclass(frozen=True, slots=True)
class Options:
    faults: tuple[str, ...]
    rounds: int
    pg_down: float
    freeze: float
    disk_mb: int
    full_seconds: float
    timeout: float
    keep: bool
    json_path: Path | None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--faults", default=",".join(FAULTS), help=f"comma-separated subset of {', '.join(FAULTS)}"
    )
    p.add_argument("--rounds", type=int, default=5, help="sessions per fault (default 5)")
    p.add_argument("--pg-down", type=float, default=6.0, help="seconds PostgreSQL stays dead (default 6)")
    p.add_argument("--freeze", type=float, default=30.0, help="seconds PostgreSQL stays stopped (default 30)")
    p.add_argument("--disk-mb", type=int, default=20, help="size of the data dir's tmpfs in MiB (default 20)")
    p.add_argument("--full-seconds", type=float, default=30.0, help="seconds the data dir stays full")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a session may take (default 600)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    a = p.parse_args(argv)
    faults = tuple(f for f in a.faults.split(",") if f)
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        p.error(f"unknown fault(s) {', '.join(unknown)}: choose from {', '.join(FAULTS)}")
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    return Options(
        faults, a.rounds, a.pg_down, a.freeze, a.disk_mb, a.full_seconds, a.timeout, a.keep, a.json
    )


def good_packages() -> list[str]:
    return sorted(
        f"{CATEGORY}/{d.name}" for d in (OVERLAY / CATEGORY).iterdir() if d.is_dir() and d.name not in BAD
    )


# -- one round --------------------------------------------------------------


@dataclass
class Drone:
    name: str
    argv: list[str]
    state: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class Round:
    fault: str
    index: int
    work: Path
    children: Children
    opts: Options
    pg: PostgresServer | None = None
    controller: Controller | None = None
    drones: list[Drone] = field(default_factory=list)
    api: Api | None = None
    admin: Api | None = None
    mounted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def home(self) -> Path:
        """The controller's log and ready file: outside its data dir, which may be a small tmpfs."""
        return self.work / "controller"

    @property
    def data(self) -> Path:
        return self.home / "data"

    # -- setting up ---------------------------------------------------------

    def start(self) -> None:
        self.data.mkdir(parents=True)
        if self.fault == "disk-full":
            mount = ["mount", "-t", "tmpfs", "-o", f"size={self.opts.disk_mb}m", "tmpfs", str(self.data)]
            result = subprocess.run(mount, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise BenchError(f"cannot mount a tmpfs for the data dir: {result.stderr.strip()}")
            self.mounted = True
        # The data dir given last wins over the harness's (its log and ready file stay outside).
        extra = ["--data-dir", str(self.data), "--log-level", "info", "--build-grace", "30"]
        if flag_supported(Controller.MODULE, "--heal-grace"):
            # Only the injected fault is measured: a drone slowed by the busy machine
            # (event loop lag) is not restarted by the healer meanwhile.
            extra += ["--heal-grace", "3600"]
        if self.fault == "disk-full" and flag_supported(Controller.MODULE, "--disk-min-free-mb"):
            extra += ["--disk-min-free-mb", str(DISK_MIN_FREE_MB)]
        if "postgres" in self.fault:
            self.pg = PostgresServer(durable=True)  # what it acknowledged survives its kill -9
            self.pg.start()
            self.pg.create_database("swarm")
            extra += ["--db", self.pg.url("swarm")]
        ctl_prefix = pfx.create_prefix(pfx.PrefixConfig(self.work / "ctl-prefix", pfx.Role.CONTROLLER))
        extra += ["--portage-eprefix", str(ctl_prefix.root)]
        self.controller = Controller(self.children, self.home, ping_interval=5.0, extra=extra)
        ports = self.controller.start()
        self.api = wait_api(ports.public)
        self.admin = Api(ports.admin, timeout=60.0, admin_key=self.controller.admin_key)
        staging = str(self.controller.info["staging_url"])
        emerge = shlex.join([PYTHON, str(VENV_BIN / "emerge"), *EMERGE_FLAGS])
        for i in range(DRONES):
            name = f"drone-{i}"
            home = self.work.parent / "drones" / name  # prefixes kept across rounds (an update)
            prefix = pfx.create_prefix(pfx.PrefixConfig(home / "prefix", pfx.Role.DRONE, binhost=staging))
            state = self.work / name
            state.mkdir(parents=True)
            argv = [
                str(VENV_BIN / "swarm-agent"),
                *("--name", name, "--insecure", "--controller", f"{HOST}:{ports.grpc}"),
                *("--state-dir", str(state), "--cache-path", str(prefix.tmpdir / "portage")),
                *("--portage-eprefix", str(prefix.root), "--pkgdir", str(prefix.pkgdir)),
                *("--emerge-command", emerge, "--min-free-disk-mb", "1", "--log-file", ""),
                *("--log-level", "info", "--backoff-max", "2", "--pid-file", str(state / "agent.pid")),
            ]
            drone = Drone(name, argv, state, self.work / f"{name}.log")
            self.start_drone(drone)
            self.drones.append(drone)
        self.wait_recovered(time.monotonic(), limit=60.0, what="a healthy start (drones online, health ok)")

    def start_drone(self, drone: Drone) -> None:
        drone.proc = self.children.spawn(drone.argv, log=drone.log)

    def stop(self) -> None:
        """Stop the drones and the controller (SIGTERM: it writes what it holds)."""
        for drone in self.drones:
            if drone.proc is not None:
                self.children.stop(drone.proc)
        if self.controller is not None:
            self.controller.stop()
        for api in (self.api, self.admin):
            if api is not None:
                api.close()

    def close(self) -> None:
        """Stop what the database lives on, once it has been read."""
        self.stop()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.thaw()
            with contextlib.suppress(Exception):
                self.pg.stop()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.data)], check=False)

    # -- watching -------------------------------------------------------------

    def get(self, path: str) -> Any:
        assert self.api is not None
        status, body = self.api.get(path)
        if status != 200:
            raise BenchError(f"GET {path} answered {status}: {body}")
        return body

    def healthy(self) -> bool:
        """Every drone online and health 200 without 'degraded'."""
        assert self.api is not None
        try:
            status, body = self.api.get("/api/v1/health")
            if status != 200 or body.get("status", "ok") != "ok":
                return False
            nodes = self.get("/api/v1/nodes")["nodes"]
        except (OSError, BenchError, ValueError):
            return False
        online = {n["name"] for n in nodes if n["status"] == "online"}
        return {d.name for d in self.drones} <= online

    def wait_recovered(self, since: float, *, limit: float = RECOVER_LIMIT, what: str = "recovery") -> float:
        deadline = since + limit
        while time.monotonic() < deadline:
            if self.healthy():
                return time.monotonic() - since
            time.sleep(0.1)
        raise BenchError(f"no {what} within {limit:.0f}s: health says {self.health_text()}")

    def health_text(self) -> str:
        assert self.api is not None
        try:
            status, body = self.api.get("/api/v1/health")
        except (OSError, ValueError) as exc:
            return f"nothing ({exc})"
        return f"{status} {json.dumps(body)[:300]}"

    def session(self, session_id: str) -> dict[str, Any]:
        for s in self.get("/api/v1/sessions")["sessions"]:
            if s["id"] == session_id:
                return dict(s)
        raise BenchError(f"session {session_id} is gone")

    # -- faults ----------------------------------------------------------------

    def inject(self) -> float:
        """Inject the fault; returns when (monotonic) the dependency was back."""
        assert self.controller is not None
        if self.fault in ("controller-kill9", "controller-kill9-postgres"):
            self.controller.kill9()
            self.controller.start()
            return time.monotonic()
        if self.fault == "postgres-kill9":
            assert self.pg is not None
            self.pg.kill()
            time.sleep(self.opts.pg_down)
            self.pg.restart()
            return time.monotonic()
        if self.fault == "postgres-stop":
            assert self.pg is not None
            self.pg.freeze()
            time.sleep(self.opts.freeze)
            self.pg.thaw()
            return time.monotonic()
        if self.fault == "agent-kill9-upload":
            return self.kill_agent_during_upload()
        if self.fault == "disk-full":
            filler = self.data / "filler"
            with contextlib.suppress(OSError), filler.open("wb") as fh:
                block = b"\0" * 2**20
                while True:
                    fh.write(block)
                    fh.flush()
            time.sleep(self.opts.full_seconds)
            filler.unlink()
            return time.monotonic()
        raise BenchError(f"unknown fault {self.fault}")

    def kill_agent_during_upload(self) -> float:
        with contextlib.closing(
            sqlite3.connect(self.data / "swarm.db", isolation_level=None, timeout=30)
        ) as db:
            db.execute("BEGIN EXCLUSIVE")
            try:
                deadline = time.monotonic() + 180
                victim = None
                while victim is None:
                    victim = next((d for d in self.drones if "interrupted (UNAVAILABLE" in read(d.log)), None)
                    if time.monotonic() > deadline:
                        raise BenchError("no upload under way within 180s")
                    time.sleep(0.1)
                assert victim.proc is not None
                os.killpg(victim.proc.pid, signal.SIGKILL)
                victim.proc.wait(10)
                self.notes.append(f"killed {victim.name} during its upload")
            finally:
                db.rollback()
        self.start_drone(victim)
        return time.monotonic()

    # -- the round ---------------------------------------------------------------

    def run(self, packages: Sequence[str]) -> dict[str, Any]:
        assert self.admin is not None and self.controller is not None and self.controller.ports is not None
        follower = EventFollower(f"http://{HOST}:{self.controller.ports.public}", interval=0.3)
        follower.start()
        try:
            status, body = self.admin.post("/admin/api/queue", {"atoms": list(packages)})
            if status != 201:
                raise BenchError(f"POST /admin/api/queue answered {status}: {body}")
            session_id = str(body["session"]["id"])
            queued = {j["id"]: j["cpv"] for j in body["jobs"]}
            started = time.monotonic()
            while True:
                counts = self.session(session_id)["jobs"]
                if counts["done"] >= 2 and counts["building"] >= 1:
                    break
                if time.monotonic() - started > self.opts.timeout:
                    raise BenchError(f"the session did not get under way ({counts})")
                time.sleep(0.1)
            say(f"{self.fault} #{self.index}: injecting ({counts['done']} done)")
            injected = time.monotonic()
            back = self.inject()
            recover_s = self.wait_recovered(back)
            say(f"{self.fault} #{self.index}: recovered {recover_s:.1f}s after the dependency was back")
            complete = False
            while time.monotonic() - started < self.opts.timeout:
                with contextlib.suppress(OSError, BenchError):
                    if self.session(session_id)["state"] == "complete":
                        complete = True
                        break
                time.sleep(0.5)
            if not complete:
                self.notes.append(f"session not complete after {self.opts.timeout:.0f}s")
            session_s = time.monotonic() - started
        finally:
            follower.stop()
        self.stop()
        figures = self.figures(session_id, queued, follower.seen)
        samples = follower.during(injected, back)
        figures.update(
            health_during=[h for h in said(samples) if h != "ok"] or (["ok"] if samples else ["no sample"]),
            health_slowest_s=round(max((h.took for h in samples), default=0.0), 2),
        )
        figures.update(
            recover_s=round(recover_s, 2),
            fault_s=round(back - injected, 1),
            session_s=round(session_s, 1),
            notes=self.notes,
        )
        return figures

    def figures(self, session_id: str, queued: dict[str, str], seen: dict[int, str]) -> dict[str, Any]:
        where: Path | str = self.pg.url("swarm") if self.pg is not None else self.data / "swarm.db"
        drones = {d.name: d.state for d in self.drones}
        outcome = session_outcome(where, session_id, list(queued), drones, seen)
        return {
            "jobs": len(queued),
            "jobs_lost": len(outcome.lost),
            "duplicate_builds": outcome.duplicate_builds,
            "good_failed": outcome.good_failed,
            "grounded": outcome.grounded,
            "events_seen": outcome.events_seen,
            "events_lost": len(outcome.events_lost),
            "events_lost_types": sorted(set(outcome.events_lost.values())),
            "requeued": outcome.requeued,
        }


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# -- report -------------------------------------------------------------------


def summary(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    recover = [r["recover_s"] for r in rounds]
    return {
        "rounds": len(rounds),
        "jobs_lost": sum(r["jobs_lost"] for r in rounds),
        "duplicate_builds": sum(r["duplicate_builds"] for r in rounds),
        "good_failed": sum(r["good_failed"] for r in rounds),
        "events_lost": sum(r["events_lost"] for r in rounds),
        "recover_s_median": round(statistics.median(recover), 1),
        "recover_s_max": round(max(recover), 1),
    }


def report(results: dict[str, Any]) -> str:
    head = f"{'fault':<25} {'rounds':>6} {'jobs lost':>9} {'dup builds':>10} {'good failed':>11} "
    head += f"{'events lost':>11} {'recover s (median/max)':>23}  verdict"
    lines = [head, "-" * len(head)]
    for fault, result in results.items():
        if "error" in result:
            lines.append(f"{fault:<25} error: {result['error']}")
            continue
        s = result["summary"]
        met = (
            s["jobs_lost"] == s["duplicate_builds"] == s["good_failed"] == s["events_lost"] == 0
            and s["recover_s_max"] < TARGET_RECOVER_S
        )
        lines.append(
            f"{fault:<25} {s['rounds']:>6} {s['jobs_lost']:>9} {s['duplicate_builds']:>10} "
            f"{s['good_failed']:>11} {s['events_lost']:>11} "
            f"{s['recover_s_median']:>11.1f} / {s['recover_s_max']:<9.1f}  {'met' if met else 'MISSED'}"
        )
        for r in result["rounds"]:
            extra = f"; lost event types {r['events_lost_types']}" if r["events_lost"] else ""
            notes = f"; {'; '.join(r['notes'])}" if r["notes"] else ""
            notes += (
                f"; health during the fault: {', '.join(r['health_during'])} "
                f"(slowest answer {r['health_slowest_s']}s)"
            )
            lines.append(
                f"    round {r['index']}: {r['jobs']} jobs, fault {r['fault_s']}s, "
                f"session {r['session_s']}s, {r['requeued']} requeued, {r['grounded']} grounded, "
                f"{r['events_seen']} events seen{extra}{notes}"
            )
    lines.append(
        f"targets: 0 lost, 0 duplicates, 0 good failed, 0 events lost, recovery < {TARGET_RECOVER_S:.0f}s"
    )
    return "\n".join(lines)


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="swarm-faults-"))
    failed = True
    try:
        yield path
        failed = False
    finally:
        if keep or failed:
            say(f"work directory kept: {path}")
        else:
            import shutil

            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    own_pid_group()
    packages = good_packages()
    results: dict[str, Any] = {}
    children = Children()
    try:
        with workdir(opts.keep) as work:
            for fault in opts.faults:
                rounds = []
                try:
                    for index in range(1, opts.rounds + 1):
                        r = Round(fault, index, work / f"{fault}-{index}", children, opts)
                        try:
                            r.start()
                            figures = r.run(packages)
                        finally:
                            r.close()
                        figures["index"] = index
                        rounds.append(figures)
                        shown = {k: v for k, v in figures.items() if k != "notes"}
                        say(f"{fault} #{index}: {json.dumps(shown)}")
                    results[fault] = {"summary": summary(rounds), "rounds": rounds}
                except BenchError as exc:
                    say(f"{fault}: error: {exc}")
                    results[fault] = {"error": str(exc), "rounds": rounds}
    finally:
        children.close()
    print(report(results))
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps({"options": str(opts), "results": results}, indent=2))
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
