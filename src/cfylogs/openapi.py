"""The OpenAPI document of the whole HTTP API, served at `/openapi.json`.

Kept as one Python dict beside the code it describes; `tests/e2e/test_openapi.py`
runs schemathesis against a live server with it, so a route, a status or a body
shape that drifts from this document fails the tests.
"""

from __future__ import annotations

from typing import Any

from cfylogs import __version__

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str, headers: Schema | None = None) -> Schema:
    response = _json(_ref("Error"), description)
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds before a retry.", "schema": {"type": "integer"}}
}

#: Answers any route may give.
_COMMON: Schema = {
    "401": _error("A token is configured (security.*) and the request lacks it."),
    "503": _error("The store cannot take the request now; retry.", _RETRY_AFTER),
}
#: Small JSON bodies (registration, dead-letter selection) are read up to 64 KiB.
_SMALL_BODY_TOO_LARGE = _error("The body is over 64 KiB.")
_NOT_FOUND = _error("Unknown registration (error.code 504), or no such route.")
_BAD = _error("Invalid request: the message says what is wrong.")

_ID: Schema = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "Registration id, as returned by POST /api/v1/registration.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,200}$"},
}

_SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["data", "error"],
        "properties": {
            "data": {"nullable": True, "type": "object", "maxProperties": 0},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "integer",
                        "description": "504 for not found (Alien4Cloud), else the HTTP status.",
                    },
                    "message": {"type": "string"},
                },
            },
        },
    },
    "Event": {
        "type": "object",
        "description": "A Cloudify event or log, any JSON object, kept exactly as posted.",
        "additionalProperties": True,
    },
    "Batch": {
        "type": "object",
        "description": "The pending batch, or `{}` when nothing is pending.",
        "properties": {
            "id": {"type": "integer", "minimum": 0},
            "entries": {"type": "array", "items": _ref("Event")},
        },
    },
    "Registration": {
        "type": "object",
        "required": ["id", "name", "created", "last_seen", "backlog_events", "backlog_bytes"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string", "nullable": True},
            "created": {"type": "number", "description": "Unix time."},
            "last_seen": {"type": "number", "description": "Unix time."},
            "client_subject": {"type": "string", "nullable": True},
            "backlog_events": {"type": "integer", "minimum": 0},
            "backlog_bytes": {"type": "integer", "minimum": 0},
            "oldest_unacked_at": {"type": "number", "nullable": True},
            "pending_batch_id": {"type": "integer", "nullable": True},
            "pending_deliveries": {"type": "integer", "minimum": 0},
            "redeliveries": {"type": "integer", "minimum": 0},
            "dropped_events": {"type": "integer", "minimum": 0},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "storage"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "version": {"type": "string"},
            "uptime_sec": {"type": "number"},
            "storage": {
                "type": "object",
                "properties": {
                    "backend": {"type": "string"},
                    "detail": {"type": "string"},
                    "events": {"type": "integer"},
                    "bytes": {"type": "integer"},
                    "disk_bytes": {"type": "integer"},
                    "free_bytes": {"type": "integer", "nullable": True},
                },
            },
        },
    },
}

_INGEST: Schema = {
    "summary": "Push events (Logstash http output)",
    "description": (
        "One JSON object (format json), a JSON array of objects (json_batch) or "
        "newline-delimited objects. 200 once every event is durable; all or nothing."
    ),
    "parameters": [
        {
            "name": "Content-Encoding",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "enum": ["gzip", "deflate", "identity"]},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [_ref("Event"), {"type": "array", "items": _ref("Event")}]}
            },
            "application/x-ndjson": {
                "schema": {
                    "type": "array",
                    "minItems": 1,
                    "items": _ref("Event"),
                    "description": "Sent as one JSON object per line (newline-delimited JSON).",
                }
            },
        },
    },
    "responses": {
        "200": _json(
            {
                "type": "object",
                "required": ["accepted"],
                "properties": {
                    "accepted": {"type": "integer", "minimum": 0},
                    "dead_lettered": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "With ingest.accept: cloudify, events kept as dead letters.",
                    },
                },
            },
            "Every event is on disk (or discarded when no registration exists).",
        ),
        "400": _BAD,
        "413": _error("Body over server.max_request_bytes (after decompression too)."),
        "415": _error("Unsupported Content-Encoding."),
        **_COMMON,
    },
}

