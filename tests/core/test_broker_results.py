"""Result retrieval: every outcome with its exact message, NOTIFY wake-up, fallback
poll, reconnect, and the async twin."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from horsies.broker import PostgresBroker, programs
from horsies.codec import task_result_to_json
from horsies.config import PostgresConfig
from horsies.results import LibraryErrorCode, TaskError, TaskResult


def _finish(
    conninfo: str, task_id: str, result: TaskResult[Any, Any], *, triggers: bool = True
) -> None:
    ok = result.is_ok()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if not triggers:
            # Replica mode skips triggers: the task_done notification is "lost".
            conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE horsies_tasks SET status = %s, result = %s, "
            "completed_at = CASE WHEN %s THEN now() END, failed_at = CASE WHEN %s THEN NULL "
            "ELSE now() END WHERE id = %s",
            ("COMPLETED" if ok else "FAILED", task_result_to_json(result), ok, ok, task_id),
        )


def _set_status(conninfo: str, task_id: str, status: str, reason: str | None = None) -> None:
    """Set a final status without a result, as user SQL might (timestamps keep the CHECKs happy)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "UPDATE horsies_tasks SET status = %(s)s::text, failed_reason = %(r)s, "
            "completed_at = CASE WHEN %(s)s::text = 'COMPLETED' THEN now() END, "
            "failed_at = CASE WHEN %(s)s::text = 'FAILED' THEN now() END WHERE id = %(id)s",
            {"s": status, "r": reason, "id": task_id},
        )


def _in_thread(fn: Callable[[], TaskResult[Any, TaskError]]) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append((fn(), time.monotonic())), daemon=True)
    thread.start()
    return thread, box


def _waiting_get(
    broker: PostgresBroker, timeout_ms: int | None
) -> tuple[str, threading.Thread, list[Any]]:
    """Enqueue a task and call ``get_result`` for it in a thread; returns once that call waits
    (registered, LISTEN active): the task id, the thread and the box its outcome lands in."""
    task_id = broker.enqueue("t")
    thread, box = _in_thread(lambda: broker.get_result(task_id, timeout_ms=timeout_ms))
    _wait_for_waiter(broker)
    return task_id, thread, box


def _wait_for_waiter(broker: PostgresBroker, timeout: float = 5.0) -> None:
    """Bounded wait until some get_result call is registered and LISTEN is active."""
    deadline = time.monotonic() + timeout
    waiters = broker._waiters  # pyright: ignore[reportPrivateUsage]
    while time.monotonic() < deadline:
        sub = waiters._subscription  # pyright: ignore[reportPrivateUsage]
        if waiters._waiters and sub is not None and sub.active:  # pyright: ignore[reportPrivateUsage]
            return
        time.sleep(0.005)
    pytest.fail("no waiter registered in time")


def test_completed_task_returns_its_own_ok_result(broker: PostgresBroker, clean_db: str) -> None:
    task_id = broker.enqueue("t")
    _finish(clean_db, task_id, TaskResult(ok={"answer": 42}))
    assert broker.get_result(task_id) == TaskResult(ok={"answer": 42})


def test_failed_task_returns_its_own_error(broker: PostgresBroker, clean_db: str) -> None:
    task_id = broker.enqueue("t")
    _finish(clean_db, task_id, TaskResult(err=TaskError(error_code="RATE_LIMITED", message="slow")))
    result = broker.get_result(task_id, timeout_ms=1000)
    assert result.is_err()
    assert result.err_value.error_code == "RATE_LIMITED"
    assert result.err_value.message == "slow"


def test_missing_task_is_task_not_found(broker: PostgresBroker) -> None:
    result = broker.get_result("no-such-task")
    assert result.err_value.error_code == LibraryErrorCode.TASK_NOT_FOUND
    assert result.err_value.message == "Task no-such-task not found in database"
    assert result.err_value.data == {"task_id": "no-such-task"}


