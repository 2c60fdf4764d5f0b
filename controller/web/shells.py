"""Admin endpoints of terminals: the websocket to a drone's shell, the list
of sessions, kill, recordings, and one-off commands. Part of the admin
tier: its middleware authenticates every request; the websocket upgrade
also passes ``auth.authorize_websocket`` (a key, or a session with an
allowed Origin) and detaches once that key or session is gone.

Websocket ``/ws/ssh/{drone}?rows=R&cols=C[&session=ID][&via=ssh]``:

- ``via=agent`` (the default): the shell runs under the drone's agent.
  ``via=ssh``: the controller runs ``ssh -tt`` to the drone's ``ssh``
  access setting (or, for ``ssh = "local"``, a login shell on its own
  machine) under a PTY of its own, for when the agent is down; a drone
  without that setting gets a 409 before the upgrade. Both are the same
  kind of session (recorded, audited, limited, reattachable); the session
  message says ``via`` and, out of band, a ``note`` of where it runs.

- client -> server: binary frames are keystrokes (bytes for the PTY, as
  they are); text frames are JSON objects:
  ``{"type": "input", "data": "ls\\r"}`` (keystrokes as text, UTF-8),
  ``{"type": "resize", "rows": 40, "cols": 120}``,
  ``{"type": "close"}`` (end the shell; closing the websocket only detaches),
  ``{"type": "pause"}`` and ``{"type": "resume"}`` (flow control, below).
- server -> client: binary frames are terminal output; text frames are
  JSON (controller/shellmessages.py): ``{"type": "session", "session",
  "drone", "drone_id", "rows", "cols", "reattached", "grace_s", "via",
  "note"}`` first, then ``{"type": "exit", "exit_code", "signal", "reason",
  "timed_out", "closed_by", "message"}`` last (the websocket closes after
  it), ``{"type": "detached", "reason"}`` when another client took the
  session over, ``{"type": "error", "message"}`` for a malformed message.
  What does not apply is null (no exit status; a note only out of band).

Flow control (as ttyd does it): a terminal emulator parses more slowly
than a drone can print (xterm.js: 5-35 MB/s), so a client whose parser
falls behind sends ``pause``, and ``resume`` once it has caught up. While
paused the viewer sends no output: the output that came from the drone
waits in the viewer's send (one message, never a growing buffer), so the
session stops reading the drone's call and backpressure reaches the agent
and the PTY, as with a client that stops reading. Control messages (exit,
errors) still go out. Pausing twice is pausing; a reattach starts
flowing; a viewer that is closed or detached stops waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from aiohttp import WSCloseCode, WSMsgType, web

from swarm.controller.errors import FailedPrecondition, InvalidArgument
from swarm.controller.execs import Execs
from swarm.controller.fleet import DroneState
from swarm.controller.oobshell import OutOfBand
from swarm.controller.shellmessages import ErrorMessage, ExitMessage, ShellMessage
from swarm.controller.shells import ShellRegistry
from swarm.controller.shellsession import MAX_SIZE, ShellSession
from swarm.controller.web.auth import AUTH, Principal, authorize_websocket
from swarm.controller.web.common import SERVICES, abort_connection, close_websocket, json_response
from swarm.controller.web.healing import KEY_NAME
from swarm.controller.web.parse import check_text, json_body, loads, query_value, seconds, shown
from swarm.controller.web.routes import DRONE_NAME, Body, IntParam, Routes, TextParam, path_param
from swarm.controller.web.streams import look_again
from swarm.controller.web.views.admin import (
    ExecView,
    ShellReply,
    ShellsView,
    exec_view,
    recording_view,
    shell_view,
)
from swarm.controller.web.views.base import Doc, Length, Range, dumps
from swarm.tasks import race

log = logging.getLogger(__name__)

WS_HEARTBEAT = 30.0  # websocket pings; a client that answers none for half of it is dropped
WS_MAX_MESSAGE = 1 << 20
MAX_COMMAND = 8192
# A command's timeout: below a tenth of a second nothing starts; the upper
# bound is --exec-max-timeout.
MIN_EXEC_TIMEOUT = 0.1
CLOSE_TIMEOUT = 2.0
AUTH_CHECK = 5.0  # seconds between checks that a terminal's key or session is still valid
routes = Routes()
SHELL_ID = path_param("id", "shell session id (s-...)")


def registry_of(request: web.Request) -> ShellRegistry:
    shells = request.app[SERVICES].shells
    if shells is None:
        raise FailedPrecondition("terminals are not available on this controller")
    return shells


def execs_of(request: web.Request) -> Execs:
    execs = request.app[SERVICES].execs
    if execs is None:
        raise FailedPrecondition("commands are not available on this controller")
    return execs


@routes.declare(
    "GET",
    "/admin/api/shells",
    ShellsView,
    summary="terminal sessions (live first, then recently ended) and the recordings on disk",
    errors=(409,),
)
async def list_shells(request: web.Request) -> web.Response:
    registry = registry_of(request)
    recordings = await registry.recordings()
    return json_response(
        ShellsView(
            tuple(shell_view(info) for info in registry.sessions()),
            tuple(recording_view(info) for info in recordings),
        )
    )


@routes.declare(
    "DELETE",
    "/admin/api/shells/{id}",
    ShellReply,
    summary="kill a terminal session: its shell gets SIGHUP, then SIGKILL",
    params=(SHELL_ID,),
    errors=(404, 409),
)
async def kill_shell(request: web.Request) -> web.Response:
    info = await registry_of(request).kill(request.match_info["id"], request[KEY_NAME])
    return json_response(ShellReply(shell_view(info)))


@routes.declare(
    "GET",
    "/admin/api/shells/{id}/recording",
    None,
    summary="the session's recording, an asciinema v2 cast file (output and resizes)",
    params=(SHELL_ID,),
    errors=(404, 409),
    content="application/x-asciicast",
    notes={404: "no such recording"},
)
async def recording(request: web.Request) -> web.StreamResponse:
    path = registry_of(request).recording_path(request.match_info["id"])
    if not path.exists():
        raise web.HTTPNotFound()
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/x-asciicast",
            "Content-Disposition": f'attachment; filename="{path.name}"',
        },
    )


VIA = TextParam(
    "via",
    "agent (default): through the drone's agent; ssh: from the controller with the system ssh and the "
    "drone's ssh access setting (BatchMode, strict host keys), for when the agent is down",
    choices=("agent", "ssh"),
)


@dataclass(frozen=True, slots=True)
class ExecRequest:
    command: Annotated[str, Doc("run with sh -c"), Length(1, MAX_COMMAND)]
    timeout: Annotated[
        float | None,
        Doc("seconds (default 30; the upper bound is --exec-max-timeout)"),
        Range(MIN_EXEC_TIMEOUT),
    ]
    via: Annotated[Literal["agent", "ssh"] | None, Doc("as the query's via (either, not both differently)")]


@routes.declare(
    "POST",
    "/admin/api/drones/{name}/exec",
    ExecView,
    summary="run one command on the drone (sh -c, no terminal) and return its output and status; "
    "the process group is killed at the timeout. via=ssh runs it with ssh from the controller (the "
    "drone's ssh access setting), for when the agent is down",
    params=(DRONE_NAME, VIA),
    body=Body(ExecRequest, required=("command",)),
    errors=(404, 409, 503),
)
async def exec_command(request: web.Request) -> web.Response:
    execs = execs_of(request)
    state = request.app[SERVICES].fleet.require(request.match_info["name"])
    body = await json_body(request)
    # Tabs and lines are shell syntax; NUL and the other control characters
    # are refused here, before they reach a drone's agent, a log or a terminal.
    command = check_text(body.get("command"), "command", max_len=MAX_COMMAND, lines=True)
    limit = execs.max_timeout
    timeout = seconds(body.get("timeout", 30), "timeout", MIN_EXEC_TIMEOUT, limit)
    via = _via(request, body.get("via"))
    if via == SSH:
        oob = out_of_band(request, state)
        via = oob.via  # ssh, or local for a drone on this machine
        result = await execs.run_oob(state, oob, command, timeout, request[KEY_NAME])
    else:
        result = await execs.run(state, command, timeout, request[KEY_NAME])
    return json_response(exec_view(result, via))


AGENT, SSH = "agent", "ssh"


def _via(request: web.Request, body_value: Any = None) -> str:
    """``via`` from the query string or the JSON body: agent (the default) or ssh."""
    query = query_value(request, VIA.name)  # checked below, with the body's
    if query is not None and body_value is not None and query != body_value:
        raise InvalidArgument("via is given twice, differently, in the query and the body")
    via = body_value if body_value is not None else query or AGENT
    if via not in (AGENT, SSH):
        raise InvalidArgument(f"via must be {AGENT} or {SSH}, not {shown(str(via))}")
    return str(via)


def out_of_band(request: web.Request, state: DroneState) -> OutOfBand:
    """How to reach the drone without its agent (its ssh access setting,
    the one the healer uses), or a 409 that says it has none."""
    healer = request.app[SERVICES].healer
    if healer is None:
        raise FailedPrecondition(
            f"no ssh access configured for drone {state.name}: the healer is not running"
        )
    return OutOfBand.of(state.name, healer.access_of(state.id).ssh, healer.settings.ssh)


class WsViewer:
    """A websocket watching a shell session (shellsession.Viewer). A client that
    cannot take what is sent is dropped (gone), never allowed to end the
    session: aiohttp shares one drain waiter between a websocket's writers,
    so a writer cancelled while the client read nothing cancels the others'
    wait too; such a CancelledError, not aimed at the task, only means gone."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.request = request
        self.ws = ws
        self.gone = False
        self._flowing = asyncio.Event()  # cleared while the client has paused the output
        self._flowing.set()

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def release(self) -> None:
        """Nothing more goes to this viewer; an output waiting on a pause returns."""
        self.gone = True
        self._flowing.set()

    async def _send(self, send: Coroutine[Any, Any, None]) -> None:
        if self.gone or self.ws.closed:
            send.close()
            return
        try:
            await send  # awaits the transport's drain past its limit: the backpressure
        except (ConnectionError, RuntimeError):
            self.gone = True
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            self.gone = True
            self._abort()

    async def send_output(self, data: bytes) -> None:
        # Paused: hold this one message (and with it the session's reading of the drone).
        await self._flowing.wait()
        await self._send(self.ws.send_bytes(data))

    async def send_control(self, message: ShellMessage) -> None:
        await self._send(self.ws.send_str(dumps(message)))

    async def close(self, code: int, message: str) -> None:
        self.release()
        await close_websocket(self.request, self.ws, code, message, CLOSE_TIMEOUT)

    def _abort(self) -> None:
        abort_connection(self.request)


