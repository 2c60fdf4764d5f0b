"""Out-of-band actions (swarm.controller.oob): ssh command lines, reboot
templates and the process runner, the ssh parts against a real sshd."""

from __future__ import annotations

import asyncio
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from swarm.controller.errors import InvalidArgument
from swarm.controller.eventloop import LoopRunner
from swarm.controller.oob import (
    HARD_RESTART_COMMAND,
    REBOOT_PRESETS,
    RESTART_COMMAND,
    SSH_FAILED,
    CommandResult,
    CommandTemplate,
    SshSettings,
    SshTarget,
    hard_restart_command,
    reboot_template,
    restart_command,
    run,
    ssh_argv,
)

from support.procs import wait_for
from support.sshd import SshServer, known_hosts_line, make_key

BASE = ["-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "StrictHostKeyChecking=yes"]
BASE += ["-o", "ControlPath=none"]
DRONE = {"vmid": "101", "name": "drone-01", "host": "drone-01.lan", "drone_id": "d7"}


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children()}


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie nobody has reaped yet
    (killed grandchildren go to whatever PID 1 is, which may not reap)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_until(predicate: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def server(sshd: SshServer) -> Iterator[SshServer]:
    yield sshd
    # ssh without a tty leaves the remote command running when the client
    # is killed; nothing of one test may linger into the next.
    sshd.kill_sessions()


# -- targets --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "user", "port"),
    [
        ("drone1", "drone1", None, None),
        ("root@pve1.lan", "pve1.lan", "root", None),
        ("root@pve1.lan:2222", "pve1.lan", "root", 2222),
        ("pve1:22", "pve1", None, 22),
        ("swarm_admin@10.0.0.5", "10.0.0.5", "swarm_admin", None),
        ("[fd00::5]", "fd00::5", None, None),
        ("root@[fd00::5]:2200", "fd00::5", "root", 2200),
        ("  root@DRONE-7.Example.org  ", "DRONE-7.Example.org", "root", None),
    ],
)
def test_target_parses(text: str, host: str, user: str | None, port: int | None) -> None:
    target = SshTarget.parse(text)
    assert target == SshTarget(host=host, user=user, port=port)
    assert SshTarget.parse(str(target)) == target


@pytest.mark.parametrize(
    "text",
    [
        "",
        "@host",
        "root@",
        "root@@host",
        "-oProxyCommand=reboot",
        "root@-oProxyCommand=reboot",
        "root@host;reboot",
        "root@$(reboot)",
        "ro ot@host",
        "-l@host",
        "root;id@host",
        "host:0",
        "host:65536",
        "host:22x",
        "host:",
        "host-",
        "a..b",
        "under_score.lan",
        "999.1.1.1",
        "1.2.3",
        "fd00::5",
        "[fd00::5",
        "[fd00::5]x",
        "[pve1]:22",
        "[fe80::1%eth0]",
        "a" * 64 + ".lan",
    ],
)
def test_target_rejects(text: str) -> None:
    with pytest.raises(InvalidArgument):
        SshTarget.parse(text)


def test_target_checks_fields_when_built_directly() -> None:
    with pytest.raises(InvalidArgument, match="host name"):
        SshTarget(host="-oProxyCommand=reboot")
    with pytest.raises(InvalidArgument, match="user name"):
        SshTarget(host="pve1", user="-F/etc/passwd")
    with pytest.raises(InvalidArgument, match="port"):
        SshTarget(host="pve1", port=70000)


# -- ssh command lines ----------------------------------------------------------


def test_ssh_argv_defaults_leave_user_and_port_to_ssh_config() -> None:
    argv = ssh_argv(SshTarget.parse("drone1"), SshSettings(), RESTART_COMMAND)
    assert argv == ["ssh", *BASE, "--", "drone1", "rc-service swarm-agent restart"]


