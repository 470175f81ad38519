from __future__ import annotations

import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfylogs.errors import BadRequest, PayloadTooLarge, UnsupportedEncoding
from cfylogs.payload import decode_body, parse_events


def test_kinds_of_body() -> None:
    assert parse_events(b' {"a":1} ') == [b'{"a":1}']
    assert parse_events(b'[{"a":1}, {"b":2}]') == [b'{"a":1}', b'{"b":2}']
    assert parse_events(b'{"a":1}\n{"b":2}') == [b'{"a":1}', b'{"b":2}']
    assert parse_events(b'{"a":1}', "application/x-ndjson; charset=utf-8") == [b'{"a":1}']
    assert parse_events(b"[]") == []


def test_gzip_limits_apply_after_decompression() -> None:
    body = gzip.compress(b"x" * 10_000)
    assert decode_body(body, "gzip", 10_000) == b"x" * 10_000
    with pytest.raises(PayloadTooLarge):
        decode_body(body, "gzip", 9_999)
    with pytest.raises(UnsupportedEncoding):
        decode_body(b"", "compress", 10)
    with pytest.raises(BadRequest):
        decode_body(body + b"junk", "gzip", 100_000)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=10,
)


@given(st.lists(st.dictionaries(st.text(), json_values), max_size=5))
def test_valid_events_pass_through_unchanged(objects: list[dict[str, object]]) -> None:
    import json

    raws = [json.dumps(o).encode() for o in objects]
    assert parse_events(b"[" + b", ".join(raws) + b"]") == raws
    if raws:
        assert parse_events(b"\n".join(raws)) == raws


@given(st.binary(max_size=200))
def test_junk_is_refused_or_parsed_never_crashes(body: bytes) -> None:
    import json

    try:
        events = parse_events(body)
    except BadRequest:
        return
    for event in events:
        assert isinstance(json.loads(event), dict)
