"""The chunk format of the embedded store, as pure functions (no database)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cfylogs.models import JoinedEntries
from cfylogs.storage.sqlite import chunkformat as fmt

EVENTS = [b"{}", b'{"a":1}', b'{"b":[1,2]}', b'{"c":"x"}']


def test_offsets_are_little_endian_uint32_and_read_back() -> None:
    blob = fmt.encode_offsets([0, 2, 70000])
    assert blob == b"\x00\x00\x00\x00\x02\x00\x00\x00\x70\x11\x01\x00"
    assert list(fmt.decode_offsets(blob)) == [0, 2, 70000]


def test_a_chunk_holds_each_event_and_a_comma_with_boundaries_in_event_bytes() -> None:
    offsets_blob, data = fmt.pack(EVENTS, fmt.COMMA)
    offsets = fmt.decode_offsets(offsets_blob)
    assert data == b",".join(EVENTS) + b","
    assert list(offsets) == [0, 2, 9, 20, 29]  # commas not counted
    assert fmt.has_commas(len(data), offsets)
    for i, event in enumerate(EVENTS):
        assert data[offsets[i] + i : offsets[i + 1] + i] == event


def test_chunks_of_earlier_releases_have_no_separator_and_are_told_apart() -> None:
    offsets_blob, data = fmt.pack(EVENTS)
    offsets = fmt.decode_offsets(offsets_blob)
    assert data == b"".join(EVENTS) and not fmt.has_commas(len(data), offsets)
    begin, length = fmt.span(offsets, 1, 3, commas=False)
    assert data[begin : begin + length] == EVENTS[1] + EVENTS[2]
    converted, piece = fmt.with_commas(data[begin : begin + length], offsets, 1, 3)
    assert piece == EVENTS[1] + b"," + EVENTS[2] + b","
    assert list(converted) == [0, len(EVENTS[1]), len(EVENTS[1]) + len(EVENTS[2])]


def test_a_run_of_events_is_one_slice_already_inside_a_json_array() -> None:
    offsets_blob, data = fmt.pack(EVENTS, fmt.COMMA)
    offsets = fmt.decode_offsets(offsets_blob)
    begin, length = fmt.span(offsets, 1, 3, commas=True)
    assert data[begin : begin + length] == EVENTS[1] + b"," + EVENTS[2] + b","


def test_slices_of_two_chunks_join_into_the_entries_of_a_batch() -> None:
    first, second = EVENTS[:2], EVENTS[2:]
    pieces, bounds = [], [0]
    for events, lo, hi in ((first, 1, 2), (second, 0, 2)):
        offsets_blob, data = fmt.pack(events, fmt.COMMA)
        offsets = fmt.decode_offsets(offsets_blob)
        begin, length = fmt.span(offsets, lo, hi, commas=True)
        pieces.append(data[begin : begin + length])
        fmt.extend_bounds(bounds, offsets, lo, hi)
    joined = JoinedEntries(b"".join(pieces), bounds)
    assert list(joined) == EVENTS[1:] and joined.buffer == JoinedEntries.of(EVENTS[1:]).buffer


def test_byte_positions_and_the_event_at_a_byte() -> None:
    offsets = fmt.decode_offsets(fmt.pack(EVENTS)[0])  # [0, 2, 9, 20, 29]
    first_seq, first_byte = 100, 1000
    assert fmt.byte_at(offsets, first_seq, first_byte, 102) == 1009
    assert fmt.byte_at(offsets, first_seq, first_byte, 150) == 1029  # past it: its end
    assert fmt.seq_at(offsets, first_seq, first_byte, 1009) == 102  # starts right there
    assert fmt.seq_at(offsets, first_seq, first_byte, 1010) == 103  # the next one to start
    assert fmt.seq_at(offsets, first_seq, first_byte, 1029) == 104  # none: the chunk's end


def test_a_batch_is_cut_where_the_next_event_would_exceed_max_bytes() -> None:
    offsets = fmt.decode_offsets(fmt.pack(EVENTS)[0])  # sizes 2, 7, 11, 9
    cut = fmt.cut_in_chunk
    assert cut(offsets, 0, 0, 0, 4, 0, 29) is None  # all fit
    assert cut(offsets, 0, 0, 0, 4, 0, 20) == (3, 20)  # three fit, exactly
    assert cut(offsets, 0, 0, 1, 4, 2, 10) == (2, 7)  # from event 1 (byte 2): one fits
    assert cut(offsets, 0, 0, 2, 4, 9, 5) == (3, 11)  # a first event too large goes alone
    assert cut(offsets, 0, 0, 0, 2, 0, 9) is None  # the batch ends (end=2) within the cap


@given(
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=30),
    data=st.data(),
)
def test_cutting_matches_adding_sizes_one_by_one(sizes: list[int], data: st.DataObject) -> None:
    offsets = fmt.decode_offsets(fmt.pack([b"x" * size for size in sizes])[0])
    start = data.draw(st.integers(0, len(sizes) - 1))
    end = data.draw(st.integers(start + 1, len(sizes)))
    max_bytes = data.draw(st.integers(0, sum(sizes) + 1))
    expected, total = None, 0
    for seq in range(start, end):
        if total + sizes[seq] > max_bytes:
            expected = (start + 1, sizes[start]) if seq == start else (seq, total)
            break
        total += sizes[seq]
    assert fmt.cut_in_chunk(offsets, 0, 0, start, end, offsets[start], max_bytes) == expected
