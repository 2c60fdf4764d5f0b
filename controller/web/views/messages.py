"""The websockets' messages that are not items of an API list: the gaps of
/ws/events and /ws/protocol (web/streams.py) and the pieces of a followed
log (web/logs.py). Serialized like every view (base.dumps); ``type``
comes first on the wire, hence keyword-only fields with its one value as
the default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from swarm.controller.web.views.base import Doc, Range

Count = Annotated[int, Range(0)]


@dataclass(frozen=True, slots=True)
class EventsGap:
    """``dropped`` events after ``after_id`` did not fit a slow client's queue."""

    dropped: Count
    after_id: Annotated[int, Doc("the last event sent before the gap")]


@dataclass(frozen=True, slots=True)
class ProtocolGap:
    """``dropped`` protocol entries after ``after_seq`` did not fit a slow client's queue."""

    dropped: Count
    after_seq: Annotated[int, Doc("the last entry sent before the gap")]


@dataclass(frozen=True, slots=True, kw_only=True)
class LogData:
    """Log text, UTF-8; a line may span messages."""

    type: Literal["data"] = "data"
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LogNotice:
    """The file followed first, then rotations and truncations."""

    type: Literal["notice"] = "notice"
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LogEnd:
    """The last message of a log not followed (follow=0), before the close."""

    type: Literal["end"] = "end"
