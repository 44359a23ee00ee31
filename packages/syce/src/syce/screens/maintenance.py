"""Tab 5, Maintenance: how fresh the worker snapshots are, which workers look dead (silent without
having stopped) and which stopped cleanly."""

from __future__ import annotations

from datetime import UTC, datetime

from textual.app import ComposeResult
from textual.widgets import Static

from syce._nodes import row_table, table_of
from syce.format import duration, histogram
from syce.models import MaintenanceData
from syce.screens.base import SycePane

__all__ = ["AGE_BUCKETS", "MaintenancePane", "age_histogram"]

AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 10s", 10),
    ("10-30s", 30),
    ("30s-1m", 60),
    ("1-5m", 300),
    ("5-30m", 1800),
    ("30m-24h", float("inf")),
)


def age_histogram(ages: list[float]) -> list[int]:
    counts = [0] * len(AGE_BUCKETS)
    for age in ages:
        for index, (_, upper) in enumerate(AGE_BUCKETS):
            if age < upper:
                counts[index] += 1
                break
    return counts


class MaintenancePane(SycePane[MaintenanceData]):
    SEARCH_HINT = "search (Maintenance has nothing to search)"
    TABLE = "dead-table"

    def compose(self) -> ComposeResult:
        yield Static(id="age-histogram", classes="box")
        yield Static(id="dead-title", classes="title")
        yield row_table(self.TABLE, "Hostname", "PID", "Worker id", "Last snapshot", "Age")
        yield Static(id="stopped-title", classes="title")
        yield row_table("stopped-table", "Hostname", "PID", "Worker id", "Stopped at", "Ago")

    def load(self) -> MaintenanceData:
        return self.source.maintenance()

    def show(self, data: MaintenanceData) -> None:
        counts = age_histogram([a.age_s for a in data.ages])
        self.query_one("#age-histogram", Static).update(
            "[b]Latest worker snapshot age (workers seen in the last 24 h, not stopped)[/b]\n"
            + histogram([label for label, _ in AGE_BUCKETS], counts)
        )
        dead = data.dead
        self.query_one("#dead-title", Static).update(
            f"Dead workers (no snapshot for more than {data.dead_after_s:.0f}s): {len(dead)}"
        )
        self.query_one("#stopped-title", Static).update(
            f"Stopped workers (stopped cleanly in the last 24 h): {len(data.stopped)}"
        )
        now = datetime.now(UTC)
        for table, workers in (
            (self.main_table, dead),
            (table_of(self, "#stopped-table"), data.stopped),
        ):
            table.clear()
            for a in workers:
                table.add_row(
                    a.hostname,
                    str(a.pid),
                    a.worker_id,
                    f"{a.snapshot_at:%Y-%m-%d %H:%M:%S}",
                    duration(now - a.snapshot_at),
                    key=a.worker_id,
                )
