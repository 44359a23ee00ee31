"""Tab 2, Workers: live workers, the selected worker's detail and load charts (``[``/``]``)."""

from __future__ import annotations

from datetime import UTC, datetime

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.widgets import DataTable, Sparkline, Static

from syce._nodes import row_table
from syce.format import duration, percent
from syce.models import CHART_WINDOWS, WorkersData
from syce.screens.base import SycePane

__all__ = ["WorkersPane"]

_COLUMNS = ("Hostname", "PID", "Procs", "Running", "Claimed", "CPU", "Memory", "Uptime", "Seen")


class WorkersPane(SycePane[WorkersData]):
    SEARCH_HINT = "search workers by hostname or worker id"
    TABLE = "workers-table"

    BINDINGS = [
        Binding("left_square_bracket", "window(-1)", "Shorter window"),
        Binding("right_square_bracket", "window(1)", "Longer window"),
    ]

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.selected: str | None = None
        self.window_index = 0

    def compose(self) -> ComposeResult:
        yield row_table(self.TABLE, *_COLUMNS)
        with Horizontal(classes="row"):
            yield Static(id="worker-detail", classes="box")
            with Vertical(classes="box"):
                yield Static(id="chart-title", classes="title")
                yield Static("running tasks", classes="label")
                yield Sparkline([], id="chart-running")
                yield Static("CPU %", classes="label")
                yield Sparkline([], id="chart-cpu")

    def load(self) -> WorkersData:
        return self.source.workers(self.selected, self.window_index, self.syce.search)

    def action_window(self, step: int) -> None:
        self.window_index = (self.window_index + step) % len(CHART_WINDOWS)
        self.query_one("#chart-title", Static).update(
            f"Load, last {CHART_WINDOWS[self.window_index][0]}"
        )
        self.refresh_data(force=True)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        if key is not None and key != self.selected:
            self.selected = key
            self.refresh_data(force=True)

    def show(self, data: WorkersData) -> None:
        now = datetime.now(UTC)
        table = self.main_table
        with self.prevent(DataTable.RowHighlighted):
            table.clear()
            for w in data.workers:
                memory = "-" if w.memory_mb is None else f"{w.memory_mb:.0f} MB"
                table.add_row(
                    w.hostname,
                    str(w.pid),
                    str(w.processes),
                    str(w.tasks_running),
                    str(w.tasks_claimed),
                    percent(w.cpu_percent),
                    memory,
                    duration(now - w.started_at),
                    f"{duration(w.age)} ago",
                    key=w.worker_id,
                )
            keys = [w.worker_id for w in data.workers]
            if data.selected in keys:
                table.move_cursor(row=keys.index(data.selected))
        self.selected = data.selected
        self.query_one("#chart-title", Static).update(f"Load, last {data.window}")
        detail = self.query_one("#worker-detail", Static)
        chosen = next((w for w in data.workers if w.worker_id == data.selected), None)
        if chosen is None:
            detail.update(
                "[b]No live workers[/b]\n(none sent a snapshot in the last 30 seconds without "
                "having stopped since)"
            )
        else:
            detail.update(
                f"[b]{chosen.hostname}[/b] pid {chosen.pid}\n"
                f"worker id   {chosen.worker_id}\n"
                f"queues      {', '.join(chosen.queues) or '-'}\n"
                f"limits      {escape(_limits_text(chosen.limits))}\n"
                f"processes   {chosen.processes}"
                f"{_async_note(chosen.async_concurrency)}\n"
                f"running     {chosen.tasks_running}  claimed {chosen.tasks_claimed}\n"
                f"utilisation {chosen.utilisation:.0%}\n"
                f"cpu         {percent(chosen.cpu_percent)}  "
                f"memory {percent(chosen.memory_percent)}\n"
                f"started     {chosen.started_at:%Y-%m-%d %H:%M:%S}"
            )
        self.query_one("#chart-running", Sparkline).data = [s.running for s in data.history] or [
            0.0
        ]
        self.query_one("#chart-cpu", Sparkline).data = [s.cpu or 0.0 for s in data.history] or [0.0]


def _async_note(concurrency: int | None) -> str:
    return "" if concurrency is None else f"  (up to {concurrency} async tasks each)"


def _limits_text(limits: dict[str, tuple[str, ...]] | None) -> str:
    """``default: per-tenant, rated; emails: smtp`` (``-``: none; ``?``: an older worker)."""
    if limits is None:
        return "?"
    return (
        "; ".join(f"{queue}: {', '.join(names)}" for queue, names in sorted(limits.items())) or "-"
    )
