"""``--cpu-report``: CPU-seconds per test module, the pytest process's own and
its processes', the heaviest modules printed at the end (opt-in, for finding
what makes the suite slow; ``--cpu-report-json PATH`` keeps every figure).

The suite is CPU-bound on two cores, so CPU, not wall time, says what a
module costs the others running beside it. After each test (its teardown
included, so a module's shared fixtures count in its last test) the report
takes what was used since the previous test and gives it to the test's module:

- ``pytest``: the worker's own CPU (RUSAGE_SELF: every thread, the
  in-process controllers of the fast layer included);
- its child processes still running (controllers and agents of a
  module-scoped fleet, sshd, Playwright's driver and the Chromium it waits
  for) by what they are, as the growth of each one's own CPU plus that of
  the descendants it has waited for (/proc/PID/stat);
- ``ended``: children that the worker waited for meanwhile (support/procs.py
  waits for every process it kills; subprocess.run waits), their CPU known
  only in total (RUSAGE_CHILDREN counts a child, and what it waited for,
  once it is waited for), less what was already counted while they ran;
- processes that left the worker's tree (``pg_ctl start``'s PostgreSQL, a
  gpg-agent, a tmux server: daemons whose parent became init) by what they
  are: they are found by an environment variable the worker sets and they
  inherit.

Not counted: a descendant that escaped and ended between two tests, and
what a killed process group leaves behind (an emerge an agent ran in a
session of its own) once init reaps it.

Under pytest-xdist each worker measures its own modules and sends them to
the controlling process, which prints the report (its own CPU on a line of
its own).
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

TAG = "SWARM_CPU_REPORT_TAG"
ENDED = "ended"
OWN = "pytest"
PYTHON_MODULES = {"swarm.controller.main": "controller", "swarm.agent.main": "agent"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cpu-report", "CPU per test module (tests/support/cpureport.py)")
    group.addoption(
        "--cpu-report",
        action="store_true",
        help="print the test modules that used the most CPU, the test process's own and its processes'",
    )
    group.addoption(
        "--cpu-report-top", type=int, default=30, metavar="N", help="modules printed (default 30)"
    )
    group.addoption(
        "--cpu-report-json", default=None, metavar="PATH", help="write every module's figures to PATH as JSON"
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("cpu_report") or config.getoption("cpu_report_json"):
        config.pluginmanager.register(CpuReport(config), "cpu-report")


def _cpu(times: Any) -> float:
    """A psutil process's CPU, its own and that of the children it waited for."""
    return float(times.user + times.system + times.children_user + times.children_system)


