"""Sans-IO pieces of the broker (no database): wait deadlines, row interpretation, parameter
building, lock keys, crash results; plus the pool lifecycle rules (one async pool per event loop,
closed when the loop shuts down; sync calls inside a running loop)."""

from __future__ import annotations

import asyncio
import gc
import time
from datetime import UTC, datetime

import orjson
import psycopg
import pytest
from horsies.broker import (
    EnqueueRequest,
    PostgresBroker,
    enqueue,
    heartbeats,
    locks,
    programs,
    recovery,
    retrieval,
)
from horsies.codec import task_result_to_json
from horsies.config import PostgresConfig
from horsies.results import LibraryErrorCode, TaskResult


def test_wait_plan_none_and_zero_wait_forever_with_fallback_polls() -> None:
    for timeout in (None, 0, -5):
        plan = programs.WaitPlan(timeout, now=100.0)
        assert plan.next_wait(now=1e9) == programs.FALLBACK_POLL_S


def test_wait_plan_positive_timeout_polls_at_most_every_5s_until_deadline() -> None:
    plan = programs.WaitPlan(12_000, now=100.0)
    assert plan.next_wait(now=100.0) == 5.0
    assert plan.next_wait(now=110.0) == pytest.approx(2.0)
    assert plan.next_wait(now=112.0) is None


def test_result_from_row_maps_statuses() -> None:
    ok_json = task_result_to_json(TaskResult(ok=3))
    assert retrieval.result_from_row("t", ("COMPLETED", ok_json, None)) == TaskResult(ok=3)
    for status in ("PENDING", "CLAIMED", "RUNNING", "REQUEUED"):
        assert retrieval.result_from_row("t", (status, None, None)) is None
    missing = retrieval.result_from_row("t", None)
    assert missing is not None
    assert missing.err_value.error_code == LibraryErrorCode.TASK_NOT_FOUND
    cancelled = retrieval.result_from_row("t", ("CANCELLED", None, None))
    assert cancelled is not None
    assert cancelled.err_value.error_code == LibraryErrorCode.TASK_CANCELLED


def test_enqueue_params_encode_arguments_and_null_when_empty() -> None:
    task_id, params = enqueue.enqueue_params(
        EnqueueRequest("t", [1, datetime(2025, 1, 2, tzinfo=UTC)], {"a": (1, 2)}, "q", priority=1)
    )
    assert params["id"] == task_id
    assert orjson.loads(params["args"])[1]["__datetime__"] is True
    assert orjson.loads(params["kwargs"]) == {"a": [1, 2]}
    _, empty = enqueue.enqueue_params(EnqueueRequest("t", (), {}, "q", task_id="x"))
    assert (empty["args"], empty["kwargs"], empty["id"]) == (None, None, "x")


def test_enqueue_many_params_are_column_arrays_in_request_order() -> None:
    ids, params = enqueue.enqueue_many_params(
        [EnqueueRequest("a", (1,), task_id="1"), EnqueueRequest("b", priority=2, queue_name="q")]
    )
    assert ids[0] == "1"
    assert params["ids"] == ids
    assert params["task_names"] == ["a", "b"]
    assert params["queue_names"] == ["default", "q"]
    assert params["priorities"] == [100, 2]
    assert params["args"] == ["[1]", None]


def test_advisory_keys_are_stable_signed_64_bit_constants() -> None:
    keys = {locks.SCHEMA_LOCK_KEY, locks.CLAIM_LOCK_KEY, locks.REAPER_LOCK_KEY}
    assert len(keys) == 3
    assert all(-(2**63) <= k < 2**63 for k in keys)
    assert locks.advisory_key("horsies-global") == locks.CLAIM_LOCK_KEY


def test_heartbeat_query_rows_and_empty_batch() -> None:
    assert heartbeats.heartbeat_query("w", "h", 1, [], []) is None
    query = heartbeats.heartbeat_query("w", "h", 1, [("c", 1)], [("r", 2, 9)])
    assert query is not None
    assert query.params is not None
    assert query.params["task_ids"] == ["c", "r"]
    assert query.params["attempts"] == [1, 2]
    assert query.params["sender_ids"] == ["w", "w:9"]
    assert query.params["roles"] == ["claimer", "runner"]
    assert query.params["pids"] == [1, 9]


def test_worker_crashed_reason_formats_seconds() -> None:
    run = recovery._StaleRun(  # pyright: ignore[reportPrivateUsage]
        "t", "task", "default", 1, "h", "w", None, None, 0, 0, None, datetime.now(UTC), None, 1
    )
    _, reason = recovery._worker_crashed(1500, run)  # pyright: ignore[reportPrivateUsage]
    assert reason == "Worker process crashed (no runner heartbeat for 1500ms = 1.5s)"


def _app_connections(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'horsies' "
            "AND datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.timeout(60)
def test_async_pool_per_loop_is_closed_when_the_loop_shuts_down(
    database_url: str, database_conninfo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=2))
    try:
        for _ in range(2):  # a second asyncio.run gets a fresh pool on its own loop
            task_id = asyncio.run(broker.enqueue_async("t"))
            assert broker.get_task_sync(task_id) is not None
            broker.close()  # only the sync pool is left to close here
            broker = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=2))
            # The server lists a closed connection's backend until that backend has exited.
            deadline = time.monotonic() + 10
            while _app_connections(database_conninfo) and time.monotonic() < deadline:
                gc.collect()  # a half-open attempt dropped by the driver closes when freed
                time.sleep(0.05)
            assert _app_connections(database_conninfo) == 0
    finally:
        broker.close()


async def test_sync_calls_work_inside_a_running_loop(broker: PostgresBroker) -> None:
    task_id = broker.enqueue("t")  # blocks the loop briefly; no private event loop involved
    assert (await broker.get_task(task_id) or {})["status"] == "PENDING"
    result = broker.get_result(task_id, timeout_ms=50)
    assert result.err_value.error_code == LibraryErrorCode.WAIT_TIMEOUT
    await broker.close_async()
