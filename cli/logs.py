"""``swarm-cli logs``: a named log of a drone or of the controller.

``swarm-cli logs DRONE [--source S]`` reads a drone's ``agent`` log (the
default), ``build/<job or build id>`` or ``portage/<category>/<package>``;
``swarm-cli logs control-plane`` the controller's own. Without
``--follow`` the last ``-n`` lines (``GET``); with it the websocket
``/ws/logs/...``, across log rotation, until Ctrl-C. The text goes to
stdout as it is; notices (the file read, a rotation, a truncation) go to
stderr. After a dropped connection the follow goes on from the end of the
log (lines written in between are not shown, and it says so).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any

from swarm.logsources import CONTROL_PLANE

if TYPE_CHECKING:
    from swarm.cli.main import Client


def _paths(ns: argparse.Namespace) -> tuple[str, str, dict[str, str]]:
    """The GET path, the websocket path and the query of the log asked for."""
    query = {"lines": str(ns.lines)}
    if ns.target == CONTROL_PLANE:
        return "/admin/api/logs/control-plane", "/ws/logs/control-plane", query
    drone = urllib.parse.quote(ns.target, safe="")
    query["source"] = ns.source
    return f"/admin/api/drones/{drone}/logs", f"/ws/logs/drones/{drone}", query


def logs(client: Client, ns: argparse.Namespace) -> Any:
    # Here, not at the top: swarm.cli.main imports this module for its parser,
    # and swarm.cli.live brings asyncio, some 25 ms that other commands need not pay.
    from swarm.cli import live

    get_path, ws_path, query = _paths(ns)
    if ns.follow:
        live.require("swarm-cli logs --follow")
        live.run(_follow(client, ws_path, query, ns.json))
        return None
    reply = client.call("GET", f"{get_path}?{urllib.parse.urlencode(query)}")
    if not ns.json:
        for notice in reply["notices"]:
            live.say(notice)
        sys.stdout.write("".join(line + "\n" for line in reply["lines"]))
        if reply["truncated"]:
            live.say("the tail was cut at 4 MiB: ask for fewer lines")
    return reply


async def _follow(client: Client, path: str, query: dict[str, str], as_json: bool) -> None:
    from swarm.cli import live

    output = live.Output(1)
    connections = 0

    def next_query() -> dict[str, str]:
        # The tail only once: after a reconnect, from the end of the log.
        nonlocal connections
        connections += 1
        return query if connections == 1 else {**query, "lines": "0"}

    async def show(message: dict[str, Any]) -> None:
        if as_json:
            await output.line(json.dumps(message, separators=(",", ":")))
        elif message.get("type") == "data":
            await output.write(str(message["text"]).encode())
        elif message.get("type") == "notice":
            live.say(str(message["text"]))

    try:
        async with live.Live(client.url, client.key) as admin:
            await live.follow_json(admin, path, show, query=next_query)
    finally:
        output.close()


def add_parser(sub: Any, json_option: Any) -> None:
    p = sub.add_parser(
        "logs",
        help="a drone's log (agent, build, portage) or the controller's own",
        description=__doc__.splitlines()[0] + " Sources are names, never paths.",
    )
    p.add_argument("target", metavar="DRONE|control-plane", help="a drone, or control-plane (the controller)")
    p.add_argument(
        "--source",
        default="agent",
        help="on a drone: agent (default), build/<job or build id>, portage/<category>/<package>",
    )
    p.add_argument("-n", "--lines", type=int, default=100, help="start with the last N lines (default 100)")
    p.add_argument("-f", "--follow", action="store_true", help="then what is written, until Ctrl-C")
    json_option(p)
    p.set_defaults(run=logs)
