"""Sans-IO broker operations: every decision of the broker, none of its I/O.

An operation is a generator that yields :class:`Query` steps and receives a :class:`QueryResult` for
each (``Op[T] = Generator[Query | Pipeline, QueryResult, T]``); its return value is the method's
result. A :class:`Pipeline` step sends several independent statements in one round trip (psycopg
pipeline mode) and gets one result per statement back in ``QueryResult.parts``. The
same operation runs on a sync connection (``pools.run_op_sync``) and on an async one
(``pools.run_op_async``), so the sync and async broker APIs share one implementation and cannot
drift. Parameter building and row interpretation are plain functions here too, unit-testable without
a database.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, LiteralString, TypeAlias, TypeVar

import orjson

from horsies.broker.claims import needs_cluster_counts, plan_claims
from horsies.broker.sql import heartbeats as hb_sql
from horsies.broker.sql import monitoring as mon_sql
from horsies.broker.sql import tasks as task_sql
from horsies.broker.types import (
    ClaimedTask,
    ClaimRequest,
    EnqueueRequest,
    InFlight,
    PrefetchExchange,
    ReapReport,
    StartedTask,
    TaskExchange,
    TaskOutcome,
    WorkerStateRow,
)
from horsies.codec import (
    args_to_json,
    check_payload_size,
    dumps_json,
    kwargs_to_json,
    task_result_from_json,
    task_result_to_json,
)
from horsies.config import RecoveryConfig
from horsies.logs import get_logger
from horsies.results import LibraryErrorCode, TaskError, TaskResult

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.broker import workflow_ops

__all__ = [
    "CLAIM_LOCK_KEY",
    "REAPER_LOCK_KEY",
    "SCHEMA_LOCK_KEY",
    "Op",
    "Pipeline",
    "Query",
    "QueryResult",
    "advisory_key",
]

_log = get_logger("broker")
T = TypeVar("T")

RowKind = Literal["tuple", "dict", "none"]


@dataclass(frozen=True, slots=True)
class Query:
    """One statement to execute: SQL constant, named parameters, and how to return rows."""

    sql: LiteralString
    params: Mapping[str, Any] | None = None
    rows: RowKind = "tuple"
    prepare: bool | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """One single-row statement run as a named server-side prepared statement, sent through libpq
    directly (``pools``): no psycopg cursor, no query conversion, text parameters.

    ``sql`` uses named ``%(name)s`` placeholders, each once; ``params`` are their values in order
    of appearance (None, str, int or aware datetime) and ``types`` their PostgreSQL types. The
    executor falls back to an ordinary prepared cursor execution (same statement, same errors) for
    anything it cannot send as is: other value types, text holding NUL, a non-UTF-8 connection,
    echo. Its result has no rows, only the row count.
    """

    name: str
    sql: LiteralString
    types: tuple[str, ...]
    params: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Statements sent together in one round trip, in order.

    Outside an explicit transaction they run in one implicit transaction: all commit or none does
    (an error skips the rest). Only for statements whose parameters do not depend on each other's
    results.
    """

    queries: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Rows (tuples or dicts, per ``Query.rows``) and the server's row count of one statement; for a
    :class:`Pipeline` step, one result per statement in ``parts`` (``rows`` empty)."""

    rows: list[Any]
    rowcount: int
    parts: tuple[QueryResult, ...] = ()


@dataclass(frozen=True, slots=True)
class Copy:
    """Rows streamed into a table with ``COPY ... FROM STDIN (FORMAT BINARY)``: the fastest bulk
    insert. ``types`` are the PostgreSQL types of the columns, in order. Its result's ``rowcount``
    is the number of rows sent."""

    sql: LiteralString
    types: tuple[str, ...]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class CopyData:
    """A ``COPY ... FROM STDIN (FORMAT BINARY)`` whose stream (header, rows, trailer) comes as
    ready-made chunks: written as they come, no per-row work in the driver.

    The stream's text fields are UTF-8: on a connection with another client encoding the executor
    streams ``rows()`` with ``types`` instead (as :class:`Copy`). ``data`` None always takes that
    path. Its result's ``rowcount`` is ``count``.
    """

    sql: LiteralString
    data: Iterable[bytes] | None
    count: int
    types: tuple[str, ...]
    rows: Callable[[], Iterable[Sequence[Any]]]


Step: TypeAlias = Query | Pipeline | Copy | Prepared | CopyData
Op: TypeAlias = Generator[Step, QueryResult, T]


def advisory_key(name: str) -> int:
    """Advisory lock key: the first 8 bytes (big-endian, signed) of SHA-256 of ``name``.

    Keys are constants, not derived from the database URL as in the reference (06 §8): advisory
    locks are per database already, and two spellings of the same URL must share the lock.
    """
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


SCHEMA_LOCK_KEY: Final = advisory_key("horsies-schema")
CLAIM_LOCK_KEY: Final = advisory_key("horsies-global")
REAPER_LOCK_KEY: Final = advisory_key("horsies-reaper")

STALE_RUNNING_BATCH: Final = 500
"""Stale RUNNING rows handled per statement (keeps reaper transactions short)."""


def run_query(query: Query) -> Op[QueryResult]:
    """The trivial operation: one statement, its result."""
    result = yield query
    return result


def together(queries: Sequence[Query]) -> Op[tuple[QueryResult, ...]]:
    """Run ``queries`` in one round trip: a plain step for one, a :class:`Pipeline` for several."""
    if len(queries) == 1:
        res = yield queries[0]
        return (res,)
    res = yield Pipeline(tuple(queries))
    return res.parts


# -- enqueue ---------------------------------------------------------------------------------------


def _check_priority(priority: int) -> None:
    if not 1 <= priority <= 100:
        raise ValueError(f"priority must be between 1 and 100, got {priority}")


def enqueue_params(
    request: EnqueueRequest, max_payload_bytes: int | None = None
) -> tuple[str, dict[str, Any]]:
    """(task id, TASK_INSERT parameters); encodes args/kwargs (SerializationError, incl.
    PayloadTooLargeError above ``max_payload_bytes``, before I/O)."""
    task_id = request.task_id or new_task_id()
    row = _task_row(task_id, request, max_payload_bytes)
    return task_id, dict(zip(task_sql.TASK_COPY_COLUMNS, row, strict=True))


def task_row(
    task_id: str,
    task_name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    *,
    queue_name: str,
    priority: int,
    sent_at: datetime | None,
    good_until: datetime | None,
    max_retries: int,
    task_options: str | None,
    max_payload_bytes: int | None,
) -> tuple[Any, ...]:
    """The values of a new task row, in ``TASK_COPY_COLUMNS`` order: arguments encoded (codec
    errors raise here, before any I/O) and checked against ``max_payload_bytes`` (None =
    unlimited)."""
    _check_priority(priority)
    args_json = args_to_json(tuple(args)) if args else None
    kwargs_json = kwargs_to_json(kwargs) if kwargs else None
    check_payload_size("task arguments", (args_json, kwargs_json), max_payload_bytes)
    return (
        task_id,
        task_name,
        queue_name,
        priority,
        args_json,
        kwargs_json,
        sent_at,
        good_until,
        max_retries,
        task_options,
    )


_TASK_INSERT_NAME: Final = "horsies_task_insert_v1"
"""Name of TASK_INSERT's prepared statement (change it with the statement)."""


