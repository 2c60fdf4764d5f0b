"""swarm-cli as the tests run it: against a test controller, and a follow
command's output read line by line with deadlines."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

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
