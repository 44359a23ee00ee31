"""Audit: bad input gets a clear error and nothing is lost.

Against the module's PostgreSQL database: corrupt stored results never make `get()` raise, names
and arguments full of SQL metacharacters round-trip as plain data, unserializable arguments are
refused before anything is written, and the broker honours its documented pool and monitoring
contracts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from db_rows import sql
from horsies.app import Horsies
from horsies.broker import ClaimRequest, PostgresBroker, QueueClaimSpec
from horsies.broker.driver_errors import NoConnection
from horsies.broker.driver_sync import SyncPool
from horsies.broker.pool_rules import PoolLimits
from horsies.codec import SerializationError, args_from_json, task_result_to_json
from horsies.config import AppConfig, CustomQueueConfig, PostgresConfig, QueueMode
from horsies.env import SUPPRESS_SENDS as SUPPRESS_SENDS_ENV
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.tasks.handle import TaskHandle

ODD_NAME = 'audit.it\'s; DROP TABLE horsies_tasks; --"x" $$ %s %(id)s'
ODD_VALUES: list[Any] = [
    "it's",
    'say "hi"',
    "back\\slash",
    "semi;colon -- comment /* c */",
    "$$dollar$$ %s %(id)s {}",
    "nul\x00byte",
    "ünïcødé ✓ 🐎",
    {"key'; DROP TABLE horsies_tasks; --": ["v", 1, None]},
]
ODD_QUEUE = "Mixed.Case-1"


def finish_with(conninfo: str, task_id: str, result_text: str, status: str = "COMPLETED") -> None:
    """Write a finished status and a raw result text, as a worker (or a corruption) would."""
    sql(
        conninfo,
        "UPDATE horsies_tasks SET status = %s, result = %s, "
        "completed_at = CASE WHEN %s = 'COMPLETED' THEN now() END, "
        "failed_at = CASE WHEN %s = 'FAILED' THEN now() END WHERE id = %s",
        (status, result_text, status, status, task_id),
    )


@pytest.fixture
def app(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Horsies]:
    monkeypatch.delenv(SUPPRESS_SENDS_ENV, raising=False)
    producer = Horsies(
        AppConfig(
            queue_mode=QueueMode.CUSTOM,
            custom_queues=[CustomQueueConfig(name=ODD_QUEUE, priority=7)],
            broker=PostgresConfig(database_url=database_url, pool_size=1),
        )
    )
    yield producer
    producer.get_broker().close()


# -- corrupt stored results: an error result, not cached -------------------------------------------


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        ('{"__task_result__": true, "ok": [1, 2', "Invalid result JSON"),
        ("[1, 2]", "Not a TaskResult JSON"),
        ('{"ok": null, "err": {"error_code": 5}}', "Invalid TaskError payload"),
    ],
    ids=["malformed-json", "not-a-task-result", "invalid-task-error"],
)
def test_corrupt_stored_result_is_broker_error_not_an_exception(
    broker: PostgresBroker, clean_db: str, stored: str, reason: str
) -> None:
    task_id = broker.enqueue("audit.t")
    finish_with(clean_db, task_id, stored)
    handle: TaskHandle[Any] = TaskHandle(task_id, broker=broker)
    started = time.monotonic()
    result = handle.get()  # waits forever for an unfinished task: must return at once
    assert time.monotonic() - started < 5
    error = result.unwrap_err()
    assert error.error_code == LibraryErrorCode.BROKER_ERROR
    assert error.message == "Broker error while retrieving task result"
    assert error.data == {"task_id": task_id, "timeout_ms": None}
    assert isinstance(error.exception, SerializationError)
    assert reason in str(error.exception)
    # Not cached (only final outcomes are): once the row is repaired, the same handle reads the
    # real result.
    finish_with(clean_db, task_id, task_result_to_json(TaskResult(ok="repaired")))
    assert handle.get(timeout_ms=5_000) == TaskResult(ok="repaired")


async def test_corrupt_stored_result_async(broker: PostgresBroker, clean_db: str) -> None:
    task_id = await broker.enqueue_async("audit.t")
    finish_with(clean_db, task_id, "not json at all", status="FAILED")
    result = await TaskHandle[Any](task_id, broker=broker).get_async(timeout_ms=5_000)
    error = result.unwrap_err()
    assert error.error_code == LibraryErrorCode.BROKER_ERROR
    assert isinstance(error.exception, SerializationError)


def test_stored_value_whose_class_is_gone_is_pydantic_hydration_error(
    broker: PostgresBroker, clean_db: str
) -> None:
    task_id = broker.enqueue("audit.t")
    stored = (
        '{"__task_result__":true,"ok":{"__pydantic_model__":true,'
        '"module":"audit_gone_module_xyz","qualname":"Report","data":{"n":1}},"err":null}'
    )
    finish_with(clean_db, task_id, stored)
    error = TaskHandle[Any](task_id, broker=broker).get(timeout_ms=5_000).unwrap_err()
    assert error.error_code == LibraryErrorCode.PYDANTIC_HYDRATION_ERROR
    assert error.message == (
        "Failed to rehydrate audit_gone_module_xyz:Report: No module named 'audit_gone_module_xyz'"
    )
    assert error.data == {}


def test_task_not_found_is_final_and_cached(broker: PostgresBroker, clean_db: str) -> None:
    handle: TaskHandle[Any] = TaskHandle("audit-missing-id", broker=broker)
    first = handle.get(timeout_ms=1_000).unwrap_err()
    assert first.error_code == LibraryErrorCode.TASK_NOT_FOUND
    # A row appearing later does not change a cached final outcome.
    broker.enqueue("audit.t", task_id="audit-missing-id")
    finish_with(clean_db, "audit-missing-id", task_result_to_json(TaskResult(ok=1)))
    assert handle.get(timeout_ms=1_000).unwrap_err().error_code == LibraryErrorCode.TASK_NOT_FOUND


# -- names and values are data, never SQL ----------------------------------------------------------


def test_task_name_and_arguments_with_sql_metacharacters_round_trip(
    app: Horsies, clean_db: str
) -> None:
    @app.task(ODD_NAME, queue_name=ODD_QUEUE)
    def odd(*values: Any, **named: Any) -> TaskResult[list[Any], TaskError]:
        return TaskResult(ok=[*values, named])

    handle = odd.send(*ODD_VALUES, **{"quote'key": "x';--"})
    assert handle.task_id not in ("<error>", "<suppressed>"), handle.get()
    rows = sql(clean_db, "SELECT * FROM horsies_tasks WHERE id = %s", (handle.task_id,))
    assert len(rows) == 1
    row = rows[0]
    assert row["task_name"] == ODD_NAME
    assert row["queue_name"] == ODD_QUEUE
    assert row["priority"] == 7
    assert args_from_json(row["args"]) == ODD_VALUES
    assert json.loads(row["kwargs"]) == {"quote'key": "x';--"}
    # The table is intact and every other row untouched.
    assert sql(clean_db, "SELECT count(*) AS n FROM horsies_tasks")[0]["n"] == 1
    # The stored result of such a task reads back the same values.
    finish_with(clean_db, handle.task_id, task_result_to_json(TaskResult(ok=ODD_VALUES)))
    assert handle.get(timeout_ms=5_000) == TaskResult(ok=ODD_VALUES)


async def test_queue_with_dots_dashes_and_capitals_notifies_and_claims(
    app: Horsies, clean_db: str
) -> None:
    @app.task("audit.routed", queue_name=ODD_QUEUE)
    def routed() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    broker = app.get_broker()
    received: list[str] = []
    subscription = broker.listener.subscribe(
        f"task_queue_{ODD_QUEUE}", lambda _channel, payload: received.append(payload)
    )
    try:
        handle = await routed.send_async()
        deadline = time.monotonic() + 10
        while handle.task_id not in received and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert handle.task_id in received  # the insert trigger's NOTIFY reached the channel
        request = ClaimRequest(queues=[QueueClaimSpec(ODD_QUEUE, priority=7)], local_budget=5)
        claimed = await broker.claim_async("audit-worker", request)
        assert [task.id for task in claimed] == [handle.task_id]
        assert claimed[0].queue_name == ODD_QUEUE
    finally:
        subscription.close()
        await broker.close_async()


# -- unserializable arguments: refused, nothing written --------------------------------------------


def count_rows(conninfo: str) -> int:
    return int(sql(conninfo, "SELECT count(*) AS n FROM horsies_tasks")[0]["n"])


async def test_unserializable_arguments_write_nothing_on_any_send_path(
    app: Horsies, clean_db: str
) -> None:
    @app.task("audit.takes_anything", queue_name=ODD_QUEUE)
    def takes_anything(*args: Any, **kwargs: Any) -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    handles = [
        takes_anything.send(b"bytes"),
        takes_anything.schedule(5, x=frozenset({1})),
        await takes_anything.send_async({1, 2}),
        *takes_anything.send_many([(1,), {"conn": object()}]),
        *(await takes_anything.send_many_async([(object(),)])),
    ]
    assert [h.task_id for h in handles] == ["<error>"] * 6
    messages = [h.get().unwrap_err().message or "" for h in handles]
    assert messages[0].startswith("Failed to enqueue task takes_anything: Cannot serialize value")
    assert messages[1].startswith("Failed to schedule task takes_anything: Cannot serialize value")
    assert all("Cannot serialize value of type" in m for m in messages)
    for handle in handles:
        error = handle.get().unwrap_err()
        assert error.error_code == LibraryErrorCode.SEND_REFUSED
        assert error.data == {
            "task_name": "audit.takes_anything",
            "exception_type": "SerializationError",
        }
    assert count_rows(clean_db) == 0
    await app.get_broker().close_async()


# -- schedule() takes seconds, int or float --------------------------------------------------------


def test_schedule_accepts_fractional_and_zero_seconds(app: Horsies, clean_db: str) -> None:
    @app.task("audit.later", queue_name=ODD_QUEUE)
    def later() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    before = datetime.now(UTC)
    half = later.schedule(1.5)
    now = later.schedule(0)
    after = datetime.now(UTC)
    rows = {
        r["id"]: r["sent_at"]
        for r in sql(clean_db, "SELECT id, sent_at FROM horsies_tasks WHERE status = 'PENDING'")
    }
    assert before + timedelta(seconds=1.5) <= rows[half.task_id] <= after + timedelta(seconds=1.5)
    assert before <= rows[now.task_id] <= after


# -- monitoring methods return at least the documented keys ----------------------------------------


async def test_monitoring_methods_return_the_documented_keys(
    broker: PostgresBroker, clean_db: str
) -> None:
    past = datetime.now(UTC) - timedelta(minutes=5)
    expired = await broker.enqueue_async("audit.old", good_until=past, priority=9)
    await broker.enqueue_async("audit.new")

    rows = await broker.get_expired_tasks()
    assert [r["id"] for r in rows] == [expired]
    assert set(rows[0]) >= {
        "id", "task_name", "queue_name", "priority", "sent_at", "good_until", "expired_for",
    }  # fmt: skip
    assert (rows[0]["task_name"], rows[0]["priority"]) == ("audit.old", 9)
    assert isinstance(rows[0]["expired_for"], timedelta)
    assert rows[0]["expired_for"] >= timedelta(minutes=5)
    assert [r["id"] for r in broker.get_expired_tasks_sync()] == [expired]

    stats = await broker.get_queue_stats()
    assert len(stats) == 1
    assert set(stats[0]) >= {
        "queue_name", "pending", "claimed", "running", "completed", "failed", "cancelled",
        "oldest_pending_at",
    }  # fmt: skip
    assert (stats[0]["queue_name"], stats[0]["pending"]) == ("default", 2)
    assert broker.get_queue_stats_sync() == stats

    assert await broker.get_stale_tasks() == []
    assert broker.get_stale_tasks_sync() == []
    assert await broker.get_worker_stats() == []
    assert broker.get_worker_states_sync() == []
    assert await broker.get_worker_states() == []


# -- PostgresConfig pool settings reach the pools -------------------------------------------------


def test_pool_settings_map_onto_the_pool(database_url: str) -> None:
    config = PostgresConfig(
        database_url=database_url,
        pool_size=2,
        max_overflow=1,
        pool_timeout=1,
        pool_recycle=99,
        pool_pre_ping=False,
    )
    limits = PoolLimits.from_config(config, "p")
    assert (limits.min_size, limits.max_size) == (2, 3)
    assert (limits.timeout_s, limits.lifetime_s, limits.pre_ping) == (1.0, 99.0, False)
    pool = SyncPool(config)
    try:
        held = [pool.getconn() for _ in range(3)]
        started = time.monotonic()
        with pytest.raises(NoConnection, match="all 3 connections of the pool are in use"):
            pool.getconn()
        assert time.monotonic() - started >= 0.9  # waited pool_timeout for one to come back
        for conn in held:
            pool.putconn(conn, failed=False)
    finally:
        pool.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("echo", [True, False])
def test_echo_logs_sql_at_debug(database_url: str, clean_db: str, echo: bool) -> None:
    del clean_db
    logger = logging.getLogger("horsies.broker")
    handler = _Records()
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    broker = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=1, echo=echo))
    try:
        broker.enqueue("audit.echoed", args=(1,))
    finally:
        broker.close()
        logger.removeHandler(handler)
        logger.setLevel(previous)
    sql_lines = [m for m in handler.messages if m.startswith("SQL: ")]
    if echo:
        assert any("INSERT INTO horsies_tasks" in m and "audit.echoed" in m for m in sql_lines)
    else:
        assert sql_lines == []
