"""What the Syce tests that watch a real worker share: the worker process, and opening the detail
of one task from the Tasks tab as an operator would."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from process_harness import LoggedProcess, child_env
from syce.app import SyceApp
from syce.models import TasksData
from syce.screens.tasks import TasksPane
from syce_seed import wait_for
from textual.pilot import Pilot

READY_TIMEOUT_S = 60.0
WAIT_S = 30.0


@contextmanager
def running_worker(
    database_url: str, locator: str, log_dir: Path, *args: str
) -> Iterator[LoggedProcess]:
    """One ``horsies worker`` of the end-to-end tests' app ``locator`` while the block runs."""
    command = [sys.executable, "-m", "horsies", "worker", locator, *args]
    env = child_env({"HORSIES_E2E_DATABASE_URL": database_url})
    process = LoggedProcess(command, env, log_dir / "worker.log")
    try:
        process.wait_output(" ready: ", READY_TIMEOUT_S)
        yield process
    finally:
        process.reap()
        # Shown by pytest only when a test using this worker failed.
        print(process.output())


async def open_task_detail(pilot: Pilot[Any], app: SyceApp, task_id: str, status: str) -> None:
    """On the Tasks tab, find the task by its id while it has ``status``, expand its worker's group
    and open its detail."""
    await pilot.press("3")
    tasks = cast(TasksPane, app.pane("tasks"))
    await pilot.press("slash", *task_id[:12], "enter")
    await wait_for(
        pilot,
        lambda: (
            (data := cast(TasksData | None, tasks.data)) is not None
            and sum(g.counts.get(status, 0) for g in data.groups) == 1
        ),
        timeout=WAIT_S,
        what=f"the {status} task found by its id",
    )
    await pilot.press("enter")  # expand its worker's group
    await wait_for(pilot, lambda: cast(TasksData, tasks.data).expanded not in (None, ""))
    await pilot.press("down")
    assert tasks.current_task_id() == task_id
    await pilot.press("enter")
