"""Dashboard widgets (each panel shows lines made by ``appliance.tui.panel_lines``)."""

from appliance.tui.widgets.panels import Banner, LinesPanel

__all__ = ["Banner", "LinesPanel"]