def test_ssh_argv_with_every_setting() -> None:
    settings = SshSettings(
        ssh="/usr/bin/ssh",
        identity_file=Path("/var/lib/build-swarm/ssh/id_ed25519"),
        known_hosts_file=Path("/var/lib/build-swarm/ssh/known_hosts"),
        connect_timeout=9,
        options=("ServerAliveInterval=5", "BatchMode=no"),
    )
    argv = ssh_argv(SshTarget.parse("root@[fd00::5]:2222"), settings, HARD_RESTART_COMMAND)
    assert argv == [
        "/usr/bin/ssh",
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=9",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ControlPath=none",
        "-o",
        'UserKnownHostsFile="/var/lib/build-swarm/ssh/known_hosts"',
        "-i",
        "/var/lib/build-swarm/ssh/id_ed25519",
        "-o",
        "IdentitiesOnly=yes",
        # After the controller's own: for ssh the first value wins.
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "BatchMode=no",
        "-p",
        "2222",
        "-l",
        "root",
        "--",
        "fd00::5",
        HARD_RESTART_COMMAND,
    ]


def test_ssh_paths_escape_percent_and_keep_spaces() -> None:
    settings = SshSettings(identity_file=Path("/keys/100%/id"), known_hosts_file=Path("/keys/known hosts"))
    argv = ssh_argv(SshTarget.parse("pve1"), settings, "true")
    assert 'UserKnownHostsFile="/keys/known hosts"' in argv
    assert argv[argv.index("-i") + 1] == "/keys/100%%/id"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"options": ("BatchMode no",)},
        {"options": ("-oBatchMode=no",)},
        {"options": ("=yes",)},
        {"options": ("LocalCommand=a\nb",)},
        {"connect_timeout": 0},
        {"ssh": ""},
        {"known_hosts_file": Path('/etc/"known_hosts')},
        {"identity_file": Path("/keys/id\n")},
    ],
)
def test_ssh_settings_reject(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        SshSettings(**kwargs)


def test_ssh_argv_rejects_empty_command() -> None:
    with pytest.raises(InvalidArgument):
        ssh_argv(SshTarget.parse("pve1"), SshSettings(), "  ")
    with pytest.raises(InvalidArgument):
        ssh_argv(SshTarget.parse("pve1"), SshSettings(), None)  # a login shell needs a terminal


def test_ssh_argv_for_a_terminal_keeps_batch_mode_and_strict_host_keys() -> None:
    """The admin's terminal when the agent is down (oobshell.py): -tt, and
    with no command the remote login shell; every safety option as for the healer."""
    argv = ssh_argv(SshTarget.parse("root@drone1:2222"), SshSettings(), None, tty=True)
    assert argv == ["ssh", "-tt", *BASE[1:], "-p", "2222", "-l", "root", "--", "drone1"]
    with_command = ssh_argv(SshTarget.parse("drone1"), SshSettings(), "top", tty=True)
    assert with_command == ["ssh", "-tt", *BASE[1:], "--", "drone1", "top"]


def test_service_commands() -> None:
    assert RESTART_COMMAND == restart_command("swarm-agent") == "rc-service swarm-agent restart"
    assert HARD_RESTART_COMMAND == (
        "pkill -KILL -f '^supervise-daemon swarm-agent '; "
        "pkill -KILL -F /run/swarm-agent.pid -f swarm-agent 2>/dev/null; "
        "pkill -KILL -f '^[^ ]*python[^ ]*( -[^ ]+)* [^ ]*/swarm-agent( |$)'; "
        "rc-service swarm-agent zap; rc-service swarm-agent start"
    )
    for bad in ("swarm agent", "swarm-agent;id", "-x", "a-service-name-too-long", ""):
        with pytest.raises(InvalidArgument):
            hard_restart_command(bad)


# -- reboot templates -------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "fields", "command"),
    [
        ("proxmox-lxc", {"vmid"}, "pct reboot 101"),
        ("proxmox-qemu", {"vmid"}, "qm reboot 101"),
        ("lxc", {"name"}, "lxc-stop -n drone-01 -t 30; lxc-start -n drone-01"),
        ("libvirt", {"name"}, "virsh reboot drone-01"),
    ],
)
def test_reboot_presets_render_for_a_drone(preset: str, fields: set[str], command: str) -> None:
    template = reboot_template(preset)
    assert template.text == REBOOT_PRESETS[preset]
    assert template.fields == fields
    rendered = template.render(DRONE)
    assert rendered == command
    settings = SshSettings(known_hosts_file=Path("/etc/build-swarm/known_hosts"))
    assert ssh_argv(SshTarget.parse("root@pve1.lan"), settings, rendered) == [
        "ssh",
        *BASE,
        "-o",
        'UserKnownHostsFile="/etc/build-swarm/known_hosts"',
        "-l",
        "root",
        "--",
        "pve1.lan",
        command,
    ]


