"""Live events: recent detections as the cloud will see them (plate tokens, never plates)."""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

__all__ = ["EventsScreen", "event_row"]

_KEEP = 200  # rows kept on screen


def _results(results: object) -> str:
    if not isinstance(results, list):
        return ""
    shown = []
    for item in results[:6]:
        if isinstance(item, dict):
            shown.append(f"{item.get('kind', '?')}={item.get('value', '')}")
    more = f" +{len(results) - 6}" if len(results) > 6 else ""
    return " ".join(shown) + more


def event_row(event: dict[str, Any]) -> tuple[str, str, str, str, str, str]:
    """One table row of an ``/v1/events`` record (values as the daemon sent them:
    plate values there are already HMAC tokens)."""
    at = event.get("event_time")
    when = time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, int | float) else "?"
    latency = event.get("latency_ms")
    ms = f"{latency:.0f}" if isinstance(latency, int | float) else "?"
    if event.get("sla_violated") is True:
        ms = f"!{ms}"
    return (
        when,
        str(event.get("camera_id", "?")),
        str(event.get("task", "?")),
        str(event.get("model_version", "?"))[:18],
        ms,
        _results(event.get("results")),
    )


class EventsScreen(Screen[None]):
    BINDINGS = [Binding("escape,e", "app.pop_screen", "dashboard")]

    def compose(self) -> ComposeResult:
        yield Static("Live events (newest at the bottom; plates as tokens)", id="events-title")
        yield DataTable(id="events", zebra_stripes=True, cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("time", "camera", "task", "model", "ms", "results")
        for event in self.app_events():  # oldest first, as they come
            self.add_event(event)

    def app_events(self) -> list[dict[str, Any]]:
        recent = getattr(self.app, "recent_events", None)
        return list(recent) if recent is not None else []

    def add_event(self, event: dict[str, Any]) -> None:
        table = self.query_one(DataTable)
        table.add_row(*event_row(event))
        if table.row_count > _KEEP:
            table.remove_row(next(iter(table.rows)))
        table.scroll_end(animate=False)