_FETCH: Schema = {
    "summary": "Fetch the pending batch, or a new one",
    "parameters": [
        _ID,
        {
            "name": "wait",
            "in": "query",
            "description": "Long poll: seconds to hold the request while nothing is pending.",
            "schema": {"type": "number", "minimum": 0, "maximum": 60},
        },
        {
            "name": "max",
            "in": "query",
            "description": "At most this many entries in a new batch (capped by buffer.size).",
            "schema": {"type": "integer", "minimum": 1},
        },
    ],
    "responses": {
        "200": _json(_ref("Batch"), "The pending batch, byte for byte the same until acked."),
        "400": _BAD,
        "404": _NOT_FOUND,
        **_COMMON,
    },
}

_ACK: Schema = {
    "summary": "Acknowledge a batch (idempotent)",
    "parameters": [
        _ID,
        {"name": "batchId", "in": "path", "required": True, "schema": {"type": "integer"}},
    ],
    "responses": {
        "200": _json(
            {
                "type": "object",
                "required": ["acknowledged", "events"],
                "properties": {
                    "acknowledged": {
                        "type": "boolean",
                        "description": "false when it was already acknowledged.",
                    },
                    "events": {"type": "integer", "minimum": 0},
                },
            },
            "Acknowledged, now or before.",
        ),
        "400": _BAD,
        "404": _NOT_FOUND,
        "409": _error("That batch was never delivered; nothing changed."),
        **_COMMON,
    },
}

_REGISTER: Schema = {
    "summary": "Register a consumer",
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string", "maxLength": 200}},
                }
            }
        },
    },
    "responses": {
        "200": _json(
            {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "The new registration; it sees the events ingested from now on.",
        ),
        "400": _BAD,
        "413": _SMALL_BODY_TOO_LARGE,
        **_COMMON,
    },
}

_LIST: Schema = {
    "summary": "List registrations with their backlog",
    "responses": {
        "200": _json(
            {
                "type": "object",
                "required": ["registrations"],
                "properties": {"registrations": {"type": "array", "items": _ref("Registration")}},
            },
            "Active registrations, oldest first.",
        ),
        **_COMMON,
    },
}

_UNREGISTER: Schema = {
    "summary": "Remove a consumer and its backlog",
    "parameters": [_ID],
    "responses": {
        "200": _json({"type": "object", "maxProperties": 0}, "Removed."),
        "404": _NOT_FOUND,
        **_COMMON,
    },
}

_DEAD_LETTER_IDS: Schema = {
    "type": "array",
    "minItems": 1,
    "maxItems": 1000,
    "items": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
}

_DEAD_LETTERS: Schema = {
    "summary": "List dead letters (events ingest.accept kept from consumers), by id",
    "parameters": [
        {
            "name": "after",
            "in": "query",
            "description": "Only dead letters with a larger id (paging).",
            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        },
        {
            "name": "limit",
            "in": "query",
            "description": "At most this many (default 100).",
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
        },
    ],
    "responses": {
        "200": _json(
            {
                "type": "object",
                "required": ["total", "dead_letters", "next_after"],
                "properties": {
                    "total": {"type": "integer", "minimum": 0},
                    "next_after": {
                        "type": "integer",
                        "nullable": True,
                        "description": "Pass as ?after= for the next page; null on the last.",
                    },
                    "dead_letters": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id", "received", "reason", "event"],
                            "properties": {
                                "id": {"type": "integer"},
                                "received": {"type": "number", "description": "Unix time."},
                                "reason": {"type": "string"},
                                "event": _ref("Event"),
                            },
                        },
                    },
                },
            },
            "A page of dead letters.",
        ),
        "400": _BAD,
        **_COMMON,
    },
}