def task_insert_step(row: tuple[Any, ...]) -> Prepared:
    """The single-row insert of a :func:`task_row` (TASK_INSERT as a libpq prepared statement)."""
    return Prepared(_TASK_INSERT_NAME, task_sql.TASK_INSERT, task_sql.TASK_INSERT_TYPES, row)


_INSERT_MANY_BINARY: Final = task_sql.TASK_INSERT_MANY.replace(")s::", ")b::")
"""TASK_INSERT_MANY with its arrays sent in binary: no text-array quoting and escaping."""
_INSERT_MANY_ARRAYS: Final = (
    "ids",
    "task_names",
    "queue_names",
    "priorities",
    "args",
    "kwargs",
    "sent_ats",
    "good_untils",
    "max_retries",
    "task_options",
)
"""TASK_INSERT_MANY's parameters, in ``TASK_COPY_COLUMNS`` order."""


def insert_rows_query(rows: Sequence[Sequence[Any]]) -> Query:
    """One TASK_INSERT_MANY statement for :func:`task_row` rows (several sends in one statement:
    one transaction, one round trip). Rows without ``sent_at`` get the statement's ``now()`` minus
    a microsecond per later row, so they are claimed in row order."""
    columns = zip(*rows, strict=True)
    return Query(
        _INSERT_MANY_BINARY,
        {name: list(column) for name, column in zip(_INSERT_MANY_ARRAYS, columns, strict=True)},
        rows="none",
        prepare=True,
    )


def _task_row(task_id: str, req: EnqueueRequest, max_payload_bytes: int | None) -> list[Any]:
    """:func:`task_row` of an `EnqueueRequest`, as a list (``enqueue_many_op`` fills in
    ``sent_at``)."""
    return list(
        task_row(
            task_id,
            req.task_name,
            req.args,
            req.kwargs,
            queue_name=req.queue_name,
            priority=req.priority,
            sent_at=req.sent_at,
            good_until=req.good_until,
            max_retries=req.max_retries,
            task_options=req.task_options,
            max_payload_bytes=max_payload_bytes,
        )
    )


def new_task_id() -> str:
    """A random UUID4 string, as ``str(uuid.uuid4())`` writes it (see :func:`new_task_ids`)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""A random hex digit -> the RFC 4122 variant digit with the same two low bits."""


def new_task_ids(count: int) -> list[str]:
    """``count`` random UUID4 strings, as ``str(uuid.uuid4())`` writes them, without building a
    ``UUID`` object per id (the bulk send's largest per-task cost after argument encoding)."""
    digits = os.urandom(16 * count).hex()
    variant = _VARIANT
    ids: list[str] = []
    append = ids.append
    for start in range(0, 32 * count, 32):
        h = digits[start : start + 32]
        # Version 4 (13th digit), RFC 4122 variant (17th digit); 122 random bits remain.
        append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:]}")
    return ids


def enqueue_many_params(
    requests: Sequence[EnqueueRequest], max_payload_bytes: int | None = None
) -> tuple[list[str], dict[str, Any]]:
    """(task ids, TASK_INSERT_MANY array parameters) for a batch, in request order."""
    ids = [req.task_id or new_task_id() for req in requests]
    rows = [_task_row(i, req, max_payload_bytes) for i, req in zip(ids, requests, strict=True)]
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    return ids, {name: columns[i] if columns else [] for i, name in enumerate(_INSERT_MANY_ARRAYS)}


def enqueue_many_rows(
    requests: Sequence[EnqueueRequest], max_payload_bytes: int | None = None
) -> tuple[list[str], list[list[Any]]]:
    """(task ids, rows for `enqueue_many_op`) in request order; encodes every item before any I/O.

    A row's ``sent_at`` is None when the request has none (`enqueue_many_op` fills it in)."""
    ids = new_task_ids(len(requests))
    rows: list[list[Any]] = []
    for index, req in enumerate(requests):
        if req.task_id:
            ids[index] = req.task_id
        rows.append(_task_row(ids[index], req, max_payload_bytes))
    return ids, rows


def enqueue_many_op(rows: list[list[Any]]) -> Op[int]:
    """Insert PENDING tasks with one COPY (run it in a transaction).

    Rows without ``sent_at`` get the transaction's ``now()`` (what a plain insert stores) minus a
    microsecond per later row, so FIFO order within the batch is the order of the rows. Returns
    the number of rows inserted.
    """
    if any(row[_SENT_AT] is None for row in rows):
        res = yield Query(task_sql.TRANSACTION_NOW)
        now: datetime = res.rows[0][0]
        last = len(rows) - 1
        for index, row in enumerate(rows):
            if row[_SENT_AT] is None:
                row[_SENT_AT] = now - timedelta(microseconds=last - index)
    res = yield Copy(task_sql.TASK_COPY_IN, task_sql.TASK_COPY_TYPES, rows)
    return res.rowcount


_SENT_AT: Final = task_sql.TASK_COPY_COLUMNS.index("sent_at")

