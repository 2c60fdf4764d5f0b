"""``make demo`` from nothing, the way a new user meets it.

tools/demo.py runs on an empty state directory (as in a fresh clone), on
ports the kernel picks, until three drones are online and a real build has
finished; then Ctrl-C (SIGINT) must leave no process of it behind. A second
start on the same state reuses the enrolment and comes up again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from support.procs import http, wait_for

ROOT = Path(__file__).resolve().parent.parent
DRONES = {"drone-io", "drone-europa", "drone-titan"}
# Enrolment, three Gentoo prefixes and the first builds on two loaded cores.
START_TIMEOUT = 90.0
# After the demo says "stopped.": its processes are gone by then, or going. Long
# enough for a loaded machine (make test runs four modules at once); a process
# still there after it is named in the failure.
LEFTOVER_TIMEOUT = 30.0

pytestmark = pytest.mark.timeout(300)


def assert_no_process_left(state: Path, when: str) -> None:
    deadline = time.monotonic() + LEFTOVER_TIMEOUT
    while (left := processes_of(state)) and time.monotonic() < deadline:
        time.sleep(0.1)
    described = []
    for proc in left:
        with contextlib.suppress(psutil.Error):
            described.append(f"{proc.pid} {proc.status()} {' '.join(proc.cmdline())[:200]}")
    assert not left, f"demo processes left {when}: " + "; ".join(described)


def processes_of(state: Path) -> list[psutil.Process]:
    """Every process that belongs to the demo in ``state``: the demo, its
    controller and agents name it on their command lines, and emerge runs
    with it in its environment (PORTAGE_OVERRIDE_EPREFIX)."""
    mark = str(state)
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if any(mark in arg for arg in proc.cmdline()) or any(
                mark in value for value in proc.environ().values()
            ):
                found.append(proc)
    return found


class Demo:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.out = state.parent / f"{state.name}.out"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.out.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, str(ROOT / "tools" / "demo.py"), "--state", str(self.state)]
                + [f"--{kind}-port=0" for kind in ("grpc", "public", "admin", "enroll")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def _running(self) -> None:
        assert self.popen is not None
        if self.popen.poll() is not None:
            raise AssertionError(f"the demo exited with {self.popen.returncode}:\n{self.output()[-3000:]}")

    def public(self) -> str:
        def ready() -> dict[str, Any] | None:
            self._running()
            path = self.state / "controller.ready.json"
            return json.loads(path.read_text()) if path.exists() else None

        info = wait_for(ready, timeout=START_TIMEOUT, what="the demo's controller")
        return f"http://127.0.0.1:{info['public_port']}"

    def wait_until(self, predicate: Any, what: str) -> Any:
        def check() -> Any:
            self._running()
            return predicate()

        return wait_for(check, timeout=START_TIMEOUT, what=what, interval=0.25)

    def interrupt(self) -> int:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGINT)
        return self.popen.wait(timeout=60)

    def kill_all(self) -> None:
        for proc in processes_of(self.state):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    state = tmp_path / ".demo"
    assert not state.exists()
    running = Demo(state)
    yield running
    running.kill_all()


def online(public: str) -> set[str]:
    status, body = http("GET", f"{public}/api/v1/nodes")
    assert status == 200, body
    return {node["name"] for node in body["nodes"] if node["status"] == "online"}


def finished_builds(public: str) -> list[dict[str, Any]]:
    status, body = http("GET", f"{public}/api/v1/history")
    assert status == 200, body
    return [entry for entry in body["history"] if entry.get("state") == "done"]


def test_demo_from_an_empty_state_builds_and_stops_cleanly(demo: Demo) -> None:
    demo.start()
    public = demo.public()
    demo.wait_until(lambda: online(public) >= DRONES, "three online drones")
    done = demo.wait_until(lambda: finished_builds(public), "a finished build")
    assert done[0]["drone"] in DRONES
    assert "Build Swarm demo is running" in demo.output()
    assert (demo.state / "controller" / "admin.key").exists()

    assert demo.interrupt() == 0
    assert "stopped." in demo.output()
    assert_no_process_left(demo.state, "after the first run")

    # Again on the same state: the drones are enrolled already and come back.
    demo.start()
    public = demo.public()
    demo.wait_until(lambda: online(public) >= DRONES, "three online drones after a second start")
    demo.wait_until(lambda: demo.output().count("Build Swarm demo is running") == 2, "the second banner")
    assert demo.interrupt() == 0
    assert_no_process_left(demo.state, "after a second run")
