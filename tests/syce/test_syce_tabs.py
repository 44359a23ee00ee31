"""Pilot tests: every tab, key and filter of Syce against a seeded database."""

from __future__ import annotations

from typing import Any, cast

import pytest
from db_rows import sql
from horsies.config import PostgresConfig
from syce.app import THEMES, SyceApp
from syce.models import DashboardData, MaintenanceData, TasksData, WorkersData
from syce.screens.modals import (
    ConfirmScreen,
    HelpScreen,
    TaskDetailScreen,
    WorkflowDetailScreen,
)
from syce.screens.tasks import TasksPane
from syce.screens.workers import WorkersPane
from syce.screens.workflows import WorkflowsPane
from syce_seed import confirm, seed, wait_for
from textual.widgets import DataTable, Static

pytestmark = pytest.mark.timeout(90)

SIZE = (150, 48)


@pytest.fixture
def syce_app(database_url: str, clean_db: str) -> SyceApp:
    seed(clean_db)
    return SyceApp(PostgresConfig(database_url=database_url), tick_rate=4.0)


def table(app: SyceApp, selector: str) -> DataTable[Any]:
    return cast("DataTable[Any]", app.screen.query_one(selector, DataTable))


def static_text(app: SyceApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def row_keys(app: SyceApp, selector: str) -> list[str]:
    return [str(key.value) for key in table(app, selector).rows]


async def test_syce_dashboard_shows_capacity_counts_trend_and_alerts(syce_app: SyceApp) -> None:
    async with syce_app.run_test(size=SIZE) as pilot:
        pane = syce_app.pane("dashboard")
        await wait_for(pilot, lambda: pane.data is not None, what="dashboard data")
        data = cast(DashboardData, pane.data)
        assert {w.hostname for w in data.workers} == {"alpha", "beta"}  # gamma is dead
        assert data.capacity == 6
        assert data.running == 5
        assert data.task_counts == {
            "PENDING": 3,
            "CLAIMED": 1,
            "RUNNING": 2,
            "COMPLETED": 2,
            "FAILED": 1,
        }
        assert data.workflow_counts == {"RUNNING": 1, "COMPLETED": 1, "PAUSED": 1}
        assert len(data.trend) >= 10
        assert [w.hostname for w in data.overloaded] == ["alpha"]
        assert [c.task_id for c in data.stale_claims] == ["t-claim-1"]
        capacity = static_text(syce_app, "#capacity")
        assert "Active workers  2" in capacity
        assert "Total capacity  6" in capacity
        assert "Utilisation     83%" in capacity
        alerts = static_text(syce_app, "#alerts")
        assert "overloaded alpha" in alerts
        assert "stale claim t-claim-" in alerts
        assert "Pending           3" in static_text(syce_app, "#task-counts")
        assert "Paused            1" in static_text(syce_app, "#workflow-counts")
        assert row_keys(syce_app, "#queue-counts") == ["default", "images"]
        queues = table(syce_app, "#queue-counts")
        assert queues.get_row("default") == ["default", "2", "0", "2"]
        assert queues.get_row("images") == ["images", "1", "1", "0"]
        assert "postgresql" in syce_app.sub_title


async def test_syce_number_keys_switch_tabs(syce_app: SyceApp) -> None:
    async with syce_app.run_test(size=SIZE) as pilot:
        for key, tab in zip(
            "234561",
            ("workers", "tasks", "workflows", "maintenance", "limits", "dashboard"),
            strict=True,
        ):
            await pilot.press(key)
            assert syce_app.active_tab == tab
            pane = syce_app.pane(tab)
            await wait_for(pilot, lambda pane=pane: pane.data is not None, what=f"{tab} data")


async def test_syce_workers_list_selection_and_chart_windows(syce_app: SyceApp) -> None:
    async with syce_app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        pane = cast(WorkersPane, syce_app.pane("workers"))
        await wait_for(pilot, lambda: pane.data is not None, what="workers")
        assert row_keys(syce_app, "#workers-table") == ["w-alpha", "w-beta"]
        alpha = table(syce_app, "#workers-table").get_row("w-alpha")
        assert alpha[:6] == ["alpha", "101", "4", "4", "2", "75%"]
        assert alpha[6] == "128 MB"
        assert alpha[7] == "2h00m"
        await wait_for(pilot, lambda: cast(WorkersData, pane.data).history, what="history")
        assert "alpha" in static_text(syce_app, "#worker-detail")
        assert "Load, last 5m" in static_text(syce_app, "#chart-title")
        await pilot.press("down")
        await wait_for(
            pilot, lambda: cast(WorkersData, pane.data).selected == "w-beta", what="beta selected"
        )
        assert "beta" in static_text(syce_app, "#worker-detail")
        await pilot.press("up")
        await wait_for(pilot, lambda: cast(WorkersData, pane.data).selected == "w-alpha")
        for key, label in (
            ("]", "30m"),
            ("]", "1h"),
            ("]", "6h"),
            ("]", "24h"),
            ("]", "5m"),
            ("[", "24h"),
        ):
            await pilot.press(key)
            await wait_for(
                pilot, lambda label=label: cast(WorkersData, pane.data).window == label, what=label
            )
        # 20 one-minute snapshots: the 24h window has one bucket per 24 minutes
        assert 1 <= len(cast(WorkersData, pane.data).history) <= 2
        assert "Load, last 24h" in static_text(syce_app, "#chart-title")


async def test_syce_tasks_groups_filters_expand_and_detail(syce_app: SyceApp) -> None:
    async with syce_app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        pane = cast(TasksPane, syce_app.pane("tasks"))
        await wait_for(pilot, lambda: pane.data is not None, what="tasks")
        assert row_keys(syce_app, "#tasks-table") == ["g:", "g:w-alpha", "g:w-beta"]
        rows = table(syce_app, "#tasks-table")
        assert rows.get_row("g:")[2:] == ["3", "0", "0", "0", "0", "0", "3"]
        assert rows.get_row("g:w-alpha")[2:] == ["0", "1", "2", "0", "0", "0", "3"]
        assert rows.get_row("g:w-beta")[2:] == ["0", "0", "0", "2", "1", "0", "3"]

        def groups() -> dict[str, int]:
            data = cast(TasksData, pane.data)
            return {g.key: g.total for g in data.groups}

        # filters: p c u o f x toggle, n clears, a restores
        await pilot.press("n")
        await wait_for(pilot, lambda: groups() == {}, what="no filters")
        assert pane.filters == set()
        await pilot.press("f")
        await wait_for(pilot, lambda: groups() == {"w-beta": 1}, what="failed only")
        await pilot.press("p")
        await wait_for(pilot, lambda: groups() == {"": 3, "w-beta": 1}, what="+pending")
        await pilot.press("c", "u")
        await wait_for(pilot, lambda: groups() == {"": 3, "w-alpha": 3, "w-beta": 1})
        await pilot.press("o")
        await wait_for(pilot, lambda: groups() == {"": 3, "w-alpha": 3, "w-beta": 3})
        await pilot.press("u")
        await wait_for(pilot, lambda: groups() == {"": 3, "w-alpha": 1, "w-beta": 3})
        await pilot.press("a")
        await wait_for(pilot, lambda: groups() == {"": 3, "w-alpha": 3, "w-beta": 3})
        assert "u Running" in static_text(syce_app, "#task-filters")

        # Enter on a worker row expands it, Esc collapses
        await pilot.press("down", "down", "enter")
        await wait_for(
            pilot, lambda: cast(TasksData, pane.data).expanded == "w-beta", what="expanded"
        )
        keys = row_keys(syce_app, "#tasks-table")
        assert keys[:3] == ["g:", "g:w-alpha", "g:w-beta"]
        assert set(keys[3:]) == {"t:t-done-1", "t:t-done-2", "t:t-fail-1"}
        await pilot.press("escape")
        await wait_for(pilot, lambda: cast(TasksData, pane.data).expanded is None, what="collapse")
        assert syce_app.is_running

        # Enter on a task row opens the detail modal with the full JSON; y copies it
        await pilot.press("enter")
        await wait_for(pilot, lambda: cast(TasksData, pane.data).expanded == "w-beta")
        await pilot.press("down")
        task_id = pane.current_task_id()
        assert task_id in {"t-done-1", "t-done-2", "t-fail-1"}
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(syce_app.screen, TaskDetailScreen), what="modal")
        detail = cast(TaskDetailScreen, syce_app.screen)
        assert detail.task_id == task_id
        assert f'"id": "{task_id}"' in detail.json
        assert '"args": [\n    1,\n    2\n  ]' in detail.json
        await pilot.press("y")
        assert syce_app.clipboard == detail.json
        await pilot.press("escape")
        assert not isinstance(syce_app.screen, TaskDetailScreen)
        assert syce_app.is_running
        # Esc with nothing left to close stays in the dashboard.
        await pilot.press("escape", "escape", "escape")
        await pilot.pause()
        assert syce_app.is_running


