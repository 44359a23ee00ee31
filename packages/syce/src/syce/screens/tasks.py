"""Tab 3, Tasks: counts per worker, status filters, expandable rows, task detail and actions."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.widgets import DataTable, Static

from syce import queries
from syce._nodes import row_table
from syce.format import count
from syce.models import TASK_STATUSES, TasksData, TaskSummary
from syce.screens.base import TASK_ACTIONS, FilteredPane, StatusFilter

__all__ = ["FILTER_KEYS", "TasksPane"]

FILTER_KEYS = dict(zip("pcuofx", TASK_STATUSES, strict=True))
"""Filter key -> status: p Pending, c Claimed, u rUnning, o cOmpleted, f Failed, x cancelled (as
``X`` cancels a task)."""

UNCLAIMED = "(not claimed)"


class TasksPane(FilteredPane[TasksData]):
    FILTER = StatusFilter(FILTER_KEYS, "#task-filters", "Enter expand/detail")
    SEARCH_HINT = "search tasks by name or id prefix"
    TABLE = "tasks-table"

    BINDINGS = [*FILTER.bindings(), Binding("escape", "collapse", "Collapse"), *TASK_ACTIONS]

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.expanded: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="task-filters")
        yield row_table(
            self.TABLE, "Worker / task", "Name", *(s.title() for s in TASK_STATUSES), "Total"
        )

    def load(self) -> TasksData:
        search = self.syce.search
        groups = self.source.task_groups(self.statuses, search)
        expanded = self.expanded
        if expanded is not None and expanded not in {g.key for g in groups}:
            expanded = None
        tasks = () if expanded is None else self.source.tasks_of(expanded, self.statuses, search)
        return TasksData(groups, expanded, tasks, queries.finished_count_cap(search))

    def action_collapse(self) -> None:
        if self.expanded is None:
            return  # nothing to close: Esc never quits (q does)
        self.expanded = None
        self.refresh_data(force=True)

    def current_task_id(self) -> str | None:
        key = self.cursor_key()
        return key[2:] if key is not None and key.startswith("t:") else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if key is None:
            return
        if key.startswith("g:"):
            group = key[2:]
            self.expanded = None if self.expanded == group else group
            self.refresh_data(force=True)
        elif key.startswith("t:"):
            self.syce.open_task(key[2:])

    def action_task_action(self, action: str) -> None:
        task_id = self.current_task_id()
        if task_id is not None:
            self.syce.confirm_task_action(action, task_id)

    def show(self, data: TasksData) -> None:
        self.expanded = data.expanded
        table = self.main_table
        previous = self.cursor_key()
        table.clear()
        keys: list[str] = []
        for group in data.groups:
            marker = "▼" if group.key == data.expanded else "▶"
            label = UNCLAIMED if group.worker_id is None else (group.hostname or group.worker_id)
            table.add_row(
                f"{marker} {label}",
                "" if group.worker_id is None else group.worker_id[:24],
                *(count(group.counts.get(s, 0), data.count_cap) for s in TASK_STATUSES),
                count(
                    group.total,
                    data.count_cap,
                    any(n >= data.count_cap for n in group.counts.values()),
                ),
                key=f"g:{group.key}",
            )
            keys.append(f"g:{group.key}")
            if group.key == data.expanded:
                for task in data.expanded_tasks:
                    table.add_row(
                        f"   {task.task_id}",
                        task_label(task),
                        *(task.status.lower() if s == task.status else "" for s in TASK_STATUSES),
                        "",
                        key=f"t:{task.task_id}",
                    )
                    keys.append(f"t:{task.task_id}")
        if previous in keys:
            table.move_cursor(row=keys.index(previous))


def task_label(task: TaskSummary) -> str:
    """A task's name and, for a PENDING task, its limit or why it is not a worker's turn yet
    (``crm.sync  waiting: limit tenant-api key acme``; markup, the user's text escaped)."""
    why = "" if task.wait is None else task.wait.short()
    if not why:
        return escape(task.task_name)
    return f"{escape(task.task_name)}  [dim]{escape(why)}[/dim]"
