"""Medians, ratios and the issue's targets, as a markdown table and a JSON file."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

Measure = dict[str, Any]
Summary = dict[str, dict[str, Measure]]


def summarise(rows: list[Measure]) -> Summary:
    """Per scenario and system: the median of every number, `any` of every flag."""
    groups: dict[tuple[str, str], list[Measure]] = defaultdict(list)
    for row in rows:
        groups[(row["scenario"], row["system"])].append(row)
    out: Summary = defaultdict(dict)
    for (scenario, system), items in groups.items():
        merged: Measure = {"runs": len(items)}
        keys = {k for item in items for k in item} - {"scenario", "system", "round"}
        for key in sorted(keys):
            values = [item[key] for item in items if key in item]
            if all(isinstance(v, bool) for v in values):
                merged[key] = any(values)
            elif all(isinstance(v, int | float) for v in values):
                merged[key] = round(statistics.median(values), 3)
            else:
                merged[key] = values[-1]
        out[scenario][system] = merged
    return dict(out)


def round_ratio(rows: list[Measure], scenario: str, a: str, b: str, key: str) -> float | None:
    """Median over rounds of a/b measured in the same round (robust to CPU swings)."""
    by_round: dict[int, dict[str, float]] = defaultdict(dict)
    for row in rows:
        if row["scenario"] == scenario and key in row and row["system"] in (a, b):
            by_round[row["round"]][row["system"]] = row[key]
    ratios = [r[a] / r[b] for r in by_round.values() if a in r and b in r and r[b]]
    return round(statistics.median(ratios), 3) if ratios else None


def _get(summary: Summary, scenario: str, system: str, key: str) -> float | None:
    value = summary.get(scenario, {}).get(system, {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def targets(rows: list[Measure], summary: Summary, backend: str = "cfylogs") -> list[Measure]:
    """One line per target of the issue: measured value, target, pass/fail (None: not run)."""
    s, lines = summary, []

    def add(name: str, what: str, value: float | None, target: str, ok: bool | None) -> None:
        shown = "n/a" if value is None else f"{value:,.3f}".rstrip("0").rstrip(".")
        lines.append({"target": name, "what": what, "value": shown, "goal": target, "pass": ok})

    ratio = round_ratio(rows, "P1", backend, "http-ceiling", "events_per_sec")
    add("P1", "single-event ingest / HTTP-core ceiling", ratio, ">= 0.7", _ge(ratio, 0.7))
    ratio = round_ratio(rows, "P1", backend, "asgi-ceiling", "events_per_sec")
    add("P1", "single-event ingest / ASGI ceiling", ratio, ">= 0.7", _ge(ratio, 0.7))
    p99 = _get(s, "P1-paced", backend, "p99_ms")
    add("P1", "p99 ms at 1,000 events/s (paced)", p99, "<= 10", _le(p99, 10))
    p2 = _get(s, "P2", backend, "events_per_sec")
    add("P2", "batched ingest events/s", p2, ">= 150,000", _ge(p2, 150_000))
    disk_ceiling = _get(s, "disk", "framed-500", "events_per_sec")
    p2_ratio = p2 / disk_ceiling if p2 and disk_ceiling else None
    add("P2", "batched ingest / framed-append ceiling", p2_ratio, ">= 0.7", _ge(p2_ratio, 0.7))
    p3 = _get(s, "P3", backend, "events_per_sec")
    add("P3", "drain events/s (batches of 1000)", p3, ">= 200,000", _ge(p3, 200_000))
    fan = s.get("P4", {})
    one, many = f"{backend} x1", f"{backend} x16"
    b1, b16 = (
        _get(s, "P4", one, "disk_bytes_per_event"),
        _get(s, "P4", many, "disk_bytes_per_event"),
    )
    bytes_ratio = b16 / b1 if b1 and b16 else None
    add("P4", "disk bytes/event x16 / x1", bytes_ratio, "<= 1.1", _le(bytes_ratio, 1.1))
    i1, i16 = _get(s, "P4", one, "events_per_sec"), _get(s, "P4", many, "events_per_sec")
    ingest_ratio = i16 / i1 if i1 and i16 and fan else None
    add("P4", "ingest x16 / x1", ingest_ratio, ">= 0.9", _ge(ingest_ratio, 0.9))
    p5 = _get(s, "P5", backend, "p99_ms")
    add("P5", "end-to-end p99 ms at 1,000 events/s", p5, "<= 5", _le(p5, 5))
    answer = _get(s, "P6", backend, "answer_sec")
    add("P6", "answering after restart (s)", answer, "<= 3", _le(answer, 3))
    rss = max(
        (v for v in (_get(s, "P6", backend, k) for k in ("rss_fill_mb", "rss_restart_mb")) if v),
        default=None,
    )
    add("P6", "peak server RSS MB (fill, restart)", rss, "<= 150", _le(rss, 150))
    for peer in ("redis", "rabbitmq"):
        if not any(peer in systems for systems in s.values()):
            continue
        for scenario in ("P1", "P2", "P3"):
            ratio = round_ratio(rows, scenario, backend, peer, "events_per_sec")
            add("P7", f"{scenario} events/s vs {peer}", ratio, "> 1", _gt(ratio, 1.0))
        ratio = round_ratio(rows, "P5", peer, backend, "p99_ms")
        add("P7", f"P5 p99 {peer} / ours", ratio, "> 1", _gt(ratio, 1.0))
    for scenario in ("P1", "P2"):
        if "cfylogs-viewer" in s.get(scenario, {}):
            ratio = round_ratio(rows, scenario, "cfylogs-viewer", backend, "events_per_sec")
            what = f"{scenario} events/s with one live-tail viewer / without"
            add("console", what, ratio, ">= 0.95", _ge(ratio, 0.95))
    for system in s.get("P2", {}):
        if system.startswith("cfylogs-postgres"):
            value = _get(s, "P2", system, "events_per_sec")
            add("P8", f"{system} batched ingest events/s", value, ">= 50,000", _ge(value, 50_000))
    return lines


def _ge(v: float | None, t: float) -> bool | None:
    return None if v is None else v >= t


def _gt(v: float | None, t: float) -> bool | None:
    return None if v is None else v > t


def _le(v: float | None, t: float) -> bool | None:
    return None if v is None else v <= t


_COLUMNS = [
    ("events_per_sec", "events/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("server_cpu_pct", "server CPU %"),
    ("server_cpu_us_per_event", "server CPU µs/event"),
    ("client_cpu_pct", "client CPU %"),
    ("others_cpu_pct", "others CPU %"),
    ("client_bound", "generator-bound"),
    ("client_heavy", "generator > server"),
    ("runs", "runs"),
]


def markdown(summary: Summary, lines: list[Measure], header: str) -> str:
    out = [
        header,
        "",
        "## Targets",
        "",
        "| # | what | measured | target | result |",
        "|---|---|---|---|---|",
    ]
    for line in lines:
        verdict = {True: "pass", False: "**FAIL**", None: "not run"}[line["pass"]]
        out.append(
            f"| {line['target']} | {line['what']} | {line['value']} | {line['goal']} | {verdict} |"
        )
    out += ["", "## Medians per scenario and system", ""]
    out += ["| scenario | system | " + " | ".join(t for _, t in _COLUMNS) + " | other |"]
    out += ["|---|---|" + "---|" * (len(_COLUMNS) + 1)]
    known = {k for k, _ in _COLUMNS}
    for scenario, systems in summary.items():
        for system, m in systems.items():
            cells = [_cell(m.get(k)) for k, _ in _COLUMNS]
            other = ", ".join(f"{k}={_cell(v)}" for k, v in m.items() if k not in known)
            out.append(f"| {scenario} | {system} | " + " | ".join(cells) + f" | {other} |")
    return "\n".join(out) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "**yes**" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)
