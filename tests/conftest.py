"""Shared fixtures: real controller and agent processes on 127.0.0.1."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from swarm.controller.eventloop import EVENT_LOOPS, LoopRunner, loop_runner

# tools/ (prefix.py: Gentoo prefixes for drones, clients and the controller)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from support.browser import browser, chromium  # noqa: F401 (fixtures for the console tests)
from support.bytecode import compile_sources
from support.disk import small_disk  # noqa: F401 (a fixture for the tests of a full data disk)
from support.procs import Agent, Controller, Proc, enroll_here
from support.sshd import SshServer, sshd_server

# --cpu-report: CPU-seconds per module, the test process's and its processes'.
pytest_plugins = ("support.cpureport",)

# grpc.aio starts one poller thread for the whole process on first use and
# keeps it; it belongs to no test.
PROCESS_WIDE_THREADS = ("(_poll_wrapper)",)


# `make test-fast` runs the modules of in-process tests below, less any test
# of theirs that uses a fixture starting real processes (a controller, agents,
# sshd, Chromium, tmux) or is marked `real` itself (a fixture of its module's).
# The store contract keeps its PostgreSQL runs there (a server shared by the
# session, milliseconds a test). Every other module starts real processes: it
# is in `make test` only. A new module is real until it is put here.
FAST_MODULES = frozenset(
    {
        "test_admin_auth",
        "test_admin_limits",
        "test_binhost_cache",
        "test_binhost_api",
        "test_binhosts",
        "test_binhost_sending",
        "test_build_timers",
        "test_channels",
        "test_clock",
        "test_config",
        "test_core_boundary",
        "test_cpureport",
        "test_detection",
        "test_drone_binhosts",
        "test_dronetype",
        "test_events",
        "test_faults",
        "test_healer_timing",
        "test_http_input",
        "test_identity",
        "test_inbox",
        "test_link_switch",
        "test_logtail",
        "test_notify",
        "test_testrunner",
        "test_oob",
        "test_payload_agent",
        "test_packaging",
        "test_payloads",
        "test_plain_heartbeat",
        "test_printable",
        "test_proto_fresh",
        "test_protocol_doc",
        "test_protolog",
        "test_release_cadence",
        "test_rollouts",
        "test_rsyncpush",
        "test_public_api_fast",
        "test_scheduler",
        "test_selfcheck",
        "test_startup_imports",
        "test_stop_budget",
        "test_store_contract",
        "test_stream_bounds",
        "test_tasks",
        "test_testbuilds",
        "test_upgrade_parts",
        "test_web_layering",
        "test_ws_streams",
    }
)
REAL_FIXTURES = frozenset(
    {
        "controller",
        "launch",
        "agents",
        "sshd",
        "chromium",
        "browser",
        "tmux",
        "postgres_url",
        "postgres_server",
    }
)


def pytest_configure(config: pytest.Config) -> None:
    # Before any swarm process starts, once (xdist's workers find it done):
    # support/bytecode.py says why.
    if not hasattr(config, "workerinput"):
        compile_sources()


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    """pytest rewrites each test module's asserts when it imports it, and
    keeps the result as a .pyc in tests/__pycache__ unless bytecode is not
    to be written (PYTHONDONTWRITEBYTECODE): then every process of every run
    rewrote all the modules again, some 2.5 s of CPU each. The cache is
    written while collecting, as compile_sources writes the checkout's."""
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = False
    try:
        return (yield)
    finally:
        sys.dont_write_bytecode = saved


