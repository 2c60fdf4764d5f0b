"""Admin endpoints of logs: named sources only, never a path from the request.

- ``GET /admin/api/logs/control-plane?lines=N``: the controller's own log.
- ``GET /admin/api/drones/{drone}/logs?source=S&lines=N``: a drone's
  ``agent``, ``build/<job or build id>`` or ``portage/<category>/<package>``
  log (controller/logs.py, agent/logs.py).
  Both answer ``{"source", "lines": [...], "notices": [...], "truncated"}``
  (a drone's also ``"drone"``): the last N lines (default 100, at most
  10,000). An unknown source is 404, a path-like one 400.
- Websockets ``/ws/logs/control-plane`` and ``/ws/logs/drones/{drone}``
  take the same query plus ``follow=1`` (default) or ``0``, and send JSON
  texts: ``{"type": "data", "text"}`` (log text, UTF-8, lines may span
  messages), ``{"type": "notice", "text"}`` (the file followed first, then
  rotations and truncations), and without follow a last ``{"type": "end"}``
  before the close. Errors come before the upgrade, as JSON answers.
  Backpressure: each message waits for the client; a slow client stops the
  drone's tail (controller/logs.py), nothing queues here.
"""

from __future__ import annotations

import codecs
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from swarm.controller.channels import Channels
from swarm.controller.errors import FailedPrecondition, InvalidArgument
from swarm.controller.fleet import DroneState
from swarm.controller.logs import LocalLogs, LogText, collect, drone_log
from swarm.controller.web.auth import authorize_websocket
from swarm.controller.web.common import SERVICES, json_response
from swarm.controller.web.parse import query_int, query_value, shown
from swarm.controller.web.streams import STREAMS, Stream, json_websocket, open_json
from swarm.logsources import CONTROL_PLANE, DRONE_SOURCES
from swarm.logtail import MAX_LINES, Piece

DEFAULT_LINES = 100
routes = web.RouteTableDef()


def _lines(request: web.Request) -> int:
    return query_int(request, "lines", DEFAULT_LINES, 0, MAX_LINES)


def _follow(request: web.Request) -> bool:
    raw = (query_value(request, "follow") or "1").lower()
    if raw not in ("0", "1", "true", "false"):
        raise InvalidArgument(f"follow must be 1 or 0, got {shown(raw)}")
    return raw in ("1", "true")


def _local(request: web.Request) -> LocalLogs:
    log_file = request.app[SERVICES].config.log_file
    return LocalLogs(None if str(log_file) in ("", ".") else log_file)


def _channels(request: web.Request) -> Channels:
    channels = request.app[SERVICES].channels
    if channels is None:
        raise FailedPrecondition("drone logs are not available on this controller")
    return channels


def _drone_pieces(
    request: web.Request, *, lines: int, follow: bool
) -> tuple[DroneState, str, AsyncGenerator[Piece, None]]:
    source = query_value(request, "source") or ""
    if not source:
        raise InvalidArgument(f"source is required ({DRONE_SOURCES})")
    state = request.app[SERVICES].fleet.require(request.match_info["drone"])
    return state, source, drone_log(_channels(request), state, source, lines=lines, follow=follow)


def _text_json(text: LogText) -> dict[str, Any]:
    return {"lines": text.lines, "notices": text.notices, "truncated": text.truncated}


@routes.get("/admin/api/logs/control-plane")
async def control_plane_log(request: web.Request) -> web.Response:
    pieces = _local(request).pieces(CONTROL_PLANE, lines=_lines(request), follow=False)
    return json_response({"source": CONTROL_PLANE, **_text_json(await collect(pieces))})


@routes.get("/admin/api/drones/{drone}/logs")
async def drone_logs(request: web.Request) -> web.Response:
    state, source, pieces = _drone_pieces(request, lines=_lines(request), follow=False)
    text = await collect(pieces)
    return json_response({"drone": state.name, "source": source, **_text_json(text)})


async def _serve(
    request: web.Request, pieces: AsyncGenerator[Piece, None], follow: bool
) -> web.StreamResponse:
    principal = await authorize_websocket(request)
    ws = json_websocket(request)
    async with contextlib.aclosing(pieces):
        first = await anext(pieces, None)  # the source's errors are answered before the upgrade
        send = await open_json(request, ws)

        async def pump() -> None:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            piece = first
            while piece is not None:
                if piece.notice:
                    await send({"type": "notice", "text": piece.notice})
                elif text := decoder.decode(piece.data):
                    await send({"type": "data", "text": text})
                piece = await anext(pieces, None)
            if not follow:
                await send({"type": "end"})

        await request.app[STREAMS].serve(Stream(request, ws, principal), pump())
    return ws


@routes.get("/ws/logs/control-plane")
async def ws_control_plane_log(request: web.Request) -> web.StreamResponse:
    follow = _follow(request)
    pieces = _local(request).pieces(CONTROL_PLANE, lines=_lines(request), follow=follow)
    return await _serve(request, pieces, follow)


@routes.get("/ws/logs/drones/{drone}")
async def ws_drone_log(request: web.Request) -> web.StreamResponse:
    follow = _follow(request)
    _state, _source, pieces = _drone_pieces(request, lines=_lines(request), follow=follow)
    return await _serve(request, pieces, follow)
