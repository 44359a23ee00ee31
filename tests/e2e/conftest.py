"""Helpers for end-to-end tests: real ``horsies worker`` subprocesses against a test database.

Workers run as ``[sys.executable, "-m", "horsies", "worker", "tests.e2e.apps.<module>:app", ...]``
with ``cwd`` at the repository root and the database URL in ``HORSIES_E2E_DATABASE_URL``. Their
output goes to a log file (never a pipe that could fill up). Every wait is bounded; teardown
stops only the processes started here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from horsies.config import PostgresConfig
from process_harness import ROOT, LoggedProcess, child_env, wait_until
from psycopg.rows import dict_row

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = ["ROOT", "Db", "StartWorker", "WorkerProcess", "producer_app", "wait_until"]

ENV_URL = "HORSIES_E2E_DATABASE_URL"


class WorkerProcess(LoggedProcess):
    """One ``horsies worker`` subprocess started by a test."""

    kind = "worker"

    def __init__(
        self,
        app_module: str,
        database_url: str,
        log_path: Path,
        args: list[str],
        command: list[str] | None = None,
    ) -> None:
        if command is None:
            command = [
                sys.executable,
                "-m",
                "horsies",
                "worker",
                f"tests.e2e.apps.{app_module}:app",
                *args,
            ]
        super().__init__(command, child_env({ENV_URL: database_url}), log_path)

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_output(" ready: ", timeout)


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture(scope="module")
def start_worker(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartWorker]:
    """Factory: ``start_worker("basic", "--processes", "2")`` starts a worker, waits until ready."""
    started: list[WorkerProcess] = []
    log_dir = tmp_path_factory.mktemp("worker-logs")

    def start(
        app_module: str, *args: str, ready: bool = True, command: list[str] | None = None
    ) -> WorkerProcess:
        """Start ``horsies worker tests.e2e.apps.<app_module>:app *args`` (or ``command``)."""
        worker = WorkerProcess(
            app_module,
            database_url,
            log_dir / f"worker-{len(started)}.log",
            list(args),
            command=command,
        )
        started.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.reap()


def producer_app(create_app: Callable[[str], Horsies]) -> Any:
    """A module-scoped ``app`` fixture: ``app = producer_app(create_app)`` in a test module.

    The test process's app from ``create_app(database_url)``, with the schema created before any
    worker starts; its broker is closed after the module.
    """

    @pytest.fixture(scope="module")
    def app(database_url: str) -> Iterator[Horsies]:
        producer = create_app(database_url)
        producer.get_broker().ensure_schema_initialized_sync()
        yield producer
        producer.get_broker().close()

    return app


class Db:
    """Direct reads and test-only writes on the tasks table (the worker itself never runs SQL)."""

    def __init__(self, database_url: str) -> None:
        self.conninfo = PostgresConfig(database_url=database_url).conninfo

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            cursor = conn.cursor(row_factory=dict_row)
            return cursor.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(sql, params)  # type: ignore[arg-type]

    def task(self, task_id: str) -> dict[str, Any]:
        rows = self.query("SELECT * FROM horsies_tasks WHERE id = %s", (task_id,))
        assert rows, f"task {task_id} not found"
        return rows[0]

    def status(self, task_id: str) -> str:
        return str(self.task(task_id)["status"])

    def wait_status(self, task_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            row = self.task(task_id)
            return row if row["status"] == status else None

        return wait_until(check, timeout, f"task {task_id} to be {status}")


@pytest.fixture(scope="module")
def db(database_url: str) -> Db:
    return Db(database_url)
