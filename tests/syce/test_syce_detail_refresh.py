"""Open details follow the database: at the tick rate, and at once on ``r``; a workflow's progress
counts its completed nodes only, and an ended workflow says how it ended."""

from __future__ import annotations

from typing import Any, cast

import pytest
from db_rows import sql
from horsies.config import PostgresConfig
from syce.app import SyceApp
from syce.models import TasksData
from syce.screens.modals import TaskDetailScreen, WorkflowDetailScreen
from syce.screens.tasks import TasksPane
from syce_seed import confirm, seed, wait_for
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

pytestmark = pytest.mark.timeout(90)

SIZE = (150, 48)
FOLLOW_TIMEOUT_S = 10.0
SLOW_TICK_RATE = 0.02
"""One refresh every 50 s: within ``FOLLOW_TIMEOUT_S`` only ``r`` can refresh."""


def text(app: SyceApp, selector: str) -> str:
    """The text of a `Static` of the screen on top ("" while another screen is on top)."""
    try:
        return str(app.screen.query_one(selector, Static).render())
    except NoMatches:
        return ""


def node_status(app: SyceApp, index: int) -> str:
    try:
        nodes = cast("DataTable[Any]", app.screen.query_one("#nodes-table", DataTable))
    except NoMatches:
        return ""
    return str(nodes.get_row(str(index))[3])


def task_json(app: SyceApp) -> str:
    screen = app.screen
    return screen.json if isinstance(screen, TaskDetailScreen) else ""


async def open_workflow(pilot: Pilot[Any], app: SyceApp, workflow_id: str) -> None:
    await pilot.press("4")
    flows = app.pane("workflows")
    await wait_for(pilot, lambda: flows.data is not None, what="workflows")
    assert flows.cursor_key() == workflow_id
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, WorkflowDetailScreen), what="detail")


async def open_pending_task(pilot: Pilot[Any], app: SyceApp) -> str:
    await pilot.press("3")
    tasks = cast(TasksPane, app.pane("tasks"))
    await wait_for(pilot, lambda: tasks.data is not None, what="tasks")
    await pilot.press("enter")  # the unclaimed group: pending tasks
    await wait_for(pilot, lambda: cast(TasksData, tasks.data).expanded == "", what="expanded")
    await pilot.press("down")
    task_id = tasks.current_task_id()
    assert task_id is not None
    assert task_id.startswith("t-pend-")
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, TaskDetailScreen), what="task detail")
    return task_id


async def test_syce_open_details_follow_the_database_at_the_tick_rate(
    database_url: str, clean_db: str
) -> None:
    seed(clean_db)
    app = SyceApp(PostgresConfig(database_url=database_url), tick_rate=10)
    async with app.run_test(size=SIZE) as pilot:
        await open_workflow(pilot, app, "wf-etl")
        assert "running" in text(app, "#workflow-title")
        await confirm(pilot, "X")  # cancel from inside the detail
        await wait_for(
            pilot,
            lambda: "cancelled" in text(app, "#workflow-title"),
            timeout=FOLLOW_TIMEOUT_S,
            what="the detail to show the cancel",
        )
        sql(
            clean_db,
            "UPDATE horsies_workflow_tasks SET status = 'COMPLETED' WHERE id = 'wf-etl-n1'",
        )
        await wait_for(
            pilot,
            lambda: node_status(app, 1) == "completed",
            timeout=FOLLOW_TIMEOUT_S,
            what="a node finished meanwhile",
        )
        await pilot.press("escape")

        task_id = await open_pending_task(pilot, app)
        assert '"status": "PENDING"' in task_json(app)
        assert text(app, "#task-attempts-title") == "Attempts: none started yet"
        await confirm(pilot, "X")  # cancel from inside the detail
        await wait_for(
            pilot,
            lambda: '"status": "CANCELLED"' in task_json(app),
            timeout=FOLLOW_TIMEOUT_S,
            what=f"the detail of {task_id} to show the cancel",
        )


async def test_syce_r_refreshes_open_details(database_url: str, clean_db: str) -> None:
    seed(clean_db)
    app = SyceApp(PostgresConfig(database_url=database_url), tick_rate=SLOW_TICK_RATE)
    async with app.run_test(size=SIZE) as pilot:
        await open_workflow(pilot, app, "wf-etl")
        sql(clean_db, "UPDATE horsies_workflows SET status = 'FAILED' WHERE id = 'wf-etl'")
        sql(clean_db, "UPDATE horsies_workflow_tasks SET status = 'FAILED' WHERE id = 'wf-etl-n1'")
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: "failed" in text(app, "#workflow-title") and node_status(app, 1) == "failed",
            timeout=FOLLOW_TIMEOUT_S,
            what="r to refresh the workflow detail",
        )
        await pilot.press("escape")

        task_id = await open_pending_task(pilot, app)
        sql(clean_db, "UPDATE horsies_tasks SET status = 'CANCELLED' WHERE id = %s", (task_id,))
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: '"status": "CANCELLED"' in task_json(app),
            timeout=FOLLOW_TIMEOUT_S,
            what="r to refresh the task detail",
        )


async def test_syce_workflow_progress_counts_completed_nodes_only(
    database_url: str, clean_db: str
) -> None:
    seed(clean_db)
    sql(clean_db, "UPDATE horsies_workflows SET status = 'CANCELLED' WHERE id = 'wf-etl'")
    for node, status in (("wf-etl-n1", "FAILED"), ("wf-etl-n2", "SKIPPED")):
        sql(
            clean_db,
            "UPDATE horsies_workflow_tasks SET status = %s WHERE id = %s",
            (status, node),
        )
    app = SyceApp(PostgresConfig(database_url=database_url), tick_rate=10)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        flows = app.pane("workflows")
        await wait_for(pilot, lambda: flows.data is not None, what="workflows")
        table = cast("DataTable[Any]", app.screen.query_one("#workflows-table", DataTable))
        row = table.get_row("wf-etl")
        assert row[2:4] == ["cancelled", "1/3"]
        assert str(row[4]).endswith(" 33%")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, WorkflowDetailScreen), what="detail")
        assert "cancelled" in text(app, "#workflow-title")
        progress = text(app, "#workflow-progress")
        assert "1/3 completed" in progress
        assert "1 failed" in progress
        assert "1 skipped" in progress
