"""``swarm-cli protocol`` and ``swarm-cli events --follow``: the protocol
log and the event stream of the admin tier, one line per message (with
``--json`` one JSON object per line, as the API sends it).

``protocol`` without ``--follow`` shows the recent entries of
``GET /admin/api/protocol``; with it, the live ``/ws/protocol``.
``events --follow`` shows the recent events, then the live
``/ws/events`` from the last id seen, so a reconnect neither repeats nor
misses one.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swarm.cli import live
    from swarm.cli.main import Client

# swarm.cli.live and swarm.clock are imported where they are used: swarm.cli.main
# imports this module at every call, and they bring asyncio, some 25 ms that a
# command which only asks and prints need not pay.

NAMES_REFRESH = 5.0  # seconds between lookups of drone names for ids not known yet
HEARTBEAT = "heartbeat"


def _filters(ns: argparse.Namespace) -> dict[str, str]:
    query = {}
    if ns.drone:
        query["drone"] = ns.drone
    if ns.type:
        query["type"] = ns.type
    return query


def _compact(item: Mapping[str, Any]) -> str:
    return json.dumps(item, separators=(",", ":"))


def clock(ts: str) -> str:
    """An API time as local wall-clock time with milliseconds."""
    from swarm.clock import parse_iso

    try:
        value = parse_iso(ts)
    except (TypeError, ValueError):
        return str(ts)
    return time.strftime("%H:%M:%S", time.localtime(value)) + f".{int(value * 1000) % 1000:03d}"


def protocol_line(entry: Mapping[str, Any], names: Mapping[str, str]) -> str:
    drone_id = str(entry.get("drone_id"))
    drone = names.get(drone_id) or drone_id[:12]
    latency = entry.get("latency_ms")
    after = f"  {latency:.1f} ms" if isinstance(latency, int | float) else ""
    return (
        f"{clock(entry['ts'])}  {entry['direction']:3}  {drone:20} {entry['type']:18} "
        f"{entry['size']:>7} B{after}"
    )


def event_line(event: Mapping[str, Any]) -> str:
    return f"{event['ts']}  {event['type']:22} {event['message']}"


def sample_heartbeats(entries: list[dict[str, Any]], every: int) -> list[dict[str, Any]]:
    """Every Nth heartbeat of each drone (its 1st, N+1th, ...), as /ws/protocol samples."""
    if every <= 1:
        return entries
    seen: dict[str, int] = {}
    kept = []
    for entry in entries:
        if entry["type"] == HEARTBEAT:
            count = seen.get(entry["drone_id"], 0)
            seen[entry["drone_id"]] = count + 1
            if count % every:
                continue
        kept.append(entry)
    return kept


def _names(reply: Any) -> dict[str, str]:
    return {str(d["id"]): str(d["name"]) for d in reply["drones"]}


class DroneNames:
    """Drone ids to names for the lines of a live stream, looked up again
    (not too often) when an unknown id shows up."""

    def __init__(self, admin: live.Live) -> None:
        self._admin = admin
        self._names: dict[str, str] = {}
        self._looked_up = 0.0

    async def refresh(self) -> None:
        self._looked_up = time.monotonic()
        self._names = _names(await self._admin.get_json("/admin/api/drones"))

    async def of(self, drone_id: str) -> Mapping[str, str]:
        if drone_id not in self._names and time.monotonic() - self._looked_up > NAMES_REFRESH:
            await self.refresh()
        return self._names


def protocol(client: Client, ns: argparse.Namespace) -> Any:
    if ns.follow:
        from swarm.cli import live

        live.require("swarm-cli protocol --follow")
        live.run(follow_protocol(client, ns))
        return None
    query = {"limit": str(ns.limit), **_filters(ns)}
    reply = client.call("GET", "/admin/api/protocol?" + urllib.parse.urlencode(query))
    reply["entries"] = sample_heartbeats(reply["entries"], ns.sample)
    if not ns.json:
        names = _names(client.call("GET", "/admin/api/drones"))
        for entry in reply["entries"]:
            print(protocol_line(entry, names))
    return reply


async def follow_protocol(client: Client, ns: argparse.Namespace) -> None:
    from swarm.cli import live

    query = {**_filters(ns), "sample": str(ns.sample)}
    output = live.Output(1)
    try:
        async with live.Live(client.url, client.key) as admin:
            names = DroneNames(admin)
            if not ns.json:
                await names.refresh()

            async def show(entry: dict[str, Any]) -> None:
                if ns.json:
                    await output.line(_compact(entry))
                else:
                    await output.line(protocol_line(entry, await names.of(str(entry.get("drone_id")))))

            await live.follow_json(admin, "/ws/protocol", show, query=lambda: query)
    finally:
        output.close()


def follow_events(client: Client, ns: argparse.Namespace) -> None:
    from swarm.cli import live

    live.require("swarm-cli events --follow")
    live.run(_follow_events(client, ns))


async def _follow_events(client: Client, ns: argparse.Namespace) -> None:
    from swarm.cli import live

    filters = _filters(ns)
    output = live.Output(1)
    try:
        async with live.Live(client.url, client.key) as admin:
            recent = await admin.get_json("/admin/api/events", {"limit": str(ns.limit), **filters})
            last = int(recent["last_id"])  # counts events the filters leave out: resume after it

            async def show(event: dict[str, Any]) -> None:
                nonlocal last
                await output.line(_compact(event) if ns.json else event_line(event))
                last = max(last, int(event["id"]))

            for event in recent["events"]:
                await show(event)
            await live.follow_json(
                admin, "/ws/events", show, query=lambda: {**filters, "since": str(last)}, resumes=True
            )
    finally:
        output.close()
