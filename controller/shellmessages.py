"""The JSON text messages a terminal's websocket sends to its client
(web/shells.py describes the whole exchange): the session's own, from
shellsession.py, and the websocket's, from web/shells.py.

Frozen views like the web tier's replies, serialized with
``views.base.dumps``. Keyword-only, so that ``type`` can have its one value
as a default and still come first in the JSON. A field that does not apply
to a message (no exit status, no note) is null, never left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from swarm.controller.channel_frames import ExitInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionMessage:
    """First to every viewer: the session it watches."""

    type: Literal["session"] = "session"
    session: str
    drone: str
    drone_id: str
    rows: int
    cols: int
    reattached: bool
    grace_s: float
    via: str
    note: str | None  # out of band: where the shell runs (ssh to whom, or this machine)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitMessage:
    """Last to the viewer: how the shell ended (the websocket closes after it)."""

    type: Literal["exit"] = "exit"
    exit_code: int | None
    signal: int | None
    reason: str | None
    timed_out: bool | None
    closed_by: str | None
    message: str | None

    @classmethod
    def of(cls, exit: ExitInfo | None, closed_by: str | None, message: str | None) -> ExitMessage:
        if exit is None:
            return cls(
                exit_code=None, signal=None, reason=None, timed_out=None, closed_by=closed_by, message=message
            )
        return cls(
            exit_code=exit.exit_code,
            signal=exit.signal,
            reason=exit.reason,
            timed_out=exit.timed_out,
            closed_by=closed_by,
            message=message,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DetachedMessage:
    """Another client took the session over."""

    type: Literal["detached"] = "detached"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMessage:
    """A client's message was malformed, or its session has ended."""

    type: Literal["error"] = "error"
    message: str


ShellMessage = SessionMessage | ExitMessage | DetachedMessage | ErrorMessage
