"""The broker under connection faults (issue 7, scenarios 3-4), one focused test per fix:

- pooled connections the server terminated are noticed at checkout without a round trip, and
  their dead siblings are dropped at once (no failed statement, no pool back-off);
- a pool timeout says why no connection came (the driver's reason, or "all in use");
- driver errors say "connection to the database lost" and carry ``connection_lost``;
- an enqueue or a start whose connection is lost mid-statement is repeated without ever being
  applied twice, and a start that had committed is not reported lost;
- ``get()`` waits through a database outage and honours its deadline while the database is down.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from db_rows import row, sql
from horsies.broker import BrokerError, ClaimRequest, PostgresBroker, QueueClaimSpec, steps
from horsies.broker.pool_rules import ConnectFailures, has_unread_input, next_delay
from horsies.broker.programs import Run
from horsies.broker.steps import Query, run_query
from horsies.codec import task_result_to_json
from horsies.config import PostgresConfig
from horsies.results import LibraryErrorCode, TaskResult
from lost_connection import lose_next_call
from process_harness import wait_until


def _terminate_others(conninfo: str, application_name: str = "horsies") -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        found = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name = %s",
            (application_name,),
        ).fetchone()
    return int(found[0]) if found else 0


def _unreachable_url(tmp_path: Path) -> str:
    """A URL whose Unix socket does not exist (what clients see while the server is down)."""
    return f"postgresql+psycopg://postgres@/horsies?host={tmp_path}"


# -- pools -----------------------------------------------------------------------------------------


def test_terminated_pooled_connections_are_replaced_without_a_failed_send(
    database_url: str, clean_db: str
) -> None:
    broker = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=3))
    try:
        for _ in range(6):  # every pooled connection used recently: no idle pre-ping
            broker.enqueue("t")
        assert _terminate_others(clean_db) >= 1
        t0 = time.monotonic()
        ids = [broker.enqueue("t") for _ in range(6)]
        took = time.monotonic() - t0
    finally:
        broker.close()
    assert len(sql(clean_db, "SELECT id FROM horsies_tasks")) == 12
    assert len(set(ids)) == 6
    assert took < 0.9, took  # dead idle connections are dropped at once, without a back-off


def test_unread_input_marks_a_terminated_connection(clean_db: str) -> None:
    with psycopg.connect(clean_db, autocommit=True, application_name="victim") as conn:
        assert not has_unread_input(conn)
        assert _terminate_others(clean_db, "victim") == 1
        wait_until(lambda: has_unread_input(conn), 5, "the termination notice", interval=0.01)


def test_pool_timeout_says_the_database_is_unreachable_and_why(tmp_path: Path) -> None:
    broker = PostgresBroker(PostgresConfig(database_url=_unreachable_url(tmp_path), pool_timeout=1))
    try:
        with pytest.raises(BrokerError) as raised:
            broker.enqueue("t")
    finally:
        broker.close()
    error = raised.value
    assert error.unreachable
    assert not error.connection_lost
    assert "enqueue failed: database unreachable: no connection within 1s" in str(error)
    assert "No such file or directory" in str(error)


async def test_pool_timeout_of_a_busy_pool_says_all_connections_are_in_use(
    database_url: str,
) -> None:
    broker = PostgresBroker(
        PostgresConfig(database_url=database_url, pool_size=1, max_overflow=0, pool_timeout=1)
    )
    try:
        await broker.ensure_schema_initialized()
        busy = asyncio.create_task(
            broker.execute_async(run_query(Query("SELECT pg_sleep(3)")), action="sleeping")
        )
        await asyncio.sleep(0.2)  # let the sleeper take the pool's only connection
        with pytest.raises(BrokerError) as raised:
            await broker.get_queue_stats()
        await busy
    finally:
        await broker.close_async()
    assert not raised.value.unreachable
    assert "all 1 connections of the pool are in use" in str(raised.value)


def test_pools_retry_connecting_at_least_every_two_seconds() -> None:
    delays = [next_delay(attempt) for attempt in range(1, 11)]
    assert delays[:4] == [0.25, 0.5, 1.0, 2.0]
    assert (
        delays[4:] == [2.0] * 6
    )  # back within about 2 s of the database, however long it was away


def test_repeated_connection_errors_are_logged_once_per_pool_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    one, two = ConnectFailures("horsies-one"), ConnectFailures("horsies-two")
    with caplog.at_level(logging.WARNING, logger="horsies"):
        for failures in (one, one, two, one):
            failures.record(OSError("connection refused for postgresql://u:secret@h/db"))
    lines = [r.getMessage() for r in caplog.records if "error connecting" in r.getMessage()]
    assert lines == [
        "error connecting in 'horsies-one': connection refused for postgresql://u:***@h/db",
        "error connecting in 'horsies-two': connection refused for postgresql://u:***@h/db",
    ]
    one.clear()  # a success: the next failure is news again
    with caplog.at_level(logging.WARNING, logger="horsies"):
        one.record(OSError("connection refused"))
    assert (
        caplog.records[-1].getMessage() == "error connecting in 'horsies-one': connection refused"
    )


# -- errors ----------------------------------------------------------------------------------------


def test_a_statement_cut_by_the_server_is_connection_lost(database_url: str, clean_db: str) -> None:
    broker = PostgresBroker(PostgresConfig(database_url=database_url))
    box: list[BaseException] = []

    def sleep_in_database() -> None:
        try:
            broker.execute(
                steps.run_query(steps.Query("SELECT pg_sleep(30)", {})), action="sleeping"
            )
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=sleep_in_database, daemon=True)
    try:
        thread.start()
        wait_until(
            lambda: sql(
                clean_db,
                "SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'"
                " AND datname = current_database()",
            ),
            10,
            "the statement to run",
        )
        _terminate_others(clean_db)
        thread.join(10)
    finally:
        broker.close()
    [error] = box
    assert isinstance(error, BrokerError)
    assert error.connection_lost
    assert "sleeping failed: connection to the database lost: " in str(error)
    # psycopg 3.3 names the server's error class; 3.2 reports the libpq message only.
    assert "AdminShutdown" in str(error) or "terminating connection" in str(error)


# -- enqueue and start, repeated after a lost connection ----------------------------------------


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
def test_enqueue_lost_mid_statement_is_stored_exactly_once(
    broker: PostgresBroker, clean_db: str, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    broker.ensure_schema_initialized_sync()
    calls = lose_next_call(monkeypatch, broker, run_first=committed)
    task_id = broker.enqueue("t", (1,))
    assert row(clean_db, task_id)["args"] == "[1]"
    assert calls[:2] == ["enqueue", "enqueue"]
    assert calls[2:] == (["enqueue check"] if committed else [])


async def test_enqueue_many_async_lost_after_commit_is_not_an_error(
    broker: PostgresBroker, clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from horsies.broker import EnqueueRequest

    await broker.ensure_schema_initialized()
    lose_next_call(monkeypatch, broker, run_first=True)
    ids = await broker.enqueue_many_async([EnqueueRequest("t", (i,)) for i in range(3)])
    assert len(sql(clean_db, "SELECT id FROM horsies_tasks")) == 3
    assert {row(clean_db, i)["id"] for i in ids} == set(ids)


def test_a_taken_id_is_still_refused_after_a_lost_attempt(
    broker: PostgresBroker, clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.enqueue("other", task_id="taken")
    lose_next_call(monkeypatch, broker, run_first=False)
    with pytest.raises(BrokerError) as raised:
        broker.enqueue("t", task_id="taken")
    assert raised.value.sqlstate == "23505"
    assert "may have been stored" not in str(raised.value)
    assert row(clean_db, "taken")["task_name"] == "other"


async def test_start_lost_after_commit_still_reports_the_task_started(
    broker: PostgresBroker, clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await broker.enqueue_async("t", task_id="s1")
    request = ClaimRequest(queues=[QueueClaimSpec("default")], local_budget=1, max_claim_batch=0)
    assert [t.key for t in await broker.claim_async("w1", request)] == [("s1", 1)]
    lose_next_call(monkeypatch, broker, run_first=True)
    assert await broker.start_async("w1", "host", [("s1", 1, 41)]) == {("s1", 1)}
    assert row(clean_db, "s1")["status"] == "RUNNING"
    monkeypatch.undo()
    # A separate later call still refuses to start a running task.
    assert await broker.start_async("w1", "host", [("s1", 1, 41)]) == set()


# -- result waits ----------------------------------------------------------------------------------


def _waiting(broker: PostgresBroker) -> bool:
    waiters = broker._waiters  # pyright: ignore[reportPrivateUsage]
    sub = waiters._subscription  # pyright: ignore[reportPrivateUsage]
    return bool(waiters._waiters) and sub is not None and sub.active  # pyright: ignore[reportPrivateUsage]


class _Outage:
    """Switches the broker's result reads between failing as unreachable and working, and counts
    the reads that failed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, broker: PostgresBroker) -> None:
        self.down = threading.Event()
        self.failed_reads = 0
        driver = broker._sync  # pyright: ignore[reportPrivateUsage]
        real = driver.run

        def run(effect: Run[Any], *, bootstrap: bool = False) -> Any:
            if effect.action == "get_result" and self.down.is_set():
                self.failed_reads += 1
                raise BrokerError("get_result failed: database unreachable", unreachable=True)
            return real(effect, bootstrap=bootstrap)

        monkeypatch.setattr(driver, "run", run)