# Binary COPY encoding (PostgreSQL's COPY BINARY file format): a header, then per row the number of
# fields (int16) and each field as its length (int32, -1 for NULL) and bytes; an int16 -1 ends it.
_COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER: Final = b"\xff\xff"
_COPY_NULL: Final = b"\xff\xff\xff\xff"
_INT16: Final = struct.Struct(">h")
_INT32: Final = struct.Struct(">i")
_INT64: Final = struct.Struct(">q")
_INT4_RANGE: Final = range(-(2**31), 2**31)
_ID_LENGTH: Final = 36
_PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""Binary timestamps count microseconds from here."""
_US: Final = timedelta(microseconds=1)


def _copy_text(text: str) -> bytes:
    data = text.encode()
    return _INT32.pack(len(data)) + data


def _copy_int4(value: int) -> bytes | None:
    return (
        b"\x00\x00\x00\x04" + _INT32.pack(value)
        if type(value) is int and value in _INT4_RANGE
        else None
    )


def _copy_timestamptz(value: datetime | None) -> bytes | None:
    if value is None:
        return _COPY_NULL
    if type(value) is not datetime or value.tzinfo is None:
        return None
    return b"\x00\x00\x00\x08" + _INT64.pack((value - _PG_EPOCH) // _US)


_BATCH_CHUNK_ROWS: Final = 512
"""Rows per chunk of a batch's COPY stream: the next chunk is built while the server stores the
previous one."""


class TaskBatch:
    """New PENDING rows of one task, one per call (``send_many``), arguments encoded before any I/O.

    Everything but the ids and the encoded arguments is shared by the rows, so the COPY stream is
    built from bytes computed once per batch (:meth:`copy_chunks`), with ``sent_at`` last: the
    transaction's ``now()`` minus a microsecond per later row (claimed in call order). Ids are made
    as the stream is built and kept: an insert repeated after a lost connection sends the same ids.
    """

    __slots__ = (
        "args",
        "good_until",
        "ids",
        "kwargs",
        "max_retries",
        "priority",
        "queue_name",
        "task_name",
        "task_options",
    )

    def __init__(
        self,
        task_name: str,
        args: list[str | None],
        kwargs: list[str | None],
        *,
        queue_name: str,
        priority: int,
        good_until: datetime | None,
        max_retries: int,
        task_options: str | None,
    ) -> None:
        self.task_name = task_name
        self.ids: list[str] = []
        self.args = args
        self.kwargs = kwargs
        self.queue_name = queue_name
        self.priority = priority
        self.good_until = good_until
        self.max_retries = max_retries
        self.task_options = task_options

    def _ids_up_to(self, count: int) -> list[str]:
        ids = self.ids
        if len(ids) < count:
            ids.extend(new_task_ids(count - len(ids)))
        return ids

    def all_ids(self) -> list[str]:
        """The task ids, in call order."""
        return self._ids_up_to(len(self.args))

    def rows(self, now: datetime) -> list[tuple[Any, ...]]:
        """The rows as values, in ``TASK_BATCH_COPY_COLUMNS`` order, for a transaction clock of
        ``now``."""
        last = len(self.args) - 1
        return [
            (
                task_id,
                self.task_name,
                self.queue_name,
                self.priority,
                args,
                kwargs,
                self.good_until,
                self.max_retries,
                self.task_options,
                now - timedelta(microseconds=last - index),
            )
            for index, (task_id, args, kwargs) in enumerate(
                zip(self.all_ids(), self.args, self.kwargs, strict=True)
            )
        ]

    def copy_chunks(self, now: datetime) -> Iterator[bytes] | None:
        """The binary COPY stream for ``TASK_BATCH_COPY_IN`` (UTF-8 text), built chunk by chunk as
        it is consumed; None if a shared value has no plain binary form here (then the driver
        encodes :meth:`rows`)."""
        priority = _copy_int4(self.priority)
        max_retries = _copy_int4(self.max_retries)
        good_until = _copy_timestamptz(self.good_until)
        if priority is None or max_retries is None or good_until is None:
            return None
        options = _COPY_NULL if self.task_options is None else _copy_text(self.task_options)
        shared = _copy_text(self.task_name) + _copy_text(self.queue_name) + priority
        tail = good_until + max_retries + options + b"\x00\x00\x00\x08"
        return self._chunks((now - _PG_EPOCH) // _US, shared, tail)

    def _chunks(self, now_us: int, shared: bytes, tail: bytes) -> Iterator[bytes]:
        count = len(self.args)
        head = _INT16.pack(len(task_sql.TASK_BATCH_COPY_COLUMNS))
        id_head = head + _INT32.pack(_ID_LENGTH)  # every generated id: 36 ASCII characters
        no_arguments = shared + _COPY_NULL + _COPY_NULL + tail
        first_us = now_us - (count - 1)
        pack = _INT64.pack
        all_args, all_kwargs = self.args, self.kwargs
        if not count:
            yield _COPY_HEADER + _COPY_TRAILER
            return
        parts: list[bytes] = [_COPY_HEADER]
        for start in range(0, count, _BATCH_CHUNK_ROWS):
            end = min(count, start + _BATCH_CHUNK_ROWS)
            ids = self._ids_up_to(end)
            append = parts.append
            for index in range(start, end):
                task_id = ids[index]
                if len(task_id) == _ID_LENGTH:
                    append(id_head)
                    append(task_id.encode())
                else:
                    append(head)
                    append(_copy_text(task_id))
                args, kwargs = all_args[index], all_kwargs[index]
                if args is None and kwargs is None:
                    append(no_arguments)
                else:
                    append(shared)
                    append(_COPY_NULL if args is None else _copy_text(args))
                    append(_COPY_NULL if kwargs is None else _copy_text(kwargs))
                    append(tail)
                append(pack(first_us + index))
            if end == count:
                parts.append(_COPY_TRAILER)
            yield b"".join(parts)
            parts = []


def encode_calls(
    task_name: str,
    calls: Iterable[tuple[Sequence[Any], Mapping[str, Any] | None]],
    *,
    queue_name: str,
    priority: int,
    good_until: datetime | None,
    max_retries: int,
    task_options: str | None,
    max_payload_bytes: int | None,
) -> TaskBatch:
    """One :class:`TaskBatch` row per (args, kwargs) call, in order: every call encoded and checked
    (codec errors, ``PayloadTooLargeError``) before anything is written."""
    _check_priority(priority)
    all_args: list[str | None] = []
    all_kwargs: list[str | None] = []
    for args, kwargs in calls:
        args_json = args_to_json(tuple(args)) if args else None
        kwargs_json = kwargs_to_json(kwargs) if kwargs else None
        if args_json is not None or kwargs_json is not None:
            check_payload_size("task arguments", (args_json, kwargs_json), max_payload_bytes)
        all_args.append(args_json)
        all_kwargs.append(kwargs_json)
    return TaskBatch(
        task_name,
        all_args,
        all_kwargs,
        queue_name=queue_name,
        priority=priority,
        good_until=good_until,
        max_retries=max_retries,
        task_options=task_options,
    )


def task_batch_op(batch: TaskBatch) -> Op[int]:
    """Insert a :class:`TaskBatch` with one binary COPY (run it in a transaction); returns the
    number of rows."""
    res = yield Query(task_sql.TRANSACTION_NOW)
    now: datetime = res.rows[0][0]
    res = yield CopyData(
        task_sql.TASK_BATCH_COPY_IN,
        batch.copy_chunks(now),
        len(batch.args),
        task_sql.TASK_BATCH_COPY_TYPES,
        lambda: batch.rows(now),
    )
    return res.rowcount


# -- result retrieval (02 §5) ----------------------------------------------------------------------

FALLBACK_POLL_S: Final = 5.0
"""Longest wait between two re-reads of a task row while waiting for its result."""


def not_found(task_id: str) -> TaskResult[Any, TaskError]:
    """TASK_NOT_FOUND result."""
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.TASK_NOT_FOUND,
            message=f"Task {task_id} not found in database",
            data={"task_id": task_id},
        )
    )


def cancelled(task_id: str) -> TaskResult[Any, TaskError]:
    """TASK_CANCELLED result."""
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.TASK_CANCELLED,
            message=f"Task {task_id} was cancelled before completion",
            data={"task_id": task_id},
        )
    )


def wait_timeout(task_id: str, timeout_ms: int | None) -> TaskResult[Any, TaskError]:
    """WAIT_TIMEOUT result after the caller's deadline."""
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.WAIT_TIMEOUT,
            message=(
                f"Timed out waiting for task {task_id} after {timeout_ms}ms. "
                "Task may still be running."
            ),
            data={"task_id": task_id, "timeout_ms": timeout_ms},
        )
    )


def broker_error(
    task_id: str, timeout_ms: int | None, exc: BaseException
) -> TaskResult[Any, TaskError]:
    """BROKER_ERROR result carrying the exception."""
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.BROKER_ERROR,
            message="Broker error while retrieving task result",
            data={"task_id": task_id, "timeout_ms": timeout_ms},
            exception=exc,
        )
    )