def test_every_preset_is_covered() -> None:
    assert set(REBOOT_PRESETS) == {"proxmox-lxc", "proxmox-qemu", "lxc", "libvirt"}


@pytest.mark.parametrize("name", ["vmid", "name", "host", "drone_id"])
@pytest.mark.parametrize(
    "value",
    [
        "101; reboot",
        "$(reboot)",
        "`reboot`",
        "-f",
        "--force",
        "a b",
        "x\n",
        "drone'1",
        "../etc",
        "a/b",
        "*",
        "\u0661\u0660\u0661",  # Arabic-Indic digits: \d would take them
        "",
    ],
)
def test_hostile_values_are_refused(name: str, value: str) -> None:
    template = CommandTemplate.parse(f"do-it {{{name}}}")
    with pytest.raises(InvalidArgument):
        template.render({**DRONE, name: value})


@pytest.mark.parametrize("value", ["drone-01", "1e10"])
def test_vmid_is_digits_only(value: str) -> None:
    with pytest.raises(InvalidArgument, match="vmid"):
        reboot_template("proxmox-lxc").render({"vmid": value})


def test_valid_values_are_quoted_into_place() -> None:
    template = CommandTemplate.parse("echo {drone_id} {host} {name} {vmid}")
    values = {"drone_id": "d.7_x-y", "host": "10.0.0.5", "name": "Drone.01", "vmid": "0042"}
    rendered = template.render(values)
    assert rendered == "echo " + " ".join(
        shlex.quote(values[k]) for k in ("drone_id", "host", "name", "vmid")
    )
    assert shlex.split(rendered) == ["echo", "d.7_x-y", "10.0.0.5", "Drone.01", "0042"]


def test_values_a_template_does_not_use_are_not_needed() -> None:
    assert reboot_template("proxmox-qemu").render({"vmid": "7", "name": "not a valid name"}) == "qm reboot 7"


def test_missing_value_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"\{name\}"):
        reboot_template("libvirt").render({"vmid": "101"})


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "reboot {foo}",
        "reboot {}",
        "reboot {0}",
        "reboot {name!r}",
        "reboot {name:>20}",
        "reboot {name.upper}",
        "reboot {name[0]}",
        "reboot {name",
        "reboot }",
        "echo ${HOME}",
        "reboot {name}\nrm -rf /",
        "reboot {name} " + "x" * 1000,  # at most 1,000 characters
    ],
)
def test_bad_templates_are_refused_when_parsed(text: str) -> None:
    with pytest.raises(InvalidArgument):
        CommandTemplate.parse(text)


def test_literal_braces_and_custom_templates() -> None:
    template = reboot_template("ssh-hook --vm={{{name}}} {drone_id}")
    assert template.fields == {"name", "drone_id"}
    assert template.render(DRONE) == "ssh-hook --vm={drone-01} d7"


# -- running commands -------------------------------------------------------------
# On both loops the controller may run on (on_loop): their subprocess
# transports are different classes.


def test_run_captures_interleaved_output_and_exit_code(on_loop: LoopRunner) -> None:
    code = "import sys; print('out', flush=True); print('err', file=sys.stderr, flush=True); sys.exit(4)"
    result = on_loop(run([sys.executable, "-c", code], timeout=30))
    assert (result.exit_code, result.output, result.ok, result.timed_out) == (4, "out\nerr\n", False, False)
    assert result.argv == (sys.executable, "-c", code)
    assert result.summary().startswith("exit 4 after ")
    assert result.summary().endswith(": err")


def test_run_writes_stdin_and_closes_it(on_loop: LoopRunner) -> None:
    data = b"".join(b"line %d\n" % i for i in range(20_000))
    result = on_loop(run(["sh", "-c", "wc -l; cat >/dev/null"], timeout=30, stdin=data))
    assert (result.exit_code, result.output.strip()) == (0, "20000")


