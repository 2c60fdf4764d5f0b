"""Binhost targets: list, show, set, delete, sync; the binrepos.conf answer.

``swarm-cli binhost ...`` over the admin API (``/admin/api/binhosts``).
``set`` changes only the options given (the others keep their values; a
new target starts from the defaults), and the controller checks the
result: a bad value exits 1 with its reason. ``conf`` prints the
binrepos.conf a machine on a network gets (for /etc/portage/binrepos.conf).
"""

from __future__ import annotations

import argparse
import re
import urllib.parse
from typing import TYPE_CHECKING, Any

from swarm.cli.errors import CliError
from swarm.cli.releases import VERSION_RE, _size, _when

if TYPE_CHECKING:
    from swarm.cli.main import Client

PATH = "/admin/api/binhosts"
CONF_PATH = "/admin/api/binrepos.conf"
# As controller/binhosts.py (the CLI does not import the controller).
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}\Z")
NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
SETTINGS = ("kind", "url", "destination", "networks", "priority", "enabled")


def _checked(pattern: re.Pattern[str], what: str) -> Any:
    def check(text: str) -> str:
        if not pattern.match(text):
            raise argparse.ArgumentTypeError(f"not a {what}: {text[:40]!r}")
        return text

    return check


def _version(text: str) -> str:
    if not VERSION_RE.match(text):
        raise argparse.ArgumentTypeError(f"not a release version: {text[:40]!r} (like v2026.12.05)")
    return text


def _path(name: str, *rest: str) -> str:
    return "/".join((PATH, urllib.parse.quote(name, safe=""), *rest))


def _held(b: dict[str, Any]) -> str:
    return b["release"] or "-"