def _get_in_background(
    broker: PostgresBroker, task_id: str, timeout_ms: int
) -> tuple[threading.Thread, list[TaskResult[Any, Any]]]:
    """Start ``broker.get_result`` on a thread; return once its waiter listens."""
    box: list[TaskResult[Any, Any]] = []
    thread = threading.Thread(
        target=lambda: box.append(broker.get_result(task_id, timeout_ms=timeout_ms)), daemon=True
    )
    thread.start()
    wait_until(lambda: _waiting(broker), 5, "the get to wait", interval=0.005)
    return thread, box


def test_get_waits_through_an_outage_and_returns_the_result(
    broker: PostgresBroker, clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = broker.enqueue("t")
    outage = _Outage(monkeypatch, broker)
    thread, box = _get_in_background(broker, task_id, 20_000)
    outage.down.set()
    broker.listener.force_reconnect()  # the waiter re-reads: it fails, and it keeps waiting
    wait_until(lambda: outage.failed_reads, 5, "a read during the outage")
    assert thread.is_alive()
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute(
            "UPDATE horsies_tasks SET status = 'COMPLETED', result = %s, completed_at = now()"
            " WHERE id = %s",
            (task_result_to_json(TaskResult(ok=7)), task_id),
        )
    outage.down.clear()
    thread.join(10)
    assert box == [TaskResult(ok=7)]


def test_get_during_an_outage_ends_at_its_deadline_with_the_reason(
    broker: PostgresBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = broker.enqueue("t")
    outage = _Outage(monkeypatch, broker)
    thread, box = _get_in_background(broker, task_id, 1_500)
    outage.down.set()
    broker.listener.force_reconnect()
    thread.join(10)
    error = box[0].unwrap_err()
    assert error.error_code == LibraryErrorCode.BROKER_ERROR
    assert "database unreachable" in str(error.exception)


def test_get_while_unreachable_honours_a_deadline_shorter_than_pool_timeout(
    tmp_path: Path,
) -> None:
    broker = PostgresBroker(
        PostgresConfig(database_url=_unreachable_url(tmp_path), pool_timeout=30)
    )
    try:
        t0 = time.monotonic()
        result = broker.get_result("abc", timeout_ms=500)
        took = time.monotonic() - t0
    finally:
        broker.close()
    error = result.unwrap_err()
    assert error.error_code == LibraryErrorCode.BROKER_ERROR
    assert "database unreachable" in str(error.exception)
    assert took < 5, took


def test_listener_logs_one_warning_per_five_failed_reconnects(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from horsies.broker.listener import NotificationListener

    attempts: list[float] = []

    def refuse(self: NotificationListener) -> None:
        attempts.append(time.monotonic())
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(NotificationListener, "_connect", refuse)
    with caplog.at_level(logging.WARNING, logger="horsies.listener"):
        listener = NotificationListener("postgresql://nobody@/nowhere")
        try:
            wait_until(lambda: len(attempts) >= 5, 15, "five reconnect attempts", interval=0.02)
        finally:
            listener.close()
    failures = [r for r in caplog.records if "listener connection" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert "connection refused" in failures[0].getMessage()
