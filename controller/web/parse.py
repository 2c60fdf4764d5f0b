"""Strict parsing of what comes in at the HTTP edge: query and path values,
JSON bodies and the free text in them.

Lenient parsing let odd input through to places that failed on it with a
500 (``str.isdigit()`` is true for ``²``, which ``int()`` refuses; a
charset that Python does not know; JSON nested deeper than the
interpreter's recursion limit) or read it as something it was not
(``limit=٣`` as 3, a form body as JSON, ``NaN`` as a number). Here:

- numbers in a query or path are ASCII digits only, bounded in length
  and range;
- a query value is given at most once, bounded in length, and no query
  or path value holds a control character (``strict_input``);
- a JSON body needs ``Content-Type: application/json`` (charset absent or
  UTF-8; anything else is 415), is at most ``MAX_BODY`` bytes unless its
  endpoint allows more (413), at most ``MAX_DEPTH`` deep (checked
  before parsing), has no NaN or Infinity, integers within +-2^53 (what
  JavaScript clients read exactly) and only finite floats, and no lone
  surrogate (it cannot be stored or sent on);
- names are refused with any control character, commands with any but a
  tab or a newline (``check_text``).

Each refusal is an InvalidArgument (400) or UnsupportedMediaType (415)
naming the value and what was wrong with it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from swarm.clock import parse_iso
from swarm.controller.errors import InvalidArgument, UnsupportedMediaType

MAX_DEPTH = 32  # nesting of JSON arrays and objects; the API's own bodies are 2 deep
# Bytes of a JSON body: parsing runs on the event loop (and the login's
# before any key is checked), so a body is small unless its endpoint says
# otherwise (the queue's list of atoms); the tier's client_max_size (1 MiB)
# bounds every body.
MAX_BODY = 64 * 1024
MAX_SAFE_INT = 2**53  # beyond it JavaScript's numbers (the console) are not exact
MAX_DIGITS = 20  # of a whole number in a query or path (2**62 has 19)
MAX_QUERY_VALUE = 1024  # characters of one query or path value
MAX_QUERY_KEYS = 32  # the widest endpoint reads 6
MAX_TIME_TEXT = 64  # characters of an ISO 8601 time
SHOWN = 40  # characters of a bad value quoted back in an error

# C0 and C1 controls, DEL, lone surrogates, and the invisible marks that
# reorder text as it is shown (Trojan Source): a name or command with one
# shows differently from what it is, on a terminal, in a log or the console.
_INVISIBLE = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff{_INVISIBLE}]")
# A command is a shell script: it may have tabs and lines.
_COMMAND_CONTROL = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f\\ud800-\\udfff{_INVISIBLE}]")
_DIGITS = re.compile(r"[0-9]+")  # ASCII: str.isdigit() is true for '²' and '٣' too
_TIME = re.compile(r"[0-9T:.+Zz-]+")  # what an ISO 8601 time is written with
# A JSON string, with its escapes; what is left outside strings is structure.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))  # bytes.translate deletes these
_TOO_DEEP = b"[" * (MAX_DEPTH + 1)
JSON_TYPE = "application/json"
CHARSETS = frozenset({"utf-8", "utf8"})


def shown(value: str) -> str:
    """A bad value as an error message quotes it: short, control characters escaped."""
    return repr(value[:SHOWN]) + ("..." if len(value) > SHOWN else "")


def control_character(text: str, *, lines: bool = False) -> str | None:
    """Why ``text`` is refused for a control character (``lines``: tabs and
    newlines are fine), or None."""
    found = (_COMMAND_CONTROL if lines else _CONTROL).search(text)
    if found is None:
        return None
    return f"a control character (U+{ord(found.group()):04X} at position {found.start()})"


def check_text(value: object, what: str, *, max_len: int, lines: bool = False) -> str:
    """A string field of a body: not blank, at most ``max_len`` characters,
    without control characters (``lines``: tabs and newlines allowed, as in
    a command)."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string")
    if not value.strip():
        raise InvalidArgument(f"{what} must not be empty")
    if len(value) > max_len:
        raise InvalidArgument(f"{what} is longer than {max_len} characters")
    problem = control_character(value, lines=lines)
    if problem is not None:
        raise InvalidArgument(f"{what} contains {problem}")
    return value


def optional_text(body: dict[str, Any], key: str, *, max_len: int = 128) -> str | None:
    """An optional string field of a body (None if absent or null), checked as ``check_text``."""
    value = body.get(key)
    return None if value is None else check_text(value, key, max_len=max_len)


# -- numbers -----------------------------------------------------------------------