async def test_syce_task_cancel_asks_then_cancels_the_selected_pending_task(
    syce_app: SyceApp, clean_db: str
) -> None:
    import psycopg

    async with syce_app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("3")
        pane = cast(TasksPane, syce_app.pane("tasks"))
        await wait_for(pilot, lambda: pane.data is not None, what="tasks")
        await pilot.press("enter")  # expand the unclaimed (pending) group
        await wait_for(pilot, lambda: cast(TasksData, pane.data).expanded == "")
        await pilot.press("down")
        chosen = pane.current_task_id()
        assert chosen in {"t-pend-1", "t-pend-2", "t-pend-3"}
        await pilot.press("X")
        await wait_for(pilot, lambda: isinstance(syce_app.screen, ConfirmScreen), what="confirm")
        assert "Cancel task t-pend-" in str(
            syce_app.screen.query_one("#confirm-question", Static).render()
        )
        await pilot.press("n")
        assert not isinstance(syce_app.screen, ConfirmScreen)
        await confirm(pilot, "X")
        await wait_for(
            pilot,
            lambda: any(": done" in str(n.message) for n in syce_app._notifications),
            what="done notice",
        )
    with psycopg.connect(clean_db) as conn:
        rows = conn.execute(
            "SELECT id, status FROM horsies_tasks WHERE id LIKE 't-pend-%%' ORDER BY id"
        ).fetchall()
    assert dict(rows) == {
        task: ("CANCELLED" if task == chosen else "PENDING")
        for task in ("t-pend-1", "t-pend-2", "t-pend-3")
    }


