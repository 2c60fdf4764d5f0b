"""OpenAPI 3.1 documents for the web tiers.

tests/test_public_api.py checks that every route the app serves is
documented here and every documented path is served.
"""

from __future__ import annotations

from typing import Any

from swarm import __version__

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
        }
    },
}
TS = {"type": ["string", "null"], "format": "date-time"}
NODE = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "status": {"type": "string", "enum": ["online", "unhealthy", "suspect", "offline"]},
        "connected": {"type": "boolean"},
        "drone_type": {
            "type": "string",
            "enum": ["lxc", "qemu", "bare-metal", "unknown"],
            "description": "what the agent reports (an admin's access `type` wins for healing)",
        },
        "drone_type_reason": {
            "type": "string",
            "description": "the agent's evidence for drone_type (what it detected, or configured)",
        },
        "cores": {"type": "integer"},
        "network": {"type": "string"},
        "hostname": {"type": "string"},
        "agent_version": {"type": "string"},
        "protocol_revision": {
            "type": ["integer", "null"],
            "description": "protocol revision from the agent's Hello (null: not connected since the start)",
        },
        "features": {
            "type": "array",
            "items": {"type": "string"},
            "description": "what the agent speaks, from its Hello (docs/protocol.md); empty: older agent",
        },
        "payload_version": {"type": "string"},
        "heartbeat_interval_ms": {"type": "integer"},
        "first_seen_at": TS,
        "last_seen_at": TS,
        "last_heartbeat_at": TS,
        "last_ping_at": TS,
        "last_pong_at": TS,
        "ping_latency_ms": {"type": ["number", "null"]},
        "phi": {
            "type": ["number", "null"],
            "description": "phi-accrual suspicion level (null if not connected)",
        },
        "load": {"type": "array", "items": {"type": "number"}, "description": "load average 1, 5, 15 min"},
        "cpu_pct": {"type": "number"},
        "mem_pct": {"type": "number"},
        "disk_pct": {"type": "number", "description": "use of the build cache's disk"},
        "disk_free_bytes": {"type": "integer"},
        "emerge_running": {"type": "boolean"},
        "current_job_id": {"type": ["string", "null"]},
        "checks": {
            "type": "array",
            "description": "functional checks from the latest pong; any not ok makes the drone unhealthy",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "ok": {"type": "boolean"},
                    "detail": {"type": "string"},
                },
            },
        },
        "checks_at": TS,
        "instance_id": {"type": "string", "description": "random per agent process"},
        "process_started_at": TS,
    },
}
MESSAGES = {
    400: "bad input",
    401: "missing or wrong admin key, or the session has ended",
    403: "missing or wrong CSRF token, or an origin that is not allowed",
    404: "not found",
    409: "not possible in the controller's state",
    413: "the body is larger than the endpoint takes (64 KiB; the queue 1 MiB)",
    415: "the body is not JSON sent as Content-Type: application/json (UTF-8)",
    421: "the Host header names a host this tier does not answer to (--allowed-hosts)",
    429: "a wrong key while wrong keys from this address, or from all, are limited (see Retry-After); "
    "a right key is never refused",
    503: "the drone did not answer in time",
}
PROTOCOL_ENTRY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "seq": {"type": "integer"},
        "ts": TS,
        "direction": {"type": "string", "enum": ["in", "out"]},
        "drone_id": {"type": "string"},
        "type": {"type": "string"},
        "size": {"type": "integer", "description": "bytes on the wire (protobuf)"},
        "latency_ms": {"type": ["number", "null"], "description": "a pong: its ping's round trip"},
        "unknown_fields": {
            "type": "boolean",
            "description": "it carried fields this controller does not know (ignored)",
        },
    },
}
TOKEN = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "state": {"type": "string", "enum": ["active", "used", "revoked", "expired"]},
        "created_at": TS,
        "expires_at": TS,
        "created_by": {"type": "string"},
        "used_at": TS,
        "used_by": {"type": ["string", "null"]},
        "revoked_at": TS,
    },
}
EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "ts": TS,
        "type": {"type": "string"},
        "message": {"type": "string"},
        "drone_id": {"type": ["string", "null"]},
        "drone_name": {"type": ["string", "null"]},
        "data": {"type": "object"},
    },
}