def _decode_stored(
    task_id: str, status: str, result: str | None, failed_reason: str | None
) -> TaskResult[Any, TaskError]:
    if result is not None:
        return task_result_from_json(result)
    # A finished row without a result was written outside the worker (user SQL, recovery).
    if status == "FAILED":
        return TaskResult(
            err=TaskError(
                error_code=LibraryErrorCode.WORKER_CRASHED,
                message=failed_reason or f"Task {task_id} failed without a stored result",
                data={"task_id": task_id},
            )
        )
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.RESULT_NOT_AVAILABLE,
            message="Result not available - task may not have been executed",
            data={"task_id": task_id},
        )
    )


def result_from_row(task_id: str, row: Sequence[Any] | None) -> TaskResult[Any, TaskError] | None:
    """Interpret a TASK_GET_RESULT row (02 §5 step 2): a final result, or None to keep waiting."""
    if row is None:
        return not_found(task_id)
    status, result, failed_reason = row[0], row[1], row[2]
    if status in ("COMPLETED", "FAILED"):
        return _decode_stored(task_id, status, result, failed_reason)
    if status == "CANCELLED":
        return cancelled(task_id)
    return None


def result_after_notification(
    task_id: str, row: Sequence[Any] | None, timeout_ms: int | None
) -> TaskResult[Any, TaskError]:
    """02 §5 step 5: the row re-read after its task_done notification (never None)."""
    final = result_from_row(task_id, row)
    if final is not None:
        return final
    status = row[0] if row is not None else "UNKNOWN"
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.WAIT_TIMEOUT,
            message=(
                f"Task {task_id} was notified as finished but its status is {status}. "
                "Task may still be running."
            ),
            data={"task_id": task_id, "timeout_ms": timeout_ms},
        )
    )


def get_result_query(task_id: str) -> Query:
    """The read of one task's status and result."""
    return Query(task_sql.TASK_GET_RESULT, {"id": task_id})


class WaitPlan:
    """Deadline bookkeeping of one result wait (02 §5): ``timeout_ms`` None or <= 0 = forever."""

    def __init__(self, timeout_ms: int | None, now: float) -> None:
        self.timeout_ms = timeout_ms
        self.deadline = (
            now + timeout_ms / 1000 if timeout_ms is not None and timeout_ms > 0 else None
        )

    def next_wait(self, now: float) -> float | None:
        """Seconds to wait before the next re-read, or None when the deadline has passed."""
        if self.deadline is None:
            return FALLBACK_POLL_S
        remaining = self.deadline - now
        if remaining <= 0:
            return None
        return min(FALLBACK_POLL_S, remaining)


# -- finishing -------------------------------------------------------------------------------------


_CAPACITY_NOTIFY: Final = Query(task_sql.NOTIFY, {"channel": "task_new", "payload": "capacity"})
"""Wakes workers held back by a cluster-wide cap (``cluster_wide_cap``, queue ``max_concurrency``)
after rows left RUNNING. Only they need it: without such a cap no worker's claim budget depends on
another worker's tasks, so finishing workers skip it (``notify_capacity=False``); a wake-up sent
when every outcome lost its race is harmless."""


def finish_query(outcomes: Sequence[TaskOutcome], worker_id: str | None) -> Query:
    """TASK_FINISH_IF_RUNNING_MANY for a batch: final outcomes and retries in one statement."""
    rows = [
        {
            "id": o.task_id,
            "result": o.result_json,
            "ok": o.ok,
            "failed_reason": o.failed_reason,
            "retry_count": o.retry_count,
            "delay_s": None if o.retry_delay_s is None else max(0.0, float(o.retry_delay_s)),
        }
        for o in outcomes
    ]
    return Query(
        task_sql.TASK_FINISH_IF_RUNNING_MANY,
        {
            "outcomes": orjson.dumps(rows).decode(),
            "ids": [o.task_id for o in outcomes],
            "worker_id": worker_id,
        },
    )


def _log_lost(action: str, requested: Iterable[str], done: set[str], why: str) -> None:
    lost = [t for t in requested if t not in done]
    if lost:
        _log.info("%s: %d task(s) %s: %s", action, len(lost), why, ", ".join(lost[:20]))


def _finished(outcomes: Sequence[TaskOutcome], res: QueryResult) -> set[str]:
    done = {r[0] for r in res.rows}
    _log_lost(
        "task_finish_lost",
        (o.task_id for o in outcomes),
        done,
        "no longer RUNNING for this worker",
    )
    return done


def _workflow_ids(outcomes: Sequence[TaskOutcome]) -> list[str]:
    return sorted({o.workflow_id for o in outcomes if o.workflow_id is not None})


def _workflow_advance(
    app: Horsies | None, outcomes: Sequence[TaskOutcome], workflow_ids: Sequence[str]
) -> workflow_ops.FinishedAdvance | None:
    """The workflow advance of a finish batch (its reads go in the finish round trip), or None."""
    if not workflow_ids:
        return None
    from horsies.broker import workflow_ops

    task_ids = [o.task_id for o in outcomes if o.workflow_id is not None]
    return workflow_ops.FinishedAdvance(app, task_ids, workflow_ids)


def finish_op(
    outcomes: Sequence[TaskOutcome],
    worker_id: str | None,
    *,
    notify_capacity: bool = True,
    app: Horsies | None = None,
    advance_workflows: bool = True,
) -> Op[set[str]]:
    """Finalise a batch in one statement (COMPLETED/FAILED rows and retries) plus, when
    ``notify_capacity``, one capacity wake-up in the same round trip; returns the ids written.

    Outcomes of workflow tasks (``workflow_id`` set) also advance their workflows in the same
    transaction (run the op in one): the trees' root rows are locked before the finish, then the
    engine runs (``advance_workflows=False`` leaves that to the reaper's reconciliation).
    """
    if not outcomes:
        return set()
    from horsies.broker import workflow_ops

    workflow_ids = _workflow_ids(outcomes) if advance_workflows else []
    queries = [workflow_ops.lock_roots_query(workflow_ids)] if workflow_ids else []
    finish_at = len(queries)
    queries.append(finish_query(outcomes, worker_id))
    if notify_capacity:
        queries.append(_CAPACITY_NOTIFY)
    advance = _workflow_advance(app, outcomes, workflow_ids)
    advance_at = len(queries)
    if advance is not None:
        queries.extend(advance.queries())
    parts = yield from together(queries)
    finished = _finished(outcomes, parts[finish_at])
    if advance is not None:
        yield from advance.run(parts[advance_at:])
    return finished


# -- claiming --------------------------------------------------------------------------------------


