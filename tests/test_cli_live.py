"""swarm-cli's live commands against a real controller and a real agent:
``shell`` in a real terminal (a tmux pane: raw mode, window size and
SIGWINCH, Ctrl-C, exit codes, detach and reattach), ``shell`` with piped
stdin, ``protocol --follow`` and ``events --follow`` (Ctrl-C ends them
cleanly; a reconnect after a controller restart neither repeats nor misses
an event), and the exit codes of the errors.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import select
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.cli import CLI_ENV, Follow, cli_args, following, run_here
from support.procs import FAST_HEARTBEAT, Controller, wait_for
from support.shells import ShellDrone, start_shell_drone

pytestmark = pytest.mark.timeout(120)

_sockets = itertools.count()


class Drone(ShellDrone):
    def cli_args(self, *args: str) -> list[str]:
        return cli_args(self.controller, *args)


def start_drone(root: Path, name: str = "live") -> Drone:
    # `protocol --follow` waits for heartbeats (every 4th of them, sampled).
    made = start_shell_drone(root, name, heartbeat_interval=FAST_HEARTBEAT)
    return Drone(made.controller, made.agent, made.home)


@pytest.fixture(scope="module")
def drone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drone]:
    made = start_drone(tmp_path_factory.mktemp("cli-live"))
    try:
        yield made
    finally:
        made.stop()


# -- a terminal to run the CLI in --------------------------------------------------------


class Tmux:
    """A tmux server of its own (its own socket, no user config) with one
    detached session of a fixed size: the admin's terminal."""

    def __init__(self) -> None:
        self.socket = f"swarm-cli-test-{os.getpid()}-{next(_sockets)}"

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert result.returncode == 0, f"tmux {args[0]}: {result.stderr}"
        return result.stdout

    def start(self, command: str, *, cols: int, rows: int) -> None:
        self("new-session", "-d", "-s", "cli", "-x", str(cols), "-y", str(rows), command)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-J", "-t", "cli")

    def wait(self, pattern: str, what: str, timeout: float = 15.0) -> re.Match[str]:
        found: re.Match[str] | None = None

        def seen() -> bool:
            nonlocal found
            found = re.search(pattern, self.screen(), re.MULTILINE)
            return found is not None

        try:
            wait_for(seen, timeout=timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{self.screen()}") from None
        assert found is not None
        return found

    def type(self, line: str) -> None:
        self("send-keys", "-t", "cli", "-l", line)
        self("send-keys", "-t", "cli", "Enter")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    term = Tmux()
    try:
        yield term
    finally:
        term.kill()


def in_pane(drone: Drone, tmp_path: Path, *args: str) -> str:
    """A pane command: the terminal's settings before and after the CLI (to
    compare), the CLI, then its exit code on the screen, and the pane stays."""
    cli = shlex.join(["env", *(f"{k}={v}" for k, v in CLI_ENV.items()), *drone.cli_args(*args)])
    before, after = shlex.quote(str(tmp_path / "stty.before")), shlex.quote(str(tmp_path / "stty.after"))
    return f"stty -g > {before}; {cli}; echo CLI-EXIT=$?; stty -g > {after}; exec sleep 600"


# -- shell -----------------------------------------------------------------------------------


def test_shell_in_a_terminal_resize_ctrl_c_and_exit_code(drone: Drone, tmux: Tmux, tmp_path: Path) -> None:
    tmux.start(in_pane(drone, tmp_path, "shell", drone.name), cols=100, rows=30)
    opened = tmux.wait(r"swarm-cli: session (\S+) on live \(Enter ~\. detaches\)", "the session line")
    assert opened.group(1)
    # What is typed runs remotely; its output comes back to the pane.
    tmux.type("echo typed-$((6*7))")
    tmux.wait(r"^typed-42\s*$", "the command's output")
    # The remote terminal has the pane's size, and follows it (SIGWINCH).
    tmux.type("echo size-$(stty size | tr ' ' x)")
    tmux.wait(r"^size-30x100\s*$", "the pane's size remotely")
    tmux("resize-window", "-t", "cli", "-x", "120", "-y", "40")
    tmux.type("echo size-$(stty size | tr ' ' x)")
    tmux.wait(r"^size-40x120\s*$", "the new size remotely")
    # Ctrl-C goes to the remote foreground job, not to the CLI.
    tmux.type("sleep 100")
    wait_for(lambda: drone.processes("sleep"), what="sleep running in the remote shell")
    tmux("send-keys", "-t", "cli", "C-c")
    wait_for(lambda: not drone.processes("sleep"), what="the remote sleep interrupted")
    tmux.type("echo after-$((2+3))")
    tmux.wait(r"^after-5\s*$", "the shell still there after Ctrl-C")
    assert "CLI-EXIT" not in tmux.screen()
    # The remote exit status is the CLI's; the terminal is as it was.
    tmux.type("exit 7")
    tmux.wait(r"^CLI-EXIT=7\s*$", "the CLI's exit code")
    after = tmp_path / "stty.after"
    wait_for(lambda: after.exists() and after.read_text(), what="the terminal settings after")
    assert after.read_text() == (tmp_path / "stty.before").read_text()


def test_shell_detach_with_escape_and_reattach(drone: Drone, tmux: Tmux, tmp_path: Path) -> None:
    tmux.start(in_pane(drone, tmp_path, "shell", drone.name), cols=80, rows=24)
    session = tmux.wait(r"swarm-cli: session (\S+) on live", "the session line").group(1)
    tmux.type("KEPT=kept-$((40+2)); echo marker-$KEPT")
    tmux.wait(r"^marker-kept-42\s*$", "the first command's output")
    # A ~ not after Enter is typed as it is; after Enter, ~. detaches.
    tmux.type("echo tilde~.ok")
    tmux.wait(r"^tilde~\.ok\s*$", "a ~ in the middle of a line sent as it is")
    tmux("send-keys", "-t", "cli", "-l", "~.")
    tmux.wait(r"^CLI-EXIT=0\s*$", "the CLI detached")
    screen = tmux.screen()
    assert f"swarm-cli shell live --session {session}" in screen.replace("\n", "")
    after = tmp_path / "stty.after"
    wait_for(lambda: after.exists() and after.read_text(), what="the terminal settings after")
    assert after.read_text() == (tmp_path / "stty.before").read_text()
    assert drone.processes("bash"), "the detached shell lives on"

    # Back to the same shell: its variable is still set, recent output replayed.
    again = Tmux()
    try:
        again.start(in_pane(drone, tmp_path, "shell", drone.name, "--session", session), cols=80, rows=24)
        again.wait(rf"swarm-cli: session {session} on live", "the reattached session")
        again.wait(r"^marker-kept-42\s*$", "the replayed output")
        again.type("echo again-$KEPT")
        again.wait(r"^again-kept-42\s*$", "the same shell")
        again.type("exit")
        again.wait(r"^CLI-EXIT=0\s*$", "the shell's own exit code")
    finally:
        again.kill()


def test_shell_with_piped_stdin(drone: Drone) -> None:
    ran = subprocess.run(
        drone.cli_args("shell", drone.name),
        input=b"echo hi-$((6*7))\nexit 3\n",
        capture_output=True,
        timeout=60,
        env=CLI_ENV,
    )
    assert ran.returncode == 3, ran.stderr
    assert re.search(rb"[\r\n]hi-42\r\n", ran.stdout), ran.stdout  # output, not the echoed command line
    assert re.fullmatch(rb"swarm-cli: session \S+ on live\n", ran.stderr), ran.stderr
    # Input without a last newline still runs; its end is the shell's end of file.
    ran = subprocess.run(
        drone.cli_args("shell", drone.name),
        input=b"echo no-newline-$((1+1))",
        capture_output=True,
        timeout=60,
        env=CLI_ENV,
    )
    assert ran.returncode == 0, ran.stderr
    assert re.search(rb"[\r\n]no-newline-2\r\n", ran.stdout), ran.stdout
    # An end of file typed while a command runs is lost; the next prompt gets another.
    ran = subprocess.run(
        drone.cli_args("shell", drone.name),
        input=b"sleep 0.5; echo slept-$((1+1))\n",
        capture_output=True,
        timeout=30,
        env=CLI_ENV,
    )
    assert ran.returncode == 0 and re.search(rb"[\r\n]slept-2\r\n", ran.stdout), (ran.stdout, ran.stderr)
    # No input at all: the shell ends at once.
    ran = subprocess.run(
        drone.cli_args("shell", drone.name),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        env=CLI_ENV,
    )
    assert ran.returncode == 0, ran.stderr


def test_shell_sigterm_detaches_and_the_session_reattaches(drone: Drone) -> None:
    proc = subprocess.Popen(
        drone.cli_args("shell", drone.name),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=CLI_ENV,
        start_new_session=True,
    )
    try:
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(b"MARK=kept-$((40+2))\n")
        proc.stdin.flush()
        readable, _, _ = select.select([proc.stderr], [], [], 15)
        assert readable, "no session line"
        opened = re.match(rb"swarm-cli: session (\S+) on live\n", proc.stderr.readline())
        assert opened, "no session line"
        session = opened.group(1).decode()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
        said = proc.stderr.read().decode()
        assert f"detached from session {session} on SIGTERM" in said, said
        assert f"swarm-cli shell live --session {session}" in said, said
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stderr):
            if stream is not None:
                stream.close()

    def state() -> str:
        status, body = drone.controller.admin("GET", "/admin/api/shells")
        assert status == 200, body
        return next(str(s["state"]) for s in body["shells"] if s["id"] == session)

    wait_for(lambda: state() == "detached", what="the session detached, not closed")
    ran = subprocess.run(
        drone.cli_args("shell", drone.name, "--session", session),
        input=b"exit ${MARK#kept-}\n",
        capture_output=True,
        timeout=30,
        env=CLI_ENV,
    )
    assert ran.returncode == 42, ran.stderr  # the same shell: MARK was set before the detach


