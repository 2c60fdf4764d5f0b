"""``swarm-cli``: the admin API from a terminal.

Talks only to the controller's admin tier. The key comes from
``--key-file``, the ``SWARM_ADMIN_KEY`` environment variable, or
``~/.config/build-swarm/cli.toml`` (``url``, ``key_file`` or ``key``).
Exit codes: 0 done, 1 the controller refused or failed, 2 bad usage,
3 the controller could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarm import __version__
from swarm.cli import binhosts, logs, payloads, releases, streams, testbuilds
from swarm.cli.errors import EXIT_UNREACHABLE, EXIT_USAGE, CliError

DEFAULT_URL = "http://127.0.0.1:8093"
CONFIG_PATH = Path("~/.config/build-swarm/cli.toml").expanduser()
# The escapes swarm.cli.terminal implements, for the shell command's --help.
ESCAPE_HELP = (
    "After Enter, ~. detaches (the shell lives on; --session reattaches) and ~~ sends one ~. "
    "Exit code: the remote shell's own, 255 if it ended without one, 0 after ~."
)


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '1h', '1d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    scale = units.get(value[-1:])
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30m, 1h, 3600)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return seconds


class Client:
    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self.key = key

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        raw = self.request(method, path, body)
        return json.loads(raw) if raw else None

    def text(self, method: str, path: str) -> str:
        """An answer that is not JSON (binrepos.conf), as text."""
        return self.request(method, path, accept="text/plain").decode("utf-8", errors="replace")

    def upload(self, path: str, data: bytes) -> Any:
        """POST ``data`` as it is (a payload's bytes); the JSON answer."""
        answer = self.request("POST", path, octets=data)
        return json.loads(answer) if answer else None

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        accept: str = "application/json",
        octets: bytes | None = None,
    ) -> bytes:
        """``octets``: a body sent as it is (an upload) instead of ``body``'s JSON."""
        data = octets if octets is not None else None if body is None else json.dumps(body).encode()
        headers = {"X-Admin-Key": self.key, "Accept": accept}
        if octets is not None:
            headers["Content-Type"] = "application/octet-stream"
        elif data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw: bytes = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            exc.close()
            try:
                message = json.loads(raw)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace")[:200] or exc.reason
            raise CliError(f"{method} {path}: {exc.code} {message}") from None
        except urllib.error.URLError as exc:
            raise CliError(
                f"cannot reach the controller at {self.url}: {exc.reason}", EXIT_UNREACHABLE
            ) from None
        return raw


def load_key(ns: argparse.Namespace, config: dict[str, Any]) -> str:
    if ns.key_file:
        path = Path(ns.key_file).expanduser()
    elif os.environ.get("SWARM_ADMIN_KEY"):
        return os.environ["SWARM_ADMIN_KEY"].strip()
    elif config.get("key"):
        return str(config["key"]).strip()
    elif config.get("key_file"):
        path = Path(str(config["key_file"])).expanduser()
    else:
        raise CliError(
            f"no admin key: pass --key-file, set SWARM_ADMIN_KEY, or put key_file in {CONFIG_PATH}",
            EXIT_USAGE,
        )
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read the admin key file {path}: {exc.strerror}", EXIT_USAGE) from None


def _when(ts: float | None) -> str:
    import time

    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def token_create(client: Client, ns: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"ttl": ns.ttl}
    if ns.name:
        body["name"] = ns.name
    reply = client.call("POST", "/admin/api/tokens", body)
    if not ns.json:
        print(f"token:   {reply['token']}")
        print(
            f"expires: {reply['expires_at']}"
            + (f"  (only for drone {reply['name']})" if reply.get("name") else "")
        )
        print(f"CA pin:  {reply['ca_pin']}")
        print(f"On the new drone:\n  {reply['command']}")
    return reply


