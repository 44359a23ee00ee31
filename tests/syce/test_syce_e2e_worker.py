"""End to end: a real ``horsies worker``, tasks and a workflow sent by the test, Syce watching.

The worker runs ``tests.e2e.apps.wf_control:app`` (gate tasks that wait for a file, so a workflow
stays RUNNING as long as the test wants). Syce must show the worker, the tasks with the right
statuses and the workflow with its nodes, and its pause/resume/cancel actions must change the
database. Every wait is bounded.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from horsies.app import Horsies
from horsies.config import PostgresConfig
from horsies.workflows.handle import WorkflowHandle
from horsies.workflows.status import WorkflowStatus
from process_harness import LoggedProcess
from syce.app import SyceApp
from syce.models import TasksData, WorkersData, WorkflowSummary
from syce.screens.modals import TaskDetailScreen, WorkflowDetailScreen
from syce.screens.tasks import TasksPane
from syce_seed import confirm, wait_for
from syce_worker import WAIT_S, open_task_detail, running_worker
from textual.widgets import DataTable

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from tests.e2e.apps import wf_control as wf  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def worker(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoggedProcess]:
    """One ``horsies worker`` subprocess (2 processes)."""
    log_dir = tmp_path_factory.mktemp("syce-worker")
    locator = "tests.e2e.apps.wf_control:app"
    with running_worker(database_url, locator, log_dir, "--processes", "2") as process:
        yield process


@pytest.fixture
def producer(database_url: str, clean_db: str) -> Iterator[Horsies]:
    app = wf.create_app(database_url)
    app.get_broker().ensure_schema_initialized_sync()
    yield app
    app.get_broker().close()


async def test_syce_e2e_tasks_workflow_and_actions(
    worker: LoggedProcess, producer: Horsies, database_url: str, tmp_path: Path
) -> None:
    broker = producer.get_broker()
    gates = tmp_path / "gates"
    gates.mkdir()
    done_id = broker.enqueue("wfc.add", (2, 3))
    # Finished before the gates take both children: with the app's 3 s stale-claim threshold, a
    # claim held back on a loaded machine can be requeued and would then wait behind the gates.
    assert broker.get_result(done_id, timeout_ms=int(WAIT_S * 1000)).ok == 5
    parked_id = broker.enqueue("wfc.parked", ("waits",), queue_name="parked")
    handle = wf.Gates.build_with(producer, gates_dir=str(gates)).start()
    try:
        app = SyceApp(PostgresConfig(database_url=database_url), tick_rate=10)
        async with app.run_test(size=(150, 48)) as pilot:
            # Workers: the real worker appears with its snapshot
            await pilot.press("2")
            workers = app.pane("workers")
            await wait_for(
                pilot,
                lambda: (
                    workers.data is not None
                    and any(w.pid == worker.pid for w in cast(WorkersData, workers.data).workers)
                ),
                timeout=WAIT_S,
                what="worker snapshot",
            )
            info = next(w for w in cast(WorkersData, workers.data).workers if w.pid == worker.pid)
            assert info.hostname == socket.gethostname()
            assert info.processes == 2

            # Tasks: the add task COMPLETED under the worker, the parked one PENDING unclaimed
            await pilot.press("3")
            tasks = cast(TasksPane, app.pane("tasks"))

            def counts() -> dict[str, dict[str, int]]:
                data = cast(TasksData | None, tasks.data)
                return {} if data is None else {g.key: g.counts for g in data.groups}

            try:
                await wait_for(
                    pilot,
                    lambda: (
                        counts().get("", {}).get("PENDING") == 1
                        and sum(c.get("COMPLETED", 0) for k, c in counts().items() if k) == 1
                        and sum(c.get("RUNNING", 0) for k, c in counts().items() if k) == 2
                    ),
                    timeout=WAIT_S,
                    what="task counts (1 pending, 1 completed, 2 gates running)",
                )
            except AssertionError as exc:
                shown = f"{exc}; shown: {counts()}; worker log:\n{worker.output()[-4000:]}"
                raise AssertionError(shown) from exc
            await pilot.press("enter")  # expand the unclaimed group (first row)
            await wait_for(pilot, lambda: cast(TasksData, tasks.data).expanded == "")
            expanded = cast(TasksData, tasks.data).expanded_tasks
            assert [(t.task_id, t.status) for t in expanded] == [(parked_id, "PENDING")]
            await pilot.press("escape")
            await wait_for(pilot, lambda: cast(TasksData, tasks.data).expanded is None)
            await pilot.press("down", "enter")  # the worker's group
            await wait_for(pilot, lambda: cast(TasksData, tasks.data).expanded not in (None, ""))
            statuses = {t.task_id: t.status for t in cast(TasksData, tasks.data).expanded_tasks}
            assert statuses[done_id] == "COMPLETED"
            assert sorted(statuses.values()) == ["COMPLETED", "RUNNING", "RUNNING"]

            # Workflows: the workflow with its nodes
            await pilot.press("4")
            flows = app.pane("workflows")
            await wait_for(
                pilot,
                lambda: (
                    [
                        (w.workflow_id, w.status, w.nodes.total)
                        for w in cast(tuple[WorkflowSummary, ...], flows.data or ())
                    ]
                    == [(handle.workflow_id, "RUNNING", 3)]
                ),
                timeout=WAIT_S,
                what="workflow listed",
            )
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, WorkflowDetailScreen))
            nodes = cast("DataTable[Any]", app.screen.query_one("#nodes-table", DataTable))
            rows = [nodes.get_row(key)[1:4] for key in nodes.rows]
            assert rows == [
                ["a", "wfc.gate", "running"],
                ["b", "wfc.gate", "running"],
                ["join", "wfc.record", "pending"],
            ]

            async def confirm_until(key: str, status: WorkflowStatus, what: str) -> None:
                """Press ``key``, confirm, and wait until the workflow has ``status``."""
                await confirm(pilot, key)
                await wait_for(pilot, lambda: handle.status() == status, timeout=WAIT_S, what=what)

            # pause from the detail, then resume and cancel from the list
            await confirm_until("P", WorkflowStatus.PAUSED, "paused")
            await pilot.press("escape")
            await confirm_until("R", WorkflowStatus.RUNNING, "resumed")
            await confirm_until("X", WorkflowStatus.CANCELLED, "cancelled")
            await wait_for(
                pilot,
                lambda: (
                    [w.status for w in cast(tuple[WorkflowSummary, ...], flows.data)]
                    == ["CANCELLED"]
                ),
                what="cancelled on screen",
            )
    finally:
        (gates / wf.ALL_GATES).touch()
    assert WorkflowHandle(handle.workflow_id, broker).status() == WorkflowStatus.CANCELLED


async def test_syce_x_stops_a_running_task(
    worker: LoggedProcess, producer: Horsies, database_url: str, tmp_path: Path
) -> None:
    """X on a RUNNING task (its detail), confirmed: its worker stops it and it ends CANCELLED."""
    del worker
    broker = producer.get_broker()
    runs, never = tmp_path / "runs", tmp_path / "never-released"
    task_id = broker.enqueue("wfc.gate", (str(runs), str(never)), {"timeout_s": 120.0})

    def status() -> str:
        row = broker.get_task_sync(task_id)
        return "" if row is None else str(row["status"])

    app = SyceApp(PostgresConfig(database_url=database_url), tick_rate=10)
    async with app.run_test(size=(150, 48)) as pilot:
        await wait_for(pilot, lambda: status() == "RUNNING", timeout=WAIT_S, what="gate running")
        await open_task_detail(pilot, app, task_id, "RUNNING")
        await wait_for(pilot, lambda: isinstance(app.screen, TaskDetailScreen), what="detail")
        await confirm(pilot, "X")
        await wait_for(pilot, lambda: status() == "CANCELLED", timeout=WAIT_S, what="stopped")
