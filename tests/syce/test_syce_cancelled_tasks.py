"""Cancelled tasks are counted on the dashboard, filtered and found in the Tasks tab, and can be
run again from there."""

from __future__ import annotations

from typing import cast

import pytest
from db_rows import sql
from horsies.config import PostgresConfig
from horsies.tasks.status import TaskStatus
from syce.actions import Actions
from syce.app import SyceApp
from syce.models import TASK_STATUSES, DashboardData, TasksData
from syce.screens.modals import TaskDetailScreen
from syce.screens.tasks import FILTER_KEYS, TasksPane
from syce_seed import confirm, seed, wait_for
from textual.widgets import DataTable, Static

pytestmark = pytest.mark.timeout(90)

CANCELLED_ID = "t-pend-2"


@pytest.fixture
def config(database_url: str, clean_db: str) -> PostgresConfig:
    """The seeded database, with one of its pending tasks cancelled through the public API."""
    seed(clean_db)
    config = PostgresConfig(database_url=database_url)
    actions = Actions(config)
    try:
        assert actions.cancel_task(CANCELLED_ID)
    finally:
        actions.close()
    return config


def test_syce_every_written_task_status_has_a_filter() -> None:
    # REQUEUED is accepted by the schema but never written (a retry goes back to PENDING).
    written = {s.db_value for s in TaskStatus if s is not TaskStatus.REQUEUED}
    assert set(TASK_STATUSES) == written
    assert set(FILTER_KEYS.values()) == written


async def test_syce_cancelled_task_is_counted_found_and_run_again(
    config: PostgresConfig, clean_db: str
) -> None:
    app = SyceApp(config, tick_rate=10)
    async with app.run_test(size=(150, 48)) as pilot:
        dashboard = app.pane("dashboard")
        await wait_for(pilot, lambda: dashboard.data is not None, what="dashboard")
        assert cast(DashboardData, dashboard.data).task_counts.get("CANCELLED") == 1
        counts = str(app.screen.query_one("#task-counts", Static).render())
        assert "Cancelled         1" in counts
        assert "Other" not in counts

        await pilot.press("3")
        tasks = cast(TasksPane, app.pane("tasks"))

        def groups() -> dict[str, dict[str, int]]:
            data = cast(TasksData | None, tasks.data)
            return {} if data is None else {g.key: g.counts for g in data.groups}

        await wait_for(
            pilot,
            lambda: groups().get("") == {"PENDING": 2, "CANCELLED": 1},
            what="the cancelled task among the unclaimed ones",
        )
        assert "x Cancelled" in str(app.screen.query_one("#task-filters", Static).render())

        # its id prefix finds it
        await pilot.press("slash", *CANCELLED_ID, "enter")
        await wait_for(
            pilot, lambda: groups() == {"": {"CANCELLED": 1}}, what="search by id prefix"
        )
        # its filter hides and shows it
        await pilot.press("x")
        await wait_for(pilot, lambda: groups() == {}, what="cancelled filtered out")
        await pilot.press("n", "x")
        await wait_for(pilot, lambda: groups() == {"": {"CANCELLED": 1}}, what="cancelled only")

        await pilot.press("enter")  # expand the unclaimed group
        await wait_for(pilot, lambda: cast(TasksData, tasks.data).expanded == "")
        await pilot.press("down")
        assert tasks.current_task_id() == CANCELLED_ID
        table = cast("DataTable[str]", app.screen.query_one("#tasks-table", DataTable))
        row = table.get_row(f"t:{CANCELLED_ID}")
        assert row[2 + TASK_STATUSES.index("CANCELLED")] == "cancelled"

        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TaskDetailScreen), what="detail")
        await confirm(pilot, "R")
        await wait_for(
            pilot,
            lambda: (
                sql(clean_db, "SELECT status FROM horsies_tasks WHERE id = %s", (CANCELLED_ID,))
                == [{"status": "PENDING"}]
            ),
            what="the cancelled task pending again",
        )
