"""New tasks: the rows of sends (one call, a batch of requests or a batch of calls of one task) and
the operations that insert them.

Arguments are encoded and checked (codec errors, the payload limit, the priority range) while the
rows are built, before any I/O.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, TypeAlias, TypedDict, cast

from horsies.broker.copy_encoder import TaskBatch
from horsies.broker.errors import BrokerError
from horsies.broker.ids import new_task_id, new_task_ids
from horsies.broker.limits import LimitTag, limited_rows_query, row_tag, tagged_row
from horsies.broker.programs import Program, Run
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import STEP_TYPES, Copy, CopyData, Op, Prepared, Query, QueryResult, Step
from horsies.codec import args_to_json, check_payload_size, kwargs_to_json
from horsies.logs import get_logger
from horsies.names import queue_name_problem, task_name_problem

_log = get_logger("broker")


_SENT_AT: Final = task_sql.TASK_COPY_COLUMNS.index("sent_at")


@dataclass(frozen=True, slots=True)
class EnqueueRequest:
    """One task to insert with `PostgresBroker.enqueue_many` (same fields as
    `PostgresBroker.enqueue`).

    ``args``/``kwargs`` are Python values, encoded with the codec at enqueue time; ``task_options``
    is the options JSON text (``TaskOptions.to_json()``); ``task_id`` None means a fresh UUID4.
    """

    task_name: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] | None = None
    queue_name: str = "default"
    priority: int = 100
    sent_at: datetime | None = None
    good_until: datetime | None = None
    task_options: str | None = None
    max_retries: int = 0
    task_id: str | None = None
    delay_s: float | None = None
    limit: LimitTag | None = None
    """The rate or concurrency limit the task is subject to, with its key."""


class BatchOptions(TypedDict, total=False):
    """What the tasks of one ``enqueue_calls`` batch share besides their task and queue (defaults:
    priority 100, no expiry, no options, no retries)."""

    priority: int
    good_until: datetime | None
    task_options: str | None
    max_retries: int


class EnqueueOptions(BatchOptions, total=False):
    """The keyword options of ``enqueue``: a batch's, plus when the task becomes claimable
    (``sent_at``, default now; or ``delay_s`` seconds after the database's clock reads now) and its
    id (default: a new one)."""

    sent_at: datetime | None
    delay_s: float | None
    task_id: str | None
    limit: LimitTag | None


def _check_priority(priority: int) -> None:
    if not 1 <= priority <= 100:
        raise ValueError(f"priority must be between 1 and 100, got {priority}")


def delay_problem(name: str, value: object) -> str | None:
    """What makes ``value`` unusable as a delay (``name`` is the caller's word for it), or None."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        return f"{name} must be a finite number of seconds >= 0, got {value!r}"
    return None


def _checked_delay(req: EnqueueRequest) -> timedelta:
    # A delay stays a timedelta in the row: the insert adds it to the database's clock.
    if req.sent_at is not None:
        raise ValueError("pass either sent_at or delay_s, not both")
    problem = delay_problem("delay_s", req.delay_s)
    if problem is not None:
        raise ValueError(problem)
    return timedelta(seconds=cast("float", req.delay_s))


@functools.lru_cache(maxsize=1024)
def _names_problem(task_name: str, queue_name: str) -> str | None:
    # Cached: every send names a task and a queue that earlier sends have named, and a send of a
    # task function names ones its definition and the queue configuration checked already.
    return task_name_problem(task_name) or queue_name_problem(queue_name)


def _check_names(task_name: str, queue_name: str) -> None:
    # The same rules as @app.task and the queue configuration: a name that would only fail in the
    # database (a lone surrogate, a NOTIFY channel over 63 bytes) is refused here.
    problem = _names_problem(task_name, queue_name)
    if problem is not None:
        raise ValueError(f"cannot enqueue: {problem}")


def _check_aware(name: str, value: datetime | None) -> None:
    # A naive datetime means a different instant on every host's clock setting.
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(
            f"{name} must be timezone-aware (for example datetime.now(UTC) + timedelta(...)), "
            f"got {value!r}"
        )


def enqueue_params(
    request: EnqueueRequest, max_payload_bytes: int | None = None
) -> tuple[str, dict[str, Any]]:
    """(task id, TASK_INSERT parameters); encodes args/kwargs (SerializationError, incl.
    PayloadTooLargeError above ``max_payload_bytes``, before I/O)."""
    task_id = request.task_id or new_task_id()
    row = _task_row(task_id, request, max_payload_bytes)
    return task_id, dict(zip(task_sql.TASK_COPY_COLUMNS, row, strict=True))


_TASK_INSERT_NAME: Final = "horsies_task_insert_v1"
"""Name of TASK_INSERT's prepared statement (change it with the statement)."""


def task_insert_step(row: tuple[Any, ...]) -> Step:
    """The insert of one :func:`request_row`: TASK_INSERT as a libpq prepared statement, or
    TASK_INSERT_AFTER_DELAY when its ``sent_at`` is a delay (a timedelta), or the insert of
    limited tasks for a row under a limit."""
    if row_tag(row) is not None:
        return limited_rows_query([row])
    delay = row[_SENT_AT]
    if not isinstance(delay, timedelta):
        return Prepared(_TASK_INSERT_NAME, task_sql.TASK_INSERT, task_sql.TASK_INSERT_TYPES, row)
    params = dict(zip(task_sql.TASK_COPY_COLUMNS, row, strict=True))
    return Query(task_sql.TASK_INSERT_AFTER_DELAY, {**params, "delay_s": delay.total_seconds()})


_INSERT_MANY_BINARY: Final = task_sql.TASK_INSERT_MANY.replace(")s::", ")b::")
"""TASK_INSERT_MANY with its arrays sent in binary: no text-array quoting and escaping."""


def insert_rows_query(rows: Sequence[Sequence[Any]]) -> Query:
    """One TASK_INSERT_MANY statement for :func:`request_row` rows (several sends in one statement:
    one transaction, one round trip). Rows without ``sent_at`` get the statement's ``now()`` minus
    a microsecond per later row, so they are claimed in row order."""
    columns = zip(*rows, strict=True)
    return Query(
        _INSERT_MANY_BINARY,
        {
            name: list(column)
            for name, column in zip(task_sql.TASK_INSERT_MANY_ARRAYS, columns, strict=True)
        },
        rows="none",
        prepare=True,
    )


def request_row(
    req: EnqueueRequest, max_payload_bytes: int | None, task_id: str | None = None
) -> tuple[Any, ...]:
    """The values of the new task row of ``req``, in ``TASK_COPY_COLUMNS`` order, under
    ``task_id``, else the request's own id, else a fresh one. The arguments are encoded (codec
    errors raise here, before any I/O) and checked against ``max_payload_bytes`` (None =
    unlimited). A task under a limit gets the limit's name and key after those columns."""
    _check_priority(req.priority)
    _check_names(req.task_name, req.queue_name)
    _check_aware("sent_at", req.sent_at)
    _check_aware("good_until", req.good_until)
    sent_at: datetime | timedelta | None = req.sent_at
    if req.delay_s is not None:
        sent_at = _checked_delay(req)
    args_json = args_to_json(tuple(req.args)) if req.args else None
    kwargs_json = kwargs_to_json(req.kwargs) if req.kwargs else None
    check_payload_size("task arguments", (args_json, kwargs_json), max_payload_bytes)
    row = (
        task_id or req.task_id or new_task_id(),
        req.task_name,
        req.queue_name,
        req.priority,
        args_json,
        kwargs_json,
        sent_at,
        req.good_until,
        req.max_retries,
        req.task_options,
    )
    return tagged_row(row, req.limit)


def _task_row(task_id: str, req: EnqueueRequest, max_payload_bytes: int | None) -> list[Any]:
    """:func:`request_row` as a list (``enqueue_many_op`` fills in ``sent_at``)."""
    return list(request_row(req, max_payload_bytes, task_id))


def enqueue_many_params(
    requests: Sequence[EnqueueRequest], max_payload_bytes: int | None = None
) -> tuple[list[str], dict[str, Any]]:
    """(task ids, TASK_INSERT_MANY array parameters) for a batch, in request order."""
    ids = [req.task_id or new_task_id() for req in requests]
    rows = [_task_row(i, req, max_payload_bytes) for i, req in zip(ids, requests, strict=True)]
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    return ids, {
        name: columns[i] if columns else []
        for i, name in enumerate(task_sql.TASK_INSERT_MANY_ARRAYS)
    }


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
    microsecond per later row, so FIFO order within the batch is the order of the rows; a delay
    (timedelta) is added to that ``now()``. Returns the number of rows inserted. A batch with
    tasks under a limit is one insert of limited tasks instead.
    """
    if any(row_tag(row) is not None for row in rows):
        yield limited_rows_query(rows)
        return len(rows)
    if any(row[_SENT_AT] is None or isinstance(row[_SENT_AT], timedelta) for row in rows):
        res = yield Query(task_sql.TRANSACTION_NOW)
        now: datetime = res.rows[0][0]
        last = len(rows) - 1
        for index, row in enumerate(rows):
            if row[_SENT_AT] is None:
                row[_SENT_AT] = now - timedelta(microseconds=last - index)
            elif isinstance(row[_SENT_AT], timedelta):
                row[_SENT_AT] = now + row[_SENT_AT]
    res = yield Copy(task_sql.TASK_COPY_IN, task_sql.TASK_COPY_TYPES, rows)
    return res.rowcount


def encode_calls(
    task_name: str,
    calls: Iterable[tuple[Sequence[Any], Mapping[str, Any] | None]],
    queue_name: str,
    max_payload_bytes: int | None,
    options: BatchOptions,
) -> TaskBatch:
    """One :class:`TaskBatch` row per (args, kwargs) call, in order: every call encoded and checked
    (codec errors, ``PayloadTooLargeError``) before anything is written."""
    priority = options.get("priority", 100)
    _check_priority(priority)
    _check_names(task_name, queue_name)
    _check_aware("good_until", options.get("good_until"))
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
        good_until=options.get("good_until"),
        max_retries=options.get("max_retries", 0),
        task_options=options.get("task_options"),
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


# -- inserting so that the outcome is never unknown ------------------------------------------------

_INSERT_ATTEMPTS: Final = 3
"""Attempts of an insert whose connection is lost mid-statement."""
_UNIQUE_VIOLATION: Final = "23505"
_ID: Final = task_sql.TASK_COPY_COLUMNS.index("id")

NewRows: TypeAlias = Sequence[Sequence[Any]] | TaskBatch
"""New task rows of an insert: values in ``TASK_COPY_COLUMNS`` order, or a ``TaskBatch``."""


def new_ids(rows: NewRows) -> list[str]:
    """The task ids of new rows, in order."""
    return rows.all_ids() if isinstance(rows, TaskBatch) else [row[_ID] for row in rows]


def _stored_as_sent_query(rows: NewRows) -> Query:
    """TASK_COUNT_STORED_AS_SENT for new task rows: how many exist exactly as sent."""
    if isinstance(rows, TaskBatch):
        params: dict[str, list[Any]] = {
            "ids": rows.all_ids(),
            "task_names": [rows.task_name] * len(rows.args),
            "args": rows.args,
            "kwargs": rows.kwargs,
        }
    else:
        columns = task_sql.TASK_COPY_COLUMNS
        picked = {
            "ids": columns.index("id"),
            "task_names": columns.index("task_name"),
            "args": columns.index("args"),
            "kwargs": columns.index("kwargs"),
        }
        params = {name: [row[index] for row in rows] for name, index in picked.items()}
    return Query(task_sql.TASK_COUNT_STORED_AS_SENT, params)


def _insert_failed(
    exc: BrokerError, lost: BrokerError | None, attempt: int, rows: NewRows
) -> BrokerError:
    """Decide after a failed insert of new task ``rows``: return the error to remember before
    trying again, or raise.

    Only a connection lost mid-statement is retried: the insert may or may not have committed, and
    the retry tells which (it stores the rows, or hits their ids). Anything else raises; when an
    earlier attempt was lost, the error says the rows may exist.
    """
    if exc.connection_lost and attempt < _INSERT_ATTEMPTS:
        _log.warning("%s; retrying on a new connection", exc)
        return exc
    if lost is None:
        raise exc
    ids = new_ids(rows)
    raise BrokerError(
        f"{exc} (an earlier attempt lost its connection mid-statement, so the task(s) may have"
        f" been stored: {', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})",
        sqlstate=exc.sqlstate,
        unreachable=exc.unreachable,
        connection_lost=True,
    ) from exc


def insert_program(
    insert: Step | Callable[[], Op[Any]], rows: NewRows, action: str, *, transaction: bool = False
) -> Program[None]:
    """Insert new task ``rows`` (``insert`` is the step, or makes the operation) so that the
    outcome is never unknown: a connection lost mid-statement is repeated on a new connection,
    which tells whether the lost attempt had committed (it stores the rows, or finds them stored
    exactly as sent). A returned call stored the rows; an error normally means nothing was stored,
    and says so when it cannot be sure."""
    lost: BrokerError | None = None
    for attempt in range(1, _INSERT_ATTEMPTS + 1):
        try:
            step = insert if isinstance(insert, STEP_TYPES) else insert()
            yield Run(step, action, transaction)
            return
        except BrokerError as exc:
            if lost is not None and exc.sqlstate == _UNIQUE_VIOLATION:
                try:
                    res: QueryResult = yield Run(_stored_as_sent_query(rows), "enqueue check")
                except BrokerError as check_exc:
                    # The check lost its connection too: one more attempt tells again.
                    lost = _insert_failed(check_exc, lost, attempt, rows)
                    continue
                if res.rows and res.rows[0][0] == len(new_ids(rows)):
                    return  # the lost attempt had committed
                raise  # the id belongs to another task: nothing of ours was stored
            lost = _insert_failed(exc, lost, attempt, rows)