_REPLAY: Schema = {
    "summary": "Move dead letters into the stream, as if ingested now",
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["ids"],
                            "properties": {"ids": _DEAD_LETTER_IDS},
                        },
                        {
                            "type": "object",
                            "required": ["all"],
                            "properties": {"all": {"type": "boolean", "enum": [True]}},
                        },
                    ]
                }
            }
        },
    },
    "responses": {
        "200": _json(
            {
                "type": "object",
                "required": ["replayed", "kept_no_registration"],
                "properties": {
                    "replayed": {"type": "integer", "minimum": 0},
                    "kept_no_registration": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "Kept as dead letters: no registration to receive them.",
                    },
                },
            },
            "Replayed (unknown ids are ignored).",
        ),
        "400": _BAD,
        "413": _SMALL_BODY_TOO_LARGE,
        **_COMMON,
    },
}

_PURGE: Schema = {
    "summary": "Delete dead letters for good",
    "parameters": [
        {
            "name": "ids",
            "in": "query",
            "description": "Comma-separated ids.",
            "schema": {"type": "string", "pattern": "^[0-9]{1,18}(,[0-9]{1,18}){0,999}$"},
        },
        {
            "name": "all",
            "in": "query",
            "description": "true: every dead letter (one of ids or all is required).",
            "schema": {"type": "string", "enum": ["true"]},
        },
    ],
    "responses": {
        "200": _json(
            {
                "type": "object",
                "required": ["purged"],
                "properties": {"purged": {"type": "integer", "minimum": 0}},
            },
            "Deleted.",
        ),
        "400": _BAD,
        **_COMMON,
    },
}

_NULLABLE_INT: Schema = {"type": "integer", "nullable": True}
_NUMBERS: Schema = {"type": "array", "items": {"type": "number"}}

_CONSOLE: Schema = {
    "summary": "What the web console needs to start (also a check of the consumer token)",
    "responses": {
        "200": _json(
            {
                "type": "object",
                "required": ["version", "now", "accept", "history", "tail", "marks"],
                "properties": {
                    "version": {"type": "string"},
                    "now": {"type": "number", "description": "The relay's Unix time."},
                    "accept": {"type": "string", "enum": ["any", "cloudify"]},
                    "leased": {"type": "boolean"},
                    "lease_duration_sec": {"type": "number"},
                    "history": {
                        "type": "object",
                        "properties": {
                            "interval_sec": {"type": "number"},
                            "capacity": {"type": "integer", "description": "Samples kept."},
                        },
                    },
                    "tail": {
                        "type": "object",
                        "description": "Bounds of the live tail's ring and polls.",
                        "properties": {
                            "max_events": {"type": "integer"},
                            "max_bytes": {"type": "integer"},
                            "max_event_bytes": {"type": "integer"},
                            "max_wait_sec": {"type": "number"},
                            "max_limit": {"type": "integer"},
                        },
                    },
                    "marks": {
                        "type": "object",
                        "description": "A registration is marked falling behind when its oldest "
                        "unacknowledged event is older than behind_sec, not seen when it made "
                        "no request for unseen_sec.",
                        "properties": {
                            "behind_sec": {"type": "number"},
                            "unseen_sec": {"type": "number"},
                        },
                    },
                },
            },
            "The relay's console settings.",
        ),
        **_COMMON,
    },
}

_CONSOLE_HISTORY: Schema = {
    "summary": "Rates and backlog over the last hour (in memory; a restart starts it again)",
    "description": (
        "One sample every interval_sec (5 s), the last 720 kept. Arrays are aligned with `time`. "
        "Rates are per second since the previous sample, from this relay's counters."
    ),
    "parameters": [
        {
            "name": "after",
            "in": "query",
            "description": "Only the samples taken after this Unix time (incremental reads).",
            "schema": {"type": "number", "minimum": 0, "maximum": 1e11},
        }
    ],
    "responses": {
        "200": _json(
            {
                "type": "object",
                "required": ["now", "interval_sec", "time", "registrations"],
                "properties": {
                    "now": {"type": "number"},
                    "interval_sec": {"type": "number"},
                    "time": {**_NUMBERS, "description": "Unix time of each sample."},
                    "received_per_sec": _NUMBERS,
                    "delivered_per_sec": _NUMBERS,
                    "acknowledged_per_sec": _NUMBERS,
                    "backlog_events": {
                        "type": "array",
                        "items": _NULLABLE_INT,
                        "description": "All registrations; null when the store did not answer.",
                    },
                    "backlog_bytes": {"type": "array", "items": _NULLABLE_INT},
                    "registrations": {
                        "type": "object",
                        "description": "Registration id -> its backlog (events) at each sample, "
                        "null before it was tracked (the first 50 registrations are).",
                        "additionalProperties": {"type": "array", "items": _NULLABLE_INT},
                    },
                },
            },
            "The samples.",
        ),
        "400": _BAD,
        **_COMMON,
    },
}


