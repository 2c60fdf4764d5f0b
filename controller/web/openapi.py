"""OpenAPI 3.1 documents of both web tiers, generated from the route
declarations (routes.py) and the views (views/, schemas.py).

What any operation may answer besides its own statuses is added here: 400
for a malformed parameter or body, 413 and 415 for a body, 421 for a Host
the tier does not answer to, 503 when the tier's connections are all busy
(server.py); on the admin tier 401 and 429 (a wrong key while wrong keys
are limited) wherever a key or session is needed, and 403 where a
session's CSRF token or a websocket's Origin is checked.

tests/test_public_api.py checks that every served route is documented and
every documented path served; tests/test_api_schema.py validates real
answers against these schemas.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from swarm import __version__
from swarm.controller.web.routes import JSON, Operation
from swarm.controller.web.schemas import SchemaBuilder
from swarm.controller.web.views.base import ErrorView

MESSAGES = {
    400: "bad input: a malformed parameter or body (the message says which)",
    401: "missing or wrong admin key, or the session has ended",
    403: "missing or wrong CSRF token, or an origin that is not allowed",
    404: "not found",
    409: "not possible in the controller's state",
    413: "the body is larger than the endpoint takes (64 KiB; the queue 1 MiB)",
    415: "the body is not JSON sent as Content-Type: application/json (UTF-8)",
    421: "the Host header names a host this tier does not answer to (--allowed-hosts)",
    429: "a wrong key while wrong keys from this address, or from all, are limited (see Retry-After); "
    "a right key is never refused",
    503: "unavailable now: the tier's connections are all busy (Retry-After), or what the message says",
}
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def statuses(op: Operation, *, admin: bool) -> list[int]:
    """The error statuses an operation may answer with."""
    found = set(op.errors) | {421, 503}
    if op.params or op.body is not None:
        found.add(400)
    if op.body is not None:
        found |= {413, 415}
    if op.upload:
        found |= {400, 413}
    if admin and not op.open:
        found |= {401, 429}
        if op.method in STATE_CHANGING or op.websocket:
            found.add(403)
    return sorted(found)


def _operation(
    op: Operation, builder: SchemaBuilder, error: dict[str, Any], *, admin: bool
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if op.websocket:
        responses["101"] = {"description": "switching to the websocket protocol"}
    else:
        schema = {"type": "object"} if op.reply is None else builder.of(op.reply)
        if op.content != JSON:
            schema = {"type": "string"}
        responses[str(op.status)] = {"description": "OK", "content": {op.content: {"schema": schema}}}
    for code in statuses(op, admin=admin):
        responses[str(code)] = {
            "description": op.notes.get(code, MESSAGES[code]),
            "content": {JSON: {"schema": error}},
        }
    doc: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method.lower()}{op.path}".replace("/", "_").replace("{", "").replace("}", ""),
        "parameters": [
            {
                "name": p.name,
                "in": p.where,
                "required": p.where == "path",
                "description": p.doc,
                "schema": p.schema(),
            }
            for p in op.params
        ],
        "responses": responses,
    }
    if op.description:
        doc["description"] = op.description
    if op.body is not None:
        body = builder.of(op.body.shape)
        shape = builder.components[op.body.shape.__name__]
        # A request body's fields are optional unless the declaration says so.
        shape["required"] = list(op.body.required)
        doc["requestBody"] = {"required": bool(op.body.required), "content": {JSON: {"schema": body}}}
    if op.upload:
        doc["requestBody"] = {
            "required": True,
            "content": {op.upload: {"schema": {"type": "string", "format": "binary"}}},
        }
    if admin and op.open:
        doc["security"] = []
    return doc


def document(title: str, operations: Iterable[Operation], *, admin: bool) -> dict[str, Any]:
    builder = SchemaBuilder()
    error = builder.of(ErrorView)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, builder, error, admin=admin)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__},
        "paths": paths,
        "components": {"schemas": dict(sorted(builder.components.items()))},
    }
    if admin:
        doc["components"]["securitySchemes"] = {
            "adminKey": {"type": "apiKey", "in": "header", "name": "X-Admin-Key"},
            "bearer": {"type": "http", "scheme": "bearer", "description": "the admin key as a bearer token"},
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": "swarm_session",
                "description": "from POST /admin/api/login; state-changing requests also send X-CSRF-Token",
            },
        }
        doc["security"] = [{"adminKey": []}, {"bearer": []}, {"session": []}]
    return doc


def public_operations() -> list[Operation]:
    from swarm.controller.web import binhosts, public, releases, testbuild_files, testbuilds

    return [
        *public.routes.operations,
        *releases.public_routes.operations,
        *binhosts.public_routes.operations,
        *testbuilds.public_routes.operations,
        *testbuild_files.public_routes.operations,
    ]


def admin_operations() -> list[Operation]:
    from swarm.controller.web import admin

    return [op for table in admin.api_routes() for op in table.operations]


@cache
def public_document() -> dict[str, Any]:
    return document("Build Swarm public API", public_operations(), admin=False)


@cache
def admin_document() -> dict[str, Any]:
    return document("Build Swarm admin API", admin_operations(), admin=True)