def test_cancelled_task_is_task_cancelled(broker: PostgresBroker, clean_db: str) -> None:
    task_id = broker.enqueue("t")
    _set_status(clean_db, task_id, "CANCELLED")
    result = broker.get_result(task_id)
    assert result.err_value.error_code == LibraryErrorCode.TASK_CANCELLED
    assert result.err_value.message == f"Task {task_id} was cancelled before completion"


def test_timeout_is_wait_timeout_with_documented_message(broker: PostgresBroker) -> None:
    task_id = broker.enqueue("t")
    started = time.monotonic()
    result = broker.get_result(task_id, timeout_ms=250)
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 3
    assert result.err_value.error_code == LibraryErrorCode.WAIT_TIMEOUT
    assert result.err_value.message == (
        f"Timed out waiting for task {task_id} after 250ms. Task may still be running."
    )
    assert result.err_value.data == {"task_id": task_id, "timeout_ms": 250}


def test_finished_rows_without_result_are_reported_not_raised(
    broker: PostgresBroker, clean_db: str
) -> None:
    failed = broker.enqueue("t")
    _set_status(clean_db, failed, "FAILED", "killed by ops")
    done = broker.enqueue("t")
    _set_status(clean_db, done, "COMPLETED")
    crashed = broker.get_result(failed).err_value
    assert (crashed.error_code, crashed.message) == (
        LibraryErrorCode.WORKER_CRASHED,
        "killed by ops",
    )
    assert broker.get_result(done).err_value.error_code == LibraryErrorCode.RESULT_NOT_AVAILABLE


@pytest.mark.parametrize("timeout_ms", [None, 0])
def test_none_and_zero_timeout_wait_until_completion(
    broker: PostgresBroker, clean_db: str, timeout_ms: int | None
) -> None:
    task_id, thread, box = _waiting_get(broker, timeout_ms=timeout_ms)
    _finish(clean_db, task_id, TaskResult(ok=1))
    thread.join(10)
    assert box[0][0] == TaskResult(ok=1)


def test_notification_wakes_the_waiter_well_before_the_fallback_poll(
    broker: PostgresBroker, clean_db: str
) -> None:
    task_id, thread, box = _waiting_get(broker, timeout_ms=30_000)
    finished_at = time.monotonic()
    _finish(clean_db, task_id, TaskResult(ok="done"))
    thread.join(10)
    result, returned_at = box[0]
    assert result == TaskResult(ok="done")
    assert returned_at - finished_at < 1.0  # fallback poll is 5 s


