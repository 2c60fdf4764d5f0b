"""Payloads: push, list, stage, deploy, status; rollouts: pause, resume, abort, rollback.

``swarm-cli payload ...`` over the admin API (``/admin/api/payloads``).
``push`` uploads a file as the next version of its kind (a wheel or sdist
of build-swarm for ``agent``, an agent.toml for ``agent-config``, a tar of
files under etc/portage for ``portage-config``); ``deploy`` sends a staged
version to one drone, or rolls it out (``--network``, ``--all``, several
``--drone``, ``--canary``, ``--batch``, ``--pause``), and with ``--wait``
waits until the drone or the rollout says how it went (exit 1 unless it
applied it, or the rollout is done). ``status`` shows each drone's
versions, the one deployed to it against the one it runs (drift), and the
rollouts under way (``--rollout ID``: one rollout, drone by drone).
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
ROLLOUTS_PATH = "/admin/api/rollouts"
ROLLOUT_OVER = ("done", "failed", "aborted", "rolled_back")
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


def _count(lo: int) -> Any:
    def parse(text: str) -> int:
        if not text.isdigit() or not lo <= int(text) <= 1000:
            raise argparse.ArgumentTypeError(f"not a count from {lo} to 1000: {text[:40]!r}")
        return int(text)

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"not a number of seconds from 0 to 86400: {text[:40]!r}")
    return value


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


def _strategy(ns: argparse.Namespace) -> dict[str, Any]:
    """The rollout's options given (the controller's defaults for the rest)."""
    given = {
        "canary": ns.canary,
        "batch": ns.batch,
        "pause_s": ns.pause,
        "gate_timeout_s": ns.gate_timeout,
        "auto_rollback": False if ns.no_auto_rollback else None,
        "network": ns.network,
        "all": True if ns.all else None,
    }
    return {k: v for k, v in given.items() if v is not None}


def payload_deploy(client: Client, ns: argparse.Namespace) -> Any:
    drones = ns.drone or []
    strategy = _strategy(ns)
    if not drones and "network" not in strategy and "all" not in strategy:
        raise CliError("say which drones: --drone (one or more), --network or --all", EXIT_USAGE)
    if len(drones) == 1 and not strategy:
        return _deploy_one(client, ns, drones[0])
    body = {**strategy, "rollback": ns.rollback, **({"drones": drones} if drones else {})}
    reply = client.call("POST", _path(ns.kind, ns.version, "deploy"), body)
    if not ns.json:
        planned = sum(1 for d in reply["drones"] if d["batch"] >= 0)
        print(
            f"rollout {reply['id']}: {ns.kind} version {ns.version} to {_target(reply['target'])}: "
            f"{planned} drones in {reply['batches']} batches"
        )
    if not ns.wait:
        return reply
    return _wait_rollout(client, ns, reply["id"])


def _target(target: dict[str, Any]) -> str:
    if target["all"]:
        return "every drone"
    if target["network"]:
        return f"network {target['network']}"
    return ", ".join(target["drones"])


def _wait_rollout(client: Client, ns: argparse.Namespace, rollout_id: str) -> Any:
    deadline = time.monotonic() + ns.timeout
    seen: dict[str, str] = {}
    while True:
        reply = client.call("GET", f"{ROLLOUTS_PATH}/{quote(rollout_id, safe='')}")
        for d in reply["drones"]:
            if seen.get(d["drone"]) != d["state"] and not ns.json:
                print(f"{d['drone']}: {d['state']}" + (f": {d['reason']}" if d["reason"] else ""))
            seen[d["drone"]] = d["state"]
        if reply["state"] in ROLLOUT_OVER:
            if reply["state"] != "done":
                raise CliError(f"rollout {rollout_id} {reply['state']}: {reply['reason']}")
            return reply
        if time.monotonic() >= deadline:
            raise CliError(f"rollout {rollout_id} not over within {ns.timeout:g}s (it is {reply['state']})")
        time.sleep(WAIT_POLL)


def _deploy_one(client: Client, ns: argparse.Namespace, drone: str) -> Any:
    body = {"drones": [drone], "rollback": ns.rollback}
    reply = client.call("POST", _path(ns.kind, ns.version, "deploy"), body)
    if not ns.json:
        to = ", ".join(reply["drones"])
        print(f"deploy {reply['deploy_id']}: {ns.kind} version {ns.version} sent to {to}")
    if not ns.wait:
        return reply
    deadline = time.monotonic() + ns.timeout
    seen = ""
    while True:
        mine = _mine(client, drone, ns.kind)
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


def _print_rollout(r: dict[str, Any]) -> None:
    s = r["strategy"]
    print(
        f"rollout {r['id']}: {r['kind']} version {r['version']} to {_target(r['target'])}: {r['state']}"
        + (f" ({r['reason']})" if r["reason"] else "")
    )
    auto = "on" if s["auto_rollback"] else "off"
    print(
        f"  canary {s['canary']}, batch {s['batch']}, pause {s['pause_s']:g}s, "
        f"gate {s['gate_timeout_s']:g}s, auto-rollback {auto}; next batch {r['next_batch']} of {r['batches']}"
    )
    print(f"  {'DRONE':20} {'BATCH':>5} {'STATE':12} REASON")
    for d in r["drones"]:
        batch = str(d["batch"]) if d["batch"] >= 0 else "-"
        print(f"  {d['drone']:20} {batch:>5} {d['state']:12} {d['reason']}")


def payload_rollout_verb(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("POST", f"{ROLLOUTS_PATH}/{quote(ns.rollout, safe='')}/{ns.action}")
    if not ns.json:
        print(f"rollout {reply['id']}: {reply['state']}")
    return reply


def payload_status(client: Client, ns: argparse.Namespace) -> Any:
    if ns.rollout:
        shown = client.call("GET", f"{ROLLOUTS_PATH}/{quote(ns.rollout, safe='')}")
        if not ns.json:
            _print_rollout(shown)
        return shown
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
        for r in client.call("GET", ROLLOUTS_PATH)["rollouts"]:
            if r["state"] in ("running", "paused", "rolling_back"):
                _print_rollout(r)
    return reply


def add_parser(sub: Any, json_option: Any) -> None:
    payload = sub.add_parser(
        "payload",
        help="payloads: push, list, stage, deploy or roll out, status (versions, drift, rollouts), "
        "pause|resume|abort|rollback a rollout",
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

    p = payload.add_parser(
        "deploy",
        help="deploy a staged version: to one drone, or as a rollout (canaries, then batches, each drone "
        "through a health gate)",
        description="One --drone without rollout options is a plain deploy to that drone; anything else "
        "(several --drone, --network, --all, a strategy option) is a rollout.",
    )
    p.add_argument("kind", choices=KINDS)
    p.add_argument("version", type=_positive)
    p.add_argument("--drone", action="append", help="a drone, by name or id (again for more)")
    p.add_argument("--network", help="a rollout to this network's drones")
    p.add_argument("--all", action="store_true", help="a rollout to every drone")
    p.add_argument("--canary", type=_count(0), help="drones deployed first, alone (default 1)")
    p.add_argument("--batch", type=_count(1), help="drones in each batch after (default 5)")
    p.add_argument("--pause", type=_seconds, help="seconds between batches (default 0)")
    p.add_argument(
        "--gate-timeout",
        type=_seconds,
        help="seconds a drone has to apply it and be online and healthy with it",
    )
    p.add_argument(
        "--no-auto-rollback", action="store_true", help="a failure stops the rollout without rolling it back"
    )
    p.add_argument("--rollback", action="store_true", help="signed as a rollback (to an older version)")
    p.add_argument(
        "--wait", action="store_true", help="wait until the drone (or the rollout) says how it went"
    )
    p.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds --wait waits at most (default 3600)"
    )
    json_option(p)
    p.set_defaults(run=payload_deploy)

    for verb, about in (
        ("pause", "pause a rollout: the batch under way ends, the next does not start"),
        ("resume", "resume a paused rollout where it was (the next batch starts at once)"),
        ("abort", "abort a rollout: no drone is sent it any more"),
        ("rollback", "roll back a rollout: the drones that took it go back to the version they ran"),
    ):
        p = payload.add_parser(verb, help=about)
        p.add_argument("rollout", help="the rollout's id (r-...)")
        json_option(p)
        p.set_defaults(run=payload_rollout_verb)

    p = payload.add_parser("status", help="each drone's versions: deployed against running (drift)")
    p.add_argument("--drone", help="only this drone (name or id)")
    p.add_argument("--rollout", help="show this rollout instead (its plan and each drone's progress)")
    json_option(p)
    p.set_defaults(run=payload_status)