def binhost_list(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("GET", PATH)
    if not ns.json:
        print(f"current release: {reply['current'] or '- (none promoted)'}")
        print(f"{'NAME':16} {'KIND':6} {'STATUS':11} {'HOLDS':16} {'PRIO':>4}  {'NETWORKS':20} URL")
        for b in reply["binhosts"]:
            networks = ",".join(b["networks"]) or "(all)"
            print(
                f"{b['name']:16} {b['kind']:6} {b['status']:11} {_held(b):16} {b['priority']:>4}  "
                f"{networks:20} {b['url']}"
            )
    return reply


def binhost_show(client: Client, ns: argparse.Namespace) -> Any:
    b = client.call("GET", _path(ns.name))
    if not ns.json:
        print(f"binhost     {b['name']} ({b['kind']}{'' if b['enabled'] else ', disabled'})")
        print(f"url         {b['url']}")
        if b["destination"]:
            print(f"destination {b['destination']}")
        print(f"networks    {', '.join(b['networks']) or '(none: a fallback for every network)'}")
        print(f"priority    {b['priority']}")
        print(f"status      {b['status']}" + (f": {b['error']}" if b["error"] else ""))
        print(f"holds       {_held(b)}" + (f" (of {', '.join(b['releases'])})" if b["releases"] else ""))
        print(f"synced      {_when(b['synced_at'])}: {b['files_sent']} files, {_size(b['bytes_sent'])}")
        print(f"checked     {_when(b['checked_at'])}")
        progress = b["progress"]
        if progress:
            print(
                f"pushing     {progress['release']}: {progress['files_done']}/{progress['files_total']} "
                f"files, {_size(progress['bytes_sent'])} since {_when(progress['started_at'])}"
            )
        print(f"set by      {b['updated_by'] or '-'} at {_when(b['updated_at'])}")
    return b


def _current(client: Client, name: str) -> dict[str, Any]:
    """The target's settings now, or {} for a new one."""
    try:
        found = client.call("GET", _path(name))
    except CliError as exc:
        if " 404 " in str(exc):
            return {}
        raise
    settings = {key: found[key] for key in SETTINGS}
    if not found["url_set"]:
        del settings["url"]  # the controller's own default, not a setting to copy
    return settings


def binhost_set(client: Client, ns: argparse.Namespace) -> Any:
    body = _current(client, ns.name)
    given = {
        "kind": ns.kind,
        "url": ns.url,
        "destination": ns.dest,
        "priority": ns.priority,
        "networks": [] if ns.no_network else ns.network,
        "enabled": ns.enabled,
    }
    body.update({key: value for key, value in given.items() if value is not None})
    reply = client.call("PUT", _path(ns.name), body)
    if not ns.json:
        networks = ", ".join(reply["networks"]) or "every network (fallback)"
        print(
            f"set {reply['name']} ({reply['kind']}): {reply['url']}, serves {networks}, "
            f"priority {reply['priority']}"
        )
        if reply["kind"] == "rsync" and reply["enabled"]:
            print("the current release is pushed to it (swarm-cli binhost show to follow)")
    return reply


def binhost_delete(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("DELETE", _path(ns.name))
    if not ns.json:
        print(f"deleted {reply['name']} (the files on the mirror stay)")
    return reply


def binhost_sync(client: Client, ns: argparse.Namespace) -> Any:
    path = _path(ns.name, "sync") if ns.name else PATH + "/sync"
    reply = client.call("POST", path)
    if not ns.json:
        started = reply["started"]
        print(
            f"pushing to {', '.join(started)}" if started else "no push started: every mirror is up to date"
        )
    return reply


def binhost_conf(client: Client, ns: argparse.Namespace) -> None:
    query = {k: v for k, v in (("network", ns.network), ("drone", ns.drone), ("release", ns.release)) if v}
    suffix = "?" + urllib.parse.urlencode(query) if query else ""
    print(client.text("GET", CONF_PATH + suffix), end="")


def add_parser(sub: Any, json_option: Any) -> None:
    binhost = sub.add_parser(
        "binhost",
        help="binhost targets: list, show, set, delete, sync; the binrepos.conf a network gets",
        description=__doc__.splitlines()[0],
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    name = _checked(NAME_RE, "binhost name (lowercase letters, digits, '-')")

    p = binhost.add_parser("list", help="every binhost target and how it stands")
    json_option(p)
    p.set_defaults(run=binhost_list)

    p = binhost.add_parser("show", help="one target: its settings, what it holds, its last push")
    p.add_argument("name", type=name)
    json_option(p)
    p.set_defaults(run=binhost_show)

    p = binhost.add_parser("set", help="add a mirror or change a target (options left out keep their values)")
    p.add_argument("name", type=name)
    p.add_argument("--kind", choices=("local", "rsync"), help="rsync for a mirror (local: only controller)")
    p.add_argument("--dest", metavar="[USER@]HOST[:PORT]:/PATH", help="where rsync over SSH pushes releases")
    p.add_argument("--url", help="the public base URL clients fetch the mirror's files from")
    p.add_argument(
        "--network",
        action="append",
        type=_checked(NETWORK_RE, "network name"),
        help="a network it serves first (repeat for more; replaces the list)",
    )
    p.add_argument("--no-network", action="store_true", help="serve no network first: a fallback for all")
    p.add_argument("--priority", type=int, help="0-999, higher preferred within its group")
    enabled = p.add_mutually_exclusive_group()
    enabled.add_argument(
        "--disable", dest="enabled", action="store_false", default=None, help="never push to it"
    )
    enabled.add_argument(
        "--enable", dest="enabled", action="store_true", default=None, help="push to it again"
    )
    json_option(p)
    p.set_defaults(run=binhost_set)

    p = binhost.add_parser("delete", help="remove a mirror (never the controller's own binhost)")
    p.add_argument("name", type=name)
    json_option(p)
    p.set_defaults(run=binhost_delete)

    p = binhost.add_parser("sync", help="push the current release now, to one mirror or every one")
    p.add_argument("name", type=name, nargs="?")
    json_option(p)
    p.set_defaults(run=binhost_sync)

    p = binhost.add_parser("conf", help="the binrepos.conf a machine gets (network's binhosts first)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--network", type=_checked(NETWORK_RE, "network name"), help="the machine's network")
    where.add_argument("--drone", help="a drone: the network it reports")
    p.add_argument("--release", type=_version, help="pinned to this release (default: the current one)")
    p.set_defaults(run=binhost_conf)
