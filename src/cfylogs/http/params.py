"""Path and query parameters, and small request bodies: checked, or a 400 that says why."""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

from cfylogs.errors import BadRequest, NotFound
from cfylogs.payload import JSON_ERRORS, json_problem

DEFAULT_DEAD_LETTER_PAGE = 100
MAX_DEAD_LETTER_PAGE = 1000
#: Largest id SQLite and PostgreSQL store (64-bit signed).
MAX_ID = 2**63 - 1
_MAX_ID_LENGTH = 200
#: An integer as the API takes it: ASCII digits, no spaces, `+` or `_` (which int()
#: would take), few enough that int() never refuses it (it does past 4,300 digits).
_INTEGER = re.compile(r"-?[0-9]{1,18}")


def registration_id(raw: str) -> str:
    if len(raw) > _MAX_ID_LENGTH:
        raise NotFound("No registration can be found for that id (too long)")
    return raw


def batch_id(raw: str) -> int:
    if _INTEGER.fullmatch(raw) is None:
        raise BadRequest(f"batch id {raw[:40]!r} is not an integer")
    return int(raw)


def registration_name(body: bytes) -> str | None:
    if not body.strip():
        return None
    try:
        data = msgspec.json.decode(body)
    except JSON_ERRORS as exc:
        raise BadRequest(json_problem(exc)) from None
    if not isinstance(data, dict):
        raise BadRequest("the registration body must be a JSON object, such as {}")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise BadRequest('"name" must be a string of at most 200 characters')
    return name


def number(query: dict[str, str], key: str, low: float, high: float) -> float:
    if key not in query:
        return 0.0
    try:
        value = float(query[key])
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # also refuses nan
        raise BadRequest(f"?{key}= must be a number of seconds from {low:g} to {high:g}")
    return value


def integer(query: dict[str, str], key: str, low: int, high: int | None) -> int | None:
    if key not in query:
        return None
    raw = query[key]
    if not _is_digits(raw) or int(raw) < low or (high is not None and int(raw) > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise BadRequest(f"?{key}= must be an integer {bound}")
    return int(raw)


def dead_letter_selection(body: bytes) -> list[int] | None:
    """`{"ids": [1, 2]}` -> [1, 2]; `{"all": true}` -> None (every dead letter)."""
    try:
        data = msgspec.json.decode(body or b"null")
    except JSON_ERRORS as exc:
        raise BadRequest(json_problem(exc)) from None
    if isinstance(data, dict) and data.get("all") is True:
        return None
    if isinstance(data, dict) and isinstance(data.get("ids"), list):
        return id_list(data["ids"])
    raise BadRequest('send {"ids": [1, 2, ...]} or {"all": true}')


def id_list(values: list[Any]) -> list[int]:
    ids = [v for v in values if type(v) is int or (isinstance(v, str) and _is_digits(v))]
    if not 0 < len(ids) == len(values) <= MAX_DEAD_LETTER_PAGE:
        raise BadRequest(f"send from 1 to {MAX_DEAD_LETTER_PAGE} integer dead-letter ids")
    if not all(0 <= int(v) <= MAX_ID for v in ids):
        raise BadRequest(f"dead-letter ids are integers from 0 to {MAX_ID}")
    return [int(v) for v in ids]


def _is_digits(text: str) -> bool:
    return text[:1] != "-" and _INTEGER.fullmatch(text) is not None
