"""The OpenAPI 3.1 document served at ``/api/v1/openapi.json``: exactly the endpoints
this app has."""

from __future__ import annotations

from typing import Any

from hub import __version__

NULL_STR = {"type": ["string", "null"]}
INSTANT = {"type": ["string", "null"], "format": "date-time"}
NUM = {"type": ["number", "null"]}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(schema_ref: str, description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string", "maxLength": 64},
    }


RANGE = [
    _query("since", "ISO 8601 instant or Unix seconds", {"type": "string"}),
    _query("until", "ISO 8601 instant or Unix seconds", {"type": "string"}),
    _query(
        "limit",
        "at most this many, newest first (1-1000, default 100)",
        {"type": "integer", "minimum": 1, "maximum": 1000},
    ),
]
PERSONAL = {
    "401": {
        **_error("not logged in and no valid token"),
        "headers": {
            "WWW-Authenticate": {
                "description": 'Bearer realm="peershop", with error="invalid_token" when '
                "the token sent is unknown or revoked (RFC 6750)",
                "schema": {"type": "string"},
            }
        },
    },
    "403": _error("a member asked for someone else's records"),
    "400": _error("a bad query parameter"),
}


def _get(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[Any] | None = None,
    errors: dict[str, Any] | None = None,
    secured: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **(errors or {})}}
    if params:
        op["parameters"] = params
    if secured:
        op["security"] = [{"bearer": []}, {"session": []}]
    return {"get": op}


def _post(
    summary: str,
    ok: dict[str, Any],
    *,
    status: str = "201",
    body: dict[str, Any] | None = None,
    body_required: bool = False,
    forbidden: str = "a token that belongs to no member",
    missing: str = "no such task",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [TASK_ID],
        "security": [{"bearer": []}, {"session": []}],
        "responses": {
            status: ok,
            "400": _error("a bad body, or a browser session without its CSRF token"),
            "401": PERSONAL["401"],
            "403": _error(forbidden),
            "404": _error(missing),
            "409": _error("the board refused: no slot left, not claimed, not open"),
        },
    }
    if body is not None:
        op["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": body}},
        }
    return {"post": op}


TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "description": "task id",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "pattern": "^[A-Za-z0-9_-][A-Za-z0-9_.-]*$",
    },
}


CLAIM_BODY = {
    "type": "object",
    "required": ["claim"],
    "properties": {
        "claim": {
            "type": "integer",
            "minimum": 1,
            "maximum": 2**63 - 1,
            "description": "the claim's id (GET /api/v1/tasks lists the pending ones)",
        }
    },
}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or list(props)}


