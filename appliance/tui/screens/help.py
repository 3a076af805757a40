"""The help screen (``?``): keys, what each panel means, what an alert asks for."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

__all__ = ["HELP_TEXT", "HelpScreen"]

HELP_TEXT = """\
# yardlink TUI: keys

| key | what |
|---|---|
| `s` | sync now (handshake, send what waits, skip the backoff) |
| `p` | pause / resume uploads (metered link, site visit) |
| `b` | set a temporary bandwidth cap (bits/s and minutes; empty lifts it) |
| `o` | models: both A/B slots per task, shadow window, health watch, last verdict |
| `m` | roll a task's model back one release (on the models screen: the selected one) |
| `x` | export a support bundle (a .tar.gz in the current directory) |
| `e` | live events (plates shown as tokens) |
| `r` | retry now (after the banner says unreachable) |
| `?` | this help;  `escape` closes it |
| `q` | quit (the appliance keeps running) |

Every action asks for a confirmation and is audited on the appliance.

## Panels
* **Alerts**: each line says FAIL or WARN, what is wrong and (on a tall terminal)
  what to do. `!` marks every line that needs you.
* **Link**: online / degraded / offline, PAUSED when uploads are held, the measured
  rate, the cap, the last sync (handshake) and bytes sent today.
* **Sync**: what waits to be sent, when it drains at the current rate, the upload
  in flight with its progress bar.
* **Outbox**: per class records, bytes, the oldest record's age and a bar against
  the outbox's room on disk; evicted and refused records.
* **Inference**: per task frames/s, p50 and p99 against the SLA; `OVER` and `!`
  mark a broken SLA.
* **Models**: the model version each task runs, its slot (a, b or pinned), TRIAL
  while a new release is on trial, WATCH while a committed one is under its
  health watch, ROLLED BACK after a failed one; FAILED when a model did not
  load. `o` shows both slots of every task.

See docs/OPERATIONS.md, "For technicians", for each alert.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP_TEXT)
