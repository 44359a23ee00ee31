"""Tab 1, Dashboard: capacity, task and workflow counts, live queue counts, trend, alerts."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from syce._nodes import row_table
from syce.format import bar, count, duration
from syce.models import TASK_STATUSES, WORKFLOW_STATUSES, DashboardData
from syce.queries import STATUS_COUNT_CAP
from syce.screens.base import SycePane

__all__ = ["DashboardPane"]


class DashboardPane(SycePane[DashboardData]):
    SEARCH_HINT = "search (Dashboard has nothing to search; used by Workers/Tasks/Workflows)"
    TABLE = "queue-counts"

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Static(id="capacity", classes="box")
            yield Static(id="task-counts", classes="box")
            yield Static(id="workflow-counts", classes="box")
        with Horizontal(classes="row"):
            with Vertical(classes="box"):
                yield Static("Utilisation, last hour (1-minute buckets)", classes="title")
                yield Sparkline([], id="trend")
            yield Static(id="alerts", classes="box")
        yield Static("Live tasks per queue", classes="title")
        yield row_table(self.TABLE, "Queue", "Pending", "Claimed", "Running")

    def load(self) -> DashboardData:
        return self.source.dashboard()

    def show(self, data: DashboardData) -> None:
        self.query_one("#capacity", Static).update(
            "[b]Cluster capacity[/b]\n"
            f"Active workers  {len(data.workers)}\n"
            f"Total capacity  {data.capacity}\n"
            f"Running tasks   {data.running}\n"
            f"Utilisation     {data.utilisation:.0%}\n{bar(data.utilisation, 16)}"
        )
        lines = ["[b]Tasks by status[/b]"]
        lines += [
            f"{s.title():<10} {count(data.task_counts.get(s, 0), STATUS_COUNT_CAP):>8}"
            for s in TASK_STATUSES
        ]
        self.query_one("#task-counts", Static).update("\n".join(lines))
        wf = ["[b]Workflows[/b]"]
        wf += [f"{s.title():<10} {data.workflow_counts.get(s, 0):>8}" for s in WORKFLOW_STATUSES]
        self.query_one("#workflow-counts", Static).update("\n".join(wf))
        self.query_one("#trend", Sparkline).data = list(data.trend) or [0.0]
        alerts = ["[b]Alerts[/b]"]
        for w in data.overloaded:
            alerts.append(
                f"[red]overloaded[/red] {w.hostname} pid {w.pid}: "
                f"{w.tasks_running}/{w.processes} running, {w.tasks_claimed} claimed waiting"
            )
        for c in data.stale_claims[:10]:
            alerts.append(
                f"[yellow]stale claim[/yellow] {c.task_id[:8]} {c.task_name} "
                f"({c.queue_name}) claimed {duration(c.age)} ago"
            )
        if len(alerts) == 1:
            alerts.append("[green]no active alerts[/green]")
        self.query_one("#alerts", Static).update("\n".join(alerts))
        table = self.main_table
        per_queue: dict[str, dict[str, int]] = {}
        for queue, status, n in data.queue_counts:
            per_queue.setdefault(queue, {})[status] = n
        table.clear()
        for queue, counts in sorted(per_queue.items()):
            table.add_row(
                queue,
                str(counts.get("PENDING", 0)),
                str(counts.get("CLAIMED", 0)),
                str(counts.get("RUNNING", 0)),
                key=queue,
            )
