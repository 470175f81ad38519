"""The `ingest.accept: cloudify` rule, one case per clause."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfylogs.accept import cloudify_refusal, split
from tests.support import FIXTURES

LOG = json.loads((FIXTURES / "cloudify_log.json").read_text())
EVENT = json.loads((FIXTURES / "cloudify_event.json").read_text())


def _raw(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def test_the_shared_fixtures_are_accepted() -> None:
    assert cloudify_refusal(_raw(LOG)) is None
    assert cloudify_refusal(_raw(EVENT)) is None
    assert cloudify_refusal(_raw({**LOG, "extra": [1, 2]})) is None  # other keys are free


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"hello": "world"}, "type is not"),
        ({**LOG, "type": "log"}, "type is not"),
        ({**LOG, "context": None}, "context is not an object"),
        ({**EVENT, "timestamp": 1505398006}, "timestamp is not a string"),
        ({**LOG, "message": {"text": None}}, "message.text is not a string"),
        ({k: v for k, v in LOG.items() if k != "level"}, "level of a cloudify_log"),
        ({**EVENT, "event_type": ""}, "event_type of a cloudify_event"),
    ],
)
def test_each_clause_refuses_with_its_reason(event: dict[str, Any], reason: str) -> None:
    refusal = cloudify_refusal(_raw(event))
    assert refusal is not None and refusal.startswith(reason)


def test_split_keeps_order_and_any_keeps_all() -> None:
    junk = b'{"a":1}'
    assert split([_raw(LOG), junk, _raw(EVENT)], "cloudify") == (
        [_raw(LOG), _raw(EVENT)],
        [(junk, 'type is not "cloudify_log" or "cloudify_event"')],
    )
    assert split([junk], "any") == ([junk], [])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from([*LOG, *EVENT, "x"]), json_values), st.booleans())
def test_any_object_gets_an_answer_never_an_error(extra: dict[str, Any], log: bool) -> None:
    """Fixture-shaped objects with random fields replaced: accepted or a reason, no crash."""
    event = {**(LOG if log else EVENT), **extra}
    refusal = cloudify_refusal(_raw(event))
    assert refusal is None or isinstance(refusal, str)
