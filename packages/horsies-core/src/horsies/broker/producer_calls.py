"""The calls producers make on `PostgresBroker`: sends (``enqueue``, ``enqueue_many``,
``enqueue_calls``), result waits (``get_result``) and the operator actions on one task (cancel,
retry), each with its ``*_async`` twin."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Unpack

from horsies.broker import (
    attempts,
    enqueue,
    operator_actions,
    retrieval,
)
from horsies.broker.attempts import TaskAttempt
from horsies.broker.broker_core import BrokerCore
from horsies.broker.caller_connection import CallerConnection
from horsies.broker.copy_encoder import TaskBatch
from horsies.broker.enqueue import BatchOptions, EnqueueOptions, EnqueueRequest, new_ids
from horsies.broker.limits import LimitTag, limited_rows_query
from horsies.broker.programs import Program
from horsies.broker.send_coalescer import SendCoalescer
from horsies.broker.steps import Step
from horsies.broker.unique import UniqueClaim, UniqueOutcome, unique_insert_program
from horsies.results import TaskError, TaskResult

__all__ = ["ProducerCalls"]


class ProducerCalls(BrokerCore):
    """What producers call: sends, result waits, and the operator actions on one task."""

    # -- enqueue -----------------------------------------------------------------------------------

    def enqueue(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue_name: str = "default",
        *,
        within: CallerConnection | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> str:
        """Insert one PENDING task and return its id (one INSERT; the trigger wakes the workers).

        Low level: no queue validation (use ``task.send()``). Options (keyword only): ``priority``
        (1-100, default 100), ``sent_at`` (None means now; a future one delays claiming) or
        ``delay_s`` (claimable that many seconds after the database's clock reads now, whatever
        this host's clock says), ``good_until``, ``task_options`` (JSON), ``max_retries`` and
        ``task_id`` (default: a new one). Raises SerializationError for arguments the codec cannot
        encode (before touching the database) and BrokerError for database failures.

        Waits up to ``pool_timeout`` for a connection while the database is unreachable (then
        BrokerError, ``unreachable``: nothing was stored). An insert whose connection is lost
        mid-statement is repeated on a new connection, which tells whether it had committed, so a
        returned id is always stored and an error normally means nothing was.

        With ``within`` the row is written through the caller's connection, in its transaction:
        it exists (and wakes the workers) only once the caller commits.
        """
        request = EnqueueRequest(task_name, args, kwargs, queue_name, **options)
        row = enqueue.request_row(request, self.max_payload_bytes)
        program = enqueue.insert_program(enqueue.task_insert_step(row), (row,), "enqueue")
        self._effects(within).drive(program)
        return row[0]

    async def enqueue_async(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue_name: str = "default",
        *,
        within: CallerConnection | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> str:
        """Async twin of :meth:`enqueue`.

        Concurrent calls in one event loop share round trips: while one insert is in flight, the
        calls that arrive meanwhile are inserted together by the next statement. Each call still
        returns only once its own task is stored, and fails only for its own reasons (not those
        made ``within`` a caller's connection: they are the caller's to order).
        """
        request = EnqueueRequest(task_name, args, kwargs, queue_name, **options)
        row = enqueue.request_row(request, self.max_payload_bytes)
        if request.delay_s is None and within is None and request.limit is None:
            await self._coalescer().insert(row)
        else:  # the coalescer's shared inserts read no clock and use the pool
            program = enqueue.insert_program(enqueue.task_insert_step(row), (row,), "enqueue")
            await (await self._effects_async(within)).drive(program)
        return row[0]

    def _coalescer(self) -> SendCoalescer:
        """The current event loop's send coalescer."""
        loop = asyncio.get_running_loop()
        coalescer = self._coalescers.get(loop)
        if coalescer is None:

            async def insert(step: Step, rows: Sequence[tuple[Any, ...]]) -> None:
                await self._async.drive(enqueue.insert_program(step, rows, "enqueue"))

            coalescer = self._coalescers[loop] = SendCoalescer(insert)
        return coalescer

    def enqueue_many(self, requests: Sequence[EnqueueRequest]) -> list[str]:
        """Insert a batch of PENDING tasks with one COPY; returns their ids in request order.

        Prefer it over a loop of :meth:`enqueue` for more than a handful of tasks. Tasks of the
        batch without ``sent_at`` are claimed in request order (within a priority). All or nothing.
        """
        if not requests:
            return []
        ids, rows = enqueue.enqueue_many_rows(requests, self.max_payload_bytes)
        self._sync.drive(_many(rows))
        return ids

    async def enqueue_many_async(self, requests: Sequence[EnqueueRequest]) -> list[str]:
        """Async twin of :meth:`enqueue_many`."""
        if not requests:
            return []
        ids, rows = enqueue.enqueue_many_rows(requests, self.max_payload_bytes)
        await self._async.drive(_many(rows))
        return ids

    def enqueue_calls(
        self,
        task_name: str,
        calls: Sequence[tuple[Sequence[Any], Mapping[str, Any] | None]],
        queue_name: str = "default",
        *,
        within: CallerConnection | None = None,
        limits: Sequence[LimitTag] | None = None,
        **options: Unpack[BatchOptions],
    ) -> list[str]:
        """Insert one PENDING task of ``task_name`` per (args, kwargs) call with one COPY; returns
        their ids in call order (``task.send_many``'s path; low level like :meth:`enqueue`, with
        the same options but ``sent_at`` and ``task_id``). With ``limits`` (one per call) the
        tasks are under those limits and go in with one INSERT instead.

        Every call is encoded before anything is written (SerializationError), then the whole batch
        is inserted or none of it. The tasks are claimed in call order (within a priority). Cheaper
        per task than :meth:`enqueue_many`: the rows share everything but their arguments.
        ``within``: as for :meth:`enqueue`.
        """
        if not calls:
            return []
        if limits is not None:
            rows = self._call_rows(task_name, calls, queue_name, options, limits)
            self._effects(within).drive(_limited(rows))
            return new_ids(rows)
        batch = enqueue.encode_calls(task_name, calls, queue_name, self.max_payload_bytes, options)
        self._effects(within).drive(_batch(batch))
        return batch.all_ids()

    async def enqueue_calls_async(
        self,
        task_name: str,
        calls: Sequence[tuple[Sequence[Any], Mapping[str, Any] | None]],
        queue_name: str = "default",
        *,
        within: CallerConnection | None = None,
        limits: Sequence[LimitTag] | None = None,
        **options: Unpack[BatchOptions],
    ) -> list[str]:
        """Async twin of :meth:`enqueue_calls`."""
        if not calls:
            return []
        if limits is not None:
            rows = self._call_rows(task_name, calls, queue_name, options, limits)
            await (await self._effects_async(within)).drive(_limited(rows))
            return new_ids(rows)
        batch = enqueue.encode_calls(task_name, calls, queue_name, self.max_payload_bytes, options)
        await (await self._effects_async(within)).drive(_batch(batch))
        return batch.all_ids()

    # -- unique sends ------------------------------------------------------------------------------

    def enqueue_unique(
        self,
        task_name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        queue_name: str,
        *,
        unique: UniqueClaim,
        within: CallerConnection | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> UniqueOutcome:
        """:meth:`enqueue` unless a task holding ``unique.key`` is in its scope: then nothing is
        inserted and the outcome names that task (``created`` False). Decided by the database,
        whatever the number of concurrent producers (``broker/unique.py``)."""
        row = enqueue.request_row(
            EnqueueRequest(task_name, args, kwargs, queue_name, **options), self.max_payload_bytes
        )
        return self._effects(within).drive(_unique([row], [unique]))[0]

    async def enqueue_unique_async(
        self,
        task_name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        queue_name: str,
        *,
        unique: UniqueClaim,
        within: CallerConnection | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> UniqueOutcome:
        """Async twin of :meth:`enqueue_unique`."""
        row = enqueue.request_row(
            EnqueueRequest(task_name, args, kwargs, queue_name, **options), self.max_payload_bytes
        )
        return (await (await self._effects_async(within)).drive(_unique([row], [unique])))[0]

    def enqueue_calls_unique(
        self,
        task_name: str,
        calls: Sequence[tuple[Sequence[Any], Mapping[str, Any] | None]],
        claims: Sequence[UniqueClaim],
        queue_name: str,
        *,
        within: CallerConnection | None = None,
        limits: Sequence[LimitTag] | None = None,
        **options: Unpack[BatchOptions],
    ) -> list[UniqueOutcome]:
        """:meth:`enqueue_calls` for calls with unique keys (one per call, in ``claims``): one
        outcome per call, in one transaction (all or nothing), a statement or more per call."""
        rows = self._call_rows(task_name, calls, queue_name, options, limits)
        return self._effects(within).drive(_unique(rows, claims))

    async def enqueue_calls_unique_async(
        self,
        task_name: str,
        calls: Sequence[tuple[Sequence[Any], Mapping[str, Any] | None]],
        claims: Sequence[UniqueClaim],
        queue_name: str,
        *,
        within: CallerConnection | None = None,
        limits: Sequence[LimitTag] | None = None,
        **options: Unpack[BatchOptions],
    ) -> list[UniqueOutcome]:
        """Async twin of :meth:`enqueue_calls_unique`."""
        rows = self._call_rows(task_name, calls, queue_name, options, limits)
        return await (await self._effects_async(within)).drive(_unique(rows, claims))

    def _call_rows(
        self,
        task_name: str,
        calls: Sequence[tuple[Sequence[Any], Mapping[str, Any] | None]],
        queue_name: str,
        options: BatchOptions,
        limits: Sequence[LimitTag] | None,
    ) -> list[tuple[Any, ...]]:
        """One new row per call (under the call's limit, when ``limits`` are given)."""
        tags: Sequence[LimitTag | None] = [None] * len(calls) if limits is None else limits
        return [
            enqueue.request_row(
                EnqueueRequest(task_name, args, kwargs, queue_name, limit=tag, **options),
                self.max_payload_bytes,
            )
            for (args, kwargs), tag in zip(calls, tags, strict=True)
        ]

    # -- results -----------------------------------------------------------------------------------

    def get_result(self, task_id: str, timeout_ms: int | None = None) -> TaskResult[Any, TaskError]:
        """Wait for a task's result and return it; never raises.

        ``timeout_ms`` None or 0 waits forever; on timeout the result is err WAIT_TIMEOUT. Other
        outcomes: the task's own result, TASK_NOT_FOUND, TASK_CANCELLED, BROKER_ERROR. Woken by the
        task's ``task_done`` notification; re-reads at least every 5 s as a fallback. Does not hold
        a pooled connection while waiting.
        """
        return self._sync.drive(retrieval.result_program(self._waiters, task_id, timeout_ms))

    async def get_result_async(
        self, task_id: str, timeout_ms: int | None = None
    ) -> TaskResult[Any, TaskError]:
        """Async twin of :meth:`get_result` (only ``asyncio.CancelledError`` propagates)."""
        return await self._async.drive(retrieval.result_program(self._waiters, task_id, timeout_ms))

    def get_attempts(self, task_id: str) -> list[TaskAttempt]:
        """Every attempt of a task, oldest first (see ``broker/attempts.py``)."""
        return self._run_sync(attempts.attempts_op(task_id), "get_attempts")

    async def get_attempts_async(self, task_id: str) -> list[TaskAttempt]:
        """Async twin of :meth:`get_attempts`."""
        return await self._run_async(attempts.attempts_op(task_id), "get_attempts")

    # -- operator actions on a task ----------------------------------------------------------------

    def cancel_task(self, task_id: str) -> bool:
        """Cancel a task no worker has started; False when it had started, ended or is unknown.
        A workflow task's node ends FAILED with ``TASK_CANCELLED`` and its workflow advances."""
        return self._sync.drive(operator_actions.cancel_task_program(self._engine(), task_id))

    async def cancel_task_async(self, task_id: str) -> bool:
        """Async twin of :meth:`cancel_task`."""
        return await self._async.drive(
            operator_actions.cancel_task_program(self._engine(), task_id)
        )

    def retry_task(self, task_id: str) -> bool:
        """Send an ended (FAILED or CANCELLED) plain task back to PENDING for a fresh run; False
        for a workflow task, a task that has not ended, or an unknown id."""
        return self._run_sync(operator_actions.retry_task_op(task_id), "task_retry")

    async def retry_task_async(self, task_id: str) -> bool:
        """Async twin of :meth:`retry_task`."""
        return await self._run_async(operator_actions.retry_task_op(task_id), "task_retry")


def _unique(
    rows: Sequence[Sequence[Any]], claims: Sequence[UniqueClaim]
) -> Program[list[UniqueOutcome]]:
    return unique_insert_program(rows, claims, "enqueue" if len(rows) == 1 else "enqueue_many")


def _many(rows: list[list[Any]]) -> Program[None]:
    return enqueue.insert_program(
        lambda: enqueue.enqueue_many_op(rows), rows, "enqueue_many", transaction=True
    )


def _limited(rows: Sequence[Sequence[Any]]) -> Program[None]:
    return enqueue.insert_program(limited_rows_query(rows), rows, "enqueue_many")


def _batch(batch: TaskBatch) -> Program[None]:
    return enqueue.insert_program(
        lambda: enqueue.task_batch_op(batch), batch, "enqueue_many", transaction=True
    )
