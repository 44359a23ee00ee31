"""Modal screens: help overlay, confirmation prompt, task detail, workflow detail."""

from __future__ import annotations

from typing import ClassVar, Final, TypeVar, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Static

from syce._nodes import row_table, table_of
from syce.format import ATTEMPT_COLUMNS, attempt_cells, bar
from syce.models import TaskDetail, WorkflowDetail
from syce.screens.base import TASK_ACTIONS, WORKFLOW_ACTIONS, Loader
from syce.source import row_to_json

__all__ = ["ConfirmScreen", "HelpScreen", "TaskDetailScreen", "WorkflowDetailScreen"]

D = TypeVar("D")

STATUS_COLOURS: Final = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "paused": "yellow",
    "not found": "red",
}
"""How a detail's title shows an ended (or stuck) task or workflow; others are plain bold."""


def status_markup(status: str) -> str:
    """``status`` in bold, in the colour of what it means."""
    colour = STATUS_COLOURS.get(status)
    return f"[b {colour}]{status}[/]" if colour else f"[b]{status}[/b]"


HELP_TEXT = """\
[b]Syce keys[/b]

[b]Everywhere[/b]
  1-6        switch tab (Dashboard, Workers, Tasks, Workflows, Maintenance, Limits)
  /          search (Workers: hostname/id; Tasks: task name/id; Workflows: name/id;
             Limits: name)
  ?          toggle this help
  r          refresh the current tab now
  t          cycle theme (Catppuccin Latte, Frappe, Macchiato, Mocha)
  q          quit
  Esc        close an open row or window (never quits)
  Ctrl+z     suspend to background

[b]Workers[/b]    Up/Down select worker · [ ] chart window 5m/30m/1h/6h/24h
[b]Tasks[/b]      Up/Down move · Enter expand worker / open task · Esc collapse
             p c u o f x toggle Pending/Claimed/Running/Completed/Failed/Cancelled
             a all · n none
             X cancel a task (a running one is stopped) · R retry a failed or cancelled task
             (confirmation asked)
             in the task detail: y copy JSON · X · R · r refresh · Esc close
[b]Workflows[/b]  Up/Down move · Enter open detail · Esc close · y copy JSON
             p u o f s c toggle Pending/Running/Completed/Failed/Paused/Cancelled · a · n
             P pause · R resume · X cancel (confirmation asked)
             in the detail: y copy JSON · P · R · X · r refresh · Esc close
[b]Limits[/b]     Up/Down select a limit: its busiest keys show below
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close"),
        Binding("q", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog"):
            yield Static(HELP_TEXT, id="help-text")


class ConfirmScreen(ModalScreen[bool]):
    """Ask a yes/no question; dismisses with True only for ``y``."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog confirm"):
            yield Static(self.question, id="confirm-question")
            yield Static("[b]y[/b] yes   [b]n[/b]/[b]Esc[/b] no")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class DetailScreen(ModalScreen[None], Loader[D]):
    """One row as JSON, ready to be copied (``KIND`` names what it holds), that follows the
    database while it is open: reloaded at the app's tick rate and at once on ``r`` (the app's
    own keys do not reach a modal screen)."""

    KIND: ClassVar[str]
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("y", "copy", "Copy JSON"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self, data: D) -> None:
        super().__init__()
        self.data = data
        self.json = self.as_json(data)

    def as_json(self, data: D) -> str:
        """What ``y`` copies while ``data`` is shown."""
        raise NotImplementedError

    def on_mount(self) -> None:
        self.show(cast(D, self.data))
        self.set_interval(1.0 / self.syce.tick_rate, self.refresh_data)

    def action_copy(self) -> None:
        self.syce.copy_to_clipboard(self.json)
        self.notify(f"{self.KIND} JSON copied to the clipboard")

    def action_refresh(self) -> None:
        self.syce.action_refresh()


