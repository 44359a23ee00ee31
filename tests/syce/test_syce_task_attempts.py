"""The task detail lists every attempt of the task's code: a task that a real worker ran, retried
and ran again shows both attempts, with where each ran, how it ended and the error that ended the
first (the history ``TaskHandle.attempts()`` reads, through the same query)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from horsies.app import Horsies
from horsies.config import PostgresConfig
from process_harness import LoggedProcess
from syce.app import SyceApp
from syce.screens.modals import TaskDetailScreen
from syce_seed import wait_for
from syce_worker import WAIT_S, open_task_detail, running_worker
from textual.widgets import DataTable, Static

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from tests.e2e.apps import basic  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def worker(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoggedProcess]:
    """One ``horsies worker`` of the end-to-end tests' basic app."""
    log_dir = tmp_path_factory.mktemp("syce-attempts-worker")
    with running_worker(database_url, "tests.e2e.apps.basic:app", log_dir) as process:
        yield process


@pytest.fixture
def producer(database_url: str, clean_db: str) -> Iterator[Horsies]:
    del clean_db
    app = basic.create_app(database_url)
    yield app
    app.get_broker().close()


def attempt_rows(app: SyceApp) -> list[list[str]]:
    """The rows of the open task detail's attempts table ([] while another screen is on top)."""
    screen = app.screen
    if not isinstance(screen, TaskDetailScreen):
        return []
    table = cast("DataTable[Any]", screen.query_one("#attempts-table", DataTable))
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def test_syce_task_detail_shows_a_retried_tasks_two_attempts(
    worker: LoggedProcess, producer: Horsies, database_url: str, tmp_path: Path
) -> None:
    # e2e.flaky fails with FLAKY on its first attempt; its policy retries it after a second.
    handle = producer.tasks["e2e.flaky"].send(str(tmp_path / "attempts.log"), 2)
    assert handle.get(timeout_ms=int(WAIT_S * 1000)).is_ok()
    task_id = handle.task_id

    app = SyceApp(PostgresConfig(database_url=database_url), tick_rate=10)
    async with app.run_test(size=(150, 48)) as pilot:
        await open_task_detail(pilot, app, task_id, "COMPLETED")
        await wait_for(pilot, lambda: len(attempt_rows(app)) == 2, what="two attempts listed")

        screen = cast(TaskDetailScreen, app.screen)
        title = str(screen.query_one("#task-attempts-title", Static).render())
        assert title == "Attempts (2)"
        first, second = attempt_rows(app)
        where = f"{socket.gethostname()}:"
        assert first[0] == "1"
        assert first[3].startswith(where)
        assert first[4:] == ["retried", "FLAKY: attempt 1"]
        assert second[0] == "2"
        assert second[3].startswith(where)
        assert second[4:] == ["completed", "-"]
        # Each attempt's start and end are shown, in order.
        assert first[1] <= first[2] <= second[1] <= second[2]
        assert "-" not in (first[1], first[2], second[1], second[2])
        # The same history as the library's own read of it.
        assert [a.status for a in handle.attempts()] == ["RETRIED", "COMPLETED"]