def test_run_keeps_the_tail_of_long_output(on_loop: LoopRunner) -> None:
    code = "import sys; sys.stdout.buffer.write(b'x' * 100000 + b'\\n\\xff-end\\n')"
    result = on_loop(run([sys.executable, "-c", code], timeout=30, output_limit=1000))
    assert result.ok and result.truncated
    assert len(result.output.encode()) <= 1002  # U+FFFD for the stray byte is 3 bytes
    assert result.output.endswith("x\n\ufffd-end\n")


def test_run_timeout_kills_the_whole_process_group(tmp_path: Path, on_loop: LoopRunner) -> None:
    pidfile = tmp_path / "pid"
    # The shell's background child holds the output pipe open too.
    script = f"sleep 300 & echo $! > {pidfile}; wait"
    before = children()
    result = on_loop(run(["sh", "-c", script], timeout=2))
    assert result.timed_out and result.exit_code is None and not result.ok
    assert 2 <= result.duration < 10
    assert result.summary().startswith("timed out after ")
    # SIGKILL was sent to the group before run() returned; on a loaded machine the
    # grandchild may take a moment to be scheduled and die.
    grandchild = int(pidfile.read_text())
    wait_for(lambda: gone(grandchild), 10, f"the background sleep {grandchild} killed with its group")
    assert children() == before


def test_cancelling_the_caller_kills_the_command(tmp_path: Path, on_loop: LoopRunner) -> None:
    pidfile = tmp_path / "pid"
    before = children()

    async def scenario() -> None:
        task = asyncio.create_task(run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 300"], timeout=60))
        await wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), "the command to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    on_loop(scenario())
    assert gone(int(pidfile.read_text()))
    assert children() == before


def test_missing_program_is_a_result_not_an_exception(tmp_path: Path, on_loop: LoopRunner) -> None:
    result = on_loop(run([str(tmp_path / "no-such-ssh"), "-V"], timeout=5))
    assert result.exit_code is None and not result.ok and not result.timed_out
    assert result.error == f"{tmp_path / 'no-such-ssh'}: No such file or directory"
    assert result.summary() == f"could not run: {result.error}"


def test_summary_shows_signals_and_shortens_long_lines() -> None:
    result = CommandResult(argv=("x",), exit_code=-9, output="first\n" + "y" * 300 + "\n\n", duration=1.25)
    assert result.summary() == "killed by signal 9 after 1.2s: " + "y" * 197 + "..."


# -- through a real sshd ----------------------------------------------------------


def test_remote_output_and_exit_code(server: SshServer) -> None:
    argv = ssh_argv(server.target, server.settings, "echo hi; echo oops >&2; exit 3")
    result = asyncio.run(run(argv, timeout=30))
    assert result.exit_code == 3, result.output
    assert sorted(result.output.splitlines()) == ["hi", "oops"]


def test_rendered_template_runs_remotely_as_given(server: SshServer) -> None:
    command = CommandTemplate.parse("printf '%s|' {vmid} {name} {host} {drone_id}").render(DRONE)
    result = asyncio.run(run(ssh_argv(server.target, server.settings, command), timeout=30))
    assert result.ok, result.output
    assert result.output == "101|drone-01|drone-01.lan|d7|"


