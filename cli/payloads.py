"""Payloads: push, list, stage, deploy, status.

``swarm-cli payload ...`` over the admin API (``/admin/api/payloads``).
``push`` uploads a file as the next version of its kind (a wheel or sdist
of build-swarm for ``agent``, an agent.toml for ``agent-config``, a tar of
files under etc/portage for ``portage-config``); ``deploy`` sends a staged
version to one drone, and with ``--wait`` waits until the drone says how
it went (exit 1 unless it applied it). ``status`` shows each drone's
versions: the one deployed to it against the one it runs (drift).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from swarm.cli.errors import EXIT_USAGE, CliError
from swarm.cli.releases import _size, _when

if TYPE_CHECKING:
    from swarm.cli.main import Client

PATH = "/admin/api/payloads"
VERSIONS_PATH = "/admin/api/drones/versions"
# As swarm.payloadsig.KINDS.
KINDS = ("agent", "agent-config", "portage-config")
FINAL = ("applied", "refused", "failed", "rolled_back", "timed_out", "unsent")
WAIT_POLL = 1.0


def _path(kind: str, version: int, *rest: str) -> str:
    return "/".join((PATH, quote(kind, safe=""), str(version), *rest))


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a version: {text[:40]!r} (a whole number from 1)")
    return int(text)


def payload_push(client: Client, ns: argparse.Namespace) -> Any:
    path = Path(ns.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    query = {"kind": ns.kind, **({"notes": ns.notes} if ns.notes else {})}
    reply = client.upload(f"{PATH}?{urlencode(query)}", data)
    if ns.stage:
        reply = client.call("POST", _path(ns.kind, reply["version"], "stage"))
    if not ns.json:
        print(
            f"{reply['kind']} version {reply['version']} {reply['state']}: {_size(reply['size'])}, "
            f"sha256 {reply['sha256']}"
        )
    return reply


def payload_list(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("GET", PATH + (f"?kind={quote(ns.kind)}" if ns.kind else ""))
    if not ns.json:
        print(f"payload key {reply['key_fingerprint']}")
        print(f"{'KIND':15} {'VERSION':>7}  {'STATE':9} {'SIZE':>10}  {'UPLOADED':21} {'BY':16} NOTES")
        for p in reply["payloads"]:
            notes = p["notes"].splitlines()[0] if p["notes"] else ""
            print(
                f"{p['kind']:15} {p['version']:>7}  {p['state']:9} {_size(p['size']):>10}  "
                f"{_when(p['uploaded_at']):21} {p['uploaded_by']:16} {notes}"
            )
    return reply


def payload_stage(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("POST", _path(ns.kind, ns.version, "stage"))
    if not ns.json:
        print(f"{reply['kind']} version {reply['version']} staged")
    return reply


def _mine(client: Client, drone: str, kind: str) -> dict[str, Any] | None:
    for v in client.call("GET", VERSIONS_PATH)["versions"]:
        if drone in (v["drone"], v["drone_id"]) and v["kind"] == kind:
            return dict(v)
    return None


def payload_deploy(client: Client, ns: argparse.Namespace) -> Any:
    body = {"drones": [ns.drone], "rollback": ns.rollback}
    reply = client.call("POST", _path(ns.kind, ns.version, "deploy"), body)
    if not ns.json:
        to = ", ".join(reply["drones"])
        print(f"deploy {reply['deploy_id']}: {ns.kind} version {ns.version} sent to {to}")
    if not ns.wait:
        return reply
    deadline = time.monotonic() + ns.timeout
    seen = ""
    while True:
        mine = _mine(client, ns.drone, ns.kind)
        if mine is not None and mine["deploy_id"] == reply["deploy_id"]:
            if mine["state"] != seen and not ns.json:
                print(f"{mine['drone']}: {mine['state']}" + (f": {mine['reason']}" if mine["reason"] else ""))
            seen = mine["state"]
            if seen in FINAL:
                if seen != "applied":
                    raise CliError(
                        f"{mine['drone']} did not apply it: {seen}"
                        + (f": {mine['reason']}" if mine["reason"] else "")
                    )
                return mine
        if time.monotonic() >= deadline:
            raise CliError(f"no final answer within {ns.timeout:g}s (last: {seen or 'nothing yet'})")
        time.sleep(WAIT_POLL)


def payload_status(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("GET", VERSIONS_PATH)
    if ns.drone:
        reply["versions"] = [v for v in reply["versions"] if ns.drone in (v["drone"], v["drone_id"])]
    if not ns.json:
        print(f"{'DRONE':20} {'KIND':15} {'EXPECTED':>8} {'RUNNING':>8}  {'DRIFT':5} {'STATE':11} REASON")
        for v in reply["versions"]:
            expected = str(v["expected"]) if v["expected"] else "-"
            print(
                f"{v['drone']:20} {v['kind']:15} {expected:>8} {v['running']:>8}  "
                f"{'yes' if v['drift'] else 'no':5} {v['state'] or '-':11} {v['reason']}"
            )
        print(f"{reply['drifting']} drifting")
    return reply


def add_parser(sub: Any, json_option: Any) -> None:
    payload = sub.add_parser(
        "payload",
        help="payloads: push, list, stage, deploy to a drone, status (versions and drift)",
        description=__doc__.splitlines()[0],
    ).add_subparsers(dest="action", required=True, metavar="ACTION")

    p = payload.add_parser("push", help="upload a file as the next version of its kind")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("file", help="agent: a wheel or sdist; agent-config: a TOML; portage-config: a tar")
    p.add_argument("--notes", help="what it is for (shown with it)")
    p.add_argument("--stage", action="store_true", help="stage it too")
    json_option(p)
    p.set_defaults(run=payload_push)

    p = payload.add_parser("list", help="payload versions, by kind, newest first")
    p.add_argument("--kind", choices=KINDS)
    json_option(p)
    p.set_defaults(run=payload_list)

    p = payload.add_parser("stage", help="stage a version: it may then be deployed")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("version", type=_positive)
    json_option(p)
    p.set_defaults(run=payload_stage)

    p = payload.add_parser("deploy", help="deploy a staged version to a drone")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("version", type=_positive)
    p.add_argument("--drone", required=True, help="the drone, by name or id")
    p.add_argument("--rollback", action="store_true", help="signed as a rollback (to an older version)")
    p.add_argument("--wait", action="store_true", help="wait until the drone says how it went")
    p.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds --wait waits at most (default 3600)"
    )
    json_option(p)
    p.set_defaults(run=payload_deploy)

    p = payload.add_parser("status", help="each drone's versions: deployed against running (drift)")
    p.add_argument("--drone", help="only this drone (name or id)")
    json_option(p)
    p.set_defaults(run=payload_status)
