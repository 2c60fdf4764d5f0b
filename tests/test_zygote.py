"""The harness's fork server (support/zygote.py): a program it forks behaves
as the same program started by its command line, and is a process of its own."""

from __future__ import annotations

import concurrent.futures
import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from support import zygote
from support.procs import Agent, Controller, Proc, wait_for

AGENT = [sys.executable, "-m", "swarm.agent.main"]


def run(log: Path, args: list[str], env: dict[str, str], *, exec_start: bool) -> tuple[int, str]:
    proc = Proc([*AGENT, *args], log, env)
    proc.exec_start = exec_start
    proc.start()
    assert isinstance(proc.popen, subprocess.Popen if exec_start else zygote.Forked)
    code = proc.popen.wait(timeout=60)
    return code, proc.log()


@pytest.mark.parametrize(
    ("args", "env", "code", "says"),
    [
        # What it prints to stdout is flushed at exit; the environment is the one given.
        (["check", "--insecure"], {"SWARM_AGENT_NAME": "from-env"}, 0, "ready: drone from-env, insecure"),
        # sys.exit("why"): the message on stderr and 1, as the interpreter does it.
        (["check", "--state-dir", "nowhere"], {}, 1, "swarm-agent: "),
        (["--no-such-flag"], {}, 2, "unrecognized arguments: --no-such-flag"),
    ],
)
def test_a_forked_program_answers_as_its_command_line_does(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int, says: str
) -> None:
    forked = run(tmp_path / "forked.log", args, env, exec_start=False)
    execed = run(tmp_path / "execed.log", args, env, exec_start=True)
    assert forked[0] == execed[0] == code
    assert says in forked[1]
    # The relative --state-dir is the test's working directory's, in both.
    assert forked[1] == execed[1]


def test_forked_programs_are_waited_for_from_several_threads_at_once(tmp_path: Path) -> None:
    # Programs that exit at once: each exit may come in one read with the next reply.
    procs = [Proc([*AGENT, "--version"], tmp_path / f"version-{i}.log") for i in range(6)]
    for proc in procs:
        proc.start()
    with concurrent.futures.ThreadPoolExecutor(len(procs)) as pool:
        codes = list(pool.map(lambda proc: proc.popen.wait(timeout=30) if proc.popen else None, procs))
    assert codes == [0] * len(procs)
    assert all(isinstance(proc.popen, zygote.Forked) and "swarm-agent " in proc.log() for proc in procs)


def sockets(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed since the listing: not held any more
        if target.startswith(("socket:", "pipe:")):
            found.add(target)
    return found


def test_forked_agents_are_processes_of_their_own_and_restart_by_their_command_line(
    controller: Controller, agents: Callable[..., Agent]
) -> None:
    first, second = agents("fork-1"), agents("fork-2")
    nodes = {
        name: wait_for(functools.partial(controller.online, name), what=f"{name} online")
        for name in ("fork-1", "fork-2")
    }
    # Module-level state is the program's own: each has its instance id.
    assert nodes["fork-1"]["instance_id"] != nodes["fork-2"]["instance_id"]

    zygote_pid = psutil.Process(first.pid).ppid()
    assert zygote_pid != os.getpid() and psutil.Process(second.pid).ppid() == zygote_pid
    assert "zygote.py" in " ".join(psutil.Process(zygote_pid).cmdline())
    for agent in (first, second):
        assert os.getsid(agent.pid) == os.getpgid(agent.pid) == agent.pid
        assert not sockets(agent.pid) & sockets(zygote_pid)
    assert second.popen is not None
    with pytest.raises(subprocess.TimeoutExpired):
        second.popen.wait(timeout=0.05)

    # RestartService execs `python -m swarm.agent.main ARGS`: the same pid, now with the command line.
    status, body = controller.admin("POST", "/admin/api/drones/fork-1/restart")
    assert status == 200, body
    wait_for(
        lambda: (n := controller.online("fork-1")) and n["instance_id"] != nodes["fork-1"]["instance_id"],
        what="fork-1 back after its restart",
    )
    assert first.alive() and psutil.Process(first.pid).cmdline() == first.args

    first.kill()
    assert first.popen is not None and first.popen.returncode == -9
    assert second.terminate() == 0
