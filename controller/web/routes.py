"""Route declarations: where a route is registered it says its parameters
(types and bounds), its request body, its reply view and its error
statuses. openapi.py makes the tiers' documents from these, and the
handlers read their parameters through the same objects, so the numbers
in the document are the numbers enforced (parse.py keeps the rules).

    LIMIT = IntParam("limit", "at most this many", default=100, lo=1, hi=1000)

    @routes.declare("GET", "/api/v1/events", EventsPage, params=(LIMIT,), errors=(404,))
    async def events(request): ... LIMIT.read(request) ...
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from swarm.controller.errors import InvalidArgument
from swarm.controller.web.parse import (
    MAX_QUERY_VALUE,
    query_int,
    query_list,
    query_value,
    shown,
    whole_number,
)

JSON = "application/json"
Where = Literal["query", "path"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class IntParam:
    """A whole number from ``lo`` to ``hi`` in the query (``default`` when absent) or the path."""

    name: str
    doc: str
    default: int = 0
    lo: int = 0
    hi: int = 2**62
    where: Where = "query"

    def read(self, request: web.Request) -> int:
        if self.where == "path":
            return whole_number(request.match_info[self.name], self.name, self.lo, self.hi)
        return query_int(request, self.name, self.default, self.lo, self.hi)

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer", "minimum": self.lo, "maximum": self.hi}
        if self.where == "query" and self.lo <= self.default <= self.hi:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True, slots=True)
class TextParam:
    """Text in the query (None when absent) or the path; ``choices`` for an
    enum; ``pattern`` a regex it must match whole (then ``doc`` says what it
    is, for the error)."""

    name: str
    doc: str
    where: Where = "query"
    max_len: int = MAX_QUERY_VALUE
    choices: tuple[str, ...] = ()
    default: str | None = None
    pattern: re.Pattern[str] | None = None

    def read(self, request: web.Request) -> str | None:
        if self.where == "path":
            value: str | None = request.match_info[self.name]
        else:
            value = query_value(request, self.name, max_len=self.max_len)
        if value is not None and self.choices and value not in self.choices:
            raise InvalidArgument(f"{self.name} must be one of {', '.join(self.choices)}, not {shown(value)}")
        if value is not None and self.pattern is not None and not self.pattern.fullmatch(value):
            raise InvalidArgument(f"{self.name} must be {self.doc}, not {shown(value)}")
        return value

    def schema(self) -> dict[str, Any]:
        if self.choices:
            schema: dict[str, Any] = {"type": "string", "enum": list(self.choices)}
        else:
            schema = {"type": "string", "maxLength": self.max_len}
            if self.where == "path":
                schema["minLength"] = 1
            if self.pattern is not None:
                # As views/base.Pattern: ECMA-262 has no \Z; its $ matches only at the end.
                schema["pattern"] = self.pattern.pattern.replace("\\Z", "$")
        if self.default is not None:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True, slots=True)
class ListParam:
    """Comma-separated values in the query (``type=a,b``): a set, empty when
    absent; with ``choices``, each of them one of those."""

    name: str
    doc: str
    choices: tuple[str, ...] = ()
    where: Where = "query"

    def read(self, request: web.Request) -> frozenset[str]:
        found = query_list(request, self.name)
        if self.choices and not found <= set(self.choices):
            raise InvalidArgument(f"{self.name} must be among {', '.join(self.choices)}")
        return found

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "maxLength": MAX_QUERY_VALUE}
        if self.choices:
            one = "|".join(re.escape(c) for c in self.choices)
            schema["pattern"] = f"^(({one})(,({one}))*)?$"
        return schema


Param = IntParam | TextParam | ListParam


@dataclass(frozen=True, slots=True)
class Body:
    """A JSON request body: ``shape`` is a dataclass read for the schema only
    (the handler checks the body with parse.py); ``required`` its fields that must be given."""

    shape: type
    required: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    summary: str
    reply: Any  # a view (or a union of views); None: free-form JSON object, or not JSON (content)
    status: int = 200
    params: tuple[Param, ...] = ()
    body: Body | None = None
    errors: frozenset[int] = frozenset()
    content: str = JSON  # of the reply; a websocket has none
    websocket: bool = False
    open: bool = False  # on the admin tier: needs no key or session (the login)
    description: str = ""
    notes: dict[int, str] = field(default_factory=dict)  # what an error status means here
    upload: str = ""  # the media type of a raw request body (a file uploaded as it is), "" for none


class Routes(web.RouteTableDef):
    """aiohttp's route table, whose routes also carry their declarations."""

    def __init__(self) -> None:
        super().__init__()
        self.operations: list[Operation] = []

    def declare(
        self,
        method: str,
        path: str,
        reply: Any,
        *,
        summary: str,
        status: int = 200,
        params: tuple[Param, ...] = (),
        body: Body | None = None,
        errors: tuple[int, ...] = (),
        content: str = JSON,
        websocket: bool = False,
        open: bool = False,
        description: str = "",
        notes: dict[int, str] | None = None,
        upload: str = "",
    ) -> Callable[[Handler], Handler]:
        self.operations.append(
            Operation(
                method=method,
                path=path,
                summary=summary,
                reply=reply,
                status=status,
                params=params,
                body=body,
                errors=frozenset(errors),
                content=content,
                websocket=websocket,
                open=open,
                description=description,
                notes=notes or {},
                upload=upload,
            )
        )
        return self.route(method, path)


def path_param(name: str, doc: str) -> TextParam:
    return TextParam(name, doc, where="path")


DRONE_NAME = path_param("name", "drone name or id")
