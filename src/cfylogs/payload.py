"""Turns an ingest request body into the list of raw events it carries.

Events are kept as the exact bytes that were posted: they are checked to be
JSON objects (msgspec's parser validates the syntax while it skips over each
element, without building Python objects) and passed through untouched, so a
consumer receives the same keys, order and values, and nothing is
re-serialised on the hot path.
"""

from __future__ import annotations

import functools
import zlib

import msgspec

from cfylogs.errors import BadRequest, PayloadTooLarge, UnsupportedEncoding

_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])
_ONE = msgspec.json.Decoder(msgspec.Raw)
_WHITESPACE = b" \t\r\n"
_GZIP = {"gzip", "x-gzip"}
_IDENTITY = {"", "identity"}


def decode_body(body: bytes, content_encoding: str, limit: int) -> bytes:
    """Undo `Content-Encoding`, refusing more than `limit` bytes of output."""
    encoding = content_encoding.strip().lower()
    if encoding in _IDENTITY:
        return body
    if encoding in _GZIP:
        return _inflate(body, limit, zlib.MAX_WBITS | 16, "gzip")
    if encoding == "deflate":
        return _inflate(body, limit, zlib.MAX_WBITS, "deflate")
    raise UnsupportedEncoding(
        f"Content-Encoding {content_encoding!r} is not supported; use gzip, deflate or none"
    )


#: Compressed input handed to zlib at a time: what zlib gives back as `unused_data`
#: after a gzip member is at most this, so a body of many members is linear to read
#: (taking the rest of the body each time was quadratic: 4 MiB of empty members, 10 s).
_INFLATE_SLICE = 4 * 1024


def _inflate(body: bytes, limit: int, wbits: int, name: str) -> bytes:
    """Decompress `body` (concatenated gzip members too: RFC 1952), at most `limit` bytes
    out; time is linear in the input and the output."""
    view = memoryview(body)
    out: list[bytes] = []
    size = pos = 0
    inflater = zlib.decompressobj(wbits)
    try:
        while True:
            if inflater.eof:
                pos -= len(inflater.unused_data)  # read past the member: step back
                if wbits & 16:  # gzip: NUL padding between members is tolerated
                    pos = _skip_nul(view, pos)
                if pos >= len(view):
                    break
                inflater = zlib.decompressobj(wbits)
            data: bytes | memoryview = inflater.unconsumed_tail
            if not data:
                if pos >= len(view):
                    raise BadRequest(f"the {name} body is truncated")
                data = view[pos : pos + _INFLATE_SLICE]
                pos += len(data)
            chunk = inflater.decompress(data, limit + 1 - size)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"the request body is larger than {limit} bytes once decompressed"
                )
            out.append(chunk)
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid {name} data: {exc}") from None
    return b"".join(out)


def _skip_nul(view: memoryview, pos: int) -> int:
    while pos < len(view):
        piece = bytes(view[pos : pos + _INFLATE_SLICE])
        stripped = piece.lstrip(b"\0")
        pos += len(piece) - len(stripped)
        if stripped:
            break
    return pos


#: What msgspec raises for a body it cannot take: invalid JSON, or JSON nested deeper
#: than the interpreter's recursion limit (valid, but no event is shaped like that).
JSON_ERRORS = (msgspec.DecodeError, RecursionError)


def json_problem(exc: Exception) -> str:
    """The 400 message for one of `JSON_ERRORS`."""
    if isinstance(exc, RecursionError):
        return "the JSON is nested too deeply"
    return f"invalid JSON: {exc}"


def parse_events(body: bytes, content_type: str = "") -> list[bytes]:
    """Split a body into raw JSON objects: one object, an array of them, or NDJSON.

    The kind is told from the body itself; `application/x-ndjson` (or
    `application/jsonl`) only makes a single line count as NDJSON. The whole
    body is validated before anything is returned: all or nothing.
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid UTF-8 (byte {exc.start})") from None
    start = _first_non_space(body)
    if start == len(body):
        raise BadRequest("the body is empty: send a JSON object, an array of objects, or NDJSON")
    first = body[start : start + 1]
    if first == b"[":
        return _parse_array(body)
    if first != b"{":
        raise BadRequest("expected a JSON object, an array of objects, or NDJSON objects")
    if _is_ndjson_type(content_type):
        return _parse_lines(body)
    try:
        return [bytes(_ONE.decode(body))]
    except JSON_ERRORS as exc:
        if "trailing characters" not in str(exc):
            raise BadRequest(json_problem(exc)) from None
    return _parse_lines(body)


def _parse_array(body: bytes) -> list[bytes]:
    try:
        elements = _ARRAY.decode(body)
    except msgspec.ValidationError:
        raise BadRequest("expected a JSON array of objects") from None
    except JSON_ERRORS as exc:
        raise BadRequest(json_problem(exc)) from None
    events: list[bytes] = []
    for index, element in enumerate(elements):
        raw = bytes(element)
        if raw[:1] != b"{":
            raise BadRequest(f"element {index} of the array is not a JSON object")
        events.append(raw)
    return events


def _parse_lines(body: bytes) -> list[bytes]:
    events: list[bytes] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        line = line.strip(_WHITESPACE)
        if not line:
            continue
        if line[:1] != b"{":
            raise BadRequest(f"line {number}: expected a JSON object")
        try:
            events.append(bytes(_ONE.decode(line)))
        except JSON_ERRORS as exc:
            raise BadRequest(f"line {number}: {json_problem(exc)}") from None
    return events


def _first_non_space(body: bytes) -> int:
    return len(body) - len(body.lstrip(_WHITESPACE))


@functools.lru_cache(maxsize=64)  # a relay sees a handful of distinct Content-Types
def _is_ndjson_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/x-ndjson", "application/ndjson", "application/jsonl")