def claim_op(worker_id: str, request: ClaimRequest) -> Op[list[ClaimedTask]]:
    """One claim pass (in a transaction): lock + count if a cluster cap applies, plan, claim."""
    in_flight: dict[str, InFlight] = {}
    if request.local_budget <= 0:
        return []
    if needs_cluster_counts(request):
        # One round trip for both: the count runs after the lock is granted.
        _, counts = yield from together(
            (
                Query(task_sql.TASK_CLAIM_LOCK, {"key": CLAIM_LOCK_KEY}),
                Query(task_sql.TASK_COUNT_IN_FLIGHT),
            )
        )
        in_flight = {q: InFlight(running=r, claimed=c) for q, r, c in counts.rows}
    plan = plan_claims(request, in_flight)
    lease_ms = request.claim_lease_ms if request.soft_cap else None
    remaining = plan.total
    claimed: list[ClaimedTask] = []
    for queue_name, limit in plan.queue_limits:
        if remaining <= 0:
            break
        n = min(limit, remaining)
        if n <= 0:
            continue
        res = yield Query(
            task_sql.TASK_CLAIM_AVAILABLE,
            {"queue_name": queue_name, "limit": n, "worker_id": worker_id, "lease_ms": lease_ms},
        )
        rows = _claimed_rows(res.rows)
        claimed.extend(rows)
        remaining -= len(rows)
    return claimed


_PLANS_GENERIC: Final = Query(task_sql.TASK_PLANS_GENERIC_IN_TRANSACTION, rows="none")
_PLANS_GENERIC_ASYNC_COMMIT: Final = Query(
    task_sql.TASK_PLANS_GENERIC_ASYNC_COMMIT_IN_TRANSACTION, rows="none"
)


def _exchange_settings(*, durable: bool) -> Query:
    """The first statement of a worker exchange: generic plans, and an asynchronous commit unless
    it is ``durable`` (it writes outcomes or gives tasks back; see the SQL constant)."""
    return _PLANS_GENERIC if durable else _PLANS_GENERIC_ASYNC_COMMIT


def can_start_directly(request: ClaimRequest) -> bool:
    """True when claims may go PENDING -> RUNNING in one statement (TASK_CLAIM_AND_START_AVAILABLE).

    That needs hard-cap mode (soft-cap prefetch holds CLAIMED rows with a lease) and no cluster-wide
    limit (those count in-flight rows under the claim advisory lock, in a transaction, and keep
    the CLAIMED phase).
    """
    return not request.soft_cap and not needs_cluster_counts(request)


def _direct_claim_limits(request: ClaimRequest, slots: int) -> list[tuple[str, int]]:
    """(queue, ceiling) pairs of a direct claim for ``slots`` idle children, in claim order."""
    plan = plan_claims(request, {})
    total = min(plan.total, slots)
    return [(q, min(limit, total)) for q, limit in plan.queue_limits if min(limit, total) > 0]


def exchange_needs_transaction(
    request: ClaimRequest | None, slots: int, outcomes: Sequence[TaskOutcome] = ()
) -> bool:
    """True when :func:`exchange_op` may take more than one statement (claims in several queues,
    or workflow outcomes to advance), so the exchange must run in an explicit transaction to stay
    all-or-nothing."""
    if any(o.workflow_id is not None for o in outcomes):
        return True
    return request is not None and slots > 0 and len(_direct_claim_limits(request, slots)) > 1


def _claim_and_start_more(
    worker_id: str,
    hostname: str,
    limits: Sequence[tuple[str, int]],
    pids: Sequence[int],
    started: list[StartedTask],
) -> Op[int]:
    """Claim-and-start in the further queues of ``limits`` (one statement each, in order) for the
    pids that ``started`` has not served yet, extending it; returns how many rows were asked."""
    asked = 0
    for queue_name, limit in limits:
        free = list(pids[len(started) :])
        n = min(limit, len(free))
        if n <= 0:
            break
        asked += n
        res = yield _claim_and_start_query(worker_id, hostname, queue_name, free[:n])
        started.extend(_started_rows(res.rows))
    return asked


def _claim_and_start_query(
    worker_id: str, hostname: str, queue_name: str, pids: Sequence[int]
) -> Query:
    return Query(
        task_sql.TASK_CLAIM_AND_START_AVAILABLE,
        {
            "queue_name": queue_name,
            "pids": list(pids),
            "worker_id": worker_id,
            "hostname": hostname,
        },
    )


def _started_rows(rows: Iterable[Sequence[Any]]) -> list[StartedTask]:
    started = [StartedTask(ClaimedTask(*r[:11]), int(r[11])) for r in rows]
    started.sort(key=lambda s: (s.task.priority, s.task.sent_at, s.task.id))
    return started


def _exchange_head(
    outcomes: Sequence[TaskOutcome], worker_id: str, *, durable: bool
) -> tuple[list[Query], list[str], int]:
    """The first statements of a worker exchange — its settings (generic plans: see
    TASK_PLANS_GENERIC_IN_TRANSACTION; they end with the exchange's implicit or explicit
    transaction), the locks of the outcomes' workflow trees, the finish — with the workflow ids
    and the index of the finish statement."""
    from horsies.broker import workflow_ops

    first: list[Query] = [_exchange_settings(durable=durable)]
    workflow_ids = _workflow_ids(outcomes)
    if workflow_ids:
        first.append(workflow_ops.lock_roots_query(workflow_ids))
    finish_at = len(first)
    if outcomes:
        first.append(finish_query(outcomes, worker_id))
    return first, workflow_ids, finish_at


def exchange_op(
    worker_id: str,
    hostname: str,
    *,
    outcomes: Sequence[TaskOutcome],
    request: ClaimRequest | None,
    pids: Sequence[int],
    notify_capacity: bool,
    keep_running_ids: Sequence[str] | None,
    app: Horsies | None = None,
) -> Op[TaskExchange]:
    """A worker's hot path in one round trip: write ``outcomes``, then claim and start up to one
    task per child pid in ``pids`` (hard-cap mode without cluster-wide caps, see
    :func:`can_start_directly`).

    The statements go out as one pipeline, so without an explicit transaction they commit together
    or not at all: a failure leaves every outcome unwritten and nothing claimed, and the caller
    simply tries again. With several queues the later claims depend on how many rows the earlier
    ones got (one statement each), so the caller runs the op in a transaction then
    (:func:`exchange_needs_transaction`).

    ``keep_running_ids`` (after a failed exchange whose claims may have committed without the
    reply arriving) also sends this worker's RUNNING rows that are not in the list back to
    PENDING: no child ever got them.

    Workflow outcomes (run in a transaction, see :func:`exchange_needs_transaction`) lock their
    trees first and advance them after the finish; the claim then comes last, so a node enqueued
    by the advance (the next link of a chain) can be started by this very exchange.
    """
    if request is not None and not can_start_directly(request):
        raise ValueError("exchange_op claims only in hard-cap mode without cluster-wide caps")
    durable = bool(outcomes) or keep_running_ids is not None
    first, workflow_ids, finish_at = _exchange_head(outcomes, worker_id, durable=durable)
    if outcomes and notify_capacity:
        first.append(_CAPACITY_NOTIFY)
    reconcile_at = -1
    if keep_running_ids is not None:
        reconcile_at = len(first)
        # The outcomes' rows are never untracked, whatever the caller passed.
        keep = [*keep_running_ids, *(o.task_id for o in outcomes)]
        first.append(
            Query(
                task_sql.TASK_REQUEUE_UNTRACKED_RUNNING, {"worker_id": worker_id, "keep_ids": keep}
            )
        )
        first.append(Query(task_sql.NOTIFY, {"channel": "task_new", "payload": "requeued"}))
    limits = _direct_claim_limits(request, len(pids)) if request is not None else []
    claim_at = -1
    asked = 0
    if limits and not workflow_ids:
        claim_at = len(first)
        queue_name, asked = limits[0]
        first.append(_claim_and_start_query(worker_id, hostname, queue_name, pids[:asked]))
        limits = limits[1:]
    advance = _workflow_advance(app, outcomes, workflow_ids)
    advance_at = len(first)
    if advance is not None:
        first.extend(advance.queries())
    if len(first) == 1 and not limits:
        return TaskExchange()
    parts = yield from together(first)
    finished = _finished(outcomes, parts[finish_at]) if outcomes else set[str]()
    if advance is not None:
        yield from advance.run(parts[advance_at:])
    requeued: list[str] = []
    if reconcile_at >= 0:
        requeued = [r[0] for r in parts[reconcile_at].rows]
        if requeued:
            _log.warning(
                "task_requeued_untracked: %d task(s) started by a claim whose reply was lost went "
                "back to PENDING: %s",
                len(requeued),
                ", ".join(requeued[:20]),
            )
    started: list[StartedTask] = _started_rows(parts[claim_at].rows) if claim_at >= 0 else []
    asked += yield from _claim_and_start_more(worker_id, hostname, limits, pids, started)
    return TaskExchange(
        finished=finished, started=started, requeued=requeued, full=0 < asked == len(started)
    )