def test_lost_notification_is_covered_by_the_fallback_poll(
    broker: PostgresBroker, clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(programs, "FALLBACK_POLL_S", 0.3)
    task_id, thread, box = _waiting_get(broker, timeout_ms=20_000)
    _finish(clean_db, task_id, TaskResult(ok=2), triggers=False)
    thread.join(10)
    assert box[0][0] == TaskResult(ok=2)


def test_listener_reconnect_makes_waiters_re_read(broker: PostgresBroker, clean_db: str) -> None:
    task_id, thread, box = _waiting_get(broker, timeout_ms=20_000)
    _finish(clean_db, task_id, TaskResult(ok=3), triggers=False)
    poked_at = time.monotonic()
    broker.listener.force_reconnect()
    thread.join(10)
    result, returned_at = box[0]
    assert result == TaskResult(ok=3)
    assert returned_at - poked_at < 3.0  # woken by the reconnect, not by the 5 s poll


def test_notification_without_final_status_is_wait_timeout(
    broker: PostgresBroker, clean_db: str
) -> None:
    task_id, thread, box = _waiting_get(broker, timeout_ms=20_000)
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("SELECT pg_notify('task_done', %s)", (task_id,))
    thread.join(10)
    error = box[0][0].err_value
    assert error.error_code == LibraryErrorCode.WAIT_TIMEOUT
    assert "PENDING" in error.message
    assert error.data == {"task_id": task_id, "timeout_ms": 20_000}


def test_broker_failure_is_broker_error_result(database_url: str) -> None:
    broken = PostgresBroker(
        PostgresConfig(database_url=database_url.replace("/horsies_t", "/missing_"), pool_timeout=1)
    )
    try:
        result = broken.get_result("abc", timeout_ms=500)
    finally:
        broken.close()
    error = result.err_value
    assert error.error_code == LibraryErrorCode.BROKER_ERROR
    assert error.message == "Broker error while retrieving task result"
    assert error.data == {"task_id": "abc", "timeout_ms": 500}
    assert isinstance(error.exception, Exception)


async def test_get_result_async_is_woken_by_notification(
    broker: PostgresBroker, clean_db: str
) -> None:
    task_id = await broker.enqueue_async("t")
    waiting = asyncio.create_task(broker.get_result_async(task_id, timeout_ms=30_000))
    await asyncio.to_thread(_wait_for_waiter, broker)
    finished_at = time.monotonic()
    await asyncio.to_thread(_finish, clean_db, task_id, TaskResult(ok=[1, 2]))
    result = await asyncio.wait_for(waiting, 10)
    assert result == TaskResult(ok=[1, 2])
    assert time.monotonic() - finished_at < 1.0
    await broker.close_async()


async def test_get_result_async_outcomes(broker: PostgresBroker, clean_db: str) -> None:
    assert (await broker.get_result_async("nope")).err_value.error_code == (
        LibraryErrorCode.TASK_NOT_FOUND
    )
    task_id = await broker.enqueue_async("t")
    timed_out = await broker.get_result_async(task_id, timeout_ms=100)
    assert timed_out.err_value.error_code == LibraryErrorCode.WAIT_TIMEOUT
    await asyncio.to_thread(_set_status, clean_db, task_id, "CANCELLED")
    cancelled = await broker.get_result_async(task_id)
    assert cancelled.err_value.error_code == LibraryErrorCode.TASK_CANCELLED


async def test_get_result_async_propagates_cancellation(broker: PostgresBroker) -> None:
    task_id = await broker.enqueue_async("t")
    waiting = asyncio.create_task(broker.get_result_async(task_id))
    await asyncio.to_thread(_wait_for_waiter, broker)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not broker._waiters._waiters  # pyright: ignore[reportPrivateUsage]


def test_many_concurrent_waiters_each_get_their_own_result(
    broker: PostgresBroker, clean_db: str
) -> None:
    ids = [broker.enqueue("t", (i,)) for i in range(20)]

    async def wait_all() -> list[TaskResult[Any, TaskError]]:
        try:
            return await asyncio.gather(
                *(broker.get_result_async(t, timeout_ms=20_000) for t in ids)
            )
        finally:
            await broker.close_async()

    def finisher() -> None:
        _wait_for_waiter(broker)
        for i, task_id in enumerate(ids):
            _finish(clean_db, task_id, TaskResult(ok=i))

    thread = threading.Thread(target=finisher)
    thread.start()
    results = asyncio.run(wait_all())
    thread.join(10)
    assert results == [TaskResult(ok=i) for i in range(20)]


@pytest.mark.timeout(90)
def test_asyncio_run_returns_when_the_loop_ends_while_the_pool_grows(database_url: str) -> None:
    """Each ``asyncio.run`` of a burst of async calls returns (the loop's async pool is closed
    when asyncio.run cancels the remaining tasks, even while it is still opening connections)."""
    broker = PostgresBroker(PostgresConfig(database_url=database_url))
    broker.ensure_schema_initialized_sync()

    async def burst() -> list[dict[str, Any] | None]:
        return await asyncio.gather(*(broker.get_task(str(uuid.uuid4())) for _ in range(12)))

    try:
        for _ in range(15):
            assert asyncio.run(burst()) == [None] * 12
    finally:
        broker.close()
