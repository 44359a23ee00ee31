"""Fixtures of the end-to-end tests (the helpers they use are in ``e2e_harness``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from db_rows import Db
from e2e_harness import StartWorker, WorkerProcess
from process_harness import StartedProcesses
from wf_control_harness import Gates


@pytest.fixture(scope="module")
def start_worker(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartWorker]:
    """Factory: ``start_worker("basic", "--processes", "2")`` starts a worker, waits until ready."""
    started = StartedProcesses[WorkerProcess](tmp_path_factory.mktemp("worker-logs"))

    def start(
        app_module: str, *args: str, ready: bool = True, command: list[str] | None = None
    ) -> WorkerProcess:
        """Start ``horsies worker tests.e2e.apps.<app_module>:app *args`` (or ``command``)."""
        log_path = started.next_log("worker")
        worker = WorkerProcess(app_module, database_url, log_path, list(args), command=command)
        return started.add(worker, ready=ready)

    yield start
    started.reap_all()


@pytest.fixture(scope="module")
def db(database_url: str) -> Db:
    return Db(database_url)


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[Gates]:
    """The gate files of one test's ``wf_control`` workflows; every gate is opened at teardown so
    that no worker child stays blocked after a failed test."""
    opened = Gates(tmp_path / "gates")
    yield opened
    opened.release_all()