def prefetch_exchange_op(
    worker_id: str,
    hostname: str,
    *,
    outcomes: Sequence[TaskOutcome],
    starts: Sequence[tuple[str, int]],
    direct_pids: Sequence[int] = (),
    request: ClaimRequest | None,
    release_ids: Sequence[str] = (),
    keep_running_ids: Sequence[str] | None = None,
    app: Horsies | None = None,
) -> Op[PrefetchExchange]:
    """Prefetch (soft-cap) mode's hot path, without cluster-wide caps, in one transaction and
    usually one round trip: write ``outcomes``, start the claims handed to children (``starts``:
    (task id, child pid), CLAIMED -> RUNNING while the lease holds), fill the other free child
    slots straight from PENDING (``direct_pids``: one child pid per slot, in the order the most
    urgent tasks should go; PENDING -> RUNNING, no CLAIMED phase) and claim up to
    ``request.local_budget`` more (PENDING -> CLAIMED with a lease).

    Run it in a transaction when :func:`prefetch_exchange_needs_transaction` says so. After a call
    that failed with starts in it (it may have committed without the reply arriving), the worker
    no longer holds those tasks: the next call passes their ids as ``release_ids`` (claims it never
    started go back to PENDING) and every task it still holds as ``keep_running_ids`` (its other
    RUNNING rows — started, but never handed to a child — go back to PENDING too).
    """
    if request is not None and needs_cluster_counts(request):
        raise ValueError("prefetch_exchange_op claims only without cluster-wide caps")
    durable = bool(outcomes) or bool(release_ids) or keep_running_ids is not None
    first, workflow_ids, finish_at = _exchange_head(outcomes, worker_id, durable=durable)
    if keep_running_ids is not None or release_ids:
        keep = [*(keep_running_ids or ()), *(o.task_id for o in outcomes)]
        if keep_running_ids is not None:
            first.append(
                Query(
                    task_sql.TASK_REQUEUE_UNTRACKED_RUNNING,
                    {"worker_id": worker_id, "keep_ids": keep},
                )
            )
        if release_ids:
            first.append(
                Query(
                    task_sql.TASK_RELEASE_CLAIMED_MANY,
                    {"ids": list(release_ids), "worker_id": worker_id},
                )
            )
        first.append(Query(task_sql.NOTIFY, {"channel": "task_new", "payload": "requeued"}))
    start_at = len(first)
    if starts:
        first.append(
            Query(
                task_sql.TASK_START_IF_CLAIMED_MANY,
                {
                    "ids": [task_id for task_id, _ in starts],
                    "pids": [pid for _, pid in starts],
                    "hostname": hostname,
                    "worker_id": worker_id,
                    "resume": False,
                },
            )
        )
    direct = _direct_claim_limits(request, len(direct_pids)) if direct_pids and request else []
    direct_at = len(first)
    if direct:
        first.append(_claim_and_start_query(worker_id, hostname, direct[0][0], direct_pids))
    total, limits = _prefetch_claim_limits(request, len(direct_pids))
    claim_at = len(first)
    if limits:
        first.append(
            _prefetch_claim_query(worker_id, request, limits[0][0], min(limits[0][1], total))
        )
    advance = _workflow_advance(app, outcomes, workflow_ids)
    advance_at = len(first)
    if advance is not None:
        first.extend(advance.queries())
    if len(first) == 1:
        return PrefetchExchange()
    parts = yield from together(first)
    finished = _finished(outcomes, parts[finish_at]) if outcomes else set[str]()
    if advance is not None:
        yield from advance.run(parts[advance_at:])
    started: set[str] = set()
    if starts:
        started = {r[0] for r in parts[start_at].rows}
        _log_lost(
            "task_start_lost", (t for t, _ in starts), started, "no longer CLAIMED by this worker"
        )
    direct_started: list[StartedTask] = []
    if direct:
        direct_started = _started_rows(parts[direct_at].rows)
        yield from _claim_and_start_more(
            worker_id, hostname, direct[1:], direct_pids, direct_started
        )
    claimed: list[ClaimedTask] = []
    if limits:
        claimed.extend(_claimed_rows(parts[claim_at].rows))
        for queue_name, limit in limits[1:]:
            n = min(limit, total - len(claimed))
            if n <= 0:
                break
            res = yield _prefetch_claim_query(worker_id, request, queue_name, n)
            claimed.extend(_claimed_rows(res.rows))
    return PrefetchExchange(
        finished=finished, started=started, direct=direct_started, claimed=claimed
    )


def _prefetch_claim_limits(
    request: ClaimRequest | None, direct_slots: int = 0
) -> tuple[int, list[tuple[str, int]]]:
    """The total a prefetch claim may take (the budget left after ``direct_slots``) and its
    (queue, ceiling) pairs in claim order."""
    if request is None or request.local_budget <= direct_slots:
        return 0, []
    plan = plan_claims(request, {})
    total = min(plan.total, request.local_budget - direct_slots)
    return total, [(q, n) for q, n in plan.queue_limits if n > 0]


def _prefetch_claim_query(
    worker_id: str, request: ClaimRequest | None, queue_name: str, limit: int
) -> Query:
    return Query(
        task_sql.TASK_CLAIM_AVAILABLE,
        {
            "queue_name": queue_name,
            "limit": limit,
            "worker_id": worker_id,
            "lease_ms": request.claim_lease_ms if request is not None else None,
        },
    )


