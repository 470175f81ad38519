"""Reading push input: objects, arrays, NDJSON, pretty-printed, back to back."""

from __future__ import annotations

import io

import pytest

from cfylogs.client import InputError, batched, iter_events


def events(text: bytes) -> list[bytes]:
    return list(iter_events(io.BytesIO(text)))


def test_ndjson_lines_pass_through_byte_for_byte() -> None:
    assert events(b'{"a": 1}\n\n{"b" :2}\r\n') == [b'{"a": 1}', b'{"b" :2}']


def test_arrays_are_split_into_their_objects() -> None:
    assert events(b'[{"a":1}, {"b":2}]\n{"c":3}') == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_pretty_printed_and_back_to_back_values() -> None:
    text = b'{\n  "a": {"x": 1},\n  "b": 2\n}{"c":3}\n[\n {"d": 4}\n]\n'
    assert events(text) == [b'{\n  "a": {"x": 1},\n  "b": 2\n}', b'{"c":3}', b'{"d": 4}']


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (b'{"a":1}\n{"a": }\n', "line 2: invalid JSON"),
        (b'{"a":1}\n{"a":\n', "line 2: invalid or incomplete"),
        (b"[1, 2]\n", "line 1: element 0 of the array is not a JSON object"),
        (b'"text"\n', "line 1: expected a JSON object"),
    ],
)
def test_bad_input_says_which_line(text: bytes, where: str) -> None:
    with pytest.raises(InputError, match=where):
        events(text)


def test_batches_are_bounded_by_count_and_bytes() -> None:
    items = [b"x" * 10] * 7
    assert [len(b) for b in batched(items, 3)] == [3, 3, 1]
    assert [len(b) for b in batched(items, 100, max_bytes=25)] == [2, 2, 2, 1]
    assert [len(b) for b in batched([b"y" * 100], 10, max_bytes=5)] == [1]
