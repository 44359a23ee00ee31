"""pytest fixtures for testing code that uses horsies (docs/testing.md). Enable them with one line
in your top-level ``conftest.py``::

    pytest_plugins = ["horsies.testing.pytest_plugin"]

Nothing starts until a test asks for a fixture. Each test process (pytest-xdist runs several)
has its own server, or its own databases on the server ``HORSIES_TEST_DATABASE_URL`` names.

- ``horsies_server`` (session): the `ThrowawayServer`, with horsies' schema in its template.
- ``horsies_database_url``: URL of the process's database, emptied before the test (fast).
- ``horsies_fresh_database_url``: URL of a database of the test's own, copied from the template
  and dropped after it (slower: for a test that must not share a database).
- ``horsies_app``: yours to define, returning your app pointed at the test's database; the
  fixtures that need an app take it from there.
- ``horsies_run_pending``: ``horsies_run_pending()`` runs the due tasks of ``horsies_app`` now
  (`run_pending`).
- ``horsies_worker``: ``horsies_worker("myapp.tasks:app", env={...})`` starts a real worker, ready
  when it returns; every worker it started is stopped after the test.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

from horsies.testing.databases import ThrowawayServer, throwaway_server
from horsies.testing.in_process import RanTask, run_pending
from horsies.testing.worker_process import READY_TIMEOUT_S, WorkerProcess, start_worker

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = [
    "StartWorker",
    "horsies_app",
    "horsies_database_url",
    "horsies_fresh_database_url",
    "horsies_run_pending",
    "horsies_server",
    "horsies_session_database_url",
    "horsies_worker",
]


class StartWorker(Protocol):
    """The ``horsies_worker`` fixture: starts a worker for the test (see `start_worker`)."""

    def __call__(
        self,
        locator: str,
        *,
        env: Mapping[str, str] | None = None,
        processes: int = 1,
        args: Sequence[str] = (),
        cwd: str | Path | None = None,
        database_url: str | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> WorkerProcess: ...


@pytest.fixture(scope="session")
def horsies_server() -> Iterator[ThrowawayServer]:
    """The session's PostgreSQL server and migrated template (embedded, or the server
    ``HORSIES_TEST_DATABASE_URL`` names); stopped, or cleaned of what it created, at the end."""
    with throwaway_server() as server:
        yield server


@pytest.fixture(scope="session")
def horsies_session_database_url(horsies_server: ThrowawayServer) -> Iterator[str]:
    """URL of this process's database: the one ``horsies_database_url`` empties before each
    test. For session-scoped fixtures of yours; nothing empties it for them."""
    with horsies_server.database() as url:
        yield url


@pytest.fixture
def horsies_database_url(horsies_server: ThrowawayServer, horsies_session_database_url: str) -> str:
    """``postgresql+psycopg://`` URL of a database with horsies' schema and no rows: the
    process's database, emptied before the test."""
    horsies_server.empty_database(horsies_session_database_url)
    return horsies_session_database_url


@pytest.fixture
def horsies_fresh_database_url(horsies_server: ThrowawayServer) -> Iterator[str]:
    """``postgresql+psycopg://`` URL of a database of this test's own (a copy of the template),
    dropped after it."""
    with horsies_server.database() as url:
        yield url


@pytest.fixture
def horsies_app() -> Horsies:
    """Your app, pointed at the test's database: define this fixture in your conftest.py."""
    pytest.fail(
        "define a fixture named horsies_app in your conftest.py that yields your app pointed at "
        "the test's database, e.g.\n"
        "    @pytest.fixture\n"
        "    def horsies_app(horsies_database_url):\n"
        "        with use_database(app, horsies_database_url):\n"
        "            yield app",
        pytrace=False,
    )


@pytest.fixture
def horsies_run_pending(horsies_app: Horsies) -> Callable[..., list[RanTask]]:
    """``horsies_run_pending(**options)``: `run_pending` of ``horsies_app``, now."""
    return functools.partial(run_pending, horsies_app)


@pytest.fixture
def horsies_worker(horsies_database_url: str, tmp_path: Path) -> Iterator[StartWorker]:
    """Start real workers for the test: ``horsies_worker(locator, env=..., processes=1)``, ready
    when it returns (see `start_worker`; ``database_url`` defaults to ``horsies_database_url``).
    Each is stopped after the test (SIGTERM, then SIGKILL), and its output is printed, which pytest
    shows for a test that failed."""
    started: list[WorkerProcess] = []

    def start(
        locator: str,
        *,
        env: Mapping[str, str] | None = None,
        processes: int = 1,
        args: Sequence[str] = (),
        cwd: str | Path | None = None,
        database_url: str | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> WorkerProcess:
        worker = start_worker(
            locator,
            database_url=database_url or horsies_database_url,
            env=env,
            processes=processes,
            args=args,
            cwd=cwd,
            log_path=tmp_path / f"horsies-worker-{len(started)}.log",
            ready_timeout_s=ready_timeout_s,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
        print(f"--- horsies worker {worker.locator} (pid {worker.pid}) ---\n{worker.output()}")