# The slowest modules, slowest first: every module that took 10 s or more
# in a side-by-side `make test` on 2 cores (session 10, 1,234 tests, from the
# junit times of a 4-worker run: test_probe about 100, test_probe_reads 85,
# test_session_faults 68, ... test_payload_agent 10). Session 11: the probes'
# smaller budget took them to about 40 s each (measured alone), behind
# test_session_faults, test_prefix and test_upgrade (about 72 s each in the
# 4-worker run before it) and test_demo (46). xdist hands whole
# modules to its workers in collection order (the Makefile turns its own
# reordering, by number of tests, off): started last, a long module would
# run on alone while the other workers idle. A module not named keeps its
# place after these; remeasure when a new module takes long.
SLOWEST_FIRST = (
    "test_session_faults",
    "test_prefix",
    "test_upgrade",
    "test_demo",
    "test_probe",
    "test_probe_reads",
    "test_build_faults",
    "test_healing",
    "test_builds",
    "test_console_fleet",
    "test_payload_deploy",
    "test_releases",
    "test_proof_of_life",
    "test_testbuild_runs",
    "test_binhost_client",
    "test_build_failures",
    "test_console_releases",
    "test_console",
    "test_ws_streams",
    "test_overlay",
    "test_cli_live",
    "test_openrc",
    "test_console_topology",
    "test_mirrors",
    "test_console_payloads",
    "test_public_page",
    "test_console_binhosts",
    "test_console_streams",
    "test_gateway_protocol",
    "test_uploads",
    "test_store_faults",
    "test_terminal_ssh",
    "test_fleet_live",
    "test_store_contract",
    "test_console_testbuilds",
    "test_trust",
    "test_fleet_hardening",
    "test_oob",
    "test_build_grounding",
    "test_terminal",
    "test_cli_release",
    "test_connections",
    "test_build_crashes",
    "test_payload_agent",
)


def module_of(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if module_of(item) not in FAST_MODULES or REAL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real)
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(module_of(item), len(rank)))


@pytest.fixture(autouse=True)
def fast_tests_start_no_swarm_process(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test of the fast layer that starts a controller or agent process
    fails, saying so: it belongs to the real layer (mark it real)."""
    if request.node.get_closest_marker("real") is not None:
        return

    def refused(proc: Proc) -> None:
        raise AssertionError(
            f"{request.node.nodeid} is in the fast layer but starts {proc.args[2]}: "
            "mark it real (pytest.mark.real) or use support/inproc.py"
        )

    monkeypatch.setattr(Proc, "start", refused)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A test must not leave threads running behind it."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.endswith(PROCESS_WIDE_THREADS)
    ]
    for thread in leaked:
        thread.join(timeout=2)
    alive = [t.name for t in leaked if t.is_alive()]
    assert not alive, f"test leaked threads: {alive}"


@pytest.fixture(params=EVENT_LOOPS)
def on_loop(request: pytest.FixtureRequest) -> LoopRunner:
    """Runs a coroutine to its end, once on each loop the controller may run
    on (--event-loop): for code that touches what differs between them (the
    transports of subprocesses and sockets)."""
    return loop_runner(request.param)


@pytest.fixture(scope="session")
def sshd() -> Iterator[SshServer]:
    """A private OpenSSH server on 127.0.0.1 for the whole session (tests/support/sshd.py)."""
    with sshd_server() as server:
        yield server


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    proc = Controller(tmp_path, "--ping-interval", "0.5")
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """Start an agent of a controller, enrolled once per state dir:
    launch(controller, name, *flags, **Agent keywords). All are killed at teardown.
    Enrolled in this process (support/procs.enroll_here: the command's own
    code, without a Python started for it); test_trust and test_cli run
    ``swarm-agent enroll`` itself."""
    started: list[Agent] = []

    def start(controller: Controller, name: str, *extra: str, **kwargs: Any) -> Agent:
        agent = Agent(tmp_path, name, controller.grpc_target, *extra, **kwargs)
        if not (agent.state_dir / "drone.crt").exists():
            enroll_here(controller, name, agent.state_dir)
        agent.start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


@pytest.fixture
def agents(controller: Controller, launch: Callable[..., Agent]) -> Callable[..., Agent]:
    """Agents of the ``controller`` fixture: agents(name, **Agent keywords)."""
    return lambda name, **kwargs: launch(controller, name, **kwargs)
