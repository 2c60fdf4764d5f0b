"""swarm-cli as the tests run it: against a test controller, in this
process (``run_here``) or as a process of its own (``cli_args``: the live
commands), and a follow command's output read line by line with deadlines."""

from __future__ import annotations

import contextlib
import io
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from support.procs import Controller

CLI_ENV = {"HOME": "/nonexistent", "PATH": "/usr/bin:/bin"}  # no cli.toml of the machine's user


def cli_args(controller: Controller, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "swarm.cli.main",
        "--url",
        controller.admin_url,
        "--key-file",
        str(controller.info["admin_key_file"]),
        *args,
    ]


@contextlib.contextmanager
def _stdin(stream: TextIO) -> Iterator[None]:
    saved, sys.stdin = sys.stdin, stream
    try:
        yield
    finally:
        sys.stdin = saved


def run_here(url: str, key_file: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    """swarm-cli's ``main`` in this process against the admin tier at ``url``:
    what ``subprocess.run(..., capture_output=True, text=True)`` of the
    command gives (its exit code, stdout and stderr), without a Python
    started and swarm-cli imported for it (some 0.08 CPU-s a call). Its
    stdin is /dev/null, as with ``stdin=subprocess.DEVNULL``. For the
    commands that print and exit, and the live ones' refusals (they come
    before a terminal or stream is opened); the live ones themselves
    (``--follow``, ``shell``) run as processes (``Follow``), and test_cli.py
    runs the installed console script itself."""
    from swarm.cli.main import main as swarm_cli

    argv = ["--url", url, "--key-file", str(key_file), *args]
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    code: int
    with (
        open(os.devnull) as devnull,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        _stdin(devnull),
    ):
        try:
            swarm_cli(argv)
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:  # as the interpreter does with sys.exit("message")
                print(exc.code, file=sys.stderr)
                code = 1
    texts = []
    for stream in (out, err):
        stream.flush()
        assert isinstance(stream.buffer, io.BytesIO)
        texts.append(stream.buffer.getvalue().decode())
    return subprocess.CompletedProcess(["swarm-cli", *argv], code, texts[0], texts[1])


class Follow:
    """A follow command's stdout, read line by line with deadlines."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=CLI_ENV,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._partial = b""

    def until(self, predicate: Callable[[str], bool], what: str, timeout: float = 15.0) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for line in self.lines[checked:]:
                if predicate(line):
                    return line
            checked = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line with {what} in {timeout:g}s; got {self.lines[-20:]}")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"the command ended ({self.stderr()}) before {what}")
                *complete, self._partial = (self._partial + chunk).split(b"\n")
                self.lines += [line.decode() for line in complete]

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=10)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def following(argv: list[str]) -> Iterator[Follow]:
    follow = Follow(argv)
    try:
        yield follow
    finally:
        follow.close()
