"""Producers and a worker through a real PgBouncer in session pooling, on any version: each client
connection keeps one server connection for its life, so prepared statements and LISTEN work as
they do on PostgreSQL itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from apps.pooled import create_app
from e2e_harness import Db, WorkerProcess, wait_until
from horsies.app import Horsies
from horsies.results import LibraryErrorCode
from pgbouncer_harness import Bouncer, StartBouncer
from process_harness import StartedProcesses

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GET_MS = 30_000


@pytest.fixture(scope="module")
def bouncer(start_bouncer: StartBouncer) -> Bouncer:
    # In session pooling every client connection holds a server connection: room for a worker's
    # and a producer's pools.
    return start_bouncer(pool_mode="session", pool_size=40)


@pytest.fixture(scope="module")
def app(bouncer: Bouncer, database_name: str) -> Iterator[Horsies]:
    producer = create_app(bouncer.url(database_name))
    yield producer
    producer.get_broker().close()


@pytest.fixture(scope="module")
def worker(
    bouncer: Bouncer, database_name: str, app: Horsies, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    del app
    started = StartedProcesses[WorkerProcess](tmp_path_factory.mktemp("pgbouncer-worker"))
    url = bouncer.url(database_name)
    log = started.next_log("worker")
    yield started.add(WorkerProcess("pooled", url, log, ["--processes", "2"]), ready=True)
    started.reap_all()


def test_send_and_get(worker: WorkerProcess, app: Horsies, db: Db) -> None:
    handle = app.tasks["pooled.add"].send(2, 3)
    assert handle.get(timeout_ms=GET_MS).unwrap() == 5
    assert db.task(handle.task_id)["status"] == "COMPLETED"


def test_send_many(worker: WorkerProcess, app: Horsies) -> None:
    handles = app.tasks["pooled.add"].send_many([(i, i) for i in range(40)])
    assert [h.get(timeout_ms=GET_MS).unwrap() for h in handles] == [2 * i for i in range(40)]


def test_send_async_and_get_async(worker: WorkerProcess, app: Horsies) -> None:
    task = app.tasks["pooled.async_add"]

    async def round_trip() -> list[int]:
        handles = await asyncio.gather(*(task.send_async(i, 1) for i in range(20)))
        results = await asyncio.gather(*(h.get_async(timeout_ms=GET_MS) for h in handles))
        return [r.unwrap() for r in results]

    assert asyncio.run(round_trip()) == [i + 1 for i in range(20)]


def test_a_retried_task_keeps_both_attempts(
    worker: WorkerProcess, app: Horsies, tmp_path: Path
) -> None:
    handle = app.tasks["pooled.flaky"].send(str(tmp_path / "mark"))
    assert handle.get(timeout_ms=GET_MS).unwrap() == 2
    assert [a.status for a in handle.attempts()] == ["RETRIED", "COMPLETED"]


def test_a_stop_request_reaches_the_worker(worker: WorkerProcess, app: Horsies, db: Db) -> None:
    handle = app.tasks["pooled.sleep"].send(60.0)
    wait_until(lambda: db.status(handle.task_id) == "RUNNING", 20, "the task running")
    assert handle.cancel() is True
    error = handle.get(timeout_ms=GET_MS).unwrap_err()
    assert error.error_code == LibraryErrorCode.TASK_CANCELLED


def test_the_worker_logs_no_database_error(worker: WorkerProcess, app: Horsies) -> None:
    handles = app.tasks["pooled.add"].send_many([(i, 0) for i in range(100)])
    assert [h.get(timeout_ms=GET_MS).unwrap() for h in handles] == list(range(100))
    output = worker.output()
    assert "[ERROR]" not in output, output


def test_a_client_past_the_pool_waits_for_a_server_connection(
    start_bouncer: StartBouncer, database_name: str
) -> None:
    # One server connection, held by the first client for as long as it stays connected.
    small = start_bouncer(pool_mode="session", pool_size=1, settings={"query_wait_timeout": "2"})
    with psycopg.connect(small.conninfo(database_name), autocommit=True) as first:
        first.execute("SELECT 1")
        with (
            pytest.raises(psycopg.OperationalError, match="query_wait_timeout"),
            psycopg.connect(small.conninfo(database_name), connect_timeout=10) as second,
        ):
            second.execute("SELECT 1")
        first.execute("SELECT 1")
