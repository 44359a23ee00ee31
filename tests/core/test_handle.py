"""`TaskHandle`: preset results, a timeout is a WAIT_TIMEOUT result (never raised), and only final
outcomes are cached."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, LiteralString, cast

import psycopg
import pytest
from horsies.app import Horsies
from horsies.codec import task_result_to_json
from horsies.config import PostgresConfig
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.tasks.handle import ERROR_TASK_ID, SUPPRESSED_TASK_ID, TaskHandle

if TYPE_CHECKING:
    from horsies.broker import PostgresBroker


def err(code: LibraryErrorCode | str, message: str = "m") -> TaskResult[Any, TaskError]:
    return TaskResult(err=TaskError(error_code=code, message=message))


class FakeBroker:
    """Returns queued results in order and counts the calls."""

    def __init__(self, *results: TaskResult[Any, TaskError] | Exception) -> None:
        self.results = list(results)
        self.calls: list[tuple[str, int | None]] = []

    def _next(self, task_id: str, timeout_ms: int | None) -> TaskResult[Any, TaskError]:
        self.calls.append((task_id, timeout_ms))
        outcome = self.results.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def get_result(self, task_id: str, timeout_ms: int | None = None) -> TaskResult[Any, TaskError]:
        return self._next(task_id, timeout_ms)

    async def get_result_async(
        self, task_id: str, timeout_ms: int | None = None
    ) -> TaskResult[Any, TaskError]:
        return self._next(task_id, timeout_ms)


def handle_for(broker: FakeBroker) -> TaskHandle[Any]:
    return TaskHandle("abc", broker=cast("PostgresBroker", broker))


def test_preset_result_needs_no_broker() -> None:
    preset = err(LibraryErrorCode.SEND_SUPPRESSED)
    handle: TaskHandle[int] = TaskHandle("<suppressed>", result=preset)
    assert handle.get() is preset
    assert handle.task_id == "<suppressed>"


async def test_preset_result_async() -> None:
    preset: TaskResult[int, TaskError] = TaskResult(ok=3)
    assert await TaskHandle("x", result=preset).get_async() is preset


def test_no_broker_and_no_result() -> None:
    result = TaskHandle[int]("some-id").get()
    error = result.unwrap_err()
    assert error.error_code is LibraryErrorCode.RESULT_NOT_AVAILABLE
    assert error.message == "Result not available - task may not have been executed"


@pytest.mark.parametrize(
    "final",
    [
        TaskResult(ok=1),
        TaskResult(ok=None),
        err("MY_DOMAIN_ERROR"),
        err(LibraryErrorCode.UNHANDLED_EXCEPTION),
        err(LibraryErrorCode.TASK_CANCELLED),
        err(LibraryErrorCode.TASK_NOT_FOUND),
        err("TASK_NOT_FOUND"),  # read back from the database as a plain string
    ],
)
def test_final_outcomes_are_cached(final: TaskResult[Any, TaskError]) -> None:
    broker = FakeBroker(final)
    handle = handle_for(broker)
    assert handle.get(100) is final
    assert handle.get(100) is final
    assert broker.calls == [("abc", 100)]


@pytest.mark.parametrize("code", [LibraryErrorCode.WAIT_TIMEOUT, "BROKER_ERROR"])
def test_transient_outcomes_are_not_cached(code: LibraryErrorCode | str) -> None:
    transient = err(code)
    broker = FakeBroker(transient, TaskResult(ok=5))
    handle = handle_for(broker)
    assert handle.get(10) is transient
    assert handle.get() == TaskResult(ok=5)
    assert handle.get() == TaskResult(ok=5)
    assert broker.calls == [("abc", 10), ("abc", None)]


async def test_async_caching_follows_the_same_rules() -> None:
    broker = FakeBroker(err(LibraryErrorCode.WAIT_TIMEOUT), TaskResult(ok="done"))
    handle = handle_for(broker)
    assert (await handle.get_async(5)).unwrap_err().error_code == "WAIT_TIMEOUT"
    assert await handle.get_async() == TaskResult(ok="done")
    assert await handle.get_async() == TaskResult(ok="done")
    assert len(broker.calls) == 2


def test_an_exception_from_the_broker_becomes_broker_error() -> None:
    boom = RuntimeError("connection reset")
    broker = FakeBroker(boom, TaskResult(ok=1))
    handle = handle_for(broker)
    error = handle.get(250).unwrap_err()
    assert error.error_code is LibraryErrorCode.BROKER_ERROR
    assert error.message == "Broker error while retrieving task result"
    assert error.data == {"task_id": "abc", "timeout_ms": 250}
    assert error.exception is boom
    assert handle.get() == TaskResult(ok=1)


# -- against PostgreSQL ---------------------------------------------------------------------------


def run_sql(url: str, sql: LiteralString, params: tuple[Any, ...]) -> None:
    with psycopg.connect(PostgresConfig(database_url=url).conninfo, autocommit=True) as conn:
        conn.execute(sql, params)


def test_timeout_then_completion(app: Horsies, database_url: str) -> None:
    @app.task("handle.wait")
    def wait() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    handle = wait.send()
    timed_out = handle.get(timeout_ms=50).unwrap_err()
    assert timed_out.error_code == LibraryErrorCode.WAIT_TIMEOUT

    run_sql(
        database_url,
        "UPDATE horsies_tasks SET status = 'FAILED', result = %s, failed_at = now() WHERE id = %s",
        (task_result_to_json(err("RATE_LIMITED", "later")), handle.task_id),
    )
    stored = handle.get(timeout_ms=10_000).unwrap_err()
    assert stored.error_code == "RATE_LIMITED"
    assert stored.message == "later"
    run_sql(database_url, "DELETE FROM horsies_tasks WHERE id = %s", (handle.task_id,))
    assert handle.get().unwrap_err().message == "later"  # cached: no database access


def test_waiter_wakes_when_the_task_finishes(app: Horsies, database_url: str) -> None:
    @app.task("handle.wake")
    def wake() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    handle = wake.send()
    results: list[TaskResult[int, TaskError]] = []
    waiter = threading.Thread(target=lambda: results.append(handle.get(timeout_ms=30_000)))
    waiter.start()
    run_sql(
        database_url,
        "UPDATE horsies_tasks SET status = 'COMPLETED', result = %s, completed_at = now() "
        "WHERE id = %s",
        (task_result_to_json(TaskResult(ok=99)), handle.task_id),
    )
    waiter.join(timeout=30)
    assert results == [TaskResult(ok=99)]


async def test_unknown_task_id(app: Horsies) -> None:
    handle: TaskHandle[int] = TaskHandle("00000000-0000-4000-8000-000000000000", app.get_broker())
    error = (await handle.get_async(timeout_ms=1_000)).unwrap_err()
    assert error.error_code == LibraryErrorCode.TASK_NOT_FOUND
    await app.get_broker().close_async()


def test_sent_tells_a_written_task_from_a_refused_or_suppressed_send() -> None:
    assert TaskHandle("a-task-id").sent
    assert not TaskHandle(ERROR_TASK_ID).sent
    assert not TaskHandle(SUPPRESSED_TASK_ID).sent
