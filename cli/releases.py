"""Releases: cut, list, show, diff, promote, roll back, delete; the key.

``swarm-cli release ...`` over the admin API (``/admin/api/releases``).

A refused action (a cut while a session runs, nothing changed, a rollback
with nothing to go back to, deleting the current release) exits 1 with
the controller's reason; an unknown version too (404).
"""

from __future__ import annotations

import argparse
import re
import urllib.parse
from typing import TYPE_CHECKING, Any

from swarm.cli.errors import CliError

if TYPE_CHECKING:
    from swarm.cli.main import Client

PATH = "/admin/api/releases"
# As controller/releases.py VERSION_RE (the CLI does not import the controller).
VERSION_RE = re.compile(r"^v\d{4}\.\d{2}\.\d{2}(?:-[1-9]\d{0,3})?\Z")


def _version(text: str) -> str:
    if not VERSION_RE.match(text):
        raise argparse.ArgumentTypeError(
            f"not a release version: {text[:40]!r} (like v2026.12.05 or v2026.12.05-1)"
        )
    return text


def _path(version: str, *rest: str) -> str:
    return "/".join((PATH, urllib.parse.quote(version, safe=""), *rest))


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _when(text: str | None) -> str:
    # The API's ISO 8601 UTC, shown to the second: 2026-12-05 17:32:44Z.
    return "-" if not text else text.replace("T", " ")[:19] + "Z"


def _standing(r: dict[str, Any]) -> str:
    return "current" if r.get("current") else "previous" if r.get("previous") else ""


def _summary(r: dict[str, Any]) -> str:
    return f"{r['version']}: {r['package_count']} packages, {_size(r['total_size'])}"


def _schedule_line(schedule: dict[str, Any]) -> str:
    parts = [f"schedule {schedule['schedule']}"]
    if schedule.get("waiting_since"):
        parts.append(
            f"a cut is due since {_when(schedule['waiting_since'])}, waiting for the running session"
        )
    else:
        parts.append(f"next cut {_when(schedule.get('next_cut_at'))}")
    after = schedule.get("auto_promote_after")
    if after is not None:
        parts.append(f"auto-promote after {after / 3600:g} h")
    pending = schedule.get("pending")
    if pending:
        parts.append(
            f"{pending['version']} is promoted {_when(pending['promote_at'])} unless an admin acts first"
        )
    return "; ".join(parts)


