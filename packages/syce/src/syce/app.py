"""`SyceApp`: the Textual application (tabs, global keys, banner, search, themes, actions)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, ClassVar, Final, TypeVar, cast

from horsies.config import PostgresConfig
from horsies.redact import mask_database_url
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static, TabbedContent, TabPane

from syce._nodes import syce_app
from syce.actions import Actions
from syce.messages import SourceFailed, SourceRecovered
from syce.models import WorkflowDetail
from syce.screens.base import Loader, SycePane
from syce.screens.dashboard import DashboardPane
from syce.screens.limits import LimitsPane
from syce.screens.maintenance import MaintenancePane
from syce.screens.modals import (
    ConfirmScreen,
    HelpScreen,
    TaskDetailScreen,
    WorkflowDetailScreen,
)
from syce.screens.tasks import TasksPane
from syce.screens.workers import WorkersPane
from syce.screens.workflows import WorkflowsPane
from syce.source import SourceUnavailable, SyceSource, row_to_json

__all__ = ["TABS", "THEMES", "SyceApp", "initial_theme"]

R = TypeVar("R")

THEMES: Final = (
    "catppuccin-latte",
    "catppuccin-frappe",
    "catppuccin-macchiato",
    "catppuccin-mocha",
)
TABS: Final = ("dashboard", "workers", "tasks", "workflows", "maintenance", "limits")


def initial_theme(environ: dict[str, str] | None = None) -> str:
    """Latte on a light terminal (``COLORFGBG`` background 7 or 15), Mocha otherwise."""
    env = dict(os.environ) if environ is None else environ
    background = env.get("COLORFGBG", "").rsplit(";", 1)[-1]
    return THEMES[0] if background in {"7", "15"} else THEMES[-1]


class SearchInput(Input):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close search")]

    def action_close(self) -> None:
        syce_app(self).close_search()


class SyceApp(App[None]):
    """The dashboard. Data comes from `SyceSource` (off the UI loop), actions from `Actions`."""

    TITLE = "Syce"
    CSS_PATH = "syce.tcss"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(str(number), f"switch_tab('{tab}')", tab.title(), show=False)
            for number, tab in enumerate(TABS, start=1)
        ),
        Binding("slash", "search", "Search"),
        Binding("question_mark", "help", "Help"),
        Binding("r", "refresh", "Refresh"),
        Binding("t", "cycle_theme", "Theme"),
        # Esc closes what is open (a search, a detail, an expanded group); at the top it does
        # nothing, so pressing it once too often never quits.
        Binding("q", "quit", "Quit"),
        Binding("ctrl+z", "suspend_process", "Suspend", show=False),
    ]

    def __init__(
        self,
        config: PostgresConfig,
        *,
        tick_rate: float = 4.0,
        source: SyceSource | None = None,
        actions: Actions | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.tick_rate = tick_rate
        self.source = source or SyceSource(config)
        self.actions = actions or Actions(config)
        self.search = ""
        self.connection_error: str | None = None
        self.connection_failures = 0
        self.sub_title = config.masked_url
        self.theme = initial_theme()

    # -- layout -----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="banner")
        yield SearchInput(id="search")
        with TabbedContent(id="tabs", initial="dashboard"):
            with TabPane("1 Dashboard", id="dashboard"):
                yield DashboardPane(id="pane-dashboard")
            with TabPane("2 Workers", id="workers"):
                yield WorkersPane(id="pane-workers")
            with TabPane("3 Tasks", id="tasks"):
                yield TasksPane(id="pane-tasks")
            with TabPane("4 Workflows", id="workflows"):
                yield WorkflowsPane(id="pane-workflows")
            with TabPane("5 Maintenance", id="maintenance"):
                yield MaintenancePane(id="pane-maintenance")
            with TabPane("6 Limits", id="limits"):
                yield LimitsPane(id="pane-limits")
        yield Footer()

    def on_mount(self) -> None:
        self._base.query_one("#banner", Static).display = False
        self._base.query_one("#search", SearchInput).display = False
        self.set_interval(1.0 / self.tick_rate, self.tick)
        self.active_pane().focus_main()
        self.active_pane().refresh_data()

    def on_unmount(self) -> None:
        self.source.close()
        self.actions.close()

    # -- panes ------------------------------------------------------------------------------------

    @property
    def _base(self) -> Screen[Any]:
        """The screen holding the tabs (queries must not go to a modal on top of it)."""
        if not self.screen_stack:
            raise NoMatches("no screen (the app is shutting down)")
        return self.screen_stack[0]

    @property
    def active_tab(self) -> str:
        return self._base.query_one("#tabs", TabbedContent).active

    def pane(self, tab: str) -> SycePane[Any]:
        return cast("SycePane[Any]", self._base.query_one(f"#pane-{tab}", SycePane))

    def active_pane(self) -> SycePane[Any]:
        return self.pane(self.active_tab or TABS[0])

    def tick(self) -> None:
        try:
            pane = self.active_pane()
        except NoMatches:  # shutting down: the panes are already gone
            return
        pane.refresh_data()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = self.active_pane()
        pane.focus_main()
        pane.refresh_data(force=True)

    # -- connection banner ------------------------------------------------------------------------

    def on_source_failed(self, message: SourceFailed) -> None:
        self.connection_error = message.error
        self.connection_failures += 1
        try:
            banner = self._base.query_one("#banner", Static)
        except NoMatches:  # shutting down
            return
        banner.update(
            f"⚠ Database connection lost ({self.config.masked_url}): "
            f"{mask_database_url(message.error)} — reconnecting automatically…"
        )
        banner.display = True

    def on_source_recovered(self, message: SourceRecovered) -> None:
        if self.connection_error is not None:
            self.connection_error = None
            with contextlib.suppress(NoMatches):
                self._base.query_one("#banner", Static).display = False
            self.notify("database connection restored")

    # -- global actions ---------------------------------------------------------------------------

    def action_switch_tab(self, tab: str) -> None:
        self._base.query_one("#tabs", TabbedContent).active = tab

    def action_refresh(self) -> None:
        """Reload the visible tab and every open detail now."""
        self.active_pane().refresh_data(force=True)
        for screen in self.screen_stack:
            if isinstance(screen, Loader):
                screen.refresh_data(force=True)

    def action_cycle_theme(self) -> None:
        index = THEMES.index(self.theme) if self.theme in THEMES else -1
        self.theme = THEMES[(index + 1) % len(THEMES)]
        self.notify(f"theme: {self.theme}")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_search(self) -> None:
        search = self._base.query_one("#search", SearchInput)
        search.placeholder = f"{self.active_pane().SEARCH_HINT} (Enter apply, Esc close)"
        search.value = self.search
        search.display = True
        search.focus()

    def close_search(self) -> None:
        self._base.query_one("#search", SearchInput).display = False
        self.active_pane().focus_main()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.search = event.value.strip()
        self.sub_title = self.config.masked_url + (
            f"  search: {self.search}" if self.search else ""
        )
        self.close_search()
        self.active_pane().refresh_data(force=True)

    # -- details and actions (blocking calls run in thread workers) ------------------------------

    def _in_thread(self, work: Callable[[], None]) -> None:
        self.run_worker(work, thread=True, group="actions")

    def _read_in_thread(self, read: Callable[[], R], then: Callable[[R], object]) -> None:
        """Run a blocking source read off the UI loop, then ``then(value)`` on the UI thread; a
        lost database shows the banner instead."""

        def work() -> None:
            try:
                value = read()
            except SourceUnavailable as exc:
                self.post_message(SourceFailed(str(exc)))
                return
            self.call_from_thread(then, value)

        self._in_thread(work)

    def open_task(self, task_id: str) -> None:
        self._read_in_thread(
            lambda: self.source.task_detail(task_id),
            lambda detail: self.push_screen(TaskDetailScreen(task_id, detail)),
        )

    def open_workflow(self, workflow_id: str) -> None:
        self._read_in_thread(
            lambda: self.source.workflow(workflow_id),
            lambda detail: self.push_screen(WorkflowDetailScreen(workflow_id, detail)),
        )

    def copy_workflow(self, workflow_id: str) -> None:
        def copy(detail: WorkflowDetail | None) -> None:
            self.copy_to_clipboard("null" if detail is None else row_to_json(detail.row))
            self.notify("workflow JSON copied to the clipboard")

        self._read_in_thread(lambda: self.source.workflow(workflow_id), copy)

    def _run_action(self, label: str, call: Callable[[], bool]) -> None:
        def work() -> None:
            try:
                done = call()
            except Exception as exc:
                self.call_from_thread(
                    self.notify, f"{label} failed: {mask_database_url(str(exc))}", severity="error"
                )
                return
            message = f"{label}: done" if done else f"{label}: nothing to do (state changed?)"
            self.call_from_thread(self.notify, message)
            self.call_from_thread(self.action_refresh)

        self._in_thread(work)

    def confirm_task_action(self, action: str, task_id: str) -> None:
        calls = {"cancel": self.actions.cancel_task, "retry": self.actions.retry_task}
        self._confirm(f"{action} task {task_id}", calls[action], task_id)

    def confirm_workflow_action(self, action: str, workflow_id: str) -> None:
        calls = {
            "pause": self.actions.pause_workflow,
            "resume": self.actions.resume_workflow,
            "cancel": self.actions.cancel_workflow,
        }
        self._confirm(f"{action} workflow {workflow_id}", calls[action], workflow_id)

    def _confirm(self, label: str, call: Callable[[str], bool], target_id: str) -> None:
        """Ask before ``label``; on yes, run ``call(target_id)`` in a thread worker."""

        def answered(yes: bool | None) -> None:
            if yes:
                self._run_action(label, lambda: call(target_id))

        self.push_screen(ConfirmScreen(f"{label.capitalize()}?"), answered)
