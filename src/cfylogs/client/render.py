"""Showing events, registrations and health to people (the `cfylogs` commands)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import click
import msgspec

from cfylogs.client.models import Health, Registration

_LEVEL_COLORS = {
    "debug": "bright_black",
    "info": None,
    "warning": "yellow",
    "warn": "yellow",
    "error": "red",
    "critical": "red",
}


def compact(raw: bytes) -> bytes:
    """One line of JSON: the event's bytes as posted, whitespace squeezed if it spans lines."""
    if b"\n" not in raw and b"\r" not in raw:
        return raw
    return msgspec.json.format(raw, indent=0)


def pretty_event(event: dict[str, Any], color: bool = False) -> str:
    """`time level deployment node message` of a Cloudify log or event; JSON otherwise."""
    raw_context = event.get("context")
    context: dict[str, Any] = raw_context if isinstance(raw_context, dict) else {}
    message = event.get("message")
    text = message.get("text") if isinstance(message, dict) else message
    if not context and text is None:
        return msgspec.json.encode(event).decode()
    level = str(event.get("level") or event.get("event_type") or "event")
    when = str(event.get("@timestamp") or event.get("timestamp") or "")
    node = context.get("node_id") or context.get("node_name") or "-"
    line = " ".join(
        [
            when,
            f"{level.upper():<8}",
            str(context.get("deployment_id") or "-"),
            str(node),
            str(text if text is not None else ""),
        ]
    )
    if not color:
        return line
    is_event = "level" not in event
    return click.style(line, fg="cyan" if is_event else _LEVEL_COLORS.get(level.lower()))


def age(seconds: float | None) -> str:
    """`45s`, `3m05s`, `2h07m`, `4d03h`; `-` for none."""
    if seconds is None:
        return "-"
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop always returns


def utc(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def registrations_table(regs: Sequence[Registration], now: float) -> str:
    if not regs:
        return "no registrations"
    rows = [
        [
            reg.id,
            reg.name or "-",
            utc(reg.created),
            age(now - reg.last_seen) + " ago" if reg.last_seen else "-",
            str(reg.backlog_events),
            size(reg.backlog_bytes),
            age(now - reg.oldest_unacked_at) if reg.oldest_unacked_at else "-",
            str(reg.redeliveries),
        ]
        for reg in regs
    ]
    headers = ["ID", "NAME", "CREATED (UTC)", "LAST SEEN", "BACKLOG", "BYTES", "OLDEST", "REDELIV"]
    return table(headers, rows)


def backlog_summary(regs: Sequence[Registration], now: float) -> dict[str, Any]:
    oldest = [r.oldest_unacked_at for r in regs if r.oldest_unacked_at is not None]
    return {
        "registrations": len(regs),
        "backlog_events": sum(r.backlog_events for r in regs),
        "backlog_bytes": sum(r.backlog_bytes for r in regs),
        "oldest_unacked_age_sec": round(now - min(oldest), 3) if oldest else None,
        "redeliveries": sum(r.redeliveries for r in regs),
        "dropped_events": sum(r.dropped_events for r in regs),
    }


def status_json(health: Health, regs: Sequence[Registration], now: float) -> dict[str, Any]:
    return {"health": asdict(health), **backlog_summary(regs, now)}


def status_table(health: Health, regs: Sequence[Registration], now: float) -> str:
    summary = backlog_summary(regs, now)
    store = health.storage
    rows = [
        ["status", health.status],
        ["version", health.version or "-"],
        ["uptime", age(health.uptime_sec)],
        ["storage", f"{store.backend} ({store.detail})" if store.detail else store.backend],
        ["stored events", str(store.events)],
        ["stored bytes", size(store.bytes)],
        ["disk used", size(store.disk_bytes)],
        ["disk free", size(store.free_bytes)],
        ["registrations", str(summary["registrations"])],
        ["backlog events", str(summary["backlog_events"])],
        ["backlog bytes", size(summary["backlog_bytes"])],
        ["oldest unacked", age(summary["oldest_unacked_age_sec"])],
        ["redeliveries", str(summary["redeliveries"])],
        ["dropped events", str(summary["dropped_events"])],
    ]
    return table(["", ""], rows).split("\n", 1)[1]