def _claimed_rows(rows: Iterable[Sequence[Any]]) -> list[ClaimedTask]:
    return sorted((ClaimedTask(*r) for r in rows), key=lambda t: (t.priority, t.sent_at, t.id))


def prefetch_exchange_needs_transaction(
    request: ClaimRequest | None, direct_slots: int, outcomes: Sequence[TaskOutcome] = ()
) -> bool:
    """True when :func:`prefetch_exchange_op` may take more than one round trip (claims in several
    queues, or workflow outcomes to advance): then it must run in an explicit transaction."""
    if any(o.workflow_id is not None for o in outcomes):
        return True
    if (
        direct_slots
        and request is not None
        and len(_direct_claim_limits(request, direct_slots)) > 1
    ):
        return True
    return len(_prefetch_claim_limits(request, direct_slots)[1]) > 1


def requeue_running_op(worker_id: str, task_ids: Sequence[str]) -> Op[list[str]]:
    """The named RUNNING rows of this worker -> PENDING (no child ever began them; not an attempt);
    returns their ids and wakes the workers when there are any."""
    if not task_ids:
        return []
    res = yield Query(
        task_sql.TASK_REQUEUE_RUNNING_MANY, {"ids": list(task_ids), "worker_id": worker_id}
    )
    if res.rows:
        yield Query(task_sql.NOTIFY, {"channel": "task_new", "payload": "requeued"})
    return [r[0] for r in res.rows]


def requeue_untracked_running_op(worker_id: str, keep_running_ids: Sequence[str]) -> Op[list[str]]:
    """This worker's RUNNING rows not in ``keep_running_ids`` -> PENDING (see :func:`exchange_op`);
    returns their ids."""
    exchange = yield from exchange_op(
        worker_id,
        "",
        outcomes=(),
        request=None,
        pids=(),
        notify_capacity=False,
        keep_running_ids=keep_running_ids,
    )
    return exchange.requeued


# -- execution -------------------------------------------------------------------------------------


def start_op(
    worker_id: str, hostname: str, starts: Sequence[tuple[str, int]], *, resume: bool = False
) -> Op[set[str]]:
    """CLAIMED -> RUNNING for (task id, child pid) pairs; returns the ids actually started.

    ``resume``: this repeats a call whose connection was lost, so rows it had already started
    (RUNNING for this worker and the same pid) count as started."""
    if not starts:
        return set()
    res = yield Query(
        task_sql.TASK_START_IF_CLAIMED_MANY,
        {
            "ids": [task_id for task_id, _ in starts],
            "pids": [pid for _, pid in starts],
            "hostname": hostname,
            "worker_id": worker_id,
            "resume": resume,
        },
    )
    started = {r[0] for r in res.rows}
    _log_lost(
        "task_start_lost", (t for t, _ in starts), started, "no longer CLAIMED by this worker"
    )
    return started


def release_op(worker_id: str, task_ids: Sequence[str]) -> Op[int]:
    """CLAIMED (owned) -> PENDING; returns the number released."""
    if not task_ids:
        return 0
    res = yield Query(
        task_sql.TASK_RELEASE_CLAIMED_MANY, {"ids": list(task_ids), "worker_id": worker_id}
    )
    if res.rows:
        # Released tasks are claimable again: wake the workers.
        yield Query(task_sql.NOTIFY, {"channel": "task_new", "payload": "released"})
    return len(res.rows)


def heartbeat_query(
    worker_id: str,
    hostname: str,
    pid: int,
    claimed_ids: Sequence[str],
    running: Sequence[tuple[str, int]],
) -> Query | None:
    """HEARTBEAT_INSERT_MANY for a worker's CLAIMED (claimer) and RUNNING (runner) tasks; None if
    none."""
    if not claimed_ids and not running:
        return None
    return Query(
        hb_sql.HEARTBEAT_INSERT_MANY,
        {
            "hostname": hostname,
            "task_ids": [*claimed_ids, *(t for t, _ in running)],
            "sender_ids": [worker_id] * len(claimed_ids) + [f"{worker_id}:{p}" for _, p in running],
            "roles": ["claimer"] * len(claimed_ids) + ["runner"] * len(running),
            "pids": [pid] * len(claimed_ids) + [p for _, p in running],
        },
        rows="none",
    )


def worker_state_query(state: WorkerStateRow) -> Query:
    """WORKER_STATE_INSERT for one snapshot."""

    def js(value: Mapping[str, Any] | None) -> str | None:
        return None if value is None else dumps_json(dict(value))

    return Query(
        hb_sql.WORKER_STATE_INSERT,
        {
            "worker_id": state.worker_id,
            "hostname": state.hostname,
            "pid": state.pid,
            "processes": state.processes,
            "max_claim_batch": state.max_claim_batch,
            "max_claim_per_worker": state.max_claim_per_worker,
            "cluster_wide_cap": state.cluster_wide_cap,
            "queues": list(state.queues),
            "queue_priorities": js(state.queue_priorities),
            "queue_max_concurrency": js(state.queue_max_concurrency),
            "recovery_config": js(state.recovery_config),
            "tasks_running": state.tasks_running,
            "tasks_claimed": state.tasks_claimed,
            "memory_usage_mb": state.memory_usage_mb,
            "memory_percent": state.memory_percent,
            "cpu_percent": state.cpu_percent,
            "worker_started_at": state.worker_started_at,
        },
        rows="none",
    )


# -- operator actions ------------------------------------------------------------------------------


def cancel_task_op(app: Horsies | None, task_id: str) -> Op[bool]:
    """Cancel a task no worker has started (run in a transaction); False when it had started,
    ended or does not exist. Waiters are woken (``task_done``); a workflow task's node ends FAILED
    with ``TASK_CANCELLED`` and its workflow advances, its tree locked first as a worker would."""
    from horsies.broker import workflow_ops

    found = yield Query(task_sql.TASK_GET_WORKFLOW_ID, {"id": task_id})
    workflow_id: str | None = found.rows[0][0] if found.rows else None
    if workflow_id is not None:
        yield workflow_ops.lock_roots_query([workflow_id])
    res = yield Query(task_sql.TASK_CANCEL_IF_NOT_STARTED, {"id": task_id})
    if not res.rows:
        return False
    yield notify_query("task_done", task_id)
    if workflow_id is not None:
        advance = workflow_ops.FinishedAdvance(app, [task_id], [workflow_id])
        parts = yield from together(advance.queries())
        yield from advance.run(parts)
    return True


def retry_task_op(task_id: str) -> Op[bool]:
    """Send an ended (FAILED or CANCELLED) plain task back to PENDING for a fresh run and wake the
    workers of its queue; False for a workflow task, a task that has not ended, or an unknown id."""
    res = yield Query(task_sql.TASK_RETRY_IF_ENDED, {"id": task_id})
    if not res.rows:
        return False
    queue_name = str(res.rows[0][0])
    yield from together(
        (notify_query("task_new", task_id), notify_query(f"task_queue_{queue_name}", task_id))
    )
    return True


# -- recovery (04 §10, D10) ------------------------------------------------------------------------


