"""The ingest filter (`ingest.accept`): which events are Cloudify logs and events.

With `cloudify`, an event goes to consumers only if it is shaped like what
Cloudify's Logstash sends (see shared/fixtures): a JSON object where
- `type` is "cloudify_log" or "cloudify_event";
- `context` is an object and `timestamp` a string;
- `message` is an object whose `text` is a string;
- a "cloudify_log" has a string `level`, a "cloudify_event" a non-empty
  string `event_type`.
Other keys and values are free. Anything else (scanner traffic that reached
Logstash's input, say) is valid JSON the Alien4Cloud poller cannot use: it
goes to the dead letters with the first rule it broke as the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

_decode = msgspec.json.Decoder(dict[str, Any]).decode
_KIND_FIELD = {"cloudify_log": "level", "cloudify_event": "event_type"}


def cloudify_refusal(raw: bytes) -> str | None:
    """None if `raw` is a Cloudify log or event, else why it is not (one short phrase)."""
    try:
        event = _decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "not a JSON object"
    except RecursionError:
        return "nested too deeply"
    kind = event.get("type")
    if not isinstance(kind, str) or kind not in _KIND_FIELD:  # a list is not even hashable
        return 'type is not "cloudify_log" or "cloudify_event"'
    if not isinstance(event.get("context"), dict):
        return "context is not an object"
    if not isinstance(event.get("timestamp"), str):
        return "timestamp is not a string"
    message = event.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("text"), str):
        return "message.text is not a string"
    field = _KIND_FIELD[kind]
    value = event.get(field)
    if not isinstance(value, str) or (field == "event_type" and not value):
        return f"{field} of a {kind} is not a string"
    return None


def split(events: Sequence[bytes], mode: str) -> tuple[list[bytes], list[tuple[bytes, str]]]:
    """(events for consumers, (event, reason) for the dead letters)."""
    if mode == "any":
        return list(events), []
    kept: list[bytes] = []
    refused: list[tuple[bytes, str]] = []
    for raw in events:
        reason = cloudify_refusal(raw)
        if reason is None:
            kept.append(raw)
        else:
            refused.append((raw, reason))
    return kept, refused
