"""Dialogs: confirm an action (y / n), and ask for a temporary bandwidth cap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

__all__ = [
    "CapRequest",
    "CapScreen",
    "ConfirmScreen",
    "RollbackRequest",
    "RollbackScreen",
    "parse_cap",
]

_Answer = TypeVar("_Answer")


class ConfirmScreen(ModalScreen[bool]):
    """``y`` / enter confirms, ``n`` / escape cancels."""

    BINDINGS = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", id="yes", variant="primary")
                yield Button("No (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


@dataclass(frozen=True, slots=True)
class CapRequest:
    bps: float | None  # None lifts the temporary cap
    for_s: float | None


def parse_cap(kbps: str, minutes: str) -> CapRequest | str:
    """The cap typed in the dialog (kbit/s, minutes), or what is wrong with it."""
    kbps, minutes = kbps.strip(), minutes.strip()
    if not kbps:
        return CapRequest(None, None)
    try:
        rate = float(kbps)
        duration = float(minutes) if minutes else 60.0
    except ValueError:
        return "type numbers: kbit/s and minutes"
    if not 0.001 <= rate <= 1e9 or not 1 / 60 <= duration <= 7 * 24 * 60:
        return "kbit/s from 0.001, minutes from 1/60 to 10080 (a week)"
    return CapRequest(rate * 1000.0, duration * 60.0)


class _FormScreen(ModalScreen[_Answer | None]):
    """A form: enter or the "set" button submits (``_submit`` may refuse and say
    why), escape or any other button cancels with None."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def _submit(self) -> None:
        raise NotImplementedError

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "set":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class CapScreen(_FormScreen[CapRequest]):
    """A temporary upload cap in kbit/s for some minutes; empty lifts it."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Temporary upload cap (empty lifts it)", classes="question")
            yield Input(placeholder="kbit/s, e.g. 256", id="kbps")
            yield Input(placeholder="minutes (default 60)", id="minutes")
            yield Label("", id="cap-problem")
            with Horizontal(classes="buttons"):
                yield Button("Set (enter)", id="set", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#kbps", Input).focus()

    def _submit(self) -> None:
        parsed = parse_cap(
            self.query_one("#kbps", Input).value, self.query_one("#minutes", Input).value
        )
        if isinstance(parsed, str):
            self.query_one("#cap-problem", Label).update(f"! {parsed}")
            return
        self.dismiss(parsed)


@dataclass(frozen=True, slots=True)
class RollbackRequest:
    task: str
    reason: str


class RollbackScreen(_FormScreen[RollbackRequest]):
    """Which task's model to roll back one release, and why (for the audit)."""

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = tasks

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(
                f"Roll back a model one release. Tasks: {', '.join(self.tasks) or 'none'}",
                classes="question",
            )
            yield Input(value=self.tasks[0] if self.tasks else "", id="task")
            yield Input(placeholder="reason (for the audit)", id="reason")
            yield Label("", id="rollback-problem")
            with Horizontal(classes="buttons"):
                yield Button("Roll back (enter)", id="set", variant="warning")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#task", Input).focus()

    def _submit(self) -> None:
        task = self.query_one("#task", Input).value.strip()
        if task not in self.tasks:
            self.query_one("#rollback-problem", Label).update(f"! not a task here: {task!r}")
            return
        reason = self.query_one("#reason", Input).value.strip() or "technician request"
        self.dismiss(RollbackRequest(task, reason[:500]))
