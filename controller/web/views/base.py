"""What every view shares: the JSON serializer and the schema annotations.

A view is a frozen, slotted dataclass whose type hints are the reply's
JSON Schema (controller/web/schemas.py reads them): ``str | None`` is
``["string", "null"]``, a ``Literal`` an enum, a tuple or list an array, a
nested view a ``$ref``. Constraints and descriptions ride on ``Annotated``
(``Doc``, ``Range``, ``Length``, ``Pattern``, ``Format``), so that they end up as schema keywords.
Times are ISO 8601 text (``swarm.clock.iso``), as the API has always sent.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any


@dataclass(frozen=True, slots=True)
class Doc:
    """A field's description in the schema."""

    text: str


@dataclass(frozen=True, slots=True)
class Range:
    """Bounds of a number (inclusive), as ``minimum``/``maximum``."""

    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True, slots=True)
class Length:
    """Bounds of a string's length or an array's items (inclusive)."""

    lo: int | None = None
    hi: int | None = None


@dataclass(frozen=True, slots=True)
class Pattern:
    """A string's ``pattern``: a Python regex anchored with ``^`` and ``\\Z``
    (ECMA-262 has no ``\\Z``: it becomes ``$``, which there matches only at the end)."""

    regex: re.Pattern[str]

    @property
    def ecma(self) -> str:
        return self.regex.pattern.replace("\\Z", "$")


@dataclass(frozen=True, slots=True)
class Format:
    """A string's ``format`` (``date-time``)."""

    name: str


# A time as ISO 8601 UTC with milliseconds; null where it has not happened.
Timestamp = Annotated[str | None, Format("date-time")]


@dataclass(frozen=True, slots=True)
class ErrorBody:
    status: int
    message: str


@dataclass(frozen=True, slots=True)
class ErrorView:
    """Every error of both tiers: a status and a message, never a traceback."""

    error: ErrorBody


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def plain(value: Any) -> Any:
    """A view as JSON-ready values: dataclasses as objects (None kept), tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: plain(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    return value


def dumps(view: Any) -> str:
    """The one serializer from a view to the JSON text of a reply."""
    return json.dumps(plain(view), separators=(",", ":"))
