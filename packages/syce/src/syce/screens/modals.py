"""Modal screens: help overlay, confirmation prompt, task detail, workflow detail."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from syce._nodes import row_table, syce_app
from syce.models import WorkflowDetail
from syce.screens.base import TASK_ACTIONS, WORKFLOW_ACTIONS
from syce.source import row_to_json

__all__ = ["ConfirmScreen", "HelpScreen", "TaskDetailScreen", "WorkflowDetailScreen"]

HELP_TEXT = """\
[b]Syce keys[/b]

[b]Everywhere[/b]
  1-5        switch tab (Dashboard, Workers, Tasks, Workflows, Maintenance)
  /          search (Workers: hostname/id; Tasks: task name/id; Workflows: name/id)
  ?          toggle this help
  r          refresh the current tab now
  t          cycle theme (Catppuccin Latte, Frappe, Macchiato, Mocha)
  q, Esc     quit (Esc first closes an open row or window)
  Ctrl+z     suspend to background

[b]Workers[/b]    Up/Down select worker · [ ] chart window 5m/30m/1h/6h/24h
[b]Tasks[/b]      Up/Down move · Enter expand worker / open task · Esc collapse
             p c u o f toggle Pending/Claimed/Running/Completed/Failed · a all · n none
             X cancel a pending task · R retry a failed task (confirmation asked)
             in the task detail: y copy JSON · X · R · Esc close
[b]Workflows[/b]  Up/Down move · Enter open detail · Esc close · y copy JSON
             p u o f s c toggle Pending/Running/Completed/Failed/Paused/Cancelled · a · n
             P pause · R resume · X cancel (confirmation asked)
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


class DetailScreen(ModalScreen[None]):
    """One row as JSON, ready to be copied; ``KIND`` names what it holds."""

    KIND: ClassVar[str]
    BINDINGS = [Binding("escape", "dismiss", "Close"), Binding("y", "copy", "Copy JSON")]

    def __init__(self, row: Mapping[str, Any] | None) -> None:
        super().__init__()
        self.json = "null" if row is None else row_to_json(row)

    def action_copy(self) -> None:
        syce_app(self).copy_to_clipboard(self.json)
        self.notify(f"{self.KIND} JSON copied to the clipboard")


class TaskDetailScreen(DetailScreen):
    """The full row of one task as JSON."""

    KIND = "task"
    BINDINGS = list(TASK_ACTIONS)

    def __init__(self, task_id: str, row: dict[str, object] | None) -> None:
        super().__init__(row)
        self.task_id = task_id

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog detail"):
            yield Static(f"[b]Task {self.task_id}[/b]   y copy · X cancel · R retry · Esc close")
            yield Static(self.json, id="task-json", markup=False)

    def action_task_action(self, action: str) -> None:
        syce_app(self).confirm_task_action(action, self.task_id)


class WorkflowDetailScreen(DetailScreen):
    """A workflow's row and its nodes with their states."""

    KIND = "workflow"
    BINDINGS = list(WORKFLOW_ACTIONS)

    def __init__(self, workflow_id: str, detail: WorkflowDetail | None) -> None:
        super().__init__(None if detail is None else detail.row)
        self.workflow_id = workflow_id
        self.detail = detail

    def compose(self) -> ComposeResult:
        detail = self.detail
        with Vertical(classes="dialog detail"):
            if detail is None:
                yield Static(f"workflow {self.workflow_id} not found")
                return
            row = detail.row
            yield Static(
                f"[b]{row.get('name')}[/b] {self.workflow_id}  status "
                f"[b]{str(row.get('status')).lower()}[/b]   "
                "y copy · P pause · R resume · X cancel · Esc close",
                id="workflow-title",
            )
            table = row_table("nodes-table", "#", "Node", "Task", "Status", "Depends on", "Task id")
            for node in detail.nodes:
                table.add_row(
                    str(node.index),
                    node.node_id or "-",
                    ("⤷ " if node.is_subworkflow else "") + node.task_name,
                    node.status.lower(),
                    ", ".join(str(d) for d in node.dependencies) or "-",
                    node.task_id or "-",
                    key=str(node.index),
                )
            yield table

    def action_workflow_action(self, action: str) -> None:
        syce_app(self).confirm_workflow_action(action, self.workflow_id)
