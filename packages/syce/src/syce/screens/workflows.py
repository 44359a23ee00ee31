"""Tab 4, Workflows: list with progress, status filters, detail modal, copy, pause/resume/cancel."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from syce._nodes import table_of
from syce.format import bar
from syce.models import WORKFLOW_STATUSES, WorkflowSummary
from syce.screens.base import FilteredPane, filter_bindings

__all__ = ["WORKFLOW_FILTER_KEYS", "WorkflowsPane"]

WORKFLOW_FILTER_KEYS = dict(zip("puofsc", WORKFLOW_STATUSES, strict=True))
"""p Pending, u rUnning, o cOmpleted, f Failed, s paused (Suspended), c Cancelled."""


class WorkflowsPane(FilteredPane[tuple[WorkflowSummary, ...]]):
    FILTER_KEYS = WORKFLOW_FILTER_KEYS
    FILTERS_WIDGET = "#workflow-filters"
    FILTERS_HINT = "a all · n none · Enter detail · P/R/X"
    SEARCH_HINT = "search workflows by name or id prefix"

    BINDINGS = [
        *filter_bindings(WORKFLOW_FILTER_KEYS),
        Binding("y", "copy", "Copy JSON"),
        Binding("P", "workflow_action('pause')", "Pause"),
        Binding("R", "workflow_action('resume')", "Resume"),
        Binding("X", "workflow_action('cancel')", "Cancel"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(id="workflow-filters")
        table: DataTable[str] = DataTable(id="workflows-table", cursor_type="row")
        table.add_columns("Id", "Name", "Status", "Tasks", "Progress")
        yield table

    def on_mount(self) -> None:
        self._show_filters()

    def focus_main(self) -> None:
        table_of(self, "#workflows-table").focus()

    def load(self) -> tuple[WorkflowSummary, ...]:
        statuses = [s for s in WORKFLOW_STATUSES if s in self.filters]
        return self.source.workflows(statuses, self.syce.search)

    def current_id(self) -> str | None:
        table = table_of(self, "#workflows-table")
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

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
        table = table_of(self, "#workflows-table")
        previous = self.current_id()
        table.clear()
        for wf in data:
            table.add_row(
                wf.workflow_id,
                wf.name,
                wf.status.lower(),
                f"{wf.done}/{wf.total}",
                f"{bar(wf.progress, 12)} {wf.progress:.0%}",
                key=wf.workflow_id,
            )
        keys = [wf.workflow_id for wf in data]
        if previous in keys:
            table.move_cursor(row=keys.index(previous))
