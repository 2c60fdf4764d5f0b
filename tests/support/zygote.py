"""A fork server ("zygote") for the test harness: controllers and agents
started by fork from an interpreter that has imported their modules once.

The suite starts hundreds of controller and agent processes, and each
``python -m swarm.controller.main`` spends most of the CPU it needs to be
ready on starting Python and importing aiohttp, grpc, protobuf, peewee,
cryptography, prometheus_client and our own modules: about 0.75 CPU-s to
a ready controller, 0.23 to an online agent, against 0.10 and 0.02 forked
(``bench/zygote.py`` prints the figures). A zygote is a Python that did
that once; each start is then a ``fork()`` whose child runs the program's
real ``main`` over real sockets. One zygote per program and test process
(an xdist worker), started when its program is first started (``spawn``),
ended when the test process exits.

The child is made to look like what ``subprocess.Popen(..., start_new_session=True,
stdin=DEVNULL, stdout=log, stderr=STDOUT)`` of ``python -m PROGRAM ARGS`` makes:

- a session of its own (setsid), stdin from /dev/null, stdout and stderr
  to the log file (appended), every other descriptor closed, the asked
  working directory and environment;
- the program runs as ``python -m`` runs it (``runpy._run_module_as_main``
  in a fresh ``__main__``), so its module-level code runs anew in every
  child (the agent's instance id, for one); ``sys.argv`` and
  ``sys.orig_argv`` are those of ``python -m PROGRAM ARGS``, so the
  agent's restart (``os.execv`` of ``sys.orig_argv``) execs the program
  as if it had been started by its command line; the interpreter exits as
  it would (SystemExit, a traceback, threads joined, atexit, stdio flushed);
- the zygote replies with the child's pid only once the child has done all
  that (as Popen returns once the exec happened): a test that signals the
  process group at once reaches the whole session.

Why forking here is safe: the zygote imports modules and nothing else, and
checks it is single-threaded (``/proc/self/task``) before each fork. No
module it imports starts a thread or opens a descriptor on import; gRPC's
core is initialised (its threads, its own fork handlers: GRPC_ENABLE_FORK_SUPPORT)
only when the first channel or server is made, which only the child does;
no asyncio loop exists before the child's ``asyncio.run``. Python's
``random`` reseeds in a forked child, ``uuid4`` and ``secrets`` read
``os.urandom``, OpenSSL's generator reseeds when it sees a new pid, and
logging's locks are renewed by its fork hook; the programs set up their
logging in ``main``. What an import did to ``os.environ`` (the controller's
package sets GRPC_VERBOSITY) is done again on the child's environment.
Preloaded objects are moved out of the cyclic collector's way
(``gc.freeze``), as the controller does itself once started, so that no
collection in a child writes to the pages it shares with the zygote.

What the children share beyond a real start: the zygote's hash seed (the
iteration order of sets of strings is the same in each), the modules
preloaded for the program even where one run would not have imported them,
and its command line and first environment (``/proc/PID/cmdline`` and
``/proc/PID/environ`` are the zygote's until a restart execs; ``os.environ``
and what the child starts are as asked). A test whose point is the process
as its command line starts it (the restart test compares command lines)
sets ``Proc.exec_start``; ``SWARM_TEST_EXEC=1`` starts every process by exec,
as before; a command line that is not ``python -m PROGRAM`` (a wrapper
setting a limit first) is exec'd too, as is a start whose environment
differs from the zygote's in what Python reads when it starts.

Protocol, JSON lines on a socket pair: the test process sends
``{"argv", "env", "cwd", "log", "stderr"}`` (stderr: a file of its own,
or "" for the log); the zygote answers each with
``{"pid"}`` or ``{"error"}``, in order, and sends ``{"exited", "returncode"}``
when it reaps a child (returncode as Popen's: ``-N`` for signal N).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# What each program imports to start (its main module's imports and what its
# run() imports), not the main module itself: that runs anew in each child.
# A module missing here is imported by the child as usual, only slower.
PRELOAD: Mapping[str, tuple[str, ...]] = {
    "swarm.controller.main": (
        "argparse",
        "asyncio",
        "swarm.config",
        "swarm.logsetup",
        "swarm.controller.config",
        "swarm.controller.app",
        "swarm.controller.store.migrations",
        "swarm.controller.store.sql",
        "uvloop",
    ),
    "swarm.agent.main": (
        "argparse",
        "asyncio",
        "uuid",
        "grpc",
        "grpc.aio",
        "psutil",
        "swarm.config",
        "swarm.logsetup",
        "swarm.pki",
        "swarm.agent.config",
        "swarm.agent.credentials",
        "swarm.agent.dronetype",
        "swarm.agent.identity",
        "swarm.agent.pidfile",
        "swarm.agent.preflight",
        "swarm.agent.link",
        "swarm.agent.serde",
    ),
}
# Read by the interpreter or by an import when a process starts: a child to be
# started with other values than the zygote's is exec'd instead. (gRPC reads
# the others, GRPC_VERBOSITY say, when its core starts: in the child.)
STARTUP_ENV_PREFIXES = (
    "PYTHON",
    "LC_",
    "LANG",
    "TZ",
    "GRPC_ENABLE_FORK_SUPPORT",
    "GRPC_POLL_STRATEGY",
    "AIOHTTP_",
    "PROMETHEUS_",
)
EXEC_ENV = "SWARM_TEST_EXEC"
READY_TIMEOUT = 60.0
# The longest a waiting test process blocks before it looks again whether what
# it waits for came (another thread may have read it).
PUMP_SLICE = 0.1


# -- the zygote process ----------------------------------------------------------


def _preload(program: str) -> dict[str, str]:
    """Import the program's modules; what the imports set in os.environ."""
    before = dict(os.environ)
    gc.disable()
    for name in PRELOAD[program]:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()
    gc.enable()
    return {k: v for k, v in os.environ.items() if before.get(k) != v}


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _send(sock: int, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode() + b"\n"
    while data:
        data = data[os.write(sock, data) :]


def _reap(sock: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})


