"""The span of one run in a worker child, with the ``otel`` extra (see `horsies.tracing`).

:func:`start` makes it, current while the user's function runs, as a child of the send span the
task's options carry (``RunFacts.task_options``); :func:`end` records the outcome: nothing more
for an ok result; for an error its code (the span's error status and ``error.type``), and the
exception it carries as an ``exception`` event; and, when the task's retry policy runs it again,
a ``horsies.retry`` event. The retry is decided by the worker's main process once the result
reaches it (`horsies.retry`); the child asks the same decision of the same stored options
(`is_retried_stored`), so the event is there while the run's span is. A run whose child process
is killed (a ``def`` task past its time limit, a crash, a stop of a running ``def`` task) leaves
no run span: the process ends before it could export one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from horsies import tracing
from horsies.codec import task_result_from_json
from horsies.results import TaskError
from horsies.retry import is_retried_stored

if TYPE_CHECKING:
    from horsies_worker.execution import RunFacts

__all__ = ["end", "start"]


def start(task_name: str, run: RunFacts | None) -> tracing.TaskSpan | None:
    """The run's span, current from now on; None when nothing is traced."""
    if run is None or not tracing.AVAILABLE:
        return None
    return tracing.start_run(
        task_name,
        task_id=run.task_id,
        queue_name=run.queue_name,
        attempt=run.retry_count + 1,
        max_retries=run.max_retries,
        options_json=run.task_options,
    )


def end(
    span: tracing.TaskSpan, run: RunFacts, result_json: str, ok: bool, *, final: bool = False
) -> None:
    """Record the run's outcome on ``span`` and end it. ``final``: the run cannot be retried
    whatever its result says (it was stopped)."""
    try:
        if not ok and span.recording:
            _failed(span, run, result_json, final)
    finally:
        span.end()


def _failed(span: tracing.TaskSpan, run: RunFacts, result_json: str, final: bool) -> None:
    try:
        result = task_result_from_json(result_json)
    except Exception as exc:
        span.failed("WORKER_SERIALIZATION_ERROR", f"a result that cannot be read ({exc})")
        return
    error = result.err
    if not isinstance(error, TaskError):
        return
    exception = error.exception
    stored = exception if isinstance(exception, dict) else None
    # An error without a code is reported as OpenTelemetry's "other" error type.
    code = "_OTHER" if error.error_code is None else str(error.error_code)
    span.failed(code, error.message or "", stored)
    if not final and is_retried_stored(
        result,
        retry_count=run.retry_count,
        max_retries=run.max_retries,
        options_json=run.task_options,
    ):
        span.retried(run.retry_count + 2)