async def test_syce_workflows_list_filters_detail_and_copy(syce_app: SyceApp) -> None:
    async with syce_app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        pane = cast(WorkflowsPane, syce_app.pane("workflows"))
        await wait_for(pilot, lambda: pane.data is not None, what="workflows")
        assert row_keys(syce_app, "#workflows-table") == ["wf-etl", "wf-report", "wf-paused"]
        etl = table(syce_app, "#workflows-table").get_row("wf-etl")
        assert etl[1:4] == ["nightly_etl", "running", "1/3"]
        assert etl[4].endswith("33%")

        def ids() -> list[str]:
            return [w.workflow_id for w in cast(Any, pane.data)]

        await pilot.press("n")
        await wait_for(pilot, lambda: ids() == [], what="none")
        await pilot.press("s")
        await wait_for(pilot, lambda: ids() == ["wf-paused"], what="paused")
        await pilot.press("o")
        await wait_for(pilot, lambda: ids() == ["wf-report", "wf-paused"], what="+completed")
        await pilot.press("s", "o", "u")
        await wait_for(pilot, lambda: ids() == ["wf-etl"], what="running")
        await pilot.press("p", "f", "c")
        await wait_for(pilot, lambda: ids() == ["wf-etl"])
        await pilot.press("a")
        await wait_for(pilot, lambda: len(ids()) == 3)

        await pilot.press("y")
        await wait_for(pilot, lambda: '"id": "wf-etl"' in (syce_app.clipboard or ""), what="copy")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(syce_app.screen, WorkflowDetailScreen))
        nodes = table(syce_app, "#nodes-table")
        assert [nodes.get_row(str(i))[1:4] for i in range(3)] == [
            ["step_0", "app.step_0", "completed"],
            ["step_1", "app.step_1", "running"],
            ["step_2", "app.step_2", "pending"],
        ]
        assert nodes.get_row("2")[4] == "1"
        await pilot.press("y")
        assert '"name": "nightly_etl"' in syce_app.clipboard
        await pilot.press("escape")
        assert not isinstance(syce_app.screen, WorkflowDetailScreen)
        assert syce_app.is_running


async def test_syce_workflow_pause_and_cancel_change_the_database(
    syce_app: SyceApp, clean_db: str
) -> None:

    def status(wf_id: str) -> str:
        rows = sql(clean_db, "SELECT status FROM horsies_workflows WHERE id = %s", (wf_id,))
        return str(rows[0]["status"])

    async with syce_app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        pane = cast(WorkflowsPane, syce_app.pane("workflows"))
        await wait_for(pilot, lambda: pane.data is not None, what="workflows")
        assert pane.current_id() == "wf-etl"
        await pilot.press("P")
        await wait_for(pilot, lambda: isinstance(syce_app.screen, ConfirmScreen))
        await pilot.press("escape")  # no
        assert status("wf-etl") == "RUNNING"
        await confirm(pilot, "P")
        await wait_for(pilot, lambda: status("wf-etl") == "PAUSED", what="paused in db")
        await wait_for(
            pilot,
            lambda: table(syce_app, "#workflows-table").get_row("wf-etl")[2] == "paused",
            what="paused on screen",
        )
        # cancel from the detail modal
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(syce_app.screen, WorkflowDetailScreen))
        await confirm(pilot, "X")
        await wait_for(pilot, lambda: status("wf-etl") == "CANCELLED", what="cancelled in db")


