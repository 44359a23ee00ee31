"""Helpers for end-to-end tests: real ``horsies worker`` subprocesses against a test database.

Workers run as ``[sys.executable, "-m", "horsies", "worker", "tests.e2e.apps.<module>:app", ...]``
with ``cwd`` at the repository root and the database URL in ``HORSIES_E2E_DATABASE_URL``. Their
output goes to a log file (never a pipe that could fill up). Every wait is bounded; teardown
stops only the processes started here. Test modules import from here (a name of its own: several
test folders have a ``conftest``) and get the fixtures from this folder's ``conftest``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from db_rows import Db
from process_harness import ROOT, LoggedProcess, child_env, wait_until

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.results import TaskError, TaskResult

__all__ = [
    "ROOT",
    "Db",
    "StartWorker",
    "WorkerProcess",
    "error_of",
    "producer_app",
    "wait_until",
    "worker_fixture",
]

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


StartWorker = Callable[..., WorkerProcess]


def producer_app(create_app: Callable[[str], Horsies], name: str = "app") -> Any:
    """A module-scoped fixture named ``name``: ``app = producer_app(create_app)`` in a test module.

    The test process's app from ``create_app(database_url)``, with the schema created before any
    worker starts; its broker is closed after the module.
    """

    @pytest.fixture(scope="module", name=name)
    def app(database_url: str) -> Iterator[Horsies]:
        producer = create_app(database_url)
        producer.get_broker().ensure_schema_initialized_sync()
        yield producer
        producer.get_broker().close()

    return app


def worker_fixture(app_module: str, *args: str) -> Any:
    """A module-scoped ``worker`` fixture: ``worker = worker_fixture("basic", "--processes", "2")``.

    One worker of ``tests.e2e.apps.<app_module>`` with the command-line options ``args``, started
    (and ready) after the module's ``app`` fixture created the schema.
    """

    @pytest.fixture(scope="module")
    def worker(start_worker: StartWorker, app: Horsies) -> WorkerProcess:
        del app  # the producer creates the schema before the worker starts
        return start_worker(app_module, *args)

    return worker


def error_of(result: TaskResult[Any, TaskError]) -> TaskError:
    """The error of a result that must be an error (fails with the result otherwise)."""
    assert result.is_err(), result
    return result.unwrap_err()