def test_errors_exit_codes_and_one_line(drone: Drone, tmp_path: Path) -> None:
    """The live commands' refusals come before any terminal or stream is
    opened: swarm-cli's main in this process (support/cli.run_here), not a
    Python started for each of the eleven."""
    key_file = drone.controller.info["admin_key_file"]

    def cli(
        *args: str, url: str | None = None, key: str | Path = key_file
    ) -> subprocess.CompletedProcess[str]:
        return run_here(url or drone.controller.admin_url, key, *args)

    unknown = cli("shell", "no-such-drone")
    assert unknown.returncode == 1 and len(unknown.stderr.splitlines()) == 1, unknown.stderr
    assert "404" in unknown.stderr and "no-such-drone" in unknown.stderr
    gone = cli("shell", drone.name, "--session", "s-does-not-exist")
    assert gone.returncode == 1 and "s-does-not-exist" in gone.stderr, gone.stderr
    for command in (["shell", drone.name], ["protocol", "--follow"], ["events", "--follow"]):
        unreachable = cli(*command, url="http://127.0.0.1:9")
        assert unreachable.returncode == 3, (command, unreachable.stderr)
        assert unreachable.stderr.startswith("swarm-cli: cannot reach the controller at http://127.0.0.1:9")
        assert len(unreachable.stderr.splitlines()) == 1, unreachable.stderr
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not-the-admin-key-at-all\n")
    for command in (["shell", drone.name], ["protocol", "--follow"]):
        refused = cli(*command, key=wrong)
        assert refused.returncode == 1 and "401" in refused.stderr, (command, refused.stderr)
        assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert cli("protocol", "--sample", "0").returncode == 2


