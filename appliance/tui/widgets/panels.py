"""A bordered panel of text lines, and the banner shown when the appliance is unreachable."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

__all__ = ["Banner", "LinesPanel"]


class LinesPanel(Static):
    """Shows plain lines; one starting with ``!`` needs attention: shown bold in reverse
    video (the ``!`` stays, so it reads without colour)."""

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__("", id=id, classes="panel")
        self.border_title = title
        self.lines: list[str] = []

    def show(self, lines: list[str], subtitle: str | None = None) -> None:
        if subtitle is not None and subtitle != self.border_subtitle:
            self.border_subtitle = subtitle
        if lines == self.lines:
            return  # nothing new: no repaint
        self.lines = list(lines)
        text = Text(no_wrap=True, overflow="ellipsis")
        for index, line in enumerate(lines):
            if index:
                text.append("\n")
            text.append(line, style="bold reverse" if line.startswith("!") else "")
        self.update(text)


class Banner(Static):
    """One line on top: the appliance and its state; a full-width warning when unreachable."""

    def __init__(self) -> None:
        super().__init__("connecting ...", id="banner")

    def connected(self, line: str) -> None:
        self.remove_class("down")
        self.update(line)

    def unreachable(self, line: str) -> None:
        self.add_class("down")
        self.update(Text(f"!! {line}", style="bold"))
