"""A worker stopped cleanly leaves Syce's counts at once and is never called dead; a worker killed
with SIGKILL still is, once its snapshots are stale.

Real ``horsies worker`` processes (``tests.e2e.apps.basic``) started through the CLI; the
monitoring API of the broker must agree with the dashboard. Every wait is bounded.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from db_rows import sql
from horsies.broker import PostgresBroker
from horsies.config import PostgresConfig
from process_harness import LoggedProcess, child_env
from syce.app import SyceApp
from syce.models import DashboardData, MaintenanceData
from syce_seed import wait_for
from textual.widgets import Static

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

READY_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 30.0
SEEN_TIMEOUT_S = 30.0
GONE_TIMEOUT_S = 10.0
"""Far less than the 2 minutes after which a silent worker stops being listed: only a stop mark
can make a stopped worker leave within it."""


@pytest.fixture
def workers(database_url: str, clean_db: str, tmp_path: Path) -> Iterator[list[LoggedProcess]]:
    """Two ready ``horsies worker`` processes of 2 child processes each."""
    del clean_db
    started: list[LoggedProcess] = []
    try:
        for index in range(2):
            command = [
                sys.executable,
                "-m",
                "horsies",
                "worker",
                "tests.e2e.apps.basic:app",
                "--processes",
                "2",
            ]
            process = LoggedProcess(
                command,
                child_env({"HORSIES_E2E_DATABASE_URL": database_url}),
                tmp_path / f"worker-{index}.log",
            )
            started.append(process)
        for process in started:
            process.wait_output(" ready: ", READY_TIMEOUT_S)
        yield started
    finally:
        for process in started:
            process.reap()
            print(process.output())  # shown by pytest only when the test failed


def _live_worker_ids(broker: PostgresBroker) -> set[str]:
    return {str(row["worker_id"]) for row in broker.get_worker_states_sync()}


async def test_syce_stopped_worker_leaves_at_once_and_a_killed_one_is_dead(
    workers: list[LoggedProcess], database_url: str, clean_db: str
) -> None:
    stopped, killed = workers
    app = SyceApp(PostgresConfig(database_url=database_url), tick_rate=10)
    broker = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=1))
    try:
        async with app.run_test(size=(150, 48)) as pilot:
            dashboard = app.pane("dashboard")

            def live_pids() -> set[int]:
                data = cast(DashboardData | None, dashboard.data)
                return set() if data is None else {w.pid for w in data.workers}

            def capacity_text() -> str:
                return str(app.screen.query_one("#capacity", Static).render())

            await wait_for(
                pilot,
                lambda: live_pids() == {stopped.pid, killed.pid},
                timeout=SEEN_TIMEOUT_S,
                what="both workers' snapshots",
            )
            ids = {w.pid: w.worker_id for w in cast(DashboardData, dashboard.data).workers}
            assert _live_worker_ids(broker) == set(ids.values())

            stopped.send_signal(signal.SIGINT)  # Ctrl+C
            assert stopped.wait_exit(EXIT_TIMEOUT_S) == 0
            await wait_for(
                pilot,
                lambda: live_pids() == {killed.pid},
                timeout=GONE_TIMEOUT_S,
                what="the stopped worker to leave the active workers",
            )
            await wait_for(
                pilot,
                lambda: (
                    "Active workers  1" in capacity_text()
                    and "Total capacity  2" in capacity_text()
                ),
                timeout=GONE_TIMEOUT_S,
                what="the capacity box without the stopped worker",
            )
            assert _live_worker_ids(broker) == {ids[killed.pid]}
            rows = sql(
                clean_db,
                "SELECT tasks_running, tasks_claimed, stopped_at FROM horsies_worker_states "
                "WHERE worker_id = %s ORDER BY snapshot_at DESC LIMIT 1",
                (ids[stopped.pid],),
            )
            assert rows[0]["stopped_at"] is not None
            assert (rows[0]["tasks_running"], rows[0]["tasks_claimed"]) == (0, 0)

            killed.proc.kill()
            assert killed.wait_exit(EXIT_TIMEOUT_S) == -signal.SIGKILL
            # A minute later, as far as the snapshots can tell: past the 30 s after which a
            # silent worker is dead, for both of them.
            sql(
                clean_db,
                "UPDATE horsies_worker_states SET snapshot_at = snapshot_at - interval '1 minute'",
            )
            await pilot.press("5")
            maintenance = app.pane("maintenance")

            def dead_and_stopped() -> tuple[list[str], list[str]]:
                data = cast(MaintenanceData | None, maintenance.data)
                if data is None:
                    return [], []
                return [a.worker_id for a in data.dead], [a.worker_id for a in data.stopped]

            await wait_for(
                pilot,
                lambda: dead_and_stopped() == ([ids[killed.pid]], [ids[stopped.pid]]),
                timeout=GONE_TIMEOUT_S,
                what="the killed worker dead, the stopped one stopped",
            )
            title = str(app.screen.query_one("#dead-title", Static).render())
            assert ": 1" in title
    finally:
        broker.close()