def test_known_hosts_path_with_space_and_percent(server: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known hosts %d"
    known_hosts.write_text(server.known_hosts.read_text())
    settings = SshSettings(ssh=server.ssh, identity_file=server.identity, known_hosts_file=known_hosts)
    result = asyncio.run(run(ssh_argv(server.target, settings, "echo ok"), timeout=30))
    assert (result.exit_code, result.output) == (0, "ok\n")


def test_remote_command_killed_at_the_timeout(server: SshServer, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    before = children()
    argv = ssh_argv(server.target, server.settings, f"touch {marker}; exec sleep 300")
    result = asyncio.run(run(argv, timeout=5))
    assert result.timed_out and result.exit_code is None, result.output
    assert marker.exists(), "the remote command never started; the timeout only cut the login"
    assert 5 <= result.duration < 15
    assert children() == before


def test_cancelled_ssh_leaves_no_process(server: SshServer, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    before = children()

    async def scenario() -> None:
        argv = ssh_argv(server.target, server.settings, f"touch {marker}; exec sleep 300")
        task = asyncio.create_task(run(argv, timeout=60))
        await wait_until(marker.exists, "the remote command to start")
        assert children() - before, "ssh should be running now"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert children() == before


def test_another_host_key_fails_fast(server: SshServer, tmp_path: Path) -> None:
    impostor = make_key(tmp_path / "impostor", "impostor")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_line(server.port, impostor))
    settings = SshSettings(ssh=server.ssh, identity_file=server.identity, known_hosts_file=known_hosts)
    result = asyncio.run(run(ssh_argv(server.target, settings, "echo should-not-run"), timeout=30))
    assert result.exit_code == SSH_FAILED and not result.timed_out
    assert "Host key verification failed." in result.output
    assert "should-not-run" not in result.output
    assert result.duration < settings.connect_timeout
    assert result.summary().endswith(": Host key verification failed.")
    assert known_hosts.read_text() == known_hosts_line(server.port, impostor)


def test_unknown_host_key_is_never_accepted(server: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    settings = SshSettings(
        ssh=server.ssh,
        identity_file=server.identity,
        known_hosts_file=known_hosts,
        options=("StrictHostKeyChecking=accept-new",),
    )
    result = asyncio.run(run(ssh_argv(server.target, settings, "echo should-not-run"), timeout=30))
    assert result.exit_code == SSH_FAILED
    assert "Host key verification failed." in result.output
    assert known_hosts.read_text() == ""


def test_missing_ssh_binary(server: SshServer, tmp_path: Path) -> None:
    settings = SshSettings(ssh=str(tmp_path / "bin" / "ssh"))
    result = asyncio.run(run(ssh_argv(server.target, settings, "true"), timeout=30))
    assert result.exit_code is None and result.error is not None
    assert result.summary() == f"could not run: {tmp_path / 'bin' / 'ssh'}: No such file or directory"


def test_hard_restart_kills_supervisor_and_agent_but_not_itself(server: SshServer, tmp_path: Path) -> None:
    """The default hard restart on a stand-in for an OpenRC drone: a
    process with supervise-daemon's command line, one started from the
    agent's entry point, one named only by the pid file, and an rc-service
    that logs what it is asked. A unique service name keeps the pkills off
    anything else on this machine. (tests/test_openrc.py runs it against
    the real thing.)"""
    service = f"oobt-{secrets.token_hex(3)}"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    agent_script = bin_dir / service
    agent_script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(300)\n")
    agent_script.chmod(0o755)
    rc_log = tmp_path / "rc-service.log"
    rc_service = bin_dir / "rc-service"
    rc_service.write_text(f'#!/bin/sh\necho "$*" >> {rc_log}\necho "* $1: $2"\n')
    rc_service.chmod(0o755)
    # As supervise-daemon.sh runs it: argv "supervise-daemon SERVICE --start
    # ... COMMAND -- ARGS". Python takes argv[1] as its script, here one that
    # sleeps.
    (tmp_path / service).write_text("import time\ntime.sleep(300)\n")
    supervisor = subprocess.Popen(
        ["supervise-daemon", service, "--start", "--pidfile", f"/run/{service}.pid", str(agent_script), "--"],
        executable=sys.executable,
        cwd=tmp_path,
        start_new_session=True,
    )
    agent = subprocess.Popen([str(agent_script)], start_new_session=True)
    # An agent whose command line is not the entry point's: found by its pid
    # file, where the hard restart looks for it (as root, like the healer).
    pid_file = Path(f"/run/{service}.pid")
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", service], start_new_session=True
    )
    pid_file.write_text(f"{other.pid}\n")
    try:
        # Both must have exec'd before the pkills look for them.
        wait_for(lambda: psutil.Process(supervisor.pid).cmdline()[:2] == ["supervise-daemon", service])
        wait_for(lambda: psutil.Process(agent.pid).name() == service)
        command = f"PATH={bin_dir}:$PATH; {hard_restart_command(service)}"
        result = asyncio.run(run(ssh_argv(server.target, server.settings, command), timeout=30))
        assert result.ok, result.output
        assert result.output == f"* {service}: zap\n* {service}: start\n"
        assert rc_log.read_text() == f"{service} zap\n{service} start\n"
        assert supervisor.wait(timeout=10) == -9
        assert agent.wait(timeout=10) == -9
        assert other.wait(timeout=10) == -9
    finally:
        pid_file.unlink(missing_ok=True)
        for process in (supervisor, agent, other):
            process.kill()
            process.wait(timeout=10)