class TaskDetailScreen(DetailScreen[TaskDetail | None]):
    """One task: while it is PENDING, why it waits (its limit and key when the limit holds it
    back, else a free worker or its due time); every attempt of its code so far; its full row as
    JSON."""

    KIND = "task"
    BINDINGS = list(TASK_ACTIONS)

    def __init__(self, task_id: str, detail: TaskDetail | None) -> None:
        super().__init__(detail)
        self.task_id = task_id

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog detail"):
            yield Static(id="task-title")
            yield Static(id="task-wait", markup=False)
            yield Static(id="task-attempts-title", classes="title")
            attempts = row_table("attempts-table", *ATTEMPT_COLUMNS)
            # Shown only: the arrow keys keep scrolling the detail.
            attempts.can_focus = False
            attempts.cursor_type = "none"
            yield attempts
            yield Static(id="task-json", markup=False)

    def load(self) -> TaskDetail | None:
        return self.source.task_detail(self.task_id)

    def as_json(self, data: TaskDetail | None) -> str:
        return "null" if data is None else row_to_json(data.row)

    def show(self, data: TaskDetail | None) -> None:
        self.json = self.as_json(data)
        status = "not found" if data is None else str(data.row.get("status")).lower()
        self.query_one("#task-title", Static).update(
            f"[b]Task {escape(self.task_id)}[/b]  {status_markup(status)}   "
            "y copy · X cancel · R retry · r refresh · Esc close"
        )
        wait = self.query_one("#task-wait", Static)
        wait.display = data is not None and data.wait is not None
        wait.update("" if data is None or data.wait is None else data.wait.describe())
        self._show_attempts(data)
        self.query_one("#task-json", Static).update(self.json)

    def _show_attempts(self, data: TaskDetail | None) -> None:
        attempts = () if data is None else data.attempts
        title = self.query_one("#task-attempts-title", Static)
        table = table_of(self, "#attempts-table")
        title.update(f"Attempts ({len(attempts)})" if attempts else "Attempts: none started yet")
        table.display = bool(attempts)
        table.clear()
        for attempt in attempts:
            table.add_row(*attempt_cells(attempt), key=str(attempt.attempt))

    def action_task_action(self, action: str) -> None:
        self.syce.confirm_task_action(action, self.task_id)


class WorkflowDetailScreen(DetailScreen[WorkflowDetail | None]):
    """A workflow's row, its progress and its nodes with their states."""

    KIND = "workflow"
    BINDINGS = list(WORKFLOW_ACTIONS)

    def __init__(self, workflow_id: str, detail: WorkflowDetail | None) -> None:
        super().__init__(detail)
        self.workflow_id = workflow_id

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog detail"):
            yield Static(id="workflow-title")
            yield Static(id="workflow-progress")
            yield row_table("nodes-table", "#", "Node", "Task", "Status", "Depends on", "Task id")

    def load(self) -> WorkflowDetail | None:
        return self.source.workflow(self.workflow_id)

    def as_json(self, data: WorkflowDetail | None) -> str:
        return "null" if data is None else row_to_json(data.row)

    def show(self, data: WorkflowDetail | None) -> None:
        self.json = self.as_json(data)
        title = self.query_one("#workflow-title", Static)
        progress = self.query_one("#workflow-progress", Static)
        table = table_of(self, "#nodes-table")
        row_index = table.cursor_row
        table.clear()
        if data is None:
            title.update(f"workflow {escape(self.workflow_id)} not found")
            progress.update("")
            return
        title.update(
            f"[b]{escape(str(data.row.get('name')))}[/b] {escape(self.workflow_id)}  status "
            f"{status_markup(data.status.lower())}   "
            "y copy · P pause · R resume · X cancel · r refresh · Esc close"
        )
        counts = data.counts
        progress.update(f"{bar(counts.progress, 20)} {counts.progress:.0%}  {counts.describe()}")
        for node in data.nodes:
            table.add_row(
                str(node.index),
                node.node_id or "-",
                ("⤷ " if node.is_subworkflow else "") + node.task_name,
                node.status.lower(),
                ", ".join(str(d) for d in node.dependencies) or "-",
                node.task_id or "-",
                key=str(node.index),
            )
        if 0 < row_index < table.row_count:
            table.move_cursor(row=row_index)

    def action_workflow_action(self, action: str) -> None:
        self.syce.confirm_workflow_action(action, self.workflow_id)