ROWS = IntParam("rows", "window rows", default=24, lo=1, hi=MAX_SIZE)
COLS = IntParam("cols", "window columns", default=80, lo=1, hi=MAX_SIZE)
REATTACH = TextParam("session", "reattach to this live session instead of opening one")


@routes.declare(
    "GET",
    "/ws/ssh/{drone}",
    None,
    summary="websocket: a terminal on the drone (a login shell under a PTY)",
    description="Binary frames are keystrokes and output; text frames are JSON messages: client -> server "
    '{"type":"input","data":"..."}, {"type":"resize","rows":R,"cols":C}, {"type":"close"}, '
    '{"type":"pause"}, {"type":"resume"}; server -> client {"type":"session",...} first, '
    '{"type":"exit","exit_code":N,...} last. Closing the websocket detaches; reattach with session= '
    "within the grace period. via=ssh: ssh -tt from the controller to the drone's ssh access setting "
    "under a PTY of the controller's (ssh = local: a login shell on the controller's machine), for when "
    "the agent is down; 409 before the upgrade if the drone has no ssh access setting.",
    params=(path_param("drone", "drone name or id"), ROWS, COLS, REATTACH, VIA),
    errors=(404, 409, 503),
    websocket=True,
)
async def ssh(request: web.Request) -> web.StreamResponse:
    """A terminal on a drone (the module docstring has the message format)."""
    registry = registry_of(request)
    principal = await authorize_websocket(request)  # a key or a session, and an allowed Origin
    key = principal.name
    drone = request.match_info["drone"]
    session_id = REATTACH.read(request)
    rows = ROWS.read(request)
    cols = COLS.read(request)
    via = _via(request)
    oob = None
    if via == SSH and not session_id:
        # Before the upgrade check too: a plain GET learns why (the CLI asks that way).
        state = request.app[SERVICES].fleet.require(drone)
        oob = out_of_band(request, state)
    if not web.WebSocketResponse().can_prepare(request).ok:
        raise InvalidArgument("this endpoint takes a websocket upgrade")
    reattach = bool(session_id)
    if session_id:
        session = registry.live_session(session_id, drone)
    elif oob is not None:
        session = await registry.open_oob_shell(state, oob, key, rows, cols)
    else:
        state = request.app[SERVICES].fleet.require(drone)
        session = await registry.open_shell(state, key, rows, cols)
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT, max_msg_size=WS_MAX_MESSAGE, compress=False)
    await ws.prepare(request)
    viewer = WsViewer(request, ws)
    try:
        if reattach:
            registry.on_reattach(session, key)
            if "rows" in request.query or "cols" in request.query:
                await session.resize(rows, cols)
        await session.attach(viewer, reattach=reattach)
        await race(
            _pump_input(ws, viewer, session, key),
            _watch_auth(request, principal, viewer),
            names=(f"ssh-input:{session.id}", f"ssh-auth:{session.id}"),
        )
    except FailedPrecondition as exc:
        await viewer.send_control(ExitMessage.of(None, None, exc.message))
    finally:
        viewer.release()
        session.detach(viewer)
        if not ws.closed:
            await ws.close(code=WSCloseCode.OK)
    return ws


