"""The event of every scenario: the Cloudify log fixture, compacted, plus a sequence number."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

#: Logstash `json_batch` arrays in the issue's workload.
BATCH = 500
#: Consumers fetch (and acknowledge) this many events at a time.
FETCH = 1000

LUA_POST = """\
-- POST the body in $BENCH_BODY on every request (the same script for every HTTP target).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,' ..
    '"socket_errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _find_fixture() -> Path:
    """`shared/fixtures` beside the repository or a parent (the project's reference
    events), else the copy in tests/fixtures that a test keeps equal (a lone clone)."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "fixtures" / "cloudify_log.json"
        if candidate.is_file():
            return candidate
    copy = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "cloudify_log.json"
    if copy.is_file():
        return copy
    raise FileNotFoundError("cloudify_log.json: neither shared/fixtures nor tests/fixtures")


@cache
def _template() -> bytes:
    event = json.loads(_find_fixture().read_bytes())
    event.pop("seq", None)
    compact = json.dumps(event, separators=(",", ":")).encode()
    return compact[:-1] + b',"seq":%d}'


def event(seq: int) -> bytes:
    """The fixture event with `"seq": seq` as its last key (about 800 bytes)."""
    return _template() % seq


def batch_body(first_seq: int, count: int = BATCH) -> bytes:
    return b"[" + b",".join(event(first_seq + i) for i in range(count)) + b"]"


def write_wrk_files(directory: Path) -> dict[str, Path]:
    """The Lua script and the two bodies (one event, one 500-event array) for wrk."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "lua": directory / "post.lua",
        "single": directory / "single.json",
        "batch": directory / "batch.json",
    }
    files["lua"].write_text(LUA_POST)
    files["single"].write_bytes(event(0))
    files["batch"].write_bytes(batch_body(0))
    return files
