"""Producers and a worker through a real PgBouncer, in each pooling mode.

Session pooling works on any version: each client connection keeps one server connection for its
life, so prepared statements and LISTEN work as they do on PostgreSQL itself. Transaction pooling
runs with PgBouncer's tracking of prepared statements on (``max_prepared_statements``, 1.21 and
later; what happens without it is in test_e2e_pgbouncer_prepared.py) and skips on older versions.
There everything works but notifications: LISTEN is accepted and never hears anything
(test_e2e_pgbouncer_listen.py), so a worker finds its tasks by polling, a waiting ``get()`` sees a
result at its next re-read, and a stop request reaches the worker with its next heartbeat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from apps.pooled import create_app
from e2e_harness import Db, WorkerProcess, wait_until
from horsies import TaskNode
from horsies.app import Horsies
from horsies.broker.programs import FALLBACK_POLL_S
from horsies.results import LibraryErrorCode
from pgbouncer_harness import Bouncer, PgBouncerBinary, StartBouncer
from process_harness import StartedProcesses

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GET_MS = 30_000


@pytest.fixture(scope="module", params=["session", "transaction"])
def pool_mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.fixture(scope="module")
def bouncer(pool_mode: str, pgbouncer: PgBouncerBinary, start_bouncer: StartBouncer) -> Bouncer:
    if pool_mode == "session":
        # Every client connection holds a server connection: room for a worker's and a
        # producer's pools.
        return start_bouncer(pool_mode="session", pool_size=40)
    pgbouncer.skip_without_tracking()
    return start_bouncer(pool_size=4, settings=pgbouncer.transaction_settings)


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


def test_a_waiting_get_sees_the_result_at_its_re_read(
    pool_mode: str, worker: WorkerProcess, app: Horsies
) -> None:
    if pool_mode != "transaction":
        pytest.skip("session pooling delivers the notification (test_e2e_pgbouncer_listen.py)")
    # The task cannot end before get() has read it once and begun to wait (it sleeps for a
    # second); no notification comes, so get() returns at its first re-read.
    handle = app.tasks["pooled.sleep"].send(1.0)
    started = time.monotonic()
    assert handle.get(timeout_ms=GET_MS).unwrap() == 1.0
    assert time.monotonic() - started >= FALLBACK_POLL_S - 0.5


def test_send_many(worker: WorkerProcess, app: Horsies) -> None:
    handles = app.tasks["pooled.add"].send_many([(i, i) for i in range(40)])
    assert [h.get(timeout_ms=GET_MS).unwrap() for h in handles] == [2 * i for i in range(40)]


def test_send_async_and_get_async(worker: WorkerProcess, app: Horsies) -> None:
    task = app.tasks["pooled.async_add"]

    async def round_trip() -> list[int]:
        # Concurrent sends of one loop share their inserts (the send coalescer).
        handles = await asyncio.gather(*(task.send_async(i, 1) for i in range(20)))
        results = await asyncio.gather(*(h.get_async(timeout_ms=GET_MS) for h in handles))
        return [r.unwrap() for r in results]

    assert asyncio.run(round_trip()) == [i + 1 for i in range(20)]


def test_a_retried_task_keeps_both_attempts(
    worker: WorkerProcess, app: Horsies, tmp_path: Path
) -> None:
    handle = app.tasks["pooled.flaky"].send(str(tmp_path / "mark"))
    assert handle.get(timeout_ms=GET_MS).unwrap() == 2
    attempts = handle.attempts()
    assert [a.status for a in attempts] == ["RETRIED", "COMPLETED"]
    assert attempts[0].error_code == "FLAKY"


def test_a_workflow_runs(worker: WorkerProcess, app: Horsies) -> None:
    first = TaskNode(fn=app.tasks["pooled.add"], args=(2, 3))
    second = TaskNode(fn=app.tasks["pooled.double"], waits_for=[first], args_from={"value": first})
    spec = app.workflow("pooled_add_then_double", [first, second], output=second)
    assert spec.start().get(timeout_ms=GET_MS).unwrap() == 10


def test_a_stop_request_reaches_the_worker(worker: WorkerProcess, app: Horsies, db: Db) -> None:
    # In transaction pooling, with the worker's next heartbeat rather than a notification.
    handle = app.tasks["pooled.sleep"].send(60.0)
    wait_until(lambda: db.status(handle.task_id) == "RUNNING", 20, "the task running")
    assert handle.cancel() is True
    error = handle.get(timeout_ms=GET_MS).unwrap_err()
    assert error.error_code == LibraryErrorCode.TASK_CANCELLED
    assert db.status(handle.task_id) == "CANCELLED"


def test_the_worker_logs_no_database_error(worker: WorkerProcess, app: Horsies) -> None:
    # A burst that keeps every loop of the worker busy (claims, finishes, heartbeats, and the
    # reaper and prune passes with their advisory locks, every second).
    handles = app.tasks["pooled.add"].send_many([(i, 0) for i in range(100)])
    assert [h.get(timeout_ms=GET_MS).unwrap() for h in handles] == list(range(100))
    output = worker.output()
    assert "[ERROR]" not in output, output
    assert "prepared statement" not in output, output


def test_in_session_pooling_a_client_past_the_pool_waits_for_a_server_connection(
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