def whole_number(raw: str, name: str, lo: int, hi: int) -> int:
    """``raw`` (from a query or path) as a whole number from lo to hi."""
    if len(raw) > MAX_DIGITS or not _DIGITS.fullmatch(raw):
        raise InvalidArgument(f"{name} must be a whole number from {lo} to {hi}, got {shown(raw)}")
    value = int(raw)
    if not lo <= value <= hi:
        raise InvalidArgument(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def seconds(value: object, what: str, lo: float, hi: float) -> float:
    """A JSON number of seconds from lo to hi."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise InvalidArgument(f"{what} must be a number of seconds from {lo:g} to {hi:g}")
    return float(value)


# -- query and path ----------------------------------------------------------------


def query_value(request: web.Request, name: str, *, max_len: int = MAX_QUERY_VALUE) -> str | None:
    """The query value ``name``, given once, or None if absent (strict_input
    has refused control characters in every value already)."""
    values = request.query.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise InvalidArgument(f"{name} is given {len(values)} times: give it once")
    raw = values[0]
    if len(raw) > max_len:
        raise InvalidArgument(f"{name} is longer than {max_len} characters")
    return raw


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = query_value(request, name)
    if raw is None or raw == "":
        return default
    return whole_number(raw, name, lo, hi)


def query_list(request: web.Request, name: str) -> frozenset[str]:
    """A comma-separated query value (``type=a,b``) as a set; empty if absent."""
    return frozenset(item for item in (query_value(request, name) or "").split(",") if item)


def query_since(request: web.Request) -> tuple[int | None, float | None]:
    """``since`` is an event id (exclusive) or an ISO 8601 time (inclusive)."""
    raw = query_value(request, "since")
    if raw is None or raw == "":
        return None, None
    if _DIGITS.fullmatch(raw):
        return whole_number(raw, "since", 0, 2**62), None
    problem = f"since must be an event id or an ISO 8601 time, got {shown(raw)}"
    if len(raw) > MAX_TIME_TEXT or not _TIME.fullmatch(raw):
        raise InvalidArgument(problem)
    try:
        return None, parse_iso(raw)
    except (ValueError, OverflowError):
        raise InvalidArgument(problem) from None


@web.middleware
async def strict_input(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """No control character in a path or query value, no endless query:
    checked once for every route, before any handler reads them."""
    query = request.query
    if len(query) > MAX_QUERY_KEYS:
        raise InvalidArgument(f"{len(query)} query values: at most {MAX_QUERY_KEYS}")
    where = [("query value", key, value) for key, value in query.items()]
    where += [("path value", key, value) for key, value in request.match_info.items()]
    for kind, key, value in where:
        if len(value) > MAX_QUERY_VALUE:
            raise InvalidArgument(f"{kind} {shown(key)} is longer than {MAX_QUERY_VALUE} characters")
        problem = control_character(key) or control_character(value)
        if problem is not None:
            raise InvalidArgument(f"{kind} {shown(key)} contains {problem}")
    return await handler(request)


# -- JSON --------------------------------------------------------------------------


def _bounded_int(text: str) -> int:
    if len(text) > 17 or abs(value := int(text)) > MAX_SAFE_INT:
        raise InvalidArgument(f"the number {text[:SHOWN]} is out of range: integers within +-2^53 only")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidArgument(f"the number {text[:SHOWN]} is out of range: finite numbers only")
    return value


def _no_constant(name: str) -> Any:
    raise InvalidArgument(f"{name} is not a JSON number: finite numbers only")


def _check_depth(text: str, what: str) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH before the parser recurses
    into it. With strings set aside and braces read as brackets, each pass
    removes the innermost pairs (every "[]"): valid JSON is empty after as
    many passes as it is deep. Linear passes at C speed, at most MAX_DEPTH
    of them, and a run of MAX_DEPTH + 1 openings ends it at once."""
    structure = _STRING.sub("", text).encode("utf-8", "surrogatepass")
    shape = structure.translate(None, _NOT_BRACKETS).replace(b"{", b"[").replace(b"}", b"]")
    for _ in range(MAX_DEPTH):
        if not shape:
            return
        if _TOO_DEEP in shape:
            break
        inner = shape.replace(b"[]", b"")
        if len(inner) == len(shape):
            raise InvalidArgument(f"{what} is not valid JSON (its brackets do not match)")
        shape = inner
    if shape:
        raise InvalidArgument(f"{what} is nested deeper than {MAX_DEPTH} levels")


def loads(text: str, what: str = "the request body") -> Any:
    """JSON text under the rules above (also a websocket's JSON messages)."""
    _check_depth(text, what)
    try:
        value = json.loads(
            text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant
        )
    except ValueError as exc:
        raise InvalidArgument(f"{what} is not valid JSON ({_reason(exc)})") from None
    if "\\u" in text:  # a lone surrogate can only come from an escape
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise InvalidArgument(f"{what} holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
    return value


def _reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return str(exc)[:100]


# What ``curl -d`` sends unless told otherwise.
FORM_TYPE = "application/x-www-form-urlencoded"


async def json_body(
    request: web.Request, *, max_size: int = MAX_BODY, curl_d: bool = False
) -> dict[str, Any]:
    """The request's JSON object ({} without a body), or a 400/413/415.
    ``curl_d``: a JSON body sent as a form (curl -d) is taken too; only for
    a route that wants an Authorization header, which a page of another
    origin cannot send without asking first (a form's POST it can)."""
    if not request.can_read_body:
        return {}
    if request.content_length is not None and request.content_length > max_size:
        raise web.HTTPRequestEntityTooLarge(max_size, request.content_length)
    if request.content_type != JSON_TYPE and not (curl_d and request.content_type == FORM_TYPE):
        raise UnsupportedMediaType(
            f"the request body must be JSON sent as Content-Type: {JSON_TYPE}, "
            f"not {shown(request.content_type)}"
        )
    charset = request.charset
    if charset is not None and charset.lower() not in CHARSETS:
        raise UnsupportedMediaType(f"a JSON body must be UTF-8, not charset {shown(charset)}")
    raw = await request.read()  # 413 past the application's client_max_size
    if len(raw) > max_size:
        raise web.HTTPRequestEntityTooLarge(max_size, len(raw))
    if not raw:
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"the request body is not UTF-8 (byte {exc.start})") from None
    body = loads(text)
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return body
