"""Snapshot tests (pytest-textual-snapshot) on deterministic seeded data.

Only views without wall-clock figures are snapshotted (tasks, workflows, a workflow's nodes, the
limits, the help); the header's database URL (a per-run database name) is replaced by a fixed
text.
Update the stored SVGs with ``uv run pytest tests/syce/test_syce_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from horsies.config import PostgresConfig
from syce.app import SyceApp
from syce.models import LimitsData, TasksData
from syce.screens.modals import HelpScreen, WorkflowDetailScreen
from syce_seed import seed, seed_limits, wait_for
from textual.pilot import Pilot

pytestmark = pytest.mark.timeout(90)

SIZE = (130, 34)
SnapCompare = Callable[..., bool]


@pytest.fixture
def snap_app(database_url: str, clean_db: str) -> SyceApp:
    seed(clean_db)
    app = SyceApp(PostgresConfig(database_url=database_url), tick_rate=4.0)
    app.theme = "catppuccin-mocha"
    return app


def driver(
    *keys: str, until: Callable[[SyceApp], object]
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = cast(SyceApp, pilot.app)
        app.sub_title = "postgresql://…/test"
        await pilot.press(*keys)
        await wait_for(pilot, lambda: until(app), what="view ready")
        await pilot.pause()

    return run_before


def test_syce_snapshot_tasks_expanded(snap_app: SyceApp, snap_compare: SnapCompare) -> None:
    def ready(app: SyceApp) -> bool:
        data = cast(TasksData | None, app.pane("tasks").data)
        return data is not None and data.expanded == "w-beta" and len(data.expanded_tasks) == 3

    async def run_before(pilot: Pilot[Any]) -> None:
        app = cast(SyceApp, pilot.app)
        await pilot.press("3")
        await wait_for(pilot, lambda: app.pane("tasks").data is not None)
        await driver("down", "down", "enter", until=ready)(pilot)

    assert snap_compare(snap_app, run_before=run_before, terminal_size=SIZE)


def test_syce_snapshot_workflows(snap_app: SyceApp, snap_compare: SnapCompare) -> None:
    def ready(app: SyceApp) -> bool:
        return len(cast(Any, app.pane("workflows").data or ())) == 3

    assert snap_compare(snap_app, run_before=driver("4", until=ready), terminal_size=SIZE)


def test_syce_snapshot_workflow_detail(snap_app: SyceApp, snap_compare: SnapCompare) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = cast(SyceApp, pilot.app)
        await pilot.press("4")
        await wait_for(pilot, lambda: len(cast(Any, app.pane("workflows").data or ())) == 3)
        await driver("enter", until=lambda a: isinstance(a.screen, WorkflowDetailScreen))(pilot)

    assert snap_compare(snap_app, run_before=run_before, terminal_size=SIZE)


def test_syce_snapshot_help(snap_app: SyceApp, snap_compare: SnapCompare) -> None:
    assert snap_compare(
        snap_app,
        run_before=driver("question_mark", until=lambda a: isinstance(a.screen, HelpScreen)),
        terminal_size=SIZE,
    )


def test_syce_snapshot_limits(snap_app: SyceApp, clean_db: str, snap_compare: SnapCompare) -> None:
    seed_limits(clean_db)

    def ready(app: SyceApp) -> bool:
        data = cast(LimitsData | None, app.pane("limits").data)
        return data is not None and data.selected == "tenant-api" and len(data.keys) == 2

    async def run_before(pilot: Pilot[Any]) -> None:
        app = cast(SyceApp, pilot.app)
        await pilot.press("6")
        await wait_for(pilot, lambda: app.pane("limits").data is not None)
        await driver("down", "down", until=ready)(pilot)

    assert snap_compare(snap_app, run_before=run_before, terminal_size=SIZE)
