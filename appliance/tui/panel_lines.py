"""The text of each dashboard panel, as plain lines: pure, shared with ``appliance status``.

A line that needs attention starts with ``!`` (the widgets also show it in
reverse video; the mark alone says it without colour).
"""

from __future__ import annotations

import time

from appliance.tui.formatting import age, bar, bits_rate, duration, human_bytes, since
from appliance.tui.status_view import StatusView

__all__ = [
    "alert_lines",
    "inference_lines",
    "link_lines",
    "model_lines",
    "outbox_lines",
    "outbox_summary",
    "sync_lines",
]

_SHORT = {"critical": "critical", "events": "events", "telemetry": "telemetry"}
_SHORT |= {"raw_requested": "raw_req", "raw_sampled": "raw_smp"}


def link_lines(view: StatusView, now: float | None = None) -> list[str]:
    if not view.sync_configured:
        return ["no cloud configured", "(sync.cloud_url unset:", " everything stays local)"]
    state = (view.link or "?").upper()
    if view.paused:
        state += "  PAUSED (uploads held)"
    cap = "none" if view.cap_bps is None else bits_rate(view.cap_bps)
    if view.cap_until is not None:
        cap += f" for {duration(view.cap_until - (now or time.time()))}"
    today = sum(row.sent_today_bytes or 0 for row in view.classes)
    budgets = [row.budget_left_bytes for row in view.classes if row.budget_left_bytes is not None]
    budget = f" ({human_bytes(sum(budgets))} left)" if budgets else ""
    rtt = f"  rtt {view.rtt_ms:.0f} ms" if view.rtt_ms is not None else ""
    lines = [
        f"{'!' if view.link == 'offline' else ' '}state  {state}{rtt}",
        f" rate   {bits_rate(view.rate_bps)}  cap {cap}",
        f" sync   {since(view.last_handshake_at, now)}  today {human_bytes(today)}{budget}",
    ]
    if view.last_error:
        lines.append(f"!error  {view.last_error[:60]}")
    return lines


def outbox_lines(view: StatusView) -> list[str]:
    capacity = view.outbox_capacity_bytes
    lines = ["  class      recs    bytes  old  use of capacity"]
    for row in view.classes:
        fraction = None if not capacity or row.bytes is None else row.bytes / capacity
        stalled = "!" if row.stalled else " "
        records = "?" if row.records is None else str(row.records)
        lines.append(
            f"{stalled} {_SHORT.get(row.name, row.name):<9}{records:>6} {human_bytes(row.bytes):>8}"
            f" {age(row.oldest_age_s):>4} {bar(fraction, 8)}"
        )
    return lines


def outbox_summary(view: StatusView) -> str:
    """One line under the outbox panel: size on disk against capacity, evicted, refused."""
    refused = sum(view.rejections.values())
    return (
        f"{'! ' if refused else ''}disk {human_bytes(view.outbox_disk_bytes)} of"
        f" {human_bytes(view.outbox_capacity_bytes)}  evicted {sum(view.evictions.values())}"
        f"  refused {refused}"
    )


def sync_lines(view: StatusView) -> list[str]:
    if not view.sync_configured:
        return [f" pending {human_bytes(view.pending_bytes)} (no cloud configured)"]
    if view.paused:
        drain = "paused"
    elif view.drain_s is None:
        drain = "drain time unknown (no rate yet)"
    elif view.drain_s == 0:
        drain = "nothing to send"
    else:
        drain = f"drains in ~{duration(view.drain_s)}"
    lines = [f" pending {human_bytes(view.pending_bytes)}  {drain}"]
    upload = view.upload
    if upload is None:
        lines.append(" upload  none in flight")
    else:
        lines.append(
            f" upload  {upload.sha256[:8]} {human_bytes(upload.offset)}/"
            f"{human_bytes(upload.length)}"
        )
        lines.append(f"         {bar(upload.fraction, 12)} {bits_rate(upload.rate_bps)}")
    stalled = [row.name for row in view.classes if row.stalled]
    if stalled:
        lines.append(f"!held   {', '.join(stalled)} (see the support bundle)")
    return lines


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def inference_lines(view: StatusView) -> list[str]:
    if not view.tasks:
        return [" no task has run yet"]
    lines = ["  task         fps  p50  p99/SLA ms"]
    for task in view.tasks:
        mark = "!" if task.over_sla else " "
        fps = "?" if task.rate_per_s is None else f"{task.rate_per_s:.1f}"
        verdict = " OVER" if task.over_sla else ""
        errors = f" err {task.errors}" if task.errors else ""
        lines.append(
            f"{mark} {task.name[:12]:<12}{fps:>4} {_ms(task.p50_ms):>4}"
            f" {_ms(task.p99_ms):>4}/{_ms(task.sla_p99_ms)}{verdict}{errors}"
        )
    return lines


def model_lines(view: StatusView, seen_versions: dict[str, str] | None = None) -> list[str]:
    if view.model_rows:
        return [
            f"{'!' if row.rolled_back else ' '} {row.task[:14]:<14} {(row.version or '?')[:19]:<19}"
            f" {row.serving or '?'}{' TRIAL' if row.on_trial else ''}"
            f"{' WATCH' if row.watching else ''}"
            f"{' ROLLED BACK' if row.rolled_back else ''}"
            for row in view.model_rows
        ] + [f"! {name[:14]:<14} FAILED" for name in view.models_failed]
    versions = {**(seen_versions or {}), **view.model_versions}
    lines = [
        f"  {name[:14]:<14} {versions.get(name, 'loaded')[:19]}" for name in view.models_loaded
    ]
    lines += [f"! {name[:14]:<14} FAILED" for name in view.models_failed]
    return lines or [" no model loaded"]


def alert_lines(view: StatusView, unreachable: str | None = None) -> list[str]:
    lines = []
    if unreachable:
        lines.append(f"!FAIL unreachable: {unreachable}")
    for alert in view.alerts:
        lines.append(f"!{alert.severity.upper()} {alert.message}")
        lines.append(f"   -> {alert.action}")
    return lines or [" OK   no alert"]