HEALTH: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "reasons": {
            "type": "array",
            "description": "why degraded (empty when ok); public messages leave out the database's "
            "address and the data path, /admin/api/health keeps them",
            "items": {
                "type": "object",
                "properties": {
                    "code": {
                        "type": "string",
                        "enum": ["database_unreachable", "database_stalled", "writes_failing", "disk_low"],
                    },
                    "message": {"type": "string"},
                    "since": TS,
                },
            },
        },
        "checked_at": {**TS, "description": "the latest background check (null before the first)"},
        "version": {"type": "string"},
        "uptime_s": {"type": "number"},
        "database": {"type": "string", "enum": ["sqlite", "postgresql"]},
        "drones": {"type": "object"},
        "fleet": {
            "type": ["object", "null"],
            "description": "null until first computed (from the database, in the background)",
            "properties": {
                "window_s": {"type": "number"},
                "availability": {"type": ["number", "null"]},
                "incidents": {"type": "integer"},
                "open_incidents": {"type": "integer"},
                "mttr_s": {"type": ["number", "null"]},
                "mean_detection_s": {"type": ["number", "null"]},
                "healing_paused": {"type": "boolean"},
                "fleet_dark": {"type": "boolean"},
            },
        },
    },
}


def _param(name: str, description: str, schema: dict[str, Any], where: str = "query") -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
    }


def _get(
    summary: str,
    body: dict[str, Any],
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (),
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": body}}}
    }
    for status in _errors(errors, params, None):
        responses[str(status)] = {
            "description": MESSAGES[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return {"get": {"summary": summary, "parameters": params or [], "responses": responses}}


def _op(
    summary: str,
    body: dict[str, Any] | None,
    reply: dict[str, Any],
    status: str,
    errors: tuple[int, ...],
    params: list[dict[str, Any]] | None = None,
    description: dict[int, str] | None = None,
) -> dict[str, Any]:
    """``description``: what an error status means here, where MESSAGES does not say it."""
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {status: {"description": "OK", "content": {"application/json": {"schema": reply}}}},
    }
    for code in _errors(errors, params, body):
        op["responses"][str(code)] = {
            "description": (description or {}).get(code, MESSAGES[code]),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    if body is not None:
        op["requestBody"] = {"content": {"application/json": {"schema": body}}}
    return op


def _errors(
    errors: tuple[int, ...], params: list[dict[str, Any]] | None, body: dict[str, Any] | None
) -> list[int]:
    """Statuses an operation answers with: any parameter can be malformed
    (400, parse.py), any body too, be too large (413) or be sent as something
    other than JSON (415)."""
    found = set(errors)
    if params or body is not None:
        found.add(400)
    if body is not None:
        found |= {413, 415}
    return sorted(found)


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def _list(key: str, ref: str) -> dict[str, Any]:
    return _obj(**{key: {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}}})


def _refusals(paths: dict[str, Any], security: bool) -> None:
    """What any route may answer before it runs: 421 for a Host the tier
    does not answer to; on the admin tier, 429 for a wrong key while wrong
    keys are limited (where a route answers 401)."""
    for item in paths.values():
        for op in item.values():
            responses = op["responses"]
            codes = (421, 429) if security and "401" in responses else (421,)
            for code in codes:
                responses.setdefault(
                    str(code),
                    {
                        "description": MESSAGES[code],
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                )


def _document(title: str, paths: dict[str, Any], security: bool = False) -> dict[str, Any]:
    _refusals(paths, security)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__},
        "paths": paths,
        "components": {"schemas": {"Error": ERROR, "Node": NODE, "Event": EVENT, "Token": TOKEN}},
    }
    if security:
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


