"""Tab 4, Workflows: list with progress, status filters, detail modal, copy, pause/resume/cancel."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from syce._nodes import row_table
from syce.format import bar
from syce.models import WORKFLOW_STATUSES, WorkflowSummary
from syce.screens.base import WORKFLOW_ACTIONS, FilteredPane, StatusFilter

__all__ = ["WORKFLOW_FILTER_KEYS", "WorkflowsPane"]

WORKFLOW_FILTER_KEYS = dict(zip("puofsc", WORKFLOW_STATUSES, strict=True))
"""p Pending, u rUnning, o cOmpleted, f Failed, s paused (Suspended), c Cancelled."""


class WorkflowsPane(FilteredPane[tuple[WorkflowSummary, ...]]):
    FILTER = StatusFilter(WORKFLOW_FILTER_KEYS, "#workflow-filters", "Enter detail · P/R/X")
    SEARCH_HINT = "search workflows by name or id prefix"
    TABLE = "workflows-table"

    BINDINGS = [*FILTER.bindings(), Binding("y", "copy", "Copy JSON"), *WORKFLOW_ACTIONS]

    def compose(self) -> ComposeResult:
        yield Static(id="workflow-filters")
        yield row_table(self.TABLE, "Id", "Name", "Status", "Completed", "Progress")

    def load(self) -> tuple[WorkflowSummary, ...]:
        return self.source.workflows(self.statuses, self.syce.search)

    def current_id(self) -> str | None:
        return self.cursor_key()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.syce.open_workflow(event.row_key.value)

    def action_copy(self) -> None:
        workflow_id = self.current_id()
        if workflow_id is not None:
            self.syce.copy_workflow(workflow_id)

    def action_workflow_action(self, action: str) -> None:
        workflow_id = self.current_id()
        if workflow_id is not None:
            self.syce.confirm_workflow_action(action, workflow_id)

    def show(self, data: tuple[WorkflowSummary, ...]) -> None:
        table = self.main_table
        previous = self.current_id()
        table.clear()
        for wf in data:
            table.add_row(
                wf.workflow_id,
                wf.name,
                wf.status.lower(),
                f"{wf.nodes.completed}/{wf.nodes.total}",
                f"{bar(wf.progress, 12)} {wf.progress:.0%}",
                key=wf.workflow_id,
            )
        keys = [wf.workflow_id for wf in data]
        if previous in keys:
            table.move_cursor(row=keys.index(previous))
