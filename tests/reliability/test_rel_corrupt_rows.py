"""Scenario 8c: corrupt rows written straight into ``horsies_tasks``.

Garbage in the ``args``/``kwargs`` column of a PENDING task makes that task (alone) fail with
``WORKER_SERIALIZATION_ERROR``; an unknown task name fails with ``WORKER_RESOLUTION_ERROR``; the
worker keeps working (later tasks complete). Garbage in the ``result`` column of a finished task
makes ``get()`` return at once an error result (``BROKER_ERROR`` holding the codec's
``SerializationError``, as documented for results that cannot be decoded;
``PYDANTIC_HYDRATION_ERROR`` when only the ok value
cannot be rebuilt) instead of raising or waiting.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from horsies.app import Horsies
from horsies.codec import SerializationError, task_result_to_json
from horsies.results import LibraryErrorCode, TaskResult
from horsies.tasks.handle import TaskHandle
from psycopg import sql

from tests.reliability.harness import LedgerWorker
from tests.reliability.hostile import module_worker_fixture
from tests.reliability.ledger import compare

pytestmark = pytest.mark.timeout(180)

RESULT_TIMEOUT_MS = 60_000
SERIALIZATION = LibraryErrorCode.WORKER_SERIALIZATION_ERROR

CORRUPT_ARGS = [
    "not json at all",
    "",
    "[1, 2",
    '{"key": "k"}',
    "null",
    '"k"',
    "[NaN]",
    "[1e99999]",
    "\ufeff[1]",
    '["k"] trailing',
    "[" * 5_000 + "]" * 5_000,
    '["\\ud800"]',
    '[{"__datetime__": true, "value": "garbage"}]',
    '[{"__date__": true, "value": 5}]',
    '[{"__pydantic_model__": true, "module": "no_such_module_xyz", "qualname": "M", "data": {}}]',
    '[{"__pydantic_model__": true, "module": "os", "qualname": "system", "data": {}}]',
    '[{"__dataclass__": true, "module": "os", "qualname": "path", "data": {}}]',
    '[{"__dataclass__": true, "module": "tests.reliability.apps.hostile_types",'
    ' "qualname": "Box", "data": []}]',
    '[{"__mapping__": true, "data": 5}]',
    "'; DROP TABLE horsies_tasks; --",
]
CORRUPT_KWARGS = [
    "[]",
    "{",
    "42",
    '{"v": {"__time__": true, "value": "25:99"}}',
    '{"v": {"__dataclass__": true, "module": "no.such", "qualname": "X", "data": {}}}',
]
UNDECODABLE_RESULTS = [
    "garbage",
    "",
    "null",
    "[]",
    '{"no": "tag"}',
    '{"__task_result__": true, "ok": null, "err": {"error_code": ["not", "a", "code"]}}',
    '{"__task_result__": true, "ok": [' * 300 + "1" + "]" * 300 + "}",
    '{"__task_result__": true, "ok": [' + "[" * 2_000 + "]" * 2_000 + "]}",
]
"""Stored results that are not a TaskResult at all: get() answers BROKER_ERROR."""
UNHYDRATABLE_RESULT = (
    '{"__task_result__": true, "ok": {"__pydantic_model__": true, "module": "gone",'
    ' "qualname": "M", "data": {}}, "err": null}'
)
"""A well-formed result whose ok value cannot be rebuilt: PYDANTIC_HYDRATION_ERROR."""


worker = module_worker_fixture("--processes", "1")


NOW = object()
"""Column value meaning ``now()`` in :func:`_write`."""


def _write(conninfo: str, task_id: str, **columns: Any) -> None:
    """Overwrite columns of one task row directly in SQL (:data:`NOW` values become ``now()``)."""
    assignments = [
        sql.SQL("{} = now()" if value is NOW else "{} = %s").format(sql.Identifier(name))
        for name, value in columns.items()
    ]
    params = [value for value in columns.values() if value is not NOW]
    statement = sql.SQL("UPDATE horsies_tasks SET {} WHERE id = %s").format(
        sql.SQL(", ").join(assignments)
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.execute(statement, [*params, task_id]).rowcount == 1


def _corrupt_pending(
    producer: Horsies, conninfo: str, column: str, value: str
) -> tuple[str, TaskHandle[Any]]:
    """A task scheduled an hour ahead (no worker touches it), corrupted, then made due now."""
    key = uuid.uuid4().hex
    handle = producer.tasks["rel.echo"].schedule(3_600, key, "payload")
    assert handle.task_id != "<error>", handle.get().err
    _write(conninfo, handle.task_id, **{column: value, "sent_at": NOW})
    return key, handle


def _later_tasks_complete(producer: Horsies, count: int) -> dict[str, str]:
    """Send ``count`` ordinary tasks; all must complete (the worker kept working)."""
    echo = producer.tasks["rel.echo"]
    sent = {uuid.uuid4().hex: index for index in range(count)}
    handles = {key: echo.send(key, {"n": index}) for key, index in sent.items()}
    for key, handle in handles.items():
        result = handle.get(timeout_ms=RESULT_TIMEOUT_MS)
        assert result.is_ok(), result.err
        assert result.unwrap() == [[{"n": sent[key]}], {}]
    return {key: handle.task_id for key, handle in handles.items()}


def test_corrupt_arguments_fail_that_task_alone_and_the_worker_keeps_working(
    worker: LedgerWorker, producer: Horsies, database_conninfo: str
) -> None:
    """Each corrupt args/kwargs payload (invalid JSON, wrong shape, NaN, depth bombs, broken or
    hostile tags) fails its task with WORKER_SERIALIZATION_ERROR and a message saying what was
    wrong; the task function never starts; the worker then runs ordinary tasks."""
    corrupt: dict[str, TaskHandle[Any]] = {}
    payloads: dict[str, str] = {}
    for column, values in (("args", CORRUPT_ARGS), ("kwargs", CORRUPT_KWARGS)):
        for value in values:
            key, handle = _corrupt_pending(producer, database_conninfo, column, value)
            corrupt[key] = handle
            payloads[key] = f"{column}={value[:40]!r}"
    unknown_key, unknown = _corrupt_pending(
        producer, database_conninfo, "task_name", "no.such.task'; DROP TABLE horsies_tasks; --"
    )
    options_key, bad_options = _corrupt_pending(producer, database_conninfo, "task_options", "{")
    ids = {key: handle.task_id for key, handle in corrupt.items()}
    later = _later_tasks_complete(producer, 10)  # also wakes the worker

    for key, handle in corrupt.items():
        result = handle.get(timeout_ms=RESULT_TIMEOUT_MS)
        assert result.is_err(), (payloads[key], result.ok)
        error = result.unwrap_err()
        assert error.error_code == SERIALIZATION, (payloads[key], error)
        assert error.message, payloads[key]
    error = unknown.get(timeout_ms=RESULT_TIMEOUT_MS).unwrap_err()
    assert error.error_code == LibraryErrorCode.WORKER_RESOLUTION_ERROR, error
    assert "no.such.task'; DROP TABLE horsies_tasks; --" in (error.message or "")
    # Options only matter for retries: a task with unreadable options still runs.
    assert bad_options.get(timeout_ms=RESULT_TIMEOUT_MS).is_ok()

    report = compare(database_conninfo, {**ids, unknown_key: unknown.task_id})
    report.assert_nothing_lost_or_duplicated()
    assert report.statuses == {"FAILED": len(ids) + 1}, report.summary()
    assert sum(report.starts[key] for key in [*ids, unknown_key]) == 0, "a corrupt task ran"
    healthy = compare(database_conninfo, {**later, options_key: bad_options.task_id})
    assert (healthy.lost, healthy.duplicated) == (0, 0), healthy.summary()
    assert healthy.statuses == {"COMPLETED": len(later) + 1}, healthy.summary()
    assert worker.alive, worker.output()
    assert "Traceback" not in worker.output(), worker.output()
    print(
        f"\n[corrupt-rows] corrupt_args={len(CORRUPT_ARGS)} corrupt_kwargs={len(CORRUPT_KWARGS)} "
        f"codes={dict(report.error_codes)} later_completed={healthy.statuses['COMPLETED']} "
        f"lost={report.lost + healthy.lost} duplicated={report.duplicated + healthy.duplicated}"
    )


async def test_corrupt_stored_results_give_a_clear_error_from_get(
    worker: LedgerWorker, producer: Horsies, database_conninfo: str
) -> None:
    """Garbage in the ``result`` column of a COMPLETED or FAILED task: ``get()`` and
    ``get_async()`` return at once (never raise, never wait) err BROKER_ERROR carrying the
    codec's SerializationError that says what is wrong; it is not cached (only final outcomes
    are), so
    once the row is repaired the same handle reads the real result. A well-formed result whose
    value cannot be rebuilt gives PYDANTIC_HYDRATION_ERROR."""
    ids = _later_tasks_complete(producer, len(UNDECODABLE_RESULTS) + 1)
    broker = producer.get_broker()
    task_ids = list(ids.values())
    for task_id, value in zip(task_ids, UNDECODABLE_RESULTS, strict=False):
        for status in ("COMPLETED", "FAILED"):
            stamp = {"failed_at": NOW} if status == "FAILED" else {}
            _write(database_conninfo, task_id, result=value, status=status, **stamp)
            handle = TaskHandle[Any](task_id, broker=broker)
            for result in (handle.get(), await handle.get_async()):  # no timeout: must not wait
                error = result.unwrap_err()
                assert error.error_code == LibraryErrorCode.BROKER_ERROR, (value, error)
                assert error.data == {"task_id": task_id, "timeout_ms": None}, error
                assert isinstance(error.exception, SerializationError), (value, error)
                assert str(error.exception), value
        repaired = task_result_to_json(TaskResult(ok="repaired"))
        _write(database_conninfo, task_id, result=repaired, status="COMPLETED", failed_at=None)
        assert handle.get(timeout_ms=5_000).unwrap() == "repaired"
    hydration_id = task_ids[-1]
    _write(database_conninfo, hydration_id, result=UNHYDRATABLE_RESULT)
    error = TaskHandle[Any](hydration_id, broker=broker).get().unwrap_err()
    assert error.error_code == LibraryErrorCode.PYDANTIC_HYDRATION_ERROR, error
    assert (error.message or "").startswith("Failed to rehydrate gone:M"), error
    report = compare(database_conninfo, ids)
    assert (report.lost, report.duplicated) == (0, 0), report.summary()
    assert worker.alive, worker.output()
    print(
        f"\n[corrupt-rows] corrupt_results={len(UNDECODABLE_RESULTS) + 1} x 2 statuses x 2 APIs:"
        " clear error, never raised, repairable"
    )