def public_document() -> dict[str, Any]:
    since = _param(
        "since",
        "event id (exclusive) or ISO 8601 time (inclusive); without it, the newest events",
        {"type": "string"},
    )
    limit = _param(
        "limit", "at most this many (1-1000, default 100)", {"type": "integer", "minimum": 1, "maximum": 1000}
    )
    paths = {
        "/api/v1/health": _get(
            "controller health from memory (never waits for the database; 200 also when degraded): "
            "status and its reasons, drone counts, fleet availability and mean time to recovery (24 h)",
            HEALTH,
        ),
        "/api/v1/status": _get(
            "swarm summary",
            _obj(
                controller={"type": "object"},
                drones={"type": "object"},
                cores_online={"type": "integer"},
                emerge_running={"type": "integer"},
                session={"type": ["object", "null"]},
                last_event_id={"type": "integer"},
            ),
        ),
        "/api/v1/nodes": _get("all drones with live state", _list("nodes", "Node")),
        "/api/v1/nodes/{name}": _get(
            "one drone, by name or id",
            _obj(node={"$ref": "#/components/schemas/Node"}),
            [_param("name", "drone name or id", {"type": "string"}, "path")],
            (404,),
        ),
        "/api/v1/events": _get(
            "events in ascending id order",
            _obj(
                events={"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                last_id={"type": "integer"},
            ),
            [
                since,
                limit,
                _param("drone", "only this drone (name or id)", {"type": "string"}),
                _param("type", "comma-separated event types", {"type": "string"}),
            ],
            (400, 404),
        ),
        "/api/v1/activity": _get(
            "event counts per time bucket",
            _obj(
                window_s={"type": "integer"},
                bucket_s={"type": "number"},
                start=TS,
                end=TS,
                total={"type": "integer"},
                buckets={"type": "array", "items": _obj(start=TS, count={"type": "integer"})},
            ),
            [
                _param("window", "seconds back from now (60-604800, default 86400)", {"type": "integer"}),
                _param("buckets", "number of buckets (1-1440, default 96)", {"type": "integer"}),
            ],
            (400,),
        ),
        "/api/v1/history": _get(
            "finished builds, newest first", _obj(history={"type": "array"}), [limit], (400,)
        ),
        "/api/v1/sessions": _get("build sessions with progress counts", _obj(sessions={"type": "array"})),
        "/api/v1/queue": _get(
            "jobs, most critical first",
            _obj(jobs={"type": "array"}, total={"type": "integer"}),
            [_param("state", "only jobs in this state", {"type": "string"}), limit],
            (400,),
        ),
        "/api/v1/openapi.json": _get("this document", {"type": "object"}),
    }
    return _document("Build Swarm public API", paths)


def admin_document() -> dict[str, Any]:
    public_paths = public_document()["paths"]
    events, activity = public_paths["/api/v1/events"], public_paths["/api/v1/activity"]
    paths = {
        "/admin/api/status": _get(
            "the swarm summary of /api/v1/status, and whether healing is paused or held",
            {"type": "object"},
            errors=(401,),
        ),
        "/admin/api/health": _get(
            "the public health and what lies behind it: the database's state as the store runner "
            "sees it, the event backlog, the data disk",
            {
                **HEALTH,
                "properties": {
                    **HEALTH["properties"],
                    "store": _obj(
                        failure={
                            "type": ["object", "null"],
                            "properties": {
                                "message": {"type": "string"},
                                "connection_lost": {"type": "boolean"},
                                "since": TS,
                                "last_at": TS,
                            },
                        },
                        busy_s={"type": "number", "description": "how long the current call has run"},
                        waiting={"type": "integer", "description": "calls queued behind it"},
                    ),
                    "events": _obj(
                        pending={"type": "integer", "description": "emitted, not written yet"},
                        pending_limit={"type": "integer"},
                        dropped={"type": "integer", "description": "never written (backlog full), in all"},
                    ),
                    "disk": {
                        "type": ["object", "null"],
                        "properties": {
                            "path": {"type": "string"},
                            "free_mb": {"type": "number"},
                            "total_mb": {"type": "number"},
                            "min_free_mb": {"type": "number"},
                        },
                    },
                },
            },
            errors=(401,),
        ),
        "/admin/api/events": {
            "get": {**events["get"], "summary": "every event, the admin tier's audit trail included"}
        },
        "/admin/api/activity": {
            "get": {
                **activity["get"],
                "summary": "event counts per time bucket, as /api/v1/activity (the console's waveform)",
            }
        },
        "/admin/api/whoami": _get("check the admin key", _obj(key={"type": "string"}), errors=(401,)),
        "/admin/api/protocol": _get(
            "recent control-stream messages, oldest first",
            _obj(
                entries={"type": "array", "items": PROTOCOL_ENTRY},
                last_seq={"type": "integer"},
                unknown_fields={
                    "type": "object",
                    "additionalProperties": {"type": "integer"},
                    "description": "per message type: how many carried fields this controller does not know",
                },
            ),
            [
                _param("after", "only entries after this seq", {"type": "integer"}),
                _param("limit", "at most this many (1-5000, default 200)", {"type": "integer"}),
                _param("drone", "only this drone (name or id)", {"type": "string"}),
                _param("type", "comma-separated message types", {"type": "string"}),
            ],
            (400, 401, 404),
        ),
        "/admin/api/protocol/{seq}": _get(
            "one control-stream message decoded (protobuf as JSON), while it is in the buffer",
            _obj(
                **PROTOCOL_ENTRY["properties"],
                drone={"type": ["string", "null"]},
                message={"type": ["object", "null"], "description": "AgentMessage or ControllerMessage"},
            ),
            [_param("seq", "the entry's seq", {"type": "integer"}, "path")],
            (400, 401, 404),
        ),
        "/admin/api/openapi.json": _get("this document", {"type": "object"}, errors=(401,)),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (README: Metrics); also sent the admin key as "
                "Authorization: Bearer",
                "parameters": [],
                "responses": {
                    "200": {
                        "description": "the Prometheus text format, or OpenMetrics when Accept asks for it",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    },
                    "401": {
                        "description": MESSAGES[401],
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                },
            }
        },
        "/admin/api/tokens": {
            **_get(
                "join tokens, newest first (never their secrets)",
                _obj(tokens={"type": "array", "items": {"$ref": "#/components/schemas/Token"}}),
                errors=(401,),
            ),
            "post": _op(
                "create a one-time join token (409 when --join-tokens-max are live: unused, "
                "unrevoked and unexpired)",
                _obj(
                    ttl={"type": "number", "description": "seconds, 60-86400 (default 3600)"},
                    name={"type": "string", "description": "only this drone name may use it"},
                ),
                {
                    "allOf": [
                        {"$ref": "#/components/schemas/Token"},
                        _obj(
                            token={"type": "string"},
                            ca_pin={"type": "string"},
                            enroll_port={"type": "integer"},
                            command={"type": "string"},
                        ),
                    ]
                },
                "201",
                (400, 401, 409),
            ),
        },
        "/admin/api/tokens/{id}": {
            "delete": _op(
                "revoke an unused join token",
                None,
                _obj(revoked={"type": "string"}),
                "200",
                (401, 404, 409),
                [_param("id", "token id", {"type": "string"}, "path")],
            )
        },
        "/admin/api/queue": {
            "post": _op(
                "queue packages: resolved with their dependencies into jobs of a session",
                _obj(atoms={"type": "array", "items": {"type": "string"}}, session={"type": "string"}),
                _obj(session={"type": "object"}, jobs={"type": "array"}),
                "201",
                (400, 401, 404, 409, 503),
                description={503: "the database takes no writes now (the message says why)"},
            ),
            **_get(
                "jobs, most critical first, as /api/v1/queue; narrowed by session, states and text",
                _obj(jobs={"type": "array"}, total={"type": "integer"}),
                [
                    _param("session", "only the jobs of this session", {"type": "string"}),
                    _param("state", "only jobs in these states (comma-separated)", {"type": "string"}),
                    _param("q", "only jobs whose package, id or drone contains this", {"type": "string"}),
                    _param("limit", "at most this many jobs (1-5000)", {"type": "integer"}),
                ],
                (400, 401, 404, 409),
            ),
        },
        "/admin/api/sessions": _get(
            "build sessions with progress counts, as /api/v1/sessions",
            _obj(sessions={"type": "array"}),
            errors=(401,),
        ),
        "/admin/api/control": {
            "post": _op(
                "start, stop, pause, resume or reset a session (default: the current one)",
                _obj(
                    action={"type": "string", "enum": ["start", "stop", "pause", "resume", "reset"]},
                    session={"type": "string"},
                ),
                _obj(session={"type": "object"}),
                "200",
                (400, 401, 404, 409),
            )
        },
        "/admin/api/jobs/{id}": _get(
            "a job, why it is not running, and its builds",
            _obj(job={"type": "object"}, builds={"type": "array"}),
            [_param("id", "job id", {"type": "string"}, "path")],
            (401, 404, 409),
        ),
        "/admin/api/jobs/{id}/log": {
            "get": {
                "summary": "the build log of the job's current or latest build (text)",
                "parameters": [
                    _param("id", "job id", {"type": "string"}, "path"),
                    _param("build", "a specific build id", {"type": "string"}),
                ],
                "responses": {
                    "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "400": {"description": MESSAGES[400]},
                    "401": {"description": MESSAGES[401]},
                    "404": {"description": "no log"},
                    "409": {"description": "builds are off (no --portage-eprefix)"},
                },
            }
        },
        "/admin/api/drones": _get(
            "drones with live state and enrollment",
            _obj(
                drones={
                    "type": "array",
                    "items": {
                        "allOf": [
                            {"$ref": "#/components/schemas/Node"},
                            _obj(
                                ssh_access={
                                    "enum": ["ssh", "local", None],
                                    "description": "how a terminal or command reaches the drone without "
                                    "its agent (via=ssh): its ssh access setting; null: it has none",
                                }
                            ),
                        ]
                    },
                }
            ),
            errors=(401,),
        ),
        "/admin/api/drones/{name}/revoke": {
            "post": _op(
                "revoke a drone's certificates and end its streams",
                None,
                _obj(drone={"type": "string"}, certificates={"type": "integer"}),
                "200",
                (401, 404, 409),
                [_param("name", "drone name or id", {"type": "string"}, "path")],
            )
        },
        "/admin/api/drones/{name}/rename": {
            "post": _op(
                "bind a new name to an enrolled drone (its agent's Hello cannot rename it)",
                _obj(name={"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"}),
                _obj(drone={"type": "string"}, name={"type": "string"}, old_name={"type": "string"}),
                "200",
                (400, 401, 404, 409),
                [_param("name", "drone name or id", {"type": "string"}, "path")],
            )
        },
    }
    paths |= _healing_paths()
    paths |= _shell_paths()
    paths |= _auth_paths()
    paths |= _stream_paths()
    paths |= _log_paths()
    paths |= _dispatch_paths()
    return _document("Build Swarm admin API", paths, security=True)