async def _pump_input(ws: web.WebSocketResponse, viewer: WsViewer, session: ShellSession, key: str) -> None:
    """The client's messages to the session until either ends. One message
    at a time: a drone not reading its input stops us reading the socket."""
    async for msg in ws:
        if session.ended.is_set() or viewer.gone:
            return
        if msg.type == WSMsgType.BINARY:
            await session.input(msg.data)
        elif msg.type == WSMsgType.TEXT:
            problem = await _control(session, viewer, msg.data, key)
            if problem is not None:
                await viewer.send_control(ErrorMessage(message=problem))
        elif msg.type == WSMsgType.ERROR:
            log.info("websocket of shell %s failed: %s", session.id, ws.exception())
            return


async def _watch_auth(request: web.Request, principal: Principal, viewer: WsViewer) -> None:
    """Detach the viewer once its key is removed or its browser session ends
    (the shell lives on for the grace, for whoever may reattach)."""
    auth = request.app[AUTH]
    while True:
        now = auth.clock.time()
        expires = auth.expires_at(principal, now)
        await auth.clock.sleep(AUTH_CHECK if expires is None else min(AUTH_CHECK, look_again(expires - now)))
        if not auth.still_valid(principal, touch=True):
            await viewer.send_control(ErrorMessage(message="the session has ended: log in again"))
            await viewer.close(WSCloseCode.POLICY_VIOLATION, "the session has ended")
            return


async def _control(session: ShellSession, viewer: WsViewer, text: str, key: str) -> str | None:
    """One JSON message from the client; returns what was wrong with it, if anything."""
    try:
        message = loads(text, "a text frame")
    except InvalidArgument as exc:
        return f"{exc.message}: send keystrokes as binary frames or {{type: input}} messages"
    if not isinstance(message, dict):
        return "a message must be a JSON object with a type"
    kind = message.get("type")
    if kind == "input":
        data = message.get("data")
        if not isinstance(data, str):
            return "input needs data (a string)"
        await session.input(data.encode())
    elif kind == "resize":
        rows, cols = message.get("rows"), message.get("cols")
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIZE for v in (rows, cols)
        ):
            return f"resize needs rows and cols, whole numbers from 1 to {MAX_SIZE}"
        assert isinstance(rows, int) and isinstance(cols, int)
        await session.resize(rows, cols)
    elif kind == "close":
        session.close(f"closed by {key}", by=key)
    elif kind == "pause":
        viewer.pause()
    elif kind == "resume":
        viewer.resume()
    else:
        return f"unknown message type {str(kind)[:40]!r}: use input, resize, close, pause or resume"
    return None