def token_list(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("GET", "/admin/api/tokens")
    if not ns.json:
        print(f"{'ID':14} {'STATE':8} {'NAME':20} EXPIRES")
        for t in reply["tokens"]:
            print(f"{t['id']:14} {t['state']:8} {t['name'] or '-':20} {t['expires_at']}")
    return reply


def token_revoke(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("DELETE", f"/admin/api/tokens/{ns.id}")
    if not ns.json:
        print(f"revoked join token {ns.id}")
    return reply


def drones_list(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("GET", "/admin/api/drones")
    if not ns.json:
        print(f"{'NAME':20} {'STATUS':9} {'TYPE':10} {'CORES':>5} {'PING ms':>8}  ENROLLED")
        for d in reply["drones"]:
            ping = "-" if d["ping_latency_ms"] is None else f"{d['ping_latency_ms']:.1f}"
            print(
                f"{d['name']:20} {d['status']:9} {d['drone_type']:10} {d['cores']:>5} {ping:>8}  "
                f"{'yes' if d['enrolled'] else 'no'}"
            )
    return reply


def drones_revoke(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("POST", f"/admin/api/drones/{ns.name}/revoke")
    if not ns.json:
        print(f"revoked {reply['certificates']} certificate(s) of {ns.name}; its streams are closed")
    return reply


def drones_rename(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("POST", f"/admin/api/drones/{ns.name}/rename", {"name": ns.new_name})
    if not ns.json:
        print(f"{reply['old_name']} is now {reply['name']} (drone {reply['drone']})")
    return reply


def status(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("GET", "/admin/api/status")
    if not ns.json:
        d = reply["drones"]
        counts = ", ".join(f"{d[k]} {k}" for k in ("online", "unhealthy", "suspect", "offline") if d.get(k))
        print(f"controller {reply['controller']['version']}, up {reply['controller']['uptime_s']:.0f}s")
        print(f"drones     {d['total']}: {counts or 'none'}; {reply['cores_online']} cores online")
        healing = reply.get("healing") or {}
        if healing.get("paused") or healing.get("fleet_dark"):
            print(f"healing    {'paused' if healing.get('paused') else 'held: most of the fleet is dark'}")
        session = reply.get("session")
        if session:
            jobs = ", ".join(f"{n} {k}" for k, n in session["jobs"].items() if n)
            print(f"session    {session['name']} ({session['state']}): {jobs}")
    return reply


def ping(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("POST", f"/admin/api/drones/{ns.name}/ping")
    if not ns.json:
        emerge = "running" if reply["emerge_running"] else "idle"
        print(
            f"{reply['drone']}: seq {reply['seq']} in {reply['latency_ms']:.1f} ms, "
            f"load {reply['load1']:.2f}, disk {reply['disk_percent']:.0f}% used, emerge {emerge}"
        )
        for check in reply["checks"]:
            print(f"  {'ok  ' if check['ok'] else 'FAIL'} {check['name']:11} {check['detail']}")
    return reply


def _via_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--via",
        choices=("agent", "ssh"),
        default="agent",
        help="agent (default): through the drone's agent; ssh: from the controller over ssh with the "
        "drone's ssh access setting, for when the agent is down",
    )


def exec_command(client: Client, ns: argparse.Namespace) -> Any:
    command = " ".join(ns.command)
    if not command.strip():
        raise CliError("exec needs a command, e.g. swarm-cli exec DRONE -- uname -a", EXIT_USAGE)
    reply = client.call(
        "POST",
        f"/admin/api/drones/{ns.name}/exec",
        {"command": command, "timeout": ns.timeout, "via": ns.via},
    )
    if not ns.json:
        sys.stdout.write(reply.get("stdout", ""))
        sys.stderr.write(reply.get("stderr", ""))
        sys.stdout.flush()
        code = reply.get("exit_code")
        if code is None or reply.get("timed_out"):
            raise CliError(f"{ns.name}: {reply.get('reason') or 'the command did not finish'}")
        if code:
            # Like ssh: the remote command's own exit code.
            sys.exit(code)
    return reply


def shell(client: Client, ns: argparse.Namespace) -> None:
    # Imported here: the terminal (asyncio, termios, the websocket) is this
    # command's alone, and importing it cost every other call some 25 ms.
    from swarm.cli import terminal

    terminal.shell(client, ns)


def events(client: Client, ns: argparse.Namespace) -> Any:
    if ns.follow:
        streams.follow_events(client, ns)
        return None
    query = f"?limit={ns.limit}"
    if ns.drone:
        query += f"&drone={urllib.parse.quote(ns.drone)}"
    if ns.type:
        query += f"&type={urllib.parse.quote(ns.type)}"
    reply = client.call("GET", "/admin/api/events" + query)
    if not ns.json:
        for e in reply["events"]:
            print(streams.event_line(e))
    return reply


def queue(client: Client, ns: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"atoms": ns.atoms}
    if ns.session:
        body["session"] = ns.session
    reply = client.call("POST", "/admin/api/queue", body)
    if not ns.json:
        session = reply["session"]
        print(f"queued {len(reply['jobs'])} job(s) in session {session['name']} ({session['id']})")
    return reply


def control(client: Client, ns: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"action": ns.action}
    if ns.session:
        body["session"] = ns.session
    reply = client.call("POST", "/admin/api/control", body)
    if not ns.json:
        print(f"session {reply['session']['name']}: {reply['session']['state']}")
    return reply


def drone_health(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("GET", f"/admin/api/drones/{ns.name}/health")
    if not ns.json:
        print(f"{reply['drone']}: {reply['status']} ({reply['type']}), ladder step {reply['step']}")
        upcoming = reply.get("next_action")
        if upcoming:
            held = f", held: {upcoming['held']}" if upcoming["held"] else ""
            waiting = upcoming.get("waiting_for")
            why = f" (after the {waiting})" if waiting else ""
            print(f"next:    {upcoming['step']} at {upcoming['at']}{why}{held}")
        cooloff = reply.get("cooloff") or {}
        if cooloff.get("incidents_in_a_row"):
            until = f" until {cooloff['until']}" if cooloff.get("until") else ""
            resets = f", starts over at {cooloff['resets_at']}" if cooloff.get("resets_at") else ""
            print(
                f"cool-off: {cooloff['current_s']:g}s{until} "
                f"({cooloff['incidents_in_a_row']} incident(s) in a row healed{resets})"
            )
        for i in reply["incidents"][:5]:
            recovery = "open" if i["recovered_at"] is None else f"recovered in {i['recovery_s']:.1f}s"
            print(f"  {i['failed_at']}  {i['kind']:9} {recovery}  {i['outcome']}")
    return reply


def heal_step(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("POST", f"/admin/api/drones/{ns.name}/{ns.step}")
    if not ns.json:
        print(f"{ns.name}: {ns.step}: {reply['detail']}")
    return reply


def healing(client: Client, ns: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"action": ns.action}
    if ns.drone:
        body["drone"] = ns.drone
    reply = client.call("POST", "/admin/api/healing", body)
    if not ns.json:
        state = "paused" if reply["paused"] else "held (fleet dark)" if reply["fleet_dark"] else "on"
        drones = ", ".join(reply["paused_drones"]) or "none"
        print(f"healing {state}; paused for drones: {drones}")
    return reply


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def _json_option(parser: argparse.ArgumentParser) -> None:
    """--json after the subcommand too (SUPPRESS: it must not undo one given before it)."""
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per line"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swarm-cli",
        description=__doc__.splitlines()[0],
        epilog="Exit codes: 0 done, 1 refused or failed, 2 bad usage, 3 unreachable.",
    )
    parser.add_argument("--version", action="version", version=f"swarm-cli {__version__}")
    parser.add_argument("--url", help=f"admin API URL (default: {DEFAULT_URL}, or url in {CONFIG_PATH})")
    parser.add_argument("--key-file", help="file holding the admin key")
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of tables")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    token = sub.add_parser("token", help="join tokens for new drones").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = token.add_parser("create", help="make a one-time join token")
    create.add_argument("--ttl", type=parse_duration, default=3600.0, help="lifetime, e.g. 30m, 1h (max 24h)")
    create.add_argument("--name", help="only this drone name may use it")
    create.set_defaults(run=token_create)
    token.add_parser("list", help="tokens and their state").set_defaults(run=token_list)
    revoke = token.add_parser("revoke", help="revoke an unused token")
    revoke.add_argument("id")
    revoke.set_defaults(run=token_revoke)

    drones = sub.add_parser("drones", help="the fleet").add_subparsers(dest="action", metavar="ACTION")
    drones.add_parser("list", help="drones and their state").set_defaults(run=drones_list)
    drevoke = drones.add_parser("revoke", help="revoke a drone's certificates and cut it off now")
    drevoke.add_argument("name")
    drevoke.set_defaults(run=drones_revoke)
    drename = drones.add_parser(
        "rename", help="bind a new name to a drone (set the same name in its agent.toml)"
    )
    drename.add_argument("name", help="the drone's name or id")
    drename.add_argument("new_name", help="its new name")
    drename.set_defaults(run=drones_rename)

    sub.add_parser("status", help="the swarm at a glance").set_defaults(run=status)
    p = sub.add_parser("ping", help="proof of life of a drone: round trip, load, functional checks")
    p.add_argument("name")
    p.set_defaults(run=ping)
    p = sub.add_parser("exec", help="run one command on a drone (exit code: the command's own)")
    p.add_argument("name")
    p.add_argument(
        "--timeout", type=parse_duration, default=60.0, help="kill it after this long (default 60s)"
    )
    _via_option(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command (after --)")
    p.set_defaults(run=exec_command)
    p = sub.add_parser("events", help="recent events, audit trail included")
    p.add_argument("--drone", help="only this drone's")
    p.add_argument("--type", help="only these types (comma-separated)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="then live ones, until Ctrl-C")
    _json_option(p)
    p.set_defaults(run=events)
    p = sub.add_parser(
        "shell",
        help="an interactive terminal on a drone",
        description="An interactive terminal on a drone in this terminal (raw mode; Ctrl-C goes "
        "to the remote shell). " + ESCAPE_HELP,
    )
    p.add_argument("name", metavar="DRONE")
    p.add_argument("--session", metavar="ID", help="reattach to this session (its id is shown at the start)")
    _via_option(p)
    p.set_defaults(run=shell)
    p = sub.add_parser("protocol", help="control-stream messages: recent ones, or live with --follow")
    p.add_argument("-f", "--follow", action="store_true", help="live messages until Ctrl-C")
    p.add_argument("--drone", help="only this drone's")
    p.add_argument("--type", help="only these message types (comma-separated)")
    p.add_argument(
        "--sample", type=_positive, default=1, metavar="N", help="only every Nth heartbeat of each drone"
    )
    p.add_argument("--limit", type=_positive, default=50, help="recent ones: at most this many (default 50)")
    _json_option(p)
    p.set_defaults(run=streams.protocol)
    logs.add_parser(sub, _json_option)
    releases.add_parser(sub, _json_option)
    binhosts.add_parser(sub, _json_option)
    testbuilds.add_parser(sub, _json_option)
    payloads.add_parser(sub, _json_option)
    p = sub.add_parser("queue", help="queue packages to build")
    p.add_argument("atoms", nargs="+", metavar="ATOM")
    p.add_argument("--session", help="session name (default: the current one)")
    p.set_defaults(run=queue)
    p = sub.add_parser("control", help="start, stop, pause, resume or reset a build session")
    p.add_argument("action", choices=("start", "stop", "pause", "resume", "reset"))
    p.add_argument("--session", help="session id (default: the current one)")
    p.set_defaults(run=control)
    p = sub.add_parser("health", help="a drone's incidents and healing ladder")
    p.add_argument("name")
    p.set_defaults(run=drone_health)
    for step, what in (("restart", "restart a drone's agent"), ("reboot", "reboot a drone through its host")):
        p = sub.add_parser(step, help=what)
        p.add_argument("name")
        p.set_defaults(run=heal_step, step=step)
    p = sub.add_parser("healing", help="pause or resume healing, or override a dark-fleet hold")
    p.add_argument("action", choices=("pause", "resume", "override"))
    p.add_argument("--drone", help="only this drone (pause, resume)")
    p.set_defaults(run=healing)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    ns = parser.parse_args(argv)
    run: Callable[[Client, argparse.Namespace], Any] = getattr(ns, "run", drones_list)
    try:
        config: dict[str, Any] = {}
        if CONFIG_PATH.exists():
            try:
                config = tomllib.loads(CONFIG_PATH.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise CliError(f"cannot read {CONFIG_PATH}: {exc}", EXIT_USAGE) from None
        url = ns.url or os.environ.get("SWARM_ADMIN_URL") or config.get("url") or DEFAULT_URL
        reply = run(Client(url, load_key(ns, config)), ns)
        if ns.json and reply is not None:  # a live command printed its own
            print(json.dumps(reply, indent=2))
    except CliError as exc:
        print(f"swarm-cli: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        sys.exit(130)  # Ctrl-C before a command could take it over: no traceback


if __name__ == "__main__":
    main()