def test_without_aiohttp_the_live_commands_say_what_to_install(drone: Drone) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = drone.cli_args(*args)
        # None in sys.modules: "import aiohttp" fails as if it were not installed.
        argv[1:3] = [
            "-c",
            "import sys; sys.modules['aiohttp'] = None; from swarm.cli.main import main; main()",
        ]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env=CLI_ENV, stdin=subprocess.DEVNULL
        )

    for command in (["shell", drone.name], ["protocol", "--follow"], ["events", "--follow"]):
        missing = cli(*command)
        assert missing.returncode == 2, missing.stderr
        assert missing.stderr.startswith("swarm-cli: install build-swarm[cli] for swarm-cli "), missing.stderr
    assert cli("status").returncode == 0
    recent = cli("protocol", "--limit", "1")
    assert recent.returncode == 0 and " live " in recent.stdout, recent.stderr


# -- follow ----------------------------------------------------------------------------------


def test_protocol_follow_and_recent(drone: Drone) -> None:
    with following(drone.cli_args("protocol", "--follow", "--drone", drone.name)) as follow:
        line = follow.until(lambda text: " heartbeat " in text, "a heartbeat")
        assert re.match(r"\d\d:\d\d:\d\d\.\d{3}  in   live\s+heartbeat\s+\d+ B$", line), line
        assert follow.interrupt() == 0
        assert follow.stderr() == ""
    # --json: one API object per line; --sample keeps every Nth heartbeat.
    argv = drone.cli_args("--json", "protocol", "--follow", "--type", "heartbeat", "--sample", "4")
    with following(argv) as follow:
        line = follow.until(lambda text: text.startswith("{"), "a JSON line")
        first = json.loads(line)
        assert first["type"] == "heartbeat" and first["drone_id"] == drone.agent.drone_id
        follow.until(lambda text: len(follow.lines) >= 3, "three sampled heartbeats")
        assert follow.interrupt() == 0
    seqs = [json.loads(text)["seq"] for text in follow.lines[:3]]
    assert all(b - a >= 4 for a, b in itertools.pairwise(seqs)), seqs  # one drone: every 4th of its own
    recent = subprocess.run(
        drone.cli_args("protocol", "--limit", "5", "--type", "heartbeat"),
        capture_output=True,
        text=True,
        timeout=60,
        env=CLI_ENV,
    )
    assert recent.returncode == 0, recent.stderr
    assert len(recent.stdout.splitlines()) == 5 and all(" live " in x for x in recent.stdout.splitlines())


