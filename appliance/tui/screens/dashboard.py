"""The dashboard: link, sync, outbox, inference, models and alerts at a glance."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer

from appliance.tui import panel_lines
from appliance.tui.status_view import StatusView
from appliance.tui.widgets import Banner, LinesPanel

__all__ = ["DashboardScreen"]

_ROOMY_HEIGHT = 34  # from this many rows, each alert also shows what to do


class DashboardScreen(Screen[None]):
    """Shows what the app hands it (``show``); actions are the app's bindings."""

    class Ready(Message):
        """Mounted: the app can hand it the last status."""

    def on_mount(self) -> None:
        self.post_message(self.Ready())

    def compose(self) -> ComposeResult:
        yield Banner()
        with VerticalScroll(id="dashboard"):
            yield LinesPanel("Alerts", id="alerts")
            with Horizontal(classes="row"):
                yield LinesPanel("Link", id="link")
                yield LinesPanel("Sync", id="sync")
            with Horizontal(classes="row"):
                yield LinesPanel("Inference (p99 vs SLA)", id="inference")
                yield LinesPanel("Models", id="models")
            yield LinesPanel("Outbox", id="outbox")
        yield Footer()

    def show(
        self,
        view: StatusView,
        *,
        unreachable: str | None,
        banner: str,
        versions: dict[str, str],
        now: float | None = None,
    ) -> None:
        top = self.query_one(Banner)
        if unreachable:
            top.unreachable(banner)
        else:
            top.connected(banner)
        alerts = panel_lines.alert_lines(view, unreachable)
        if self.size.height < _ROOMY_HEIGHT:
            alerts = [line for line in alerts if not line.startswith("   -> ")]
        self.query_one("#alerts", LinesPanel).show(alerts)
        self.query_one("#link", LinesPanel).show(panel_lines.link_lines(view, now))
        self.query_one("#sync", LinesPanel).show(panel_lines.sync_lines(view))
        self.query_one("#outbox", LinesPanel).show(
            panel_lines.outbox_lines(view), panel_lines.outbox_summary(view)
        )
        self.query_one("#inference", LinesPanel).show(panel_lines.inference_lines(view))
        self.query_one("#models", LinesPanel).show(panel_lines.model_lines(view, versions))