def _filter(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": "string", "maxLength": 200},
    }


_CONSOLE_TAIL: Schema = {
    "summary": "Live tail: the events ingest accepted lately (long poll with a cursor)",
    "description": (
        "A best-effort view: it registers, consumes, delays and acknowledges nothing. While "
        "someone polled in the last 30 s the relay keeps the last 2000 accepted events "
        "(4 MiB at most) in memory; pass the answer's `last` as `after` to get the next ones. "
        "A reader that falls behind is not waited for: `missed` says how many it did not get."
    ),
    "parameters": [
        {
            "name": "after",
            "in": "query",
            "description": "The `last` of the previous answer; absent: what the ring holds now.",
            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        },
        {
            "name": "wait",
            "in": "query",
            "description": "Long poll: seconds to hold the request while nothing matches.",
            "schema": {"type": "number", "minimum": 0, "maximum": 25},
        },
        {
            "name": "limit",
            "in": "query",
            "description": "At most this many events (the newest; default 200).",
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
        },
        _filter("type", "Only events whose `type` is this (cloudify_log, cloudify_event)."),
        _filter(
            "level",
            "Only logs of this level or more severe (debug < info < warning < error < critical).",
        ),
        _filter("deployment", "Only events whose context.deployment_id is this."),
        _filter("q", "Only events holding this text (any field, any case)."),
    ],
    "responses": {
        "200": _json(
            {
                "type": "object",
                "required": ["events", "last", "missed"],
                "properties": {
                    "last": {"type": "integer", "minimum": 0},
                    "missed": {"type": "integer", "minimum": 0},
                    "events": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["seq", "received", "size", "event"],
                            "properties": {
                                "seq": {"type": "integer"},
                                "received": {"type": "number", "description": "Unix time."},
                                "size": {"type": "integer", "description": "Bytes as posted."},
                                "event": {
                                    "description": "The event as posted (any JSON value); "
                                    "null when over 64 KiB.",
                                    "nullable": True,
                                },
                            },
                        },
                    },
                },
            },
            "Events after the cursor, oldest first.",
        ),
        "400": _BAD,
        **_COMMON,
    },
}

_HEALTH: Schema = {
    "summary": "Health of the relay and its store (no token needed)",
    "responses": {
        "200": _json(_ref("Health"), "The store answers."),
        "503": _json(_ref("Health"), "The store does not answer."),
    },
}

_METRICS: Schema = {
    "summary": "Prometheus metrics",
    "responses": {
        "200": {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **_COMMON,
    },
}

_OPENAPI: Schema = {
    "summary": "This document",
    "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
}

OPENAPI: Schema = {
    "openapi": "3.0.3",
    "info": {
        "title": "cfylogs",
        "version": __version__,
        "description": (
            "Durable log relay between Cloudify's Logstash and Alien4Cloud orchestrators, "
            "a drop-in for alien4cloud-cfy-logs. Tokens, when configured, are sent as "
            "`Authorization: Bearer <token>`."
        ),
    },
    "paths": {
        "/api/v1/logs": {"post": _INGEST},
        "/api/v1/logs/{id}": {"get": _FETCH},
        "/api/v1/logs/{id}/ack/{batchId}": {"delete": _ACK},
        "/api/v1/registration": {"post": _REGISTER, "get": _LIST},
        "/api/v1/registration/{id}": {"delete": _UNREGISTER},
        "/api/v1/dead-letters": {"get": _DEAD_LETTERS, "delete": _PURGE},
        "/api/v1/dead-letters/replay": {"post": _REPLAY},
        "/api/v1/console": {"get": _CONSOLE},
        "/api/v1/console/history": {"get": _CONSOLE_HISTORY},
        "/api/v1/console/tail": {"get": _CONSOLE_TAIL},
        "/health": {"get": _HEALTH},
        "/metrics": {"get": _METRICS},
        "/openapi.json": {"get": _OPENAPI},
    },
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}