def test_events_follow_shows_new_events(drone: Drone) -> None:
    with following(drone.cli_args("events", "--follow", "--limit", "1")) as follow:
        status, reply = drone.controller.admin("POST", f"/admin/api/drones/{drone.name}/ping")
        assert status == 200, reply
        follow.until(lambda text: "drone_pinged" in text, "the ping's event")
        assert follow.interrupt() == 0
        assert follow.stderr() == ""


def events_clients(controller: Controller) -> float:
    """Open /ws/events websockets, as the controller's /metrics counts them."""
    status, text = controller.admin("GET", "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "swarm_websocket_clients" and sample.labels["endpoint"] == "/ws/events":
                return sample.value
    return 0.0


def test_events_follow_resumes_after_a_controller_restart(controller: Controller) -> None:
    def token_events(follow: Follow, name: str) -> list[str]:
        return [line for line in follow.lines if "token_created" in line and name in line]

    with following(cli_args(controller, "events", "--follow", "--type", "token_created")) as follow:
        # Its websocket open (not only its first GET of recent events): only a
        # stream it has had is followed through a restart.
        wait_for(lambda: events_clients(controller) == 1, what="the CLI's /ws/events")
        controller.create_token(name="before-restart")
        follow.until(lambda text: "before-restart" in text, "the first event")
        controller.terminate()
        controller.restart()
        controller.create_token(name="after-restart")
        follow.until(lambda text: "after-restart" in text, "the event after the restart", timeout=30)
        assert follow.interrupt() == 0
        stderr = follow.stderr()
    assert len(token_events(follow, "before-restart")) == 1
    assert len(token_events(follow, "after-restart")) == 1
    assert "reconnecting" in stderr and "reconnected to /ws/events" in stderr, stderr
    assert "not shown" not in stderr, stderr
