"""The models screen (``o``): both A/B slots of every task, what serves, the shadow
window or health watch in progress, the last verdict; ``m`` rolls the selected
task back one release (through the app's confirmed, audited local-API action)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from appliance.tui.slots_view import SlotRow, TaskModels, read_slots, task_detail

__all__ = ["ModelsScreen", "slot_cells"]

_COLUMNS = ("task", "slot", "release", "version", "counter", "status", "")


def slot_cells(row: SlotRow) -> tuple[str, str, str, str, str, str, str]:
    status = row.status.upper() if row.status in ("trial", "failed") else row.status
    if row.reason and row.status == "failed":
        status = f"{status}: {row.reason[:40]}"
    return (
        row.task,
        row.slot,
        row.release or "-",
        (row.version or "-")[:24],
        "-" if row.counter is None else str(row.counter),
        status,
        "<- serving" if row.serving else "",
    )


class ModelsScreen(Screen[None]):
    """Shows what the app hands it (``show``, the ``/v1/models`` body)."""

    BINDINGS = [
        Binding("escape,o", "app.pop_screen", "dashboard"),
        Binding("m", "rollback", "roll back selected"),
    ]

    class RollbackWanted(Message):
        """The technician asked to roll ``task`` back (the app confirms and acts)."""

        def __init__(self, task: str | None) -> None:
            super().__init__()
            self.task = task

    def __init__(self, report: Any = None) -> None:
        super().__init__()
        self._report = report
        self.tasks: tuple[TaskModels, ...] = ()
        self._row_tasks: list[str] = []  # the task of each table row, in order

    def compose(self) -> ComposeResult:
        title = "Models: A/B slots per task (m: roll the selected task back)"
        yield Static(title, id="models-title")
        yield DataTable(id="slots", zebra_stripes=True, cursor_type="row")
        yield Static("", id="models-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*_COLUMNS)
        self.show(self._report)

    def show(self, report: Any) -> None:
        """Refresh from a ``/v1/models`` body (None: model updates are off)."""
        self._report = report
        self.tasks = read_slots(report)
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        self._row_tasks = []
        for task in self.tasks:
            rows = task.slots or (SlotRow(task.task, "-", None, None, None, "empty", False, None),)
            for row in rows:
                table.add_row(*slot_cells(row))
                self._row_tasks.append(task.task)
        if self._row_tasks:
            table.move_cursor(row=min(cursor, len(self._row_tasks) - 1))
        if report is None:
            detail = ["model updates are off on this appliance (no [updates] section)"]
        else:
            detail = [line for task in self.tasks for line in task_detail(task)]
        self.query_one("#models-detail", Static).update("\n".join(detail) or "no task runs")

    def selected_task(self) -> str | None:
        row = self.query_one(DataTable).cursor_row
        return self._row_tasks[row] if 0 <= row < len(self._row_tasks) else None

    def action_rollback(self) -> None:
        self.post_message(self.RollbackWanted(self.selected_task()))
