"""The technician's TUI (``yardlink tui``): a Textual app over the local API.

The app polls ``/v1/status`` about once a second and follows ``/v1/events``;
it hands what it got down to the screens (``DashboardScreen.show``).  When the
appliance does not answer, the banner says so and the app keeps retrying: a
network error or an unexpected field never ends it.  Actions (sync now, pause /
resume, temporary bandwidth cap, model rollback, support bundle) ask for a
confirmation and go through the local API, where they are audited.  The models
screen (``o``) shows both A/B slots of each task and reads ``/v1/models`` at
every poll while it is open.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.css.query import NoMatches

from appliance.errors import ApplianceError
from appliance.tui.client import ApplianceClient, ApplianceRefused, ApplianceUnreachable
from appliance.tui.formatting import duration
from appliance.tui.screens.dashboard import DashboardScreen
from appliance.tui.screens.dialogs import (
    CapRequest,
    CapScreen,
    ConfirmScreen,
    RollbackRequest,
    RollbackScreen,
)
from appliance.tui.screens.events import EventsScreen
from appliance.tui.screens.help import HelpScreen
from appliance.tui.screens.models import ModelsScreen
from appliance.tui.status_view import StatusView, read_status

__all__ = ["YardlinkTui"]

_EVENTS_KEPT = 200
_MODELS_EVERY = 5  # polls between two reads of /v1/models (model updates change slowly)
_MAX_RETRY_S = 5.0  # the banner's retry period grows to this while the appliance is down


class YardlinkTui(App[None]):
    CSS_PATH = "app.tcss"
    ENABLE_COMMAND_PALETTE = False
    TITLE = "yardlink"
    BINDINGS = [
        Binding("question_mark", "help", "help"),
        Binding("s", "sync_now", "sync now"),
        Binding("p", "pause_resume", "pause/resume"),
        Binding("b", "bandwidth", "cap"),
        Binding("o", "models", "models"),
        Binding("m", "rollback", "rollback"),
        Binding("x", "support_bundle", "bundle"),
        Binding("e", "events", "events"),
        Binding("r", "retry", "retry"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(
        self,
        client: ApplianceClient,
        *,
        poll_s: float = 1.0,
        bundle_dir: Path | None = None,
        follow_events: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.client = client
        self.poll_s = poll_s
        self.bundle_dir = bundle_dir or Path.cwd()
        self.follow_events = follow_events
        self.clock = clock
        self.view = StatusView()
        self.unreachable: str | None = None  # why the last poll failed, while it fails
        self.polls = 0  # answered polls (tests wait on it)
        self.recent_events: deque[dict[str, Any]] = deque(maxlen=_EVENTS_KEPT)
        self.model_versions: dict[str, str] = {}  # task -> version, from the events seen
        self.sync_extra: dict[str, Any] = {}  # from the last action's answer (cap end)
        self.models_report: Any = None  # the last /v1/models body (None: updates are off)
        self.last_action: str | None = None  # what the last action answered (tests read it)
        self._retry = asyncio.Event()
        self.dashboard = DashboardScreen()
        self._dashboard_ready = False

    def on_mount(self) -> None:
        self.push_screen(self.dashboard)
        self.run_worker(self._poll_forever(), name="poll", exclusive=False)
        if self.follow_events:
            self.run_worker(self._follow_events(), name="events", exclusive=False)

    def on_dashboard_screen_ready(self, message: DashboardScreen.Ready) -> None:
        self._dashboard_ready = True  # its widgets exist from now on
        self._render()

    async def on_unmount(self) -> None:
        await self.client.close()

    # ------------------------------------------------------------------ data in

    async def _poll_forever(self) -> None:
        failures = 0
        while True:
            try:
                status = await self.client.status()
                if self.polls % _MODELS_EVERY == 0 or self._models_screen() is not None:
                    self.models_report = await self._models()
                self.view = read_status(
                    status, sync_extra=self.sync_extra, models=self.models_report
                )
                self.unreachable = None
                self.polls += 1
                failures = 0
            except ApplianceError as exc:  # unreachable or refused: show it, keep going
                self.unreachable = str(exc)
                failures += 1
            self._render()
            wait = self.poll_s if failures == 0 else min(_MAX_RETRY_S, self.poll_s * failures)
            self._retry.clear()
            try:
                await asyncio.wait_for(self._retry.wait(), timeout=wait)
            except TimeoutError:
                pass

    def _models_screen(self) -> ModelsScreen | None:
        """The models screen when it is on top (``self.screen`` raises once the app
        is closing and the stack is empty)."""
        stack = self.screen_stack
        return stack[-1] if stack and isinstance(stack[-1], ModelsScreen) else None

    async def _models(self) -> Any:
        try:
            return await self.client.models()
        except ApplianceRefused:
            return None  # model updates are off on this appliance (404)

    async def _follow_events(self) -> None:
        while True:
            try:
                async for event in self.client.events():
                    self._on_event(event)
            except ApplianceError:
                pass  # the banner already says it when the appliance is down
            await asyncio.sleep(1.0)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.recent_events.append(event)
        task, version = event.get("task"), event.get("model_version")
        if isinstance(task, str) and isinstance(version, str):
            self.model_versions[task] = version
        if isinstance(self.screen, EventsScreen):
            self.screen.add_event(event)

    def _banner(self) -> str:
        view = self.view
        if self.unreachable:
            return f"appliance unreachable, retrying (r: now): {self.unreachable}"
        uptime = duration(view.uptime_s)
        paused = "  UPLOADS PAUSED" if view.paused else ""
        return f"{view.device_id or '?'} at {self.client.url}  up {uptime}{paused}  ? help"

    def _render(self) -> None:
        if not self._dashboard_ready:
            return
        try:
            self.dashboard.show(
                self.view,
                unreachable=self.unreachable,
                banner=self._banner(),
                versions=self.model_versions,
                now=self.clock(),
            )
            models_screen = self._models_screen()
            if models_screen is not None:
                models_screen.show(self.models_report)
        except NoMatches:  # the dashboard is being torn down (the app is closing)
            pass

    # ------------------------------------------------------------------ actions

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_events(self) -> None:
        if not isinstance(self.screen, EventsScreen):
            self.push_screen(EventsScreen())

    def action_models(self) -> None:
        if self._models_screen() is None:
            self.push_screen(ModelsScreen(self.models_report))
            self._retry.set()  # read /v1/models now, not at the next fifth poll

    def on_models_screen_rollback_wanted(self, message: ModelsScreen.RollbackWanted) -> None:
        self.action_rollback(message.task)

    def action_retry(self) -> None:
        self._retry.set()

    def _confirmed(self, question: str, act: Callable[[], Awaitable[str]]) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._act(act), name="action")

        self.push_screen(ConfirmScreen(question), answered)

    async def _act(self, act: Callable[[], Awaitable[str]]) -> None:
        try:
            self.last_action = await act()
            self.notify(self.last_action)
        except ApplianceUnreachable as exc:
            self.last_action = f"not done: {exc}"
            self.notify(self.last_action, severity="error")
        except ApplianceError as exc:
            self.last_action = f"refused: {exc}"
            self.notify(self.last_action, severity="error")
        self._retry.set()  # show the effect now

    def _remember(self, answer: Any) -> None:
        if isinstance(answer, dict):
            self.sync_extra = {"bandwidth_cap_until": answer.get("bandwidth_cap_until")}

    def action_sync_now(self) -> None:
        async def act() -> str:
            self._remember(await self.client.sync_now())
            return "sync started"

        self._confirmed("Sync now? (handshake and send what waits)", act)

    def action_pause_resume(self) -> None:
        resume = bool(self.view.paused)

        async def act() -> str:
            answer = await (self.client.resume() if resume else self.client.pause())
            self._remember(answer)
            return "uploads resumed" if resume else "uploads paused"

        self._confirmed(
            "Resume uploads?" if resume else "Pause uploads? (data stays in the outbox)", act
        )

    def action_bandwidth(self) -> None:
        def typed(cap: CapRequest | None) -> None:
            if cap is None:
                return
            if cap.bps is None:
                question = "Lift the temporary cap (back to the configured one)?"
            else:
                question = f"Cap uploads at {cap.bps / 1000:g} kbit/s for {duration(cap.for_s)}?"

            async def act() -> str:
                self._remember(await self.client.set_bandwidth_cap(cap.bps, cap.for_s))
                return "cap lifted" if cap.bps is None else "cap set"

            self._confirmed(question, act)

        self.push_screen(CapScreen(), typed)

    def action_rollback(self, task: str | None = None) -> None:
        """Ask which task (``task`` first, the one selected on the models screen) and why."""
        tasks = [row.task for row in self.view.model_rows] or list(self.view.models_loaded)
        if task is not None and task in tasks:
            tasks = [task, *(t for t in tasks if t != task)]

        def typed(request: RollbackRequest | None) -> None:
            if request is None:
                return

            async def act() -> str:
                await self.client.rollback_model(request.task, request.reason)
                self._retry.set()
                return f"model of {request.task} rolled back"

            self._confirmed(f"Roll the model of {request.task} back one release?", act)

        self.push_screen(RollbackScreen(tasks), typed)

    def action_support_bundle(self) -> None:
        async def act() -> str:
            body = await self.client.support_bundle()
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock()))
            path = self.bundle_dir / f"yardlink-support-{self.view.device_id or 'x'}-{stamp}.tar.gz"
            await asyncio.to_thread(path.write_bytes, body)
            return f"support bundle saved: {path}"

        self._confirmed(f"Export a support bundle into {self.bundle_dir}?", act)