def _rusage(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def kind_of(proc: psutil.Process) -> str:
    """What a process is, for the report: controller, agent, sshd, chromium, postgres, ..."""
    name = proc.name()
    if name.startswith("python"):
        args = proc.cmdline()[1:]
        if "-m" in args[:-1]:
            module = args[args.index("-m") + 1]
            return PYTHON_MODULES.get(module, module)
        script = next((a for a in args if not a.startswith("-")), "")
        return Path(script).name or name
    if name.startswith("chrom") or (name == "node" and any("playwright" in a for a in proc.cmdline())):
        return "chromium"
    if name.startswith(("postgres", "postmaster")):
        return "postgres"
    return name


@dataclass
class Seen:
    kind: str
    cpu: float


@dataclass
class ModuleCpu:
    wall: float = 0.0
    cpu: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, other: ModuleCpu) -> None:
        self.wall += other.wall
        for kind, seconds in other.cpu.items():
            self.cpu[kind] += seconds

    @property
    def total(self) -> float:
        return sum(self.cpu.values())

    def to_json(self) -> dict[str, Any]:
        return {"wall": round(self.wall, 3), "cpu": {k: round(v, 3) for k, v in self.cpu.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModuleCpu:
        return cls(float(data["wall"]), defaultdict(float, {k: float(v) for k, v in data["cpu"].items()}))


# A process, as (pid, start time): a pid can be used again.
ProcKey = tuple[int, float]


class CpuReport:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.me = psutil.Process()
        self.tag = str(os.getpid())
        os.environ[TAG] = self.tag
        self.modules: dict[str, ModuleCpu] = {}
        self.collecting = True
        self.controller = False
        self.children: dict[ProcKey, Seen] = {}
        self.escaped: dict[ProcKey, Seen] = {}
        self.not_ours: set[ProcKey] = set()
        self.last_self = _rusage(resource.RUSAGE_SELF)
        self.last_waited = _rusage(resource.RUSAGE_CHILDREN)
        self.last_wall = time.monotonic()

    # -- hooks -------------------------------------------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # xdist's controlling process: its children are the workers, which report themselves.
        self.controller = self.config.pluginmanager.has_plugin("dsession")

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not self.controller:
            self._boundary("(collection)")

    def pytest_runtest_logfinish(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        if not self.controller:
            self._boundary(Path(location[0]).stem)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.controller:
            self._own_only("(xdist controller)")
        else:
            self._boundary("(session end)")
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["cpu_report"] = {name: m.to_json() for name, m in self.modules.items()}
        path = self.config.getoption("cpu_report_json")
        if path and workeroutput is None:
            Path(path).write_text(
                json.dumps({name: m.to_json() for name, m in sorted(self.modules.items())}, indent=1) + "\n"
            )

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        for name, data in getattr(node, "workeroutput", {}).get("cpu_report", {}).items():
            self.modules.setdefault(name, ModuleCpu()).add(ModuleCpu.from_json(data))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.config.getoption("cpu_report"):
            return
        write = terminalreporter.write_line
        terminalreporter.section("CPU by module (--cpu-report): CPU-seconds")
        ranked = sorted(self.modules.items(), key=lambda kv: kv[1].total, reverse=True)
        write(f"{'module':<28} {'total':>7} {'pytest':>7} {'procs':>7} {'wall':>7}  processes")
        for name, mod in ranked[: self.config.getoption("cpu_report_top")]:
            write(self._line(name, mod))
        everything = ModuleCpu()
        for _, mod in ranked:
            everything.add(mod)
        write(self._line(f"all {len(ranked)}", everything))
        write(
            f'"{ENDED}": processes waited for during the test, known only in total; '
            "a module's shared fixtures count in its last test"
        )

    # -- measuring ---------------------------------------------------------------------

    @staticmethod
    def _line(name: str, mod: ModuleCpu) -> str:
        own = mod.cpu.get(OWN, 0.0)
        procs = sorted(
            ((k, v) for k, v in mod.cpu.items() if k != OWN and abs(v) >= 0.05), key=lambda kv: -kv[1]
        )
        detail = ", ".join(f"{k} {v:.1f}" for k, v in procs)
        return f"{name:<28} {mod.total:7.1f} {own:7.1f} {mod.total - own:7.1f} {mod.wall:7.1f}  {detail}"

    def _module(self, name: str) -> ModuleCpu:
        return self.modules.setdefault(name, ModuleCpu())

    def _own_only(self, name: str) -> None:
        now = _rusage(resource.RUSAGE_SELF)
        mod = self._module(name)
        mod.cpu[OWN] += now - self.last_self
        mod.wall += time.monotonic() - self.last_wall

    def _boundary(self, name: str) -> None:
        """Give what was used since the last boundary to module ``name``."""
        mod = self._module(name)
        now_self = _rusage(resource.RUSAGE_SELF)
        now_waited = _rusage(resource.RUSAGE_CHILDREN)
        now_wall = time.monotonic()
        mod.cpu[OWN] += now_self - self.last_self
        ended = now_waited - self.last_waited
        # Children still running (zombies too: not waited for yet).
        children = self._look(self.me.children())
        for key, seen in self.children.items():
            if key not in children:
                ended -= seen.cpu  # counted while it ran; RUSAGE_CHILDREN has its whole life
        self._grow(mod, self.children, children)
        self.children = children
        mod.cpu[ENDED] += ended
        escaped = self._look(self._escaped())
        self._grow(mod, self.escaped, escaped)
        self.escaped = escaped
        mod.wall += now_wall - self.last_wall
        self.last_self, self.last_waited, self.last_wall = now_self, now_waited, now_wall

    @staticmethod
    def _grow(mod: ModuleCpu, before: dict[ProcKey, Seen], now: dict[ProcKey, Seen]) -> None:
        for key, seen in now.items():
            mod.cpu[seen.kind] += seen.cpu - (before[key].cpu if key in before else 0.0)

    @staticmethod
    def _look(procs: list[psutil.Process]) -> dict[ProcKey, Seen]:
        found = {}
        for proc in procs:
            try:
                with proc.oneshot():
                    found[(proc.pid, proc.create_time())] = Seen(kind_of(proc), _cpu(proc.cpu_times()))
            except psutil.Error:
                continue
        return found

    def _escaped(self) -> list[psutil.Process]:
        """Processes started under this one that left its tree (their parent is init now)."""
        tree = {p.pid for p in self.me.children(recursive=True)} | {self.me.pid}
        found = []
        for proc in psutil.process_iter():
            if proc.pid in tree:
                continue
            try:
                key = (proc.pid, proc.create_time())
                if key in self.not_ours:
                    continue
                if key in self.escaped or proc.environ().get(TAG) == self.tag:
                    found.append(proc)
                else:
                    self.not_ours.add(key)
            except psutil.Error:
                continue
        return found
