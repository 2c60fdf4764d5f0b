"""JSON Schema (OpenAPI 3.1, draft 2020-12) from the views' type hints.

``str | None`` becomes ``{"type": ["string", "null"]}``, a ``Literal`` an
``enum``, a tuple or list an ``array``, ``dict[str, X]`` an object of X, a
nested view a ``$ref`` to a component named after its class (every field
required, no others allowed: a reply that drifts from its view fails
validation). ``Annotated`` metadata (views/base.py: ``Doc``, ``Range``,
``Length``, ``Pattern``, ``Format``) become schema keywords.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from swarm.controller.web.views.base import Doc, Format, Length, Pattern, Range

_PRIMITIVES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
REF = "#/components/schemas/"


class SchemaBuilder:
    """Schemas of type hints; the views met on the way gather in ``components``."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def of(self, hint: Any) -> dict[str, Any]:
        origin = typing.get_origin(hint)
        if origin is typing.Annotated:
            base, *meta = typing.get_args(hint)
            return _annotate(self.of(base), meta)
        if hint is Any:
            return {}
        if hint in _PRIMITIVES:
            return {"type": _PRIMITIVES[hint]}
        if origin is Literal:
            return _enum(list(typing.get_args(hint)))
        if origin in (Union, types.UnionType):
            return self._union(typing.get_args(hint))
        if origin in (tuple, list):
            args = typing.get_args(hint)
            return {"type": "array", "items": self.of(args[0]) if args else {}}
        if origin is dict:
            _key, value = typing.get_args(hint)
            return (
                {"type": "object", "additionalProperties": self.of(value)}
                if value is not Any
                else {"type": "object"}
            )
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return self.view(hint)
        raise TypeError(f"no JSON Schema for {hint!r}")

    def view(self, cls: type) -> dict[str, Any]:
        """A $ref to the component of a view (made on first use)."""
        name = cls.__name__
        if name not in self.components:
            self.components[name] = {}  # a view that holds itself gets its $ref
            hints = typing.get_type_hints(cls, include_extras=True)
            fields = [f.name for f in dataclasses.fields(cls)]
            schema: dict[str, Any] = {
                "type": "object",
                "properties": {f: self.of(hints[f]) for f in fields},
                "required": fields,
                "additionalProperties": False,
            }
            doc = (cls.__doc__ or "").strip()
            if doc and not doc.startswith(f"{name}("):  # not the dataclass's generated signature
                schema = {"description": " ".join(doc.split()), **schema}
            self.components[name] = schema
        return {"$ref": REF + name}

    def _union(self, members: tuple[Any, ...]) -> dict[str, Any]:
        parts = [self.of(m) for m in members]
        if all("$ref" not in p and "anyOf" not in p for p in parts):
            merged: dict[str, Any] = {}
            kinds: list[str] = []
            values: list[Any] = []
            enum = any("enum" in p for p in parts)
            for part in parts:
                kind = part.get("type")
                kinds += kind if isinstance(kind, list) else [kind] if kind else []
                if enum:
                    values += part.get("enum", [None] if part.get("type") == "null" else [])
                merged |= {k: v for k, v in part.items() if k not in ("type", "enum")}
            merged["type"] = list(dict.fromkeys(kinds)) if len(set(kinds)) > 1 else kinds[0]
            if enum:
                merged["enum"] = list(dict.fromkeys(values))
            return merged
        return {"anyOf": parts}


def _enum(values: list[Any]) -> dict[str, Any]:
    kinds = list(dict.fromkeys(_PRIMITIVES[type(v)] for v in values))
    return {"type": kinds if len(kinds) > 1 else kinds[0], "enum": values}


def _annotate(schema: dict[str, Any], meta: list[Any]) -> dict[str, Any]:
    schema = dict(schema)
    for item in meta:
        if isinstance(item, Doc):
            schema["description"] = item.text
        elif isinstance(item, Range):
            if item.lo is not None:
                schema["minimum"] = item.lo
            if item.hi is not None:
                schema["maximum"] = item.hi
        elif isinstance(item, Length):
            array = schema.get("type") == "array"
            if item.lo is not None:
                schema["minItems" if array else "minLength"] = item.lo
            if item.hi is not None:
                schema["maxItems" if array else "maxLength"] = item.hi
        elif isinstance(item, Pattern):
            schema["pattern"] = item.ecma
        elif isinstance(item, Format):
            schema["format"] = item.name
    return schema