def _healing_paths() -> dict[str, Any]:
    drone = [_param("name", "drone name or id", {"type": "string"}, "path")]
    step = _obj(
        drone={"type": "string"},
        level={"type": "integer"},
        done={"type": "boolean"},
        detail={"type": "string"},
        exit_code={"type": ["integer", "null"]},
        output={"type": "string"},
        duration_s={"type": "number"},
        timed_out={"type": "boolean"},
    )
    access = _obj(
        type={"type": "string", "enum": ["", "lxc", "qemu", "bare-metal", "unknown"]},
        ssh={"type": "string", "description": "[user@]host[:port] of the drone, or 'local'"},
        host={"type": "string", "description": "[user@]host[:port] of its hypervisor host"},
        vmid={"type": "string"},
        reboot={"type": "string", "description": "proxmox-lxc, proxmox-qemu, lxc, libvirt or a template"},
    )
    healing = _obj(
        paused={"type": "boolean"},
        fleet_dark={"type": "boolean"},
        paused_drones={"type": "array", "items": {"type": "string"}},
        settings={"type": "object"},
        startup_grace={
            "type": ["object", "null"],
            "description": "while drones known before the start are awaited (none of them is healed "
            "yet): until when at the latest, and which; null once over",
            "properties": {"until": TS, "awaiting": {"type": "array", "items": {"type": "string"}}},
        },
    )
    return {
        "/admin/api/drones/{name}": {
            "put": _op(
                "set a drone's type override and out-of-band access (replaces them whole)",
                access,
                _obj(drone={"type": "string"}, access={"type": "object"}),
                "200",
                (400, 401, 404),
                drone,
            )
        },
        "/admin/api/drones/{name}/health": _get(
            "the drone's ladder level, next action and what it waits for, cool-off, health history "
            "and incidents",
            {"type": "object"},
            drone,
            errors=(401, 404),
        ),
        "/admin/api/drones/{name}/ping": {
            "post": _op(
                "ping the drone now: round trip, load, disk, emerge and the functional checks",
                None,
                {"type": "object"},
                "200",
                (401, 404, 409, 503),
                drone,
            )
        },
        "/admin/api/drones/{name}/restart": {
            "post": _op(
                "restart the drone's agent (healing step 1); 409 while another action on the drone "
                "runs or the healing budget is spent",
                None,
                step,
                "200",
                (401, 404, 409),
                drone,
            )
        },
        "/admin/api/drones/{name}/reboot": {
            "post": _op(
                "reboot the drone's container or VM through its host (409 for bare-metal, while "
                "another action on the drone runs, or when the healing budget is spent)",
                None,
                step,
                "200",
                (401, 404, 409),
                drone,
            )
        },
        "/admin/api/healing": {
            **_get("whether healing is paused or held by a dark fleet", healing, errors=(401,)),
            "post": _op(
                "pause or resume healing (for the fleet, or one drone), or override the dark-fleet hold",
                _obj(
                    action={"type": "string", "enum": ["pause", "resume", "override"]},
                    drone={"type": "string"},
                ),
                healing,
                "200",
                (400, 401, 404, 409),
            ),
        },
    }


