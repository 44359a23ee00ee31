"""Completer: turns finished executions into outcomes and persists them in batches.

Results arrive from children one by one; the completer decides retry or final status for each
(:func:`build_outcome`, using the library's ``retry_delay_for_stored``) and queues the outcome.
Queued outcomes are written in batches in one of two ways:

- the worker's claim loop takes them (:meth:`Completer.take`) and writes them in the same round
  trip as its next claim (``broker.finish_and_start_tasks``), then reports back with
  :meth:`Completer.settle` or :meth:`Completer.restore`: the hot path of hard-cap mode;
- :meth:`Completer.run` writes everything that accumulated while the previous write was in flight
  with one ``broker.finish_tasks`` call: used when claims need a CLAIMED phase, and during graceful
  shutdown until the queue is drained (bounded), so results of tasks that finish while the worker
  is stopping are still written.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from horsies.broker.claims import AttemptKey
from horsies.broker.finish import TaskOutcome
from horsies.codec import task_result_from_json
from horsies.logs import TextBlock, get_logger, task_fields
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.retry import retry_delay_for_stored

from horsies_worker.execution import error_result_json

if TYPE_CHECKING:
    from horsies.broker import PostgresBroker
    from horsies.broker.claims import ClaimedTask
    from horsies.broker.hooks import NodeRef

    from horsies_worker.metrics import WorkerMetrics

logger = get_logger("worker")

FlushedCallback = Callable[[Sequence[TaskOutcome], set[str], Sequence["NodeRef"]], None]
"""Called with (outcomes, ids of the rows they finished, workflow nodes left undecided) after
every successful write."""

MAX_BATCH = 500
_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 5.0


Failure = TaskResult[Any, TaskError] | str
"""A failed execution's result, decoded once (:func:`decode_failure`), or why it cannot be read."""


def decode_failure(result_json: str) -> Failure:
    """The failed result of an execution, decoded (read by both the retry decision and the log)."""
    try:
        return task_result_from_json(result_json)
    except Exception as exc:
        return f"a result that cannot be read ({exc})"


def failure_summary(failure: Failure) -> tuple[str, str]:
    """(``"<error code>: <message>"``, the exception's traceback as a `TextBlock` or ``""``) of a
    failed result, for the worker's log."""
    error = failure if isinstance(failure, str) else failure.err
    if error is None:
        return "an error result without error", ""
    if isinstance(error, str):
        return error, ""
    code = getattr(error.error_code, "value", error.error_code)
    why = f"{code}: {error.message}"
    exception: object = error.exception
    trace: object = None
    if isinstance(exception, BaseException):
        trace = "".join(traceback.format_exception(exception))
    elif isinstance(exception, dict):
        trace = cast("dict[str, object]", exception).get("traceback")
    return why, TextBlock(trace) if isinstance(trace, str) and trace.strip() else ""


def build_outcome(
    task: ClaimedTask,
    result_json: str,
    ok: bool,
    *,
    failure: Failure | None = None,
    failed_reason: str | None = None,
    rng: random.Random | None = None,
) -> TaskOutcome:
    """Build the outcome of one execution: COMPLETED for ok, retry (PENDING + delay) or FAILED.

    A failure is decoded here unless the caller passes it already decoded (``failure``); the retry
    decision is the library's one (``retry_delay_for_stored``, see docs/tasks.md, "Retries"), with
    the row's ``retry_count``, ``max_retries`` and ``task_options``. A result that cannot be
    decoded is never retried, and a retry decision that fails is logged and the failure is final:
    a bad result never costs the task its outcome. ``failed_reason`` is kept only for a final
    failure.
    """
    delay: float | None = None
    if not ok:
        decoded = decode_failure(result_json) if failure is None else failure
        if isinstance(decoded, str):
            logger.warning(
                "retry_decision_failed: task=%s error=%s",
                task.id,
                decoded,
                extra=task_fields(task.id, task.task_name),
            )
        elif decoded.is_err():
            try:
                delay = retry_delay_for_stored(
                    decoded,
                    retry_count=task.retry_count,
                    max_retries=task.max_retries,
                    options_json=task.task_options,
                    rng=rng,
                )
            except Exception as exc:
                logger.exception(
                    "outcome_failed: %s: %s",
                    task.id,
                    exc,
                    extra=task_fields(task.id, task.task_name),
                )
    return TaskOutcome(
        task_id=task.id,
        result_json=result_json,
        ok=ok,
        retry_delay_s=delay,
        failed_reason=None if ok or delay is not None else failed_reason,
        attempt=task.attempt,
        workflow_id=task.workflow_id,
    )


def crashed_result_json(
    *,
    task: ClaimedTask,
    worker_id: str,
    hostname: str,
    child_pid: int,
    exitcode: int | None,
    reason: str,
    started_at: datetime | None = None,
) -> str:
    """Encode the ``WORKER_CRASHED`` result of a task whose child process died."""
    signum = -exitcode if exitcode is not None and exitcode < 0 else None
    data: dict[str, Any] = {
        "task_id": task.id,
        "task_name": task.task_name,
        "worker_id": worker_id,
        "worker_hostname": hostname,
        "worker_pid": child_pid,
        "exit_code": exitcode,
        "signal": signum,
        "reason": reason,
        "started_at": started_at.isoformat() if started_at is not None else None,
        "detected_at": datetime.now(UTC).isoformat(),
    }
    return error_result_json(LibraryErrorCode.WORKER_CRASHED, reason, data)


