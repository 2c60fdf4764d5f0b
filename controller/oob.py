"""Out-of-band actions on drones: the system OpenSSH client, hypervisor
command templates, and a subprocess runner that never leaves a process
behind.

Out-of-band means "not over the control stream": the healer reaches a
drone (or the hypervisor host under it) with ``ssh -o BatchMode=yes``, so
the admin's keys, ssh-agent and known_hosts work as usual, and nothing can
ever wait for a password or a host key prompt.

Safety rules:

* Every string that ends up on an ssh command line is checked here:
  targets (``SshTarget``) and settings (``SshSettings``) when they are
  made, templates (``CommandTemplate.parse``) when an admin saves them,
  and each drone-supplied value when a template is rendered. Values must
  match a strict pattern *and* are inserted ``shlex.quote``d; the host is
  placed after ``--`` so it can never be taken for an option.
* Host keys are always checked strictly (``StrictHostKeyChecking=yes``),
  also against the admin's own known_hosts files when no file is
  configured: an unattended healer that reboots machines must never trust
  a key it has not been told about (no ``accept-new``). Add a drone with
  ``ssh-keyscan`` (after checking the fingerprint) or one interactive
  login.
* ``run()`` gives the command its own process group and kills the whole
  group on timeout or cancellation. A remote command keeps running on the
  far side when the connection drops (ssh without a tty does not signal
  it), so remote commands should be short and safe to repeat.

ssh exits with 255 (``SSH_FAILED``) when ssh itself fails: no route,
refused, timed out, host key or authentication failure.

Use::

    target = SshTarget.parse("root@pve1.lan")            # when config is saved
    reboot = reboot_template("proxmox-lxc")             # likewise
    command = reboot.render({"vmid": "101"})            # when it is needed
    result = await run(ssh_argv(target, settings, command), timeout=120)
    message = result.summary()   # "exit 0 after 4.2s", "timed out after 120.0s", ...
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shlex
import signal
import string
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, cast

from swarm.controller.errors import InvalidArgument

SSH_FAILED: Final = 255

_SERVICE = re.compile(r"[a-z][a-z0-9_-]{0,14}")


def _check_service(service: str) -> None:
    # 15 characters: the kernel's process name (comm) of the service's program.
    if not _SERVICE.fullmatch(service):
        raise InvalidArgument(f"invalid service name {service!r}: a-z, 0-9, '_', '-', at most 15")


def restart_command(service: str = "swarm-agent") -> str:
    """The ladder's first step over ssh: an ordinary OpenRC restart (the
    init script's retry=TERM/15/KILL/5 already kills an agent that will
    not stop)."""
    _check_service(service)
    return f"rc-service {service} restart"


def hard_restart_command(service: str = "swarm-agent") -> str:
    """The second step, for when a restart did not help: supervise-daemon or
    OpenRC's idea of the service is stuck.

    Kill the supervisor first, else it respawns the agent: it is found by
    its command line (``supervise-daemon SERVICE --start ...``, as
    OpenRC's supervise-daemon.sh starts it). Then the agent, two ways:

    * by its pid file, ``/run/SERVICE.pid`` (the agent's default
      ``pid_file``), if that pid's command line names the service (a stale
      file's pid may belong to something else by now);
    * by its command line, ``PYTHON [-OPTIONS] .../SERVICE [ARGS]``, as the
      kernel starts an entry-point script, also after the agent restarted
      itself (it execs the same script). The pattern wants the
      interpreter first, so it never matches the shell running this very
      command line (``bash -c 'pkill ... SERVICE ...'``), which a plain
      ``pkill -f SERVICE`` would kill.

    The service is still marked started then, so ``zap`` it before
    ``start``. The exit code is start's. Builds run in sessions of their
    own and are not killed; the new agent and the controller's requeueing
    deal with them.
    """
    _check_service(service)
    supervisor = shlex.quote(f"^supervise-daemon {service} ")
    program = shlex.quote(f"^[^ ]*python[^ ]*( -[^ ]+)* [^ ]*/{service}( |$)")
    return (
        f"pkill -KILL -f {supervisor}; "
        f"pkill -KILL -F /run/{service}.pid -f {service} 2>/dev/null; "
        f"pkill -KILL -f {program}; "
        f"rc-service {service} zap; rc-service {service} start"
    )


RESTART_COMMAND: Final = restart_command()
HARD_RESTART_COMMAND: Final = hard_restart_command()

# Run on the hypervisor host; each needs the placeholders it names. pct, qm
# and virsh ask the guest to reboot cleanly (init, ACPI); for a guest too
# far gone to react an admin can save a harder template of their own
# (`qm reset {vmid}`, `virsh reset {name}`). lxc-stop hard-stops after its
# 30 s grace, and `;` starts the container even if it was down already.
REBOOT_PRESETS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "proxmox-lxc": "pct reboot {vmid}",
        "proxmox-qemu": "qm reboot {vmid}",
        "lxc": "lxc-stop -n {name} -t 30; lxc-start -n {name}",
        "libvirt": "virsh reboot {name}",
    }
)

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
# What a drone may supply for each placeholder. Everything these allow is
# shell-safe already; quoting anyway costs nothing if one is ever widened.
PLACEHOLDERS: Final[Mapping[str, re.Pattern[str]]] = MappingProxyType(
    {
        "vmid": re.compile(r"[0-9]{1,10}"),
        "name": re.compile(_NAME),
        "host": re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}"),
        "drone_id": re.compile(_NAME),
    }
)

_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_OPTION = re.compile(r"[A-Za-z][A-Za-z0-9]*=[^\x00-\x1f\x7f]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_host(host: str) -> None:
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidArgument(f"invalid IPv6 address {host!r}") from None
        if address.scope_id is not None:
            raise InvalidArgument(f"IPv6 address {host!r}: zone indexes (%...) are not supported")
        return
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidArgument(f"invalid IPv4 address {host!r}") from None
        return
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise InvalidArgument(
            f"invalid host name {host!r}: letters, digits, '-' and '.'-separated labels only"
        )


@dataclass(frozen=True, slots=True)
class SshTarget:
    """Where to ssh to. ``host`` is a host name, an IPv4 address or an IPv6
    address (without brackets). A user or port left as None is up to
    ssh_config (``User``, ``Port``) and then ssh's defaults (the
    controller's own user, port 22)."""

    host: str
    user: str | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        _check_host(self.host)
        if self.user is not None and not _USER.fullmatch(self.user):
            raise InvalidArgument(
                f"invalid user name {self.user!r}: a letter or '_', then letters, digits, '_', '.', '-'"
            )
        if self.port is not None and not 1 <= self.port <= 65535:
            raise InvalidArgument(f"invalid port {self.port}: must be 1-65535")

    @classmethod
    def parse(cls, text: str) -> SshTarget:
        """``host``, ``user@host``, ``host:port``, ``user@host:port``; an IPv6
        address goes in brackets: ``root@[fd00::5]:22``."""
        spec = text.strip()
        user: str | None = None
        if "@" in spec:
            user, _, spec = spec.partition("@")
            if not user:
                raise InvalidArgument(f"ssh target {text!r}: empty user name before '@'")
        port_text: str | None = None
        if spec.startswith("["):
            host, bracket, rest = spec[1:].partition("]")
            if not bracket or ":" not in host:
                raise InvalidArgument(f"ssh target {text!r}: '[...]' must hold an IPv6 address")
            if rest:
                if not rest.startswith(":"):
                    raise InvalidArgument(f"ssh target {text!r}: unexpected {rest!r} after ']'")
                port_text = rest[1:]
        elif spec.count(":") > 1:
            raise InvalidArgument(f"ssh target {text!r}: write an IPv6 address in brackets, [addr]:port")
        else:
            host, colon, port_text_raw = spec.partition(":")
            port_text = port_text_raw if colon else None
        if not host:
            raise InvalidArgument(f"ssh target {text!r}: no host")
        port: int | None = None
        if port_text is not None:
            if not re.fullmatch(r"[0-9]{1,5}", port_text):
                raise InvalidArgument(f"ssh target {text!r}: port must be a number, not {port_text!r}")
            port = int(port_text)
        return cls(host=host, user=user, port=port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{host}{port}"


def _ssh_path(path: Path, what: str) -> str:
    """A path as ssh reads it: '%' starts a token there, so double it."""
    text = str(path)
    if not text or _CONTROL.search(text) or '"' in text:
        raise InvalidArgument(f"{what} {text!r}: empty, or contains a quote or control character")
    return text.replace("%", "%%")


@dataclass(frozen=True, slots=True)
class SshSettings:
    """How the controller runs ssh; one object for the whole controller.

    ``identity_file`` also sets ``IdentitiesOnly=yes``: a busy ssh-agent
    offering every key it holds can exhaust the server's MaxAuthTries
    before the right one. ``known_hosts_file`` replaces the admin's
    ~/.ssh/known_hosts (the global /etc/ssh/ssh_known_hosts still
    applies). ``options`` are extra ``-o Key=Value`` options; the
    controller's own come first on the command line, and for ssh the first
    value given wins, so these cannot switch off BatchMode or strict host
    key checking."""

    ssh: str = "ssh"
    identity_file: Path | None = None
    known_hosts_file: Path | None = None
    connect_timeout: int = 5
    options: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        # A list from a config file would make the settings unhashable.
        object.__setattr__(self, "options", tuple(self.options))
        if not self.ssh or _CONTROL.search(self.ssh):
            raise InvalidArgument(f"invalid ssh program {self.ssh!r}")
        if not 1 <= self.connect_timeout <= 600:
            raise InvalidArgument(f"ssh connect timeout {self.connect_timeout}: must be 1-600 seconds")
        for option in self.options:
            if not _OPTION.fullmatch(option):
                raise InvalidArgument(f"ssh option {option!r}: must be Key=Value on one line")
        if self.identity_file is not None:
            _ssh_path(self.identity_file, "ssh identity file")
        if self.known_hosts_file is not None:
            _ssh_path(self.known_hosts_file, "ssh known_hosts file")


def ssh_argv(
    target: SshTarget, settings: SshSettings, remote_command: str | None, *, tty: bool = False
) -> list[str]:
    """The ssh command line that runs ``remote_command`` (a shell command
    line, run by the remote user's login shell) on ``target``.

    ``tty=True`` is for an interactive terminal (the admin's shell when the
    agent is down, oobshell.py): ``-tt`` asks for a remote terminal even
    though ssh's own stdin is one we made, and ``remote_command`` may be
    None for the remote user's login shell. Everything else is the same:
    BatchMode, strict host keys, no shared connection."""
    if remote_command is None:
        if not tty:
            raise InvalidArgument("a remote command is needed without a terminal")
    elif not remote_command.strip() or "\0" in remote_command:
        raise InvalidArgument("empty remote command, or one with a NUL byte")
    argv = [
        settings.ssh,
        "-tt" if tty else "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={int(settings.connect_timeout)}",
        "-o",
        "StrictHostKeyChecking=yes",
        # A fresh connection every time: a shared master connection could
        # outlive run()'s process group, or hide that the host is gone.
        "-o",
        "ControlPath=none",
    ]
    if settings.known_hosts_file is not None:
        path = _ssh_path(settings.known_hosts_file, "ssh known_hosts file")
        argv += ["-o", f'UserKnownHostsFile="{path}"']
    if settings.identity_file is not None:
        argv += ["-i", _ssh_path(settings.identity_file, "ssh identity file"), "-o", "IdentitiesOnly=yes"]
    for option in settings.options:
        argv += ["-o", option]
    if target.port is not None:
        argv += ["-p", str(target.port)]
    if target.user is not None:
        argv += ["-l", target.user]
    argv += ["--", target.host]
    return argv if remote_command is None else [*argv, remote_command]


_FORMATTER = string.Formatter()
MAX_TEMPLATE: Final = 1000  # characters of a command template: a command line, not a script


@dataclass(frozen=True, slots=True)
class CommandTemplate:
    """A shell command line with ``{placeholder}``s from ``PLACEHOLDERS``
    (``{vmid}``, ``{name}``, ``{host}``, ``{drone_id}``); ``{{`` and ``}}``
    are literal braces. The template text is the admin's and trusted; the
    values are the drone's and are not."""

    text: str
    fields: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> CommandTemplate:
        if not text.strip():
            raise InvalidArgument("empty command template")
        if len(text) > MAX_TEMPLATE:
            raise InvalidArgument(f"command template of {len(text)} characters: at most {MAX_TEMPLATE}")
        if _CONTROL.search(text):
            raise InvalidArgument(f"command template {text!r}: must be one line without control characters")
        try:
            parts = list(_FORMATTER.parse(text))
        except ValueError as exc:
            raise InvalidArgument(
                f"command template {text!r}: {exc} (write a literal brace as {{{{)"
            ) from None
        fields: set[str] = set()
        for _literal, name, spec, conversion in parts:
            if name is None:
                continue
            if name not in PLACEHOLDERS:
                allowed = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                shown = f"{{{name}}}" if name else "{} (positional)"
                raise InvalidArgument(
                    f"command template {text!r}: unknown placeholder {shown}; use {allowed}"
                )
            if spec or conversion:
                raise InvalidArgument(
                    f"command template {text!r}: {{{name}}} takes no format spec or conversion"
                )
            fields.add(name)
        return cls(text=text, fields=frozenset(fields))

    def render(self, values: Mapping[str, str]) -> str:
        """The command line with each placeholder replaced by its checked,
        quoted value. Values the template does not use are ignored."""
        quoted: dict[str, str] = {}
        for name in sorted(self.fields):
            value = values.get(name)
            if value is None or value == "":
                raise InvalidArgument(f"command {self.text!r} needs a value for {{{name}}}")
            if not PLACEHOLDERS[name].fullmatch(value):
                raise InvalidArgument(
                    f"refusing {value!r} for {{{name}}}: not of the form {PLACEHOLDERS[name].pattern}"
                )
            quoted[name] = shlex.quote(value)
        return self.text.format_map(quoted)

    def __str__(self) -> str:
        return self.text


def reboot_template(spec: str) -> CommandTemplate:
    """A preset's template by name (``REBOOT_PRESETS``), else ``spec``
    parsed as a template of its own."""
    return CommandTemplate.parse(REBOOT_PRESETS.get(spec.strip(), spec))


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a command did. ``exit_code`` is None when it did not run or was
    killed at the timeout; negative when something else killed it (minus
    the signal number). ``output`` is stdout and stderr as written, the
    last ``output_limit`` bytes of it, decoded with replacement."""

    argv: tuple[str, ...]
    exit_code: int | None
    output: str
    duration: float
    timed_out: bool = False
    error: str | None = None
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def summary(self) -> str:
        """One line for an event: how it ended and the last line of output."""
        if self.error is not None:
            head = f"could not run: {self.error}"
        elif self.timed_out:
            head = f"timed out after {self.duration:.1f}s"
        elif self.exit_code is not None and self.exit_code < 0:
            head = f"killed by signal {-self.exit_code} after {self.duration:.1f}s"
        else:
            head = f"exit {self.exit_code} after {self.duration:.1f}s"
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        if not lines:
            return head
        last = lines[-1]
        return f"{head}: {last[:197] + '...' if len(last) > 200 else last}"


class _Collector(asyncio.SubprocessProtocol):
    def __init__(self, limit: int, on_output: Callable[[bytes], None] | None = None) -> None:
        self.limit = limit
        self.on_output = on_output
        self.buffer = bytearray()
        self.truncated = False
        # connection_lost comes once the process has exited and all its
        # pipes are closed, i.e. when there is nothing more to read.
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        if self.on_output is not None:
            self.on_output(bytes(data))
        self.buffer += data
        excess = len(self.buffer) - self.limit
        if excess > 0:
            # Keep the tail: failures are reported last.
            del self.buffer[:excess]
            self.truncated = True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# After SIGKILL the group is gone at once; this only bounds the wait when
# something outside it (a daemon that called setsid) still holds the pipe.
_REAP_TIMEOUT = 5.0


async def run(
    argv: Sequence[str],
    timeout: float,
    *,
    output_limit: int = 8192,
    stdin: bytes | None = None,
    on_output: Callable[[bytes], None] | None = None,
) -> CommandResult:
    """Run a command to completion or ``timeout`` seconds, whichever is
    first. Never raises for the command's failure (not found, non-zero exit,
    timeout): read the result. Cancelling the caller kills the command's
    whole process group before the CancelledError goes on.

    ``stdin`` is written to the command's standard input, which is then
    closed (else it reads nothing). ``on_output`` sees the output (stdout
    and stderr) as it arrives, for progress; it must not block."""
    if not argv:
        raise ValueError("empty argv")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout}")
    argv = tuple(argv)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        transport, collector = await loop.subprocess_exec(
            lambda: _Collector(output_limit, on_output),
            *argv,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return CommandResult(
            argv=argv,
            exit_code=None,
            output="",
            duration=time.monotonic() - started,
            error=f"{argv[0]}: {exc.strerror or exc}",
        )
    pid = transport.get_pid()
    timed_out = False
    try:
        if stdin is not None:
            # A WriteTransport: asyncio's is one by class; uvloop's (the
            # controller's loop) is not registered as one, and writes alike.
            pipe = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
            # Buffered by the transport; a command that exits without reading it
            # closes the pipe, and the rest is dropped.
            pipe.write(stdin)
            pipe.close()
        done, _ = await asyncio.wait([collector.finished], timeout=timeout)
        if not done:
            timed_out = True
            _kill_group(pid)
            await asyncio.wait([collector.finished], timeout=_REAP_TIMEOUT)
    except BaseException:
        _kill_group(pid)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([collector.finished], timeout=_REAP_TIMEOUT)
        raise
    finally:
        transport.close()
    return CommandResult(
        argv=argv,
        exit_code=None if timed_out else transport.get_returncode(),
        output=collector.buffer.decode(errors="replace"),
        duration=time.monotonic() - started,
        timed_out=timed_out,
        truncated=collector.truncated,
    )
