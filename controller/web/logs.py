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

from aiohttp import web

from swarm.controller.channels import Channels
from swarm.controller.errors import FailedPrecondition, InvalidArgument
from swarm.controller.fleet import DroneState
from swarm.controller.logs import LocalLogs, LogText, collect, drone_log
from swarm.controller.web.auth import authorize_websocket
from swarm.controller.web.common import SERVICES, json_response
from swarm.controller.web.parse import query_value, shown
from swarm.controller.web.routes import IntParam, Routes, TextParam, path_param
from swarm.controller.web.streams import STREAMS, Stream, json_websocket, open_json
from swarm.controller.web.views.admin import DroneLogView, LogTailView
from swarm.controller.web.views.messages import LogData, LogEnd, LogNotice
from swarm.logsources import CONTROL_PLANE, DRONE_SOURCES
from swarm.logtail import MAX_LINES, Piece

DEFAULT_LINES = 100
routes = Routes()
LINES = IntParam("lines", "start with the last N lines", default=DEFAULT_LINES, lo=0, hi=MAX_LINES)
SOURCE = TextParam("source", f"{DRONE_SOURCES}; never a path")
FOLLOW = TextParam(
    "follow",
    "1 (default): go on with what is written, across rotation; 0: end",
    choices=("0", "1", "true", "false"),
)
DRONE = path_param("drone", "drone name or id")
WEBSOCKET = (
    "A websocket (Upgrade request; auth and Origin as /ws/events). Each text message is JSON: "
    '{"type": "data", "text"} log text (lines may span messages), {"type": "notice", "text"} the file '
    'followed, a rotation or truncation, and without follow a last {"type": "end"}. A bad or unknown '
    "source is answered before the upgrade."
)


def _lines(request: web.Request) -> int:
    return LINES.read(request)


def _follow(request: web.Request) -> bool:
    raw = (query_value(request, FOLLOW.name) or "1").lower()
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
    source = SOURCE.read(request) or ""
    if not source:
        raise InvalidArgument(f"source is required ({DRONE_SOURCES})")
    state = request.app[SERVICES].fleet.require(request.match_info["drone"])
    return state, source, drone_log(_channels(request), state, source, lines=lines, follow=follow)


@routes.declare(
    "GET",
    "/admin/api/logs/control-plane",
    LogTailView,
    summary="the tail of the controller's own log",
    params=(LINES,),
    errors=(404,),
)
async def control_plane_log(request: web.Request) -> web.Response:
    pieces = _local(request).pieces(CONTROL_PLANE, lines=_lines(request), follow=False)
    text = await collect(pieces)
    return json_response(LogTailView(CONTROL_PLANE, tuple(text.lines), tuple(text.notices), text.truncated))


@routes.declare(
    "GET",
    "/admin/api/drones/{drone}/logs",
    DroneLogView,
    summary="the tail of a drone's log source",
    params=(DRONE, SOURCE, LINES),
    errors=(404, 409, 503),
)
async def drone_logs(request: web.Request) -> web.Response:
    state, source, pieces = _drone_pieces(request, lines=_lines(request), follow=False)
    text: LogText = await collect(pieces)
    return json_response(
        DroneLogView(source, tuple(text.lines), tuple(text.notices), text.truncated, drone=state.name)
    )


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
                    await send(LogNotice(text=piece.notice))
                elif text := decoder.decode(piece.data):
                    await send(LogData(text=text))
                piece = await anext(pieces, None)
            if not follow:
                await send(LogEnd())

        await request.app[STREAMS].serve(Stream(request, ws, principal), pump())
    return ws


@routes.declare(
    "GET",
    "/ws/logs/control-plane",
    None,
    summary="follow the controller's own log",
    description=WEBSOCKET,
    params=(LINES, FOLLOW),
    errors=(404,),
    websocket=True,
)
async def ws_control_plane_log(request: web.Request) -> web.StreamResponse:
    follow = _follow(request)
    pieces = _local(request).pieces(CONTROL_PLANE, lines=_lines(request), follow=follow)
    return await _serve(request, pieces, follow)


@routes.declare(
    "GET",
    "/ws/logs/drones/{drone}",
    None,
    summary="follow a drone's log source",
    description=WEBSOCKET,
    params=(DRONE, SOURCE, LINES, FOLLOW),
    errors=(404, 409, 503),
    websocket=True,
)
async def ws_drone_log(request: web.Request) -> web.StreamResponse:
    follow = _follow(request)
    _state, _source, pieces = _drone_pieces(request, lines=_lines(request), follow=follow)
    return await _serve(request, pieces, follow)