@dataclass(eq=False)
class Completer:
    """Queues outcomes and hands them out in batches for writing.

    ``submit`` is called from the event loop (never blocks). A batch is written either by
    :meth:`run` (the writer coroutine, ``broker.finish_tasks``) or by a caller that takes it with
    :meth:`take` and reports the write with :meth:`settle` (written) or :meth:`restore` (failed:
    the batch goes back to the front of the queue). ``on_flushed(outcomes, finished_ids)`` is
    called after every successful write so the worker can schedule retry wake-ups, re-claim and
    decide the workflow nodes the write left waiting.

    Ownership: ``_queue`` and ``_in_flight`` are changed by ``submit``/``take``/``settle``/
    ``restore``, all on the loop thread; several batches may be in flight at once.
    """

    broker: PostgresBroker
    worker_id: str
    _: KW_ONLY
    on_flushed: FlushedCallback | None = None
    max_batch: int = MAX_BATCH
    notify_capacity: bool = True
    metrics: WorkerMetrics | None = None
    """Counts the writes that fail; None when metrics are off."""
    _queue: deque[TaskOutcome] = field(init=False, default_factory=deque[TaskOutcome])
    _in_flight: list[TaskOutcome] = field(init=False, default_factory=list[TaskOutcome])
    _has_items: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _closing: bool = field(init=False, default=False)
    _idle: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    @property
    def pending(self) -> int:
        """Outcomes not yet written (queued or in a write in progress)."""
        return len(self._queue) + len(self._in_flight)

    def pending_keys(self) -> list[AttemptKey]:
        """The claims (task id, attempt) of every outcome not yet written (queued or in a write in
        progress)."""
        return [(o.task_id, o.attempt or 0) for o in (*self._in_flight, *self._queue)]

    def submit(self, outcome: TaskOutcome) -> None:
        """Queue one outcome for the next batch."""
        self._queue.append(outcome)
        self._idle.clear()
        self._has_items.set()

    def take(self) -> list[TaskOutcome]:
        """Remove up to ``max_batch`` queued outcomes for writing (empty list: nothing queued).

        The caller must report the write with :meth:`settle` or :meth:`restore`.
        """
        queue = self._queue
        if not queue:
            return []
        if len(queue) <= self.max_batch:
            batch = list(queue)
            queue.clear()
        else:
            batch = [queue.popleft() for _ in range(self.max_batch)]
        self._in_flight.extend(batch)
        return batch

    def _release(self, batch: Sequence[TaskOutcome]) -> None:
        if len(batch) == len(self._in_flight):
            self._in_flight.clear()
        else:
            taken = {id(o) for o in batch}
            self._in_flight = [o for o in self._in_flight if id(o) not in taken]

    def settle(
        self, batch: Sequence[TaskOutcome], finished: set[str], undecided: Sequence[NodeRef] = ()
    ) -> None:
        """Report a taken batch as written; ``finished`` are the ids that changed a row,
        ``undecided`` the workflow nodes the write left waiting for a decision."""
        if not batch:
            return
        self._release(batch)
        lost = len(batch) - len(finished)
        if lost:
            logger.warning(
                "task_finish_lost: %s of %s result(s) not written (no longer RUNNING here)",
                lost,
                len(batch),
            )
        if not self._queue and not self._in_flight:
            self._idle.set()
            if self._closing:
                self._has_items.set()  # let a closing run() see that nothing is left
        if self.on_flushed is not None:
            try:
                self.on_flushed(batch, finished, undecided)
            except Exception:
                logger.exception("on_flushed callback failed")

    def restore(self, batch: Sequence[TaskOutcome]) -> None:
        """Give a taken batch back after a failed write: it is written first next time."""
        if not batch:
            return
        self._release(batch)
        self._queue.extendleft(reversed(batch))
        self._has_items.set()

    async def run(self) -> None:
        """Write batches until :meth:`close` is called and the queue is empty."""
        backoff = _BACKOFF_MIN_S
        while True:
            if not self._queue:
                if self._closing and not self._in_flight:
                    return
                if not self._in_flight:
                    self._idle.set()
                self._has_items.clear()
                await self._has_items.wait()
                continue
            batch = self.take()
            try:
                finished = await self.broker.finish_async(
                    batch, worker_id=self.worker_id, notify_capacity=self.notify_capacity
                )
            except asyncio.CancelledError:
                self.restore(batch)
                raise
            except Exception as exc:
                self.restore(batch)
                if self.metrics is not None:
                    self.metrics.database_error("finish", exc)
                logger.error(
                    "finish_tasks_failed: %s outcome(s) kept for retry in %.1fs: %s",
                    len(batch),
                    backoff,
                    exc,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            backoff = _BACKOFF_MIN_S
            self.settle(batch, finished.ids, finished.undecided)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until every submitted outcome is written; False on timeout."""
        if not self._queue and not self._in_flight:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return not self._queue and not self._in_flight

    def close(self) -> None:
        """Let :meth:`run` return once the queue is drained."""
        self._closing = True
        self._has_items.set()
