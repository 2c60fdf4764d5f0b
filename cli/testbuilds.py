"""Test builds: tokens for users, the queue and its history, cancel, a log.

``swarm-cli testbuild ...`` over the admin API (``/admin/api/test-builds``,
``/admin/api/test-build-tokens``). ``token create`` prints the token's
secret, which the controller shows this once; the user sends it as
``Authorization: Bearer SECRET`` to ``POST /api/v1/test-build`` on the
public tier.
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

from swarm.cli.errors import EXIT_UNREACHABLE, CliError
from swarm.cli.releases import _when

if TYPE_CHECKING:
    from swarm.cli.main import Client

BUILDS = "/admin/api/test-builds"
TOKENS = "/admin/api/test-build-tokens"
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
# As controller/testbuild_rules.py (the CLI does not import the controller).
RATE_RE = re.compile(r"^[1-9][0-9]{0,5}/[smhd]\Z")
USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
ID_RE = re.compile(r"^tbt?-[0-9a-f]{12}\Z")
CHUNK = 16 * 1024


def _checked(pattern: re.Pattern[str], what: str) -> Any:
    def check(text: str) -> str:
        if not pattern.match(text):
            raise argparse.ArgumentTypeError(f"not {what}: {text[:40]!r}")
        return text

    return check


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text[:20]!r}")
    return int(text)


def _build(build_id: str, *rest: str) -> str:
    return "/".join((BUILDS, urllib.parse.quote(build_id, safe=""), *rest))


def token_create(client: Client, ns: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"user": ns.user, "rate": ns.rate}
    if ns.burst is not None:
        body["burst"] = ns.burst
    if ns.max_queued is not None:
        body["max_queued"] = ns.max_queued
    reply = client.call("POST", TOKENS, body)
    if not ns.json:
        print(f"token:   {reply['secret']}")
        print(f"id:      {reply['id']} for {reply['user']}")
        print(f"limits:  {reply['rate']}, burst {reply['burst']}, {reply['max_queued']} queued at most")
        print("Shown this once. The user asks for a build with:")
        print(
            f"  curl -H 'Authorization: Bearer {reply['secret']}' -H 'Content-Type: application/json' \\\n"
            '    -d \'{"package": "category/name"}\' PUBLIC_URL/api/v1/test-build'
        )
    return reply


def token_list(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("GET", TOKENS)
    if not ns.json:
        print(f"{'ID':17} {'USER':16} {'RATE':7} {'BURST':>5} {'QUEUED':>7}  {'LAST USED':21} STATE")
        for t in reply["tokens"]:
            state = f"revoked {_when(t['revoked_at'])}" if t["revoked_at"] else "active"
            queued = f"{t['queued']}/{t['max_queued']}"
            print(
                f"{t['id']:17} {t['user']:16} {t['rate']:7} {t['burst']:>5} {queued:>7}  "
                f"{_when(t['last_used_at']):21} {state}"
            )
    return reply


def token_revoke(client: Client, ns: argparse.Namespace) -> Any:
    reply = client.call("DELETE", f"{TOKENS}/{urllib.parse.quote(ns.id, safe='')}")
    if not ns.json:
        print(f"revoked {reply['id']} of {reply['user']} (its {reply['queued']} queued builds stay queued)")
    return reply


def build_list(client: Client, ns: argparse.Namespace) -> Any:
    query = {"limit": str(ns.limit)} | ({"state": ns.state} if ns.state else {})
    reply = client.call("GET", f"{BUILDS}?{urllib.parse.urlencode(query)}")
    if not ns.json:
        print(f"{'ID':16} {'STATE':9} {'USER':14} {'PACKAGE':32} {'DRONE':12} {'QUEUED':21} WHERE")
        for b in reply["builds"]:
            where = f"#{b['position']}" if b["position"] else (b["reason"] or "")[:40]
            print(
                f"{b['id']:16} {b['state']:9} {b['user']:14} {b['cpv']:32} {b['drone'] or '-':12} "
                f"{_when(b['queued_at']):21} {where}"
            )
    return reply


def build_show(client: Client, ns: argparse.Namespace) -> Any:
    b = client.call("GET", _build(ns.id))
    if not ns.json:
        use = f" USE={' '.join(b['use'])}" if b["use"] else ""
        print(f"test build {b['id']}: {b['package']} -> {b['cpv']}{use}")
        print(
            f"state      {b['state']}"
            + (f" (#{b['position']}, ~{b['estimate_s']:.0f}s)" if b["position"] else "")
        )
        print(f"asked by   {b['user']} (token {b['token_id']})")
        print(f"queued     {_when(b['queued_at'])}")
        print(f"started    {_when(b['started_at'])}" + (f" on {b['drone']}" if b["drone"] else ""))
        print(
            f"finished   {_when(b['finished_at'])}"
            + (f", exit {b['exit_code']}" if b["exit_code"] is not None else "")
        )
        if b["reason"]:
            print(f"reason     {b['reason']}")
        for url in b["packages"]:
            print(f"package    {url}")
        notify = ", ".join(x for x in (b["notify_email"], b["webhook_url"]) if x) or "nobody"
        print(f"notify     {notify}" + (f" ({b['notified']})" if b["notified"] else ""))
        if b["log_tail"]:
            print("log tail:")
            print(b["log_tail"])
    return b


def build_cancel(client: Client, ns: argparse.Namespace) -> Any:
    b = client.call("POST", _build(ns.id, "cancel"))
    if not ns.json:
        what = "stopping it on " + b["drone"] if b["state"] == "running" else b["state"]
        print(f"{b['id']} ({b['cpv']}): {what}")
    return b


def build_log(client: Client, ns: argparse.Namespace) -> None:
    """The build log, as it grows with --follow (streamed, printed as it comes)."""
    path = _build(ns.id, "log") + ("?follow=1" if ns.follow else "")
    request = urllib.request.Request(
        client.url + path, headers={"X-Admin-Key": client.key, "Accept": "text/plain"}
    )
    try:
        # No timeout while following: a quiet build writes nothing for minutes.
        with urllib.request.urlopen(request, timeout=None if ns.follow else 30) as response:
            while chunk := response.read1(CHUNK):
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                sys.stdout.flush()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        exc.close()
        raise CliError(f"GET {path}: {exc.code} {raw.decode(errors='replace')[:200] or exc.reason}") from None
    except urllib.error.URLError as exc:
        raise CliError(
            f"cannot reach the controller at {client.url}: {exc.reason}", EXIT_UNREACHABLE
        ) from None


def add_parser(sub: Any, json_option: Any) -> None:
    testbuild = sub.add_parser(
        "testbuild",
        help="test builds: tokens for users, the queue, history, cancel, a log",
        description=__doc__.splitlines()[0],
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    build_id = _checked(ID_RE, "a test build id (tb-...)")

    tokens = testbuild.add_parser("token", help="test-build tokens").add_subparsers(
        dest="token_action", required=True, metavar="ACTION"
    )
    p = tokens.add_parser("create", help="make a token for a user (its secret is shown once)")
    p.add_argument("--user", required=True, type=_checked(USER_RE, "a user name"), help="who holds it")
    p.add_argument(
        "--rate", required=True, type=_checked(RATE_RE, "a rate like 5/h"), help="e.g. 5/h (s, m, h, d)"
    )
    p.add_argument("--burst", type=_positive, help="requests at once (default: the rate's count)")
    p.add_argument("--max-queued", type=_positive, help="its builds queued at once (default 3)")
    json_option(p)
    p.set_defaults(run=token_create)
    p = tokens.add_parser("list", help="tokens, their limits and use")
    json_option(p)
    p.set_defaults(run=token_list)
    p = tokens.add_parser("revoke", help="refuse a token from now on (it stays listed)")
    p.add_argument("id", type=_checked(ID_RE, "a token id (tbt-...)"))
    json_option(p)
    p.set_defaults(run=token_revoke)

    p = testbuild.add_parser("list", help="test builds, newest first")
    p.add_argument("--state", choices=STATES, help="only builds in this state")
    p.add_argument("--limit", type=_positive, default=50, help="at most this many (default 50)")
    json_option(p)
    p.set_defaults(run=build_list)
    p = testbuild.add_parser("show", help="one test build: its result, log tail, packages")
    p.add_argument("id", type=build_id)
    json_option(p)
    p.set_defaults(run=build_show)
    p = testbuild.add_parser("cancel", help="cancel a queued or running test build")
    p.add_argument("id", type=build_id)
    json_option(p)
    p.set_defaults(run=build_cancel)
    p = testbuild.add_parser("log", help="a test build's log")
    p.add_argument("id", type=build_id)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the build ends")
    p.set_defaults(run=build_log)