def _auth_paths() -> dict[str, Any]:
    session = _obj(
        key={"type": "string", "description": "the name of the key (the audit trail)"},
        via={"type": "string", "enum": ["key", "session"]},
        csrf_token={"type": "string", "description": "send it as X-CSRF-Token with every change"},
        created_at=TS,
        expires_at={**TS, "description": "when the session ends unless used before"},
        ends_at={**TS, "description": "when the session ends however active (absolute lifetime)"},
        idle_timeout_s={"type": "number"},
    )
    login = _op(
        "log in with an admin key: sets the HttpOnly, SameSite=Strict session cookie "
        "swarm_session and returns the CSRF token",
        {**_obj(key={"type": "string"}), "required": ["key"]},
        session,
        "200",
        (400, 401, 403, 429),
    )
    login["security"] = []
    name = [_param("name", "key name", {"type": "string"}, "path")]
    return {
        "/admin/api/login": {"post": login},
        "/admin/api/logout": {
            "post": _op(
                "end this browser session (needs X-CSRF-Token) and clear its cookie",
                None,
                _obj(logged_out={"type": "string"}),
                "200",
                (401, 403, 409),
            )
        },
        "/admin/api/session": _get(
            "who this request is (key name, key or session) and when its session ends",
            session,
            errors=(401,),
        ),
        "/admin/api/keys": {
            **_get(
                "admin keys by name (never their values) and their open sessions",
                _obj(
                    keys={
                        "type": "array",
                        "items": _obj(name={"type": "string"}, sessions={"type": "integer"}),
                    }
                ),
                errors=(401,),
            ),
            "post": _op(
                "add a random admin key (256 bits): the answer shows it once; only its SHA-256 is kept",
                {
                    **_obj(name={"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"}),
                    "required": ["name"],
                },
                _obj(name={"type": "string"}, key={"type": "string"}),
                "201",
                (400, 401, 403, 409),
            ),
        },
        "/admin/api/keys/{name}": {
            "delete": _op(
                "remove an admin key and end its sessions and streams (409 for the key this request "
                "authenticated with, by header or session, and for the last key)",
                None,
                _obj(
                    removed={"type": "string"},
                    sessions_ended={"type": "integer"},
                    admin_key_file={
                        "type": ["object", "null"],
                        "description": "what became of the admin key file (--admin-key-file) when removing "
                        "'admin': deleted (it held this key, and the next start would bring it back) or "
                        "kept (it holds another key, which becomes 'admin' at the next start); "
                        "null when there is no such file or another key was removed",
                        "properties": {
                            "path": {"type": "string"},
                            "action": {"type": "string", "enum": ["deleted", "kept"]},
                        },
                    },
                ),
                "200",
                (401, 403, 404, 409),
                name,
            )
        },
    }