async def test_syce_maintenance_histogram_and_dead_workers(syce_app: SyceApp) -> None:
    async with syce_app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        pane = syce_app.pane("maintenance")
        await wait_for(pilot, lambda: pane.data is not None, what="maintenance")
        data = cast(MaintenanceData, pane.data)
        assert [a.hostname for a in data.dead] == ["gamma"]
        histogram = static_text(syce_app, "#age-histogram")
        assert "< 10s" in histogram
        lines = {line.split()[0]: line.split()[-1] for line in histogram.splitlines()[1:]}
        assert lines["<"] == "2"
        assert lines["5-30m"] == "1"
        assert row_keys(syce_app, "#dead-table") == ["w-gamma"]
        assert "Dead workers (no snapshot for more than 30s): 1" in static_text(
            syce_app, "#dead-title"
        )


async def test_syce_help_theme_refresh_search_and_quit(syce_app: SyceApp) -> None:
    async with syce_app.run_test(size=SIZE) as pilot:
        pane = syce_app.pane("dashboard")
        await wait_for(pilot, lambda: pane.data is not None)
        await pilot.press("question_mark")
        assert isinstance(syce_app.screen, HelpScreen)
        # the data keeps refreshing behind a modal
        loads = pane.loads
        await wait_for(pilot, lambda: pane.loads > loads + 2, what="ticks behind the help")
        await pilot.press("question_mark")
        assert not isinstance(syce_app.screen, HelpScreen)
        await pilot.press("question_mark", "escape")
        assert not isinstance(syce_app.screen, HelpScreen)
        assert syce_app.is_running

        first = syce_app.theme
        assert first in THEMES
        seen = [first]
        for _ in range(4):
            await pilot.press("t")
            seen.append(syce_app.theme)
        assert set(seen) == set(THEMES)
        assert seen[-1] == first

        loads = pane.loads
        await pilot.press("r")
        await wait_for(pilot, lambda: pane.loads > loads, what="refresh")

        # search is context-aware: on Tasks it filters task names / ids
        await pilot.press("3")
        tasks = cast(TasksPane, syce_app.pane("tasks"))
        await wait_for(pilot, lambda: tasks.data is not None)
        await pilot.press("slash")
        await pilot.press(*"explode", "enter")
        assert syce_app.search == "explode"
        await wait_for(
            pilot,
            lambda: [g.key for g in cast(TasksData, tasks.data).groups] == ["w-beta"],
            what="search result",
        )
        assert "search: explode" in syce_app.sub_title
        await pilot.press("slash")
        await pilot.press("ctrl+a", "ctrl+k", "enter")  # clear the search
        assert syce_app.search == ""
        await wait_for(pilot, lambda: len(cast(TasksData, tasks.data).groups) == 3)
        # workflows search by name
        await pilot.press("4", "slash", *"clean", "enter")
        workflows = cast(WorkflowsPane, syce_app.pane("workflows"))
        await wait_for(
            pilot,
            lambda: [w.workflow_id for w in cast(Any, workflows.data)] == ["wf-paused"],
            what="workflow search",
        )
        # workers search by hostname
        await pilot.press("2", "slash", *"bet", "enter")
        workers = cast(WorkersPane, syce_app.pane("workers"))
        await wait_for(
            pilot,
            lambda: [w.hostname for w in cast(WorkersData, workers.data).workers] == ["beta"],
            what="worker search",
        )
        # Esc closes the search box without quitting
        await pilot.press("slash", "escape")
        assert syce_app.is_running
        await pilot.press("q")
    assert not syce_app.is_running


async def test_syce_escape_never_quits_and_q_does(syce_app: SyceApp) -> None:
    async with syce_app.run_test(size=SIZE) as pilot:
        for tab in ("1", "3", "5"):
            await pilot.press(tab, "escape", "escape")
            await pilot.pause()
            assert syce_app.is_running, tab
        await pilot.press("q")
        await pilot.pause()
    assert syce_app.return_code == 0
