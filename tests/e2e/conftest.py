"""Fixtures of the end-to-end tests (the helpers they use are in ``e2e_harness``, and for the
PgBouncer tests in ``pgbouncer_harness``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from db_rows import Db
from e2e_harness import StartWorker, WorkerProcess
from pgbouncer_harness import (
    PGBOUNCER_ENV,
    Bouncer,
    PgBouncerBinary,
    StartBouncer,
    find_pgbouncer,
    pgbouncer_version,
)
from pgbouncer_harness import start_bouncer as start_pgbouncer
from process_harness import StartedProcesses
from wf_control_harness import Gates

if TYPE_CHECKING:
    from tests.conftest import PgCluster


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


@pytest.fixture(scope="session")
def pgbouncer() -> PgBouncerBinary:
    """The installed PgBouncer; the test is skipped when there is none."""
    path = find_pgbouncer()
    if path is None:
        pytest.skip(
            "PgBouncer is not installed: apt-get install pgbouncer, "
            f"or name a binary in {PGBOUNCER_ENV}"
        )
    return PgBouncerBinary(path, pgbouncer_version(path))


@pytest.fixture(scope="module")
def start_bouncer(pgbouncer: PgBouncerBinary, pg_cluster: PgCluster) -> Iterator[StartBouncer]:
    """Factory: ``start_bouncer(pool_mode="transaction", settings={...})`` starts a PgBouncer in
    front of the suite's server (see ``pgbouncer_harness.start_bouncer``); every bouncer it
    started is stopped after the module."""
    started: list[Bouncer] = []

    def start(**options: Any) -> Bouncer:
        bouncer = start_pgbouncer(pgbouncer.path, pg_cluster.admin_conninfo, **options)
        started.append(bouncer)
        return bouncer

    yield start
    for bouncer in started:
        bouncer.reap()
