"""`TaskHandle`: what a send returns; waits for and caches the task's result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from horsies import failures
from horsies.results import LibraryErrorCode, TaskError, TaskResult

if TYPE_CHECKING:
    from horsies.broker.attempts import TaskAttempt
    from horsies.broker.postgres import PostgresBroker

__all__ = ["ERROR_TASK_ID", "SUPPRESSED_TASK_ID", "TaskHandle"]

SUPPRESSED_TASK_ID = "<suppressed>"
"""`task_id` of the handle returned by a send while sends are suppressed."""

ERROR_TASK_ID = "<error>"
"""`task_id` of the handle returned by a send that failed before a row was written."""

T = TypeVar("T")

# Outcomes that say nothing final about the task: a later get() must ask the database again.
_TRANSIENT_CODES: tuple[str, ...] = (
    LibraryErrorCode.WAIT_TIMEOUT.value,
    LibraryErrorCode.BROKER_ERROR.value,
)


def _not_found(result: TaskResult[Any, TaskError]) -> bool:
    error = result.err
    return error is not None and str(error.error_code) == LibraryErrorCode.TASK_NOT_FOUND.value


def _is_final(result: TaskResult[Any, TaskError]) -> bool:
    if result.is_ok():
        return True
    error = result.err
    code = error.error_code if error is not None else None
    # Codes read back from the database are plain strings; compare by value.
    return code is None or str(code) not in _TRANSIENT_CODES


class TaskHandle(Generic[T]):
    """A reference to one enqueued task; `get()` waits for its `TaskResult`.

    Returned by `send`, `send_async` and `schedule`. Prefer `get()` in synchronous code and
    `await get_async()` in async code. Neither raises for task, retrieval or broker problems: they
    return an err result instead (`WAIT_TIMEOUT`, `TASK_NOT_FOUND`, `TASK_CANCELLED`,
    `BROKER_ERROR`, ...).

    Final outcomes (the task's own ok/err result, `TASK_CANCELLED`, `TASK_NOT_FOUND`) are cached on
    the handle and returned by later calls without touching the database; `WAIT_TIMEOUT` and
    `BROKER_ERROR` are not cached, so calling `get()` again keeps waiting.

    Handles of failed or suppressed sends (`task_id` `"<error>"` / `"<suppressed>"`) carry their
    result from the start. A handle of a send made `within` your transaction reads the task once
    you have committed; before that (or after a rollback) `get()` returns err `TASK_NOT_FOUND`
    saying so, and does not cache it.
    """

    __slots__ = ("_broker", "_result", "_within", "created", "task_id")

    def __init__(
        self,
        task_id: str,
        broker: PostgresBroker | None = None,
        result: TaskResult[T, TaskError] | None = None,
        *,
        within: bool = False,
        created: bool = True,
    ) -> None:
        self.task_id = task_id
        self.created = created
        """False when a unique send found its key held and answered with that task instead."""
        self._broker = broker
        self._result: TaskResult[Any, TaskError] | None = result
        self._within = within
        """Sent within the caller's transaction: not found may only mean not committed yet."""

    def __repr__(self) -> str:
        state = "cached" if self._result is not None else "pending"
        return f"<TaskHandle {self.task_id} ({state})>"

    @property
    def sent(self) -> bool:
        """True when the send wrote its task (or, for a unique send, found the task that holds its
        key); False for the handle of a refused, failed or suppressed send, whose `get()` says
        why at once."""
        return self.task_id not in (ERROR_TASK_ID, SUPPRESSED_TASK_ID)

    def _cached_or_broker(self) -> TaskResult[T, TaskError] | PostgresBroker:
        """The cached (or not-available) result, else the broker to ask."""
        if self._result is not None:
            return self._result
        return failures.result_not_available(self.task_id) if self._broker is None else self._broker

    def _remember(self, result: TaskResult[Any, TaskError]) -> TaskResult[T, TaskError]:
        if self._within and _not_found(result):
            # Not final: the caller's commit may still come; a later get() reads again.
            return failures.task_not_committed(self.task_id)
        if _is_final(result):
            self._result = result
        return result

    def _broker_error(self, timeout_ms: int | None, exc: Exception) -> TaskResult[T, TaskError]:
        return failures.broker_error(self.task_id, timeout_ms, exc)

    def get(self, timeout_ms: int | None = None) -> TaskResult[T, TaskError]:
        """Block until the task finishes (or `timeout_ms` elapses) and return its result.

        `timeout_ms=None` or `0` waits forever. A timeout returns err `WAIT_TIMEOUT`; the task may
        still finish later and a new `get()` will see it.
        """
        broker = self._cached_or_broker()
        if isinstance(broker, TaskResult):
            return broker
        try:
            result = broker.get_result(self.task_id, timeout_ms)
        except Exception as exc:
            return self._broker_error(timeout_ms, exc)
        return self._remember(result)

    def _actionable(self) -> PostgresBroker | None:
        if self._broker is None or self.task_id in (ERROR_TASK_ID, SUPPRESSED_TASK_ID):
            return None
        return self._broker

    def cancel(self) -> bool:
        """Cancel the task; if it is running, stop it.

        Not started yet (PENDING, or claimed but not running): it is CANCELLED at once, its `get()`
        returns err `TASK_CANCELLED`, and a workflow node running it ends FAILED with that error.
        Running (a plain task): its worker is asked to stop it; an `async def` task is cancelled
        at its next await, a `def` task's child process is stopped. The run's end then decides:
        an ok result that reached the database first is kept (COMPLETED); any other end makes
        the task CANCELLED, and it is never retried. `get()` tells which.

        Returns True when the task was cancelled or its stop requested; False when it had ended,
        is a running workflow task (its workflow decides: see `WorkflowHandle.cancel`), or is
        unknown (nothing changes).
        """
        broker = self._actionable()
        return broker is not None and broker.cancel_task(self.task_id)

    async def cancel_async(self) -> bool:
        """Async twin of `cancel`."""
        broker = self._actionable()
        return broker is not None and await broker.cancel_task_async(self.task_id)

    def retry(self) -> bool:
        """Run an ended task again: FAILED or CANCELLED goes back to PENDING, due now, with its
        retry count reset; the handle forgets its cached result.

        Returns False (nothing changes) for a task that has not ended, completed successfully, is
        part of a workflow (its node has ended and the workflow moved on), or is unknown.
        """
        broker = self._actionable()
        return broker is not None and self._forget_if(broker.retry_task(self.task_id))

    async def retry_async(self) -> bool:
        """Async twin of `retry`."""
        broker = self._actionable()
        return broker is not None and self._forget_if(await broker.retry_task_async(self.task_id))

    def attempts(self) -> list[TaskAttempt]:
        """Every attempt of the task so far, oldest first: when each started and ended, where it
        ran, how it ended (``RETRIED``, the final status, or ``RUNNING``) and its error code and
        message. Empty before the first start and for a failed or suppressed send.

        Raises:
            BrokerError: the database could not be read.
        """
        broker = self._actionable()
        return [] if broker is None else broker.get_attempts(self.task_id)

    async def attempts_async(self) -> list[TaskAttempt]:
        """Async twin of `attempts`."""
        broker = self._actionable()
        return [] if broker is None else await broker.get_attempts_async(self.task_id)

    def _forget_if(self, retried: bool) -> bool:
        if retried:
            self._result = None
        return retried

    async def get_async(self, timeout_ms: int | None = None) -> TaskResult[T, TaskError]:
        """Async twin of `get`: waits without blocking the event loop.

        Only `asyncio.CancelledError` propagates.
        """
        broker = self._cached_or_broker()
        if isinstance(broker, TaskResult):
            return broker
        try:
            result = await broker.get_result_async(self.task_id, timeout_ms)
        except Exception as exc:
            return self._broker_error(timeout_ms, exc)
        return self._remember(result)