def openapi_document() -> dict[str, Any]:
    tool = _obj(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "site": {"type": "string"},
            "state": {"enum": ["free", "in_use", "idle", "busy", "offline", "locked"]},
            "member": NULL_STR,
            "since": INSTANT,
            "w": NUM,
        }
    )
    device = _obj(
        {
            "id": {"type": "string"},
            "approval": {"enum": ["pending", "approved", "revoked"]},
            "online": {"type": "boolean"},
            "last_seen": INSTANT,
            "boot": {"type": ["integer", "null"]},
            "fw": NULL_STR,
            "kind": {"type": "array", "items": {"type": "string"}},
            "last_event": {
                "oneOf": [
                    {"type": "null"},
                    _obj(
                        {
                            "id": {"type": "integer"},
                            "type": {"type": "string"},
                            "boot": {"type": "integer"},
                            "seq": {"type": "integer"},
                            "at": INSTANT,
                        }
                    ),
                ]
            },
        }
    )
    session = _obj(
        {
            "id": {"type": "integer"},
            "tool": {"type": "string"},
            # null: a run of a tool no one badges at (a smart plug alone), charged to no one
            "member": NULL_STR,
            "start": INSTANT,
            "end": INSTANT,
            "busy_s": {"type": "number"},
            "idle_s": {"type": "number"},
            "wh": {"type": "number"},
            "close_reason": NULL_STR,
        }
    )
    effort = _obj(
        {
            "id": {"type": "integer"},
            "member": {"type": "string"},
            "task": NULL_STR,
            "project": NULL_STR,
            "start": INSTANT,
            "end": INSTANT,
            "hours": NUM,
            "weight": NUM,
            "weighted_hours": NUM,
            "source": {"type": "string"},
        }
    )
    money = _obj(
        {
            "credited": {"type": "number"},
            "expected": {"type": "number"},
            "balance": {"type": "number"},
        }
    )
    line = _obj(
        {
            "credited": {"type": "number"},
            "expected": {"type": "number"},
            "balance": {"type": "number"},
            "running": {"type": "number"},
        }
    )
    cost = _obj({"units": {"type": "number"}, "unit_cost": NUM, "scarce_units": {"type": "number"}})
    task = _obj(
        {
            "id": {"type": "string"},
            "title": {"type": "string"},
            "project": NULL_STR,
            "weight": {"type": "number"},
            "hours": {"type": "number"},
            "slots": {"type": "integer"},
            "slots_left": {"type": "integer"},
            "wants": {"type": "integer"},
            "overdue_days": {"type": "number"},
            "score": {"type": "number"},
            "pinned": {"type": "boolean"},
            "claimed_by": {"type": "array", "items": {"type": "string"}},
        }
    )
    period = _obj(
        {"id": {"type": "integer"}, "start": INSTANT, "end": INSTANT, "closed_at": INSTANT}
    )
    # a claim with its hours and where it stands (a big claim waits for a confirmation)
    review = _obj(
        {
            "id": {"type": "integer"},
            "task": {"type": "string"},
            "member": {"type": "string"},
            "weight": {"type": "number"},
            "claimed_at": INSTANT,
            "done_at": INSTANT,
            "hours": NUM,
            "credited_hours": NUM,
            "status": {"enum": ["claimed", "credited", "pending", "confirmed", "rejected"]},
            "confirmed_by": {"type": "array", "items": {"type": "string"}},
            "rejected_by": NULL_STR,
            "confirmations_needed": {"type": "integer"},
        }
    )
    pending = {
        **review,
        "properties": {**review["properties"], "can_confirm": {"type": "boolean"}},
        "required": [*review["required"], "can_confirm"],
    }
    schemas = {
        "Tasks": _obj(
            {
                "tasks": {"type": "array", "items": task},
                "pending": {"type": "array", "items": pending},
            }
        ),
        "Review": _obj({"claim": review}),
        "Claim": _obj(
            {
                "claim": _obj(
                    {
                        "id": {"type": "integer"},
                        "task": {"type": "string"},
                        "member": {"type": "string"},
                        "period": {"type": "integer"},
                        "claimed_at": INSTANT,
                        "weight": {"type": "number"},
                    }
                )
            }
        ),
        "Done": _obj({"effort": effort, "claim": review}),
        "Want": _obj(
            {"task": {"type": "string"}, "member": {"type": "string"}, "new": {"type": "boolean"}}
        ),
        "Periods": _obj({"periods": {"type": "array", "items": period}}),
        "Allocations": {
            "type": "object",
            "required": ["id", "start", "end", "closed_at", "projects", "excluded"],
            "properties": {
                "id": {"type": "integer"},
                "start": INSTANT,
                "end": INSTANT,
                "closed_at": INSTANT,
                "projects": {
                    "type": "object",
                    "additionalProperties": _obj(
                        {
                            "members": {"type": "object", "additionalProperties": line},
                            "totals": money,
                            "resources": {"type": "object", "additionalProperties": cost},
                        }
                    ),
                },
                "excluded": {"type": "array"},
            },
        },
        "Error": _obj({"error": _obj({"code": {"type": "string"}, "message": {"type": "string"}})}),
        "Hub": {
            "type": "object",
            "required": ["version", "live", "public_key"],
            "properties": {
                "version": {"type": "string"},
                "live": {"type": "boolean"},
                "uptime_s": NUM,
                "started_at": INSTANT,
                "public_key": NULL_STR,
                "broker": {
                    "oneOf": [
                        {"type": "null"},
                        _obj(
                            {
                                "connected": {"type": "boolean"},
                                "host": {"type": "string"},
                                "port": {"type": "integer"},
                                "last_error": NULL_STR,
                            }
                        ),
                    ]
                },
                "healthy": {"type": "boolean"},
                "health": {"type": "string"},
            },
        },
        "Tools": _obj({"tools": {"type": "array", "items": tool}}),
        "Devices": _obj({"devices": {"type": "array", "items": device}}),
        "Presence": _obj(
            {
                "present": {
                    "type": "array",
                    "items": _obj(
                        {"member": {"type": "string"}, "name": {"type": "string"}, "since": INSTANT}
                    ),
                }
            }
        ),
        "Sessions": _obj({"sessions": {"type": "array", "items": session}}),
        "Effort": _obj({"effort": {"type": "array", "items": effort}}),
        "Health": {
            "type": "object",
            "required": ["status", "reason"],
            "properties": {"status": {"enum": ["ok", "unhealthy"]}, "reason": {"type": "string"}},
        },
    }
    text = {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
    paths = {
        "/api/v1/hub": _get(
            "Version, uptime, broker state and the allow-list public key", _ok("Hub")
        ),
        "/api/v1/tools": _get(
            "Every tool with its live state (member names need a login)", _ok("Tools")
        ),
        "/api/v1/devices": _get(
            "Every device: approval, online, last seen, boot, fw, last event", _ok("Devices")
        ),
        "/api/v1/presence": _get(
            "Who is signed in to the space now",
            _ok("Presence"),
            errors={"401": PERSONAL["401"]},
            secured=True,
        ),
        "/api/v1/sessions": _get(
            "Usage sessions overlapping [since, until), newest first; members see their own",
            _ok("Sessions"),
            secured=True,
            errors=PERSONAL,
            params=[_query("tool", "tool id"), _query("member", "member handle"), *RANGE],
        ),
        "/api/v1/effort": _get(
            "Effort records started in [since, until), newest first; members see their own",
            _ok("Effort"),
            secured=True,
            errors={**PERSONAL, "404": _error("no such period")},
            params=[
                _query("member", "member handle"),
                _query("period", "a period id: effort started within it"),
                *RANGE,
            ],
        ),
        "/api/v1/tasks": _get(
            "The open tasks in board order (wanted, heavy and overdue first)",
            _ok("Tasks"),
            errors={"401": PERSONAL["401"]},
            secured=True,
        ),
        "/api/v1/tasks/{task_id}/claim": _post(
            "Claim a slot of the task this period, at its weight now", _ok("Claim", "claimed")
        ),
        "/api/v1/tasks/{task_id}/done": _post(
            "Mark my claimed task done: an effort record at the weight claimed",
            _ok("Done", "the effort record"),
            body={
                "type": "object",
                "properties": {
                    "hours": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": 1000,
                        "description": "default: the task's posted hours",
                    }
                },
            },
        ),
        "/api/v1/tasks/{task_id}/confirm": _post(
            "Confirm a big claim of the task (a done above 1.5 x its posted hours, credited "
            "at the posted hours until confirmed): as a coordinator, or as a member who was "
            "signed in with the claimant between the claim and the done",
            _ok("Review", "the claim, confirmed once enough have"),
            status="200",
            body=CLAIM_BODY,
            body_required=True,
            forbidden="a token of no member, one's own claim, or a member who was not there",
            missing="no such task, or no such claim of it",
        ),
        "/api/v1/tasks/{task_id}/reject": _post(
            "Reject a big claim of the task (coordinators): it stays at the posted hours",
            _ok("Review", "the claim, rejected"),
            status="200",
            body=CLAIM_BODY,
            body_required=True,
            forbidden="not a coordinator, a token of no member, or one's own claim",
            missing="no such task, or no such claim of it",
        ),
        "/api/v1/tasks/{task_id}/want": _post(
            'Hint "I want this done" (new is false when I had already)',
            _ok("Want"),
            status="200",
        ),
        "/api/v1/periods": _get(
            "Periods, newest first",
            _ok("Periods"),
            errors={"401": PERSONAL["401"], "400": PERSONAL["400"]},
            secured=True,
            params=[RANGE[2]],
        ),
        "/api/v1/periods/{period_id}/allocations": {
            "get": {
                "summary": "Per project: each member's credited, expected and balance "
                "(a member sees their own line), totals, and unit costs per resource",
                "parameters": [
                    {
                        "name": "period_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                    }
                ],
                "security": [{"bearer": []}, {"session": []}],
                "responses": {
                    "200": _ok("Allocations"),
                    "401": PERSONAL["401"],
                    "404": _error("no such period"),
                },
            }
        },
        "/api/v1/stream": _get(
            "Server-sent events: `tool`, `session`, `batch` (needs a running hub)",
            {
                "description": "an event stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            errors={
                "429": _error(
                    "this client address holds `http.streams_per_client` streams already "
                    "(`too_many_streams`, with `Retry-After`): poll the API instead"
                ),
                "503": _error(
                    "no live hub in this process (`service_unavailable`), or every stream "
                    "is open (`streams_full`, with `Retry-After`): poll the API instead"
                ),
            },
        ),
        "/api/v1/openapi.json": _get(
            "This document", {"description": "OK", "content": {"application/json": {"schema": {}}}}
        ),
        "/metrics": _get("Prometheus text format", text),
        "/healthz": _get(
            "Ingest, database and broker health",
            _ok("Health"),
            errors={
                "503": {
                    "description": "unhealthy, with the reason",
                    "content": {"application/json": {"schema": {}}},
                }
            },
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "peershop hub",
            "version": __version__,
            "description": 'docs/http-api.md. Errors are {"error":{"code","message"}}; '
            "a 401 carries WWW-Authenticate, a 405 Allow; "
            "a request body over http.max_body_bytes gets 413 before it is read.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from `peershop token create`",
                },
                "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            },
        },
    }