def requeue_stale_claimed_op(threshold_ms: int) -> Op[int]:
    """Stale CLAIMED -> PENDING (04 §10 step 1); returns the number requeued."""
    res = yield Query(task_sql.TASK_REQUEUE_STALE_CLAIMED, {"threshold_ms": threshold_ms})
    if res.rows:
        _log.warning(
            "task_requeued_stale_claim: %d task(s) whose claimer stopped heartbeating went back to "
            "PENDING: %s",
            len(res.rows),
            ", ".join(r[0] for r in res.rows[:20]),
        )
        yield Query(task_sql.NOTIFY, {"channel": "task_new", "payload": "requeued"})
    return len(res.rows)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def worker_crashed_result(
    threshold_ms: int,
    *,
    worker_pid: int | None,
    worker_hostname: str | None,
    worker_id: str | None,
    started_at: datetime | None,
    last_heartbeat: datetime | None,
    detected_at: datetime,
) -> tuple[TaskResult[Any, TaskError], str]:
    """(WORKER_CRASHED result, failed_reason) for a task whose runner went silent (04 §10)."""
    seconds = f"{threshold_ms / 1000:g}s"
    reason = f"Worker process crashed (no runner heartbeat for {threshold_ms}ms = {seconds})"
    error = TaskError(
        error_code=LibraryErrorCode.WORKER_CRASHED,
        message=reason,
        data={
            "stale_threshold_ms": threshold_ms,
            "stale_threshold_seconds": threshold_ms / 1000,
            "worker_pid": worker_pid,
            "worker_hostname": worker_hostname,
            "worker_id": worker_id,
            "started_at": _iso(started_at),
            "last_heartbeat": _iso(last_heartbeat),
            "detected_at": _iso(detected_at),
        },
    )
    return TaskResult(err=error), reason


def _retry_delay(
    result: TaskResult[Any, TaskError], retry_count: int, max_retries: int, options_json: str | None
) -> float | None:
    from horsies.tasks.retry import TaskOptions, decide_retry

    try:
        options = TaskOptions.from_json(options_json)
    except Exception:
        _log.warning("unreadable task_options %r: not retrying", options_json)
        return None
    delay = decide_retry(result, retry_count=retry_count, max_retries=max_retries, options=options)
    return None if delay is None else float(delay)


def fail_stale_running_op(
    threshold_ms: int, *, allow_retry: bool, max_batches: int | None
) -> Op[tuple[int, int]]:
    """Stale RUNNING -> FAILED with WORKER_CRASHED, or -> PENDING for a retry when the task's
    auto_retry_for lists WORKER_CRASHED and retries remain (D10; only with ``allow_retry``).

    Run in a transaction. Returns (failed, retried). ``max_batches`` bounds the work of one call.
    """
    failed = retried = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        res = yield Query(
            task_sql.TASK_GET_STALE_RUNNING,
            {"threshold_ms": threshold_ms, "limit": STALE_RUNNING_BATCH},
        )
        if not res.rows:
            break
        outcomes: list[TaskOutcome] = []
        for row in res.rows:
            (
                task_id,
                task_name,
                _queue,
                worker_pid,
                worker_hostname,
                worker_id,
                started_at,
                last_heartbeat,
                retry_count,
                max_retries,
                task_options,
                detected_at,
                workflow_id,
            ) = row
            result, reason = worker_crashed_result(
                threshold_ms,
                worker_pid=worker_pid,
                worker_hostname=worker_hostname,
                worker_id=worker_id,
                started_at=started_at,
                last_heartbeat=last_heartbeat,
                detected_at=detected_at,
            )
            delay = (
                _retry_delay(result, retry_count, max_retries, task_options)
                if allow_retry
                else None
            )
            outcomes.append(
                TaskOutcome(
                    task_id=task_id,
                    result_json=task_result_to_json(result),
                    ok=False,
                    retry_delay_s=delay,
                    failed_reason=reason,
                    retry_count=retry_count,
                    workflow_id=workflow_id,
                )
            )
            _log.warning(
                "task_worker_crashed: task %s (%s) on %s pid %s: %s%s",
                task_id,
                task_name,
                worker_hostname,
                worker_pid,
                reason,
                f"; retrying in {delay:g}s" if delay is not None else "",
            )
        # Workflows learn about these through reconcile_op (same transaction), which never waits
        # for a tree lock: this transaction already holds task rows a finishing worker may need.
        done = yield from finish_op(outcomes, worker_id=None, advance_workflows=False)
        retried += sum(1 for o in outcomes if o.retry_delay_s is not None and o.task_id in done)
        failed += sum(1 for o in outcomes if o.retry_delay_s is None and o.task_id in done)
        if len(res.rows) < STALE_RUNNING_BATCH:
            break
    return failed, retried


RECONCILE_MIN_AGE_MS: Final = 1_000
"""A RUNNING workflow must have been quiet this long before the reaper re-examines it."""


def reap_op(recovery: RecoveryConfig, app: Horsies | None = None) -> Op[ReapReport]:
    """One reaper pass (run in a transaction); does nothing when another reaper holds the lock.
    Ends with the workflow reconciliation (03 §16), which also carries the tasks failed here into
    their workflows."""
    res = yield Query(task_sql.TASK_REAPER_TRY_LOCK, {"key": REAPER_LOCK_KEY})
    if not res.rows or not res.rows[0][0]:
        return ReapReport(ran=False)
    requeued = failed = retried = 0
    if recovery.auto_requeue_stale_claimed:
        requeued = yield from requeue_stale_claimed_op(recovery.claimed_stale_threshold_ms)
    if recovery.auto_fail_stale_running:
        failed, retried = yield from fail_stale_running_op(
            recovery.running_stale_threshold_ms, allow_retry=True, max_batches=4
        )
    from horsies.broker import workflow_ops

    reconciled = yield from workflow_ops.reconcile_op(app, RECONCILE_MIN_AGE_MS)
    return ReapReport(requeued=requeued, failed=failed, retried=retried, reconciled=reconciled)


# -- monitoring ------------------------------------------------------------------------------------


def dict_rows(
    sql: LiteralString, params: Mapping[str, Any] | None = None
) -> Op[list[dict[str, Any]]]:
    """A read-only statement whose rows come back as dicts."""
    res = yield Query(sql, params, rows="dict")
    return list(res.rows)


def get_task_op(task_id: str) -> Op[dict[str, Any] | None]:
    """The row of one task as a dict, or None."""
    res = yield Query(task_sql.TASK_GET, {"id": task_id}, rows="dict")
    return dict(res.rows[0]) if res.rows else None


def stale_tasks_op(stale_threshold_minutes: int) -> Op[list[dict[str, Any]]]:
    """get_stale_tasks rows (06 §1)."""
    return dict_rows(mon_sql.MONITOR_STALE_TASKS, {"threshold_minutes": stale_threshold_minutes})


def notify_query(channel: str, payload: str) -> Query:
    """pg_notify(channel, payload)."""
    return Query(task_sql.NOTIFY, {"channel": channel, "payload": payload})