def release_list(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("GET", PATH)
    if not ns.json:
        if not reply["releases"]:
            print("no releases yet: swarm-cli release cut")
        else:
            print(f"{'VERSION':16} {'STANDING':9} {'PACKAGES':>8} {'SIZE':>10}  {'CREATED':20} NOTES")
            for r in reply["releases"]:
                print(
                    f"{r['version']:16} {_standing(r) or '-':9} {r['package_count']:>8} "
                    f"{_size(r['total_size']):>10}  {_when(r['created_at']):20} {r['notes']}"
                )
        schedule = reply.get("schedule")
        if schedule:
            print(_schedule_line(schedule))
        promotions = reply.get("promotions") or []
        if promotions and ns.history:
            # A rollback's entry names the release it put back.
            print(f"\n{'WHEN':20}  {'MADE CURRENT':16} {'HOW':13} BY")
            for p in promotions:
                print(f"{_when(p['at']):20}  {p['version']:16} {p['action']:13} {p['by']}")
    return reply


def release_show(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("GET", _path(ns.version))
    if not ns.json:
        standing = _standing(reply)
        print(f"release   {reply['version']}" + (f" ({standing})" if standing else ""))
        print(f"created   {_when(reply['created_at'])}")
        print(f"promoted  {_when(reply.get('promoted_at'))}")
        print(f"notes     {reply['notes'] or '-'}")
        print(f"packages  {reply['package_count']}, {_size(reply['total_size'])}")
        print(f"profile   {reply['profile']}")
        repo = reply["repository"]
        snapshot = f", snapshot {_when(repo['snapshot_time'])}" if repo.get("snapshot_time") else ""
        print(f"tree      {repo['name']} {repo['revision'] or '(not a git checkout)'}{snapshot}")
        print(f"kernel    {reply['kernel'] or '-'}")
        print(f"sessions  {', '.join(reply['sessions']) or '-'}")
        print(f"signed by {reply['signing_key']}")
        if ns.packages:
            print(f"\n{'PACKAGE':50} {'SIZE':>10}  {'DRONE':16} SHA256")
            for p in reply["packages"]:
                print(f"{p['cpv']:50} {_size(p['size']):>10}  {p['drone'] or '-':16} {p['sha256'][:16]}")
    return reply


def release_diff(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("GET", _path(ns.older, "diff", urllib.parse.quote(ns.newer, safe="")))
    if not ns.json:
        print(
            f"{reply['older']} -> {reply['newer']}: {len(reply['added'])} added, "
            f"{len(reply['removed'])} removed, {len(reply['changed'])} changed"
        )
        for p in reply["added"]:
            print(f"+ {p['cpv']}")
        for p in reply["removed"]:
            print(f"- {p['cpv']}")
        for c in reply["changed"]:
            before, after = c["before"], c["after"]
            if before["cpv"] == after["cpv"]:
                print(f"~ {after['cpv']} (rebuilt)")
            else:
                print(f"~ {before['cpv']} -> {after['cpv']}")
    return reply


def release_cut(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("POST", PATH, {"notes": ns.notes, "force": ns.force})
    if not ns.json:
        print(f"cut {_summary(reply)}")
        print(f"promote it with: swarm-cli release promote {reply['version']}")
    return reply


def release_promote(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("POST", _path(ns.version, "promote"))
    if not ns.json:
        print(f"promoted {_summary(reply)}; clients get it at /binhost/current/")
    return reply


def release_rollback(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("POST", _path(ns.version, "rollback"))
    if not ns.json:
        print(f"rolled back {ns.version}; current is {_summary(reply)}")
    return reply


def spaced(fingerprint: str) -> str:
    """In groups of four, as gpg and swarm-upgrade trust show it."""
    return " ".join(fingerprint[i : i + 4] for i in range(0, len(fingerprint), 4))


def release_key(client: Client, ns: argparse.Namespace) -> Any:
    # The key is made at the first cut and signs every release since: the
    # newest release's manifest names it (the admin API has no key of its own).
    listing = client.call("GET", PATH)
    if not listing["releases"]:
        raise CliError("no release key yet: it is made at the first cut (swarm-cli release cut)")
    newest = listing["releases"][0]["version"]
    manifest = client.call("GET", _path(newest))
    reply = {"fingerprint": manifest["signing_key"], "release": newest}
    if not ns.json:
        print(f"release key {spaced(reply['fingerprint'])}")
        print(f"(it signed {newest}; a client checks it with swarm-upgrade trust URL --fingerprint)")
    return reply


def release_delete(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("DELETE", _path(ns.version))
    if not ns.json:
        print(f"deleted {ns.version}")
    return reply


def add_parser(sub: Any, json_option: Any) -> None:
    release = sub.add_parser(
        "release",
        help="releases: cut, list, show, diff, promote, rollback, delete, key",
        description=__doc__.splitlines()[0],
    ).add_subparsers(dest="action", required=True, metavar="ACTION")

    p = release.add_parser(
        "list", help="releases, newest first, which one is current, and the release schedule if there is one"
    )
    p.add_argument("--history", action="store_true", help="also the promotions and rollbacks, newest first")
    json_option(p)
    p.set_defaults(run=release_list)

    p = release.add_parser("show", help="a release's manifest")
    p.add_argument("version", type=_version)
    p.add_argument("--packages", action="store_true", help="also every package in it")
    json_option(p)
    p.set_defaults(run=release_show)

    p = release.add_parser("diff", help="packages added, removed and changed from one release to another")
    p.add_argument("older", type=_version)
    p.add_argument("newer", type=_version)
    json_option(p)
    p.set_defaults(run=release_diff)

    p = release.add_parser("cut", help="snapshot staging into a new signed release (not promoted)")
    p.add_argument("--notes", default="", help="what this release is, shown with it")
    p.add_argument(
        "--force", action="store_true", help="cut even when nothing changed since the newest release"
    )
    json_option(p)
    p.set_defaults(run=release_cut)

    p = release.add_parser("promote", help="make a release the one clients get")
    p.add_argument("version", type=_version)
    json_option(p)
    p.set_defaults(run=release_promote)

    p = release.add_parser("rollback", help="put back the release promoted before the current one")
    p.add_argument(
        "version", type=_version, help="the current release (named, so that a repeated rollback is refused)"
    )
    json_option(p)
    p.set_defaults(run=release_rollback)

    p = release.add_parser("key", help="the release key's fingerprint, to compare with what clients trust")
    json_option(p)
    p.set_defaults(run=release_key)

    p = release.add_parser("delete", help="delete a release (never the current or previous one)")
    p.add_argument("version", type=_version)
    json_option(p)
    p.set_defaults(run=release_delete)