def _websocket(summary: str, item: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    common = [
        _param("drone", "only this drone (name or id)", {"type": "string"}),
        _param("type", "comma-separated types", {"type": "string"}),
    ]
    return {
        "get": {
            "summary": summary,
            "description": "A websocket (Upgrade request). Needs the admin key or a session cookie, and an "
            "allowed Origin (one of the tier's host names on its own port, or --admin-origins; "
            "without Origin only with X-Admin-Key). "
            f"Each text message is one JSON object: {item}. A message with a 'dropped' key is not "
            "an item: that many items after after_id/after_seq did not fit the connection's queue "
            "(--ws-queue) of a slow client. Close codes: 1001 controller stopping, 1008 session ended.",
            "parameters": common + params,
            "responses": {
                "101": {"description": "switching to the websocket protocol"},
                **{
                    str(code): {
                        "description": MESSAGES[code],
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    }
                    for code in (400, 401, 403, 404, 429)
                },
            },
        }
    }


def _stream_paths() -> dict[str, Any]:
    return {
        "/ws/events": _websocket(
            "live events",
            "an event, as the items of GET /api/v1/events",
            [
                _param(
                    "since",
                    "first the events after this id, then live ones (resume without gaps)",
                    {"type": "integer"},
                )
            ],
        ),
        "/ws/protocol": _websocket(
            "live control-stream messages",
            "a protocol entry, as the entries of GET /admin/api/protocol",
            [
                _param(
                    "sample",
                    "send only every Nth heartbeat of each drone (default 1: all)",
                    {"type": "integer", "minimum": 1},
                )
            ],
        ),
    }


def _dispatch_paths() -> dict[str, Any]:
    dispatch = _obj(
        draining={"type": "boolean", "description": "finishes its jobs, gets no new one"},
        drained_by={"type": ["string", "null"]},
        grounded={"type": "boolean", "description": "gets no job (an admin, or its circuit breaker)"},
        grounded_by={"type": ["string", "null"], "description": "the admin; null: the breaker"},
        grounded_until=TS,
        failures={"type": "integer", "description": "failed builds in a row"},
        running_jobs={"type": "integer"},
    )
    what = {
        "drain": "drain a drone: it finishes its jobs and gets no more (survives a restart)",
        "undrain": "put a drained drone back in the rotation",
        "ground": "ground a drone: no jobs until ungrounded (survives a restart)",
        "unground": "let a grounded drone fly again, also one grounded by its circuit breaker",
    }
    return {
        f"/admin/api/drones/{{name}}/{action}": {
            "post": _op(
                summary,
                None,
                _obj(drone={"type": "string"}, dispatch=dispatch),
                "200",
                (401, 404, 409),
                [_param("name", "drone name or id", {"type": "string"}, "path")],
            )
        }
        for action, summary in what.items()
    }


def _log_paths() -> dict[str, Any]:
    lines = _param(
        "lines",
        "start with the last N lines (default 100)",
        {"type": "integer", "minimum": 0, "maximum": 10000},
    )
    source = _param(
        "source",
        "agent, build/<job or build id> or portage/<category>/<package>; never a path",
        {"type": "string"},
    )
    drone = _param("drone", "drone name or id", {"type": "string"}, "path")
    follow = _param(
        "follow",
        "1 (default): go on with what is written, across rotation; 0: end",
        {"type": "integer", "enum": [0, 1]},
    )
    tail = _obj(
        source={"type": "string"},
        lines={"type": "array", "items": {"type": "string"}},
        notices={"type": "array", "items": {"type": "string"}, "description": "the file read, rotations"},
        truncated={"type": "boolean", "description": "cut at 4 MiB"},
    )
    errors = {
        str(code): {
            "description": MESSAGES[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in (400, 401, 403, 404)
    }

    def socket(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "description": "A websocket (Upgrade request; auth and Origin as /ws/events). Each text "
                'message is JSON: {"type": "data", "text"} log text (lines may span messages), '
                '{"type": "notice", "text"} the file followed, a rotation or truncation, and without '
                'follow a last {"type": "end"}. A bad or unknown source is answered before the upgrade.',
                "parameters": params,
                "responses": {"101": {"description": "switching to the websocket protocol"}, **errors},
            }
        }

    return {
        "/admin/api/logs/control-plane": _get(
            "the tail of the controller's own log", tail, [lines], errors=(400, 401, 404)
        ),
        "/admin/api/drones/{drone}/logs": _get(
            "the tail of a drone's log source",
            _obj(drone={"type": "string"}, **tail["properties"]),
            [drone, source, lines],
            errors=(400, 401, 404, 409, 503),
        ),
        "/ws/logs/control-plane": socket("follow the controller's own log", [lines, follow]),
        "/ws/logs/drones/{drone}": socket("follow a drone's log source", [drone, source, lines, follow]),
    }


def _shell_paths() -> dict[str, Any]:
    session_id = [_param("id", "shell session id (s-...)", {"type": "string"}, "path")]
    exit_status = _obj(
        exit_code={"type": ["integer", "null"], "description": "null if it did not exit by itself"},
        signal={"type": ["integer", "null"], "description": "the signal that ended it"},
        reason={"type": "string"},
        timed_out={"type": "boolean"},
    )
    shell = _obj(
        id={"type": "string"},
        via={
            "enum": ["agent", "ssh", "local"],
            "description": "agent: under the drone's agent; ssh: ssh -tt from the controller; "
            "local: a login shell on the controller's machine (ssh = local)",
        },
        drone={"type": "string"},
        drone_id={"type": "string"},
        opened_by={"type": "string", "description": "name of the admin key that opened it"},
        opened_at=TS,
        state={"type": "string", "enum": ["opening", "attached", "detached", "closing", "closed"]},
        rows={"type": "integer"},
        cols={"type": "integer"},
        last_activity_at=TS,
        detached_at=TS,
        closed_at=TS,
        close_reason={"type": ["string", "null"]},
        closed_by={"type": ["string", "null"]},
        exit={"oneOf": [exit_status, {"type": "null"}]},
        bytes_in={"type": "integer"},
        bytes_out={"type": "integer"},
        recording=_obj(url={"type": "string"}, bytes={"type": "integer"}, truncated={"type": "boolean"}),
    )
    via = {
        "enum": ["agent", "ssh"],
        "default": "agent",
        "description": "agent: through the drone's agent; ssh: from the controller with the system ssh "
        "and the drone's ssh access setting (BatchMode, strict host keys), for when the agent is down",
    }
    recording = _obj(
        id={"type": "string"},
        drone={"type": "string"},
        drone_id={"type": "string"},
        opened_by={"type": "string"},
        started_at=TS,
        bytes={"type": "integer"},
        url={"type": "string"},
    )
    return {
        "/admin/api/shells": _get(
            "terminal sessions (live first, then recently ended) and the recordings on disk",
            _obj(
                shells={"type": "array", "items": shell},
                recordings={"type": "array", "items": recording},
            ),
            errors=(401,),
        ),
        "/admin/api/shells/{id}": {
            "delete": _op(
                "kill a terminal session: its shell gets SIGHUP, then SIGKILL",
                None,
                _obj(shell=shell),
                "200",
                (401, 404, 409),
                session_id,
            )
        },
        "/admin/api/shells/{id}/recording": {
            "get": {
                "summary": "the session's recording, an asciinema v2 cast file (output and resizes)",
                "parameters": session_id,
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"application/x-asciicast": {"schema": {"type": "string"}}},
                    },
                    "400": {"description": MESSAGES[400]},
                    "401": {"description": MESSAGES[401]},
                    "404": {"description": "no such recording"},
                },
            }
        },
        "/admin/api/drones/{name}/exec": {
            "post": _op(
                "run one command on the drone (sh -c, no terminal) and return its output and status; "
                "the process group is killed at the timeout. via=ssh runs it with ssh from the "
                "controller (the drone's ssh access setting), for when the agent is down",
                _obj(
                    command={"type": "string", "maxLength": 8192},
                    timeout={"type": "number", "description": "seconds (default 30)"},
                    via=via,
                ),
                {
                    "allOf": [
                        exit_status,
                        _obj(
                            drone={"type": "string"},
                            via={"enum": ["agent", "ssh", "local"]},
                            stdout={"type": "string"},
                            stderr={"type": "string"},
                            stdout_truncated={"type": "boolean"},
                            stderr_truncated={"type": "boolean"},
                            duration_s={"type": "number"},
                        ),
                    ]
                },
                "200",
                (400, 401, 404, 409, 503),
                [
                    _param("name", "drone name or id", {"type": "string"}, "path"),
                    _param("via", "as the body's via (either, not both differently)", via),
                ],
            )
        },
        "/ws/ssh/{drone}": {
            "get": {
                "summary": "websocket: a terminal on the drone (a login shell under a PTY). Binary "
                "frames are keystrokes and output; text frames are JSON messages: client -> server "
                '{"type":"input","data":"..."}, {"type":"resize","rows":R,"cols":C}, {"type":"close"}; '
                'server -> client {"type":"session",...} first, {"type":"exit","exit_code":N,...} last. '
                "Closing the websocket detaches; reattach with session= within the grace period. "
                "via=ssh: ssh -tt from the controller to the drone's ssh access setting under a PTY of "
                "the controller's (ssh = local: a login shell on the controller's machine), for when "
                "the agent is down; 409 before the upgrade if the drone has no ssh access setting.",
                "parameters": [
                    _param("drone", "drone name or id", {"type": "string"}, "path"),
                    _param("rows", "window rows (1-1000, default 24)", {"type": "integer"}),
                    _param("cols", "window columns (1-1000, default 80)", {"type": "integer"}),
                    _param(
                        "session", "reattach to this live session instead of opening one", {"type": "string"}
                    ),
                    _param("via", "agent (default) or ssh: see above", via),
                ],
                "responses": {
                    "101": {"description": "switching to the websocket protocol"},
                    **{
                        str(code): {
                            "description": MESSAGES[code],
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                            },
                        }
                        for code in (400, 401, 403, 404, 409, 503)
                    },
                },
            }
        },
    }