def _fork(sock: int, request: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
    """Fork a child for ``request``: in the child, (request, the descriptor to
    report set-up errors on); in the zygote, None once the child is set up."""
    if (threads := _threads()) != 1 or threading.active_count() != 1:
        _send(sock, {"error": f"the zygote has {threads} threads: it forks only when it has one"})
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        return request, ready_w
    os.close(ready_w)
    # The child closes its end once set up, or writes why it could not be.
    with os.fdopen(ready_r, "rb") as ready:
        failure = ready.read().decode(errors="replace")
    _send(sock, {"error": failure} if failure else {"pid": pid})
    return None


def serve(sock: int, program: str) -> tuple[dict[str, Any], int, dict[str, str]] | None:
    """Preload, then fork a child per request until the test process hangs up.
    Returns in a child only: its request, its set-up error descriptor and the
    environment the preloading set."""
    env_set = _preload(program)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    pending = b""
    while True:
        for fd, _ in poller.poll():
            if fd == wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                _reap(sock)
                continue
            data = os.read(sock, 65536)
            if not data:
                return None
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                forked = _fork(sock, json.loads(line))
                if forked is not None:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    for own in (sock, wake_r, wake_w):
                        os.close(own)
                    return (*forked, env_set)


def become(program: str, request: dict[str, Any], env_set: Mapping[str, str]) -> None:
    """In the child: what Popen(start_new_session=True, stdin=DEVNULL,
    stdout=log, stderr=STDOUT or a file of its own, cwd, env) and ``python -m``
    would have set up."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    append = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    log = os.open(request["log"], append, 0o666)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(os.open(request["stderr"], append, 0o666) if request.get("stderr") else log, 2)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for key, value in env_set.items():
        os.environ.setdefault(key, value)
    time.tzset()
    argv = list(request["argv"])
    sys.argv = ["-m", *argv]
    sys.orig_argv = [sys.executable, "-m", program, *argv]
    sys.path[0] = os.getcwd()


def child_main(program: str, request: dict[str, Any], report: int, env_set: Mapping[str, str]) -> None:
    """Set the child up, tell the zygote (closing ``report``), run the program."""
    try:
        become(program, request, env_set)
    except BaseException as exc:  # whatever it was, the test is told and the child ends
        os.write(report, f"cannot start {program}: {exc!r}".encode())
        os._exit(127)
    # Every descriptor but stdin, stdout and stderr: the report pipe too, which
    # tells the zygote the child is ready.
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    import runpy

    runpy._run_module_as_main(program)  # type: ignore[attr-defined]  # what `python -m` calls


# -- the test process's side -----------------------------------------------------


class ZygoteError(RuntimeError):
    pass


class Forked:
    """A child of a zygote, as much of subprocess.Popen as the harness uses."""

    def __init__(self, zygote: Zygote, args: list[str], pid: int) -> None:
        self.zygote = zygote
        self.args = args
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.zygote.pump(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            self.zygote.pump(left)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        # As Popen: never a signal to a pid already reaped (it may be another process's by now).
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The test process's handle on the zygote of one program."""

    def __init__(self, program: str, env: Mapping[str, str]) -> None:
        self.program = program
        self.env = dict(env)
        self._lock = threading.RLock()
        self._running: dict[int, Forked] = {}
        self._exited: dict[int, int] = {}
        self._pending = b""
        self._replies: list[dict[str, Any]] = []
        # The zygote's own output (a failed import, say), read if it is gone;
        # unlinked at once, so that nothing is left behind however this process ends.
        self._log, path = tempfile.mkstemp(prefix="swarm-zygote-", suffix=".log")
        os.unlink(path)
        ours, theirs = socket.socketpair()
        self._sock = ours
        try:
            self._proc = subprocess.Popen(
                [sys.executable, __file__, program, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._log,
                start_new_session=True,
                env=self.env,
            )
        finally:
            theirs.close()

    def spawn(
        self, args: list[str], env: Mapping[str, str], log_path: Path, stderr_path: Path | None = None
    ) -> Forked:
        request = {
            "argv": args[3:],
            "env": dict(env),
            "cwd": os.getcwd(),
            "log": str(log_path.absolute()),
            "stderr": str(stderr_path.absolute()) if stderr_path is not None else "",
        }
        with self._lock:
            try:
                self._sock.sendall(json.dumps(request).encode() + b"\n")
            except OSError as exc:
                raise ZygoteError(f"the zygote of {self.program} is gone ({exc}): {self._tail()}") from None
            deadline = time.monotonic() + READY_TIMEOUT
            while not self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ZygoteError(f"the zygote of {self.program} did not answer in {READY_TIMEOUT:.0f}s")
                self.pump(left)
            reply = self._replies.pop(0)
            if "error" in reply:
                raise ZygoteError(str(reply["error"]))
            child = Forked(self, args, int(reply["pid"]))
            # Its exit may have come in the same read as the reply.
            child.returncode = self._exited.pop(child.pid, None)
            if child.returncode is None:
                self._running[child.pid] = child
            return child

    def pump(self, timeout: float | None) -> None:
        """Read what the zygote sent, waiting up to ``timeout`` (at most
        PUMP_SLICE) for something; callers loop until what they wait for came.

        The wait holds no lock: a test may wait for one process in a thread
        while it starts another; whichever thread reads a message files it
        where its waiter looks (a returncode, a reply) by the next slice."""
        wait = PUMP_SLICE if timeout is None else min(max(timeout, 0.0), PUMP_SLICE)
        poller = select.poll()  # one each: a poll object refuses concurrent calls
        poller.register(self._sock, select.POLLIN)
        if not poller.poll(round(wait * 1000)):
            return
        with self._lock:
            try:
                data = self._sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:  # another thread read it first
                return
            except OSError:  # reset: it died with a request unread
                data = b""
            if not data:
                raise ZygoteError(f"the zygote of {self.program} is gone: {self._tail()}")
            self._pending += data
            while b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                message = json.loads(line)
                if "exited" in message:
                    pid, code = int(message["exited"]), int(message["returncode"])
                    child = self._running.pop(pid, None)
                    if child is not None:
                        child.returncode = code
                    else:  # its reply is read but not yet taken by spawn()
                        self._exited[pid] = code
                else:
                    self._replies.append(message)

    def _tail(self) -> str:
        self._proc.poll()
        size = os.fstat(self._log).st_size
        tail = os.pread(self._log, 2000, max(0, size - 2000)).decode(errors="replace")
        return f"exit {self._proc.returncode}: {tail}"

    def close(self) -> None:
        """Hang up (the zygote exits; its children run on until killed) and reap it."""
        self._sock.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._log)


_zygotes: dict[str, Zygote] = {}
# The environment the zygotes start with: the test process's before any test
# changed it.
_START_ENV = dict(os.environ)


def forkable(args: list[str], env: Mapping[str, str]) -> bool:
    """Whether ``args`` with ``env`` can be started by a zygote."""
    if os.environ.get(EXEC_ENV) == "1" or len(args) < 3:
        return False
    if args[0] != sys.executable or args[1] != "-m" or args[2] not in PRELOAD:
        return False
    keys = {k for k in (*env, *_START_ENV) if k.startswith(STARTUP_ENV_PREFIXES)}
    return all(env.get(k) == _START_ENV.get(k) for k in keys)


def spawn(args: list[str], env: Mapping[str, str], log_path: Path, stderr_path: Path | None = None) -> Forked:
    """Start ``python -m PROGRAM ARGS`` (``args``) as a child of the program's
    zygote, its stdout and stderr appended to ``log_path`` (stderr to
    ``stderr_path`` if given)."""
    zygote = _zygotes.get(args[2])
    if zygote is None:
        if not _zygotes:
            atexit.register(close_all)
        zygote = _zygotes[args[2]] = Zygote(args[2], _START_ENV)
    return zygote.spawn(args, env, log_path, stderr_path)


def run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(args, capture_output=True, text=True, timeout=timeout)``
    for what a zygote can start (``forkable``), forked."""
    env = dict(os.environ)
    if not forkable(args, env):
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    with tempfile.TemporaryDirectory(prefix="swarm-run-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        child = spawn(args, env, out, err)
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
        return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())


def close_all() -> None:
    while _zygotes:
        _zygotes.popitem()[1].close()


if __name__ == "__main__":
    # As `python -m` in the test process's directory would have it, not this file's.
    sys.path[0] = os.getcwd()
    PROGRAM = sys.argv[1]
    forked = serve(int(sys.argv[2]), PROGRAM)
    if forked is not None:
        child_main(PROGRAM, *forked)
