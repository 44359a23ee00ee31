"""Running an app's due tasks now, in this process, as a worker would: :func:`run_pending`.

Nothing here decides anything a worker decides. Claims and outcomes go through the worker's own
broker call (``exchange_async``: one round trip writes the previous round's outcomes, advances
their workflows and starts the next due tasks); a task runs through the worker's own execution
code (``horsies_worker.execution`` for ``def`` tasks, ``horsies_worker.async_runner`` for
``async def`` ones), and its result becomes an outcome through the worker's completer, which
applies the task's retry policy. Only the child process is missing: the task runs here, and the
rows name this process's pid as the child's.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from horsies.broker.claim_plan import ClaimRequest, QueueClaimSpec
from horsies.broker.finish import TaskOutcome
from horsies.codec import task_result_from_json
from horsies.errors import ConfigurationError, ErrorCode
from horsies.results import TaskError, TaskResult
from horsies.retry import time_limit_for_stored

if TYPE_CHECKING:
    from horsies_worker.config import QueueSpec

    from horsies.app import Horsies
    from horsies.broker.claims import ClaimedTask

__all__ = ["DEFAULT_BATCH", "DEFAULT_MAX_ROUNDS", "RanTask", "run_pending", "run_pending_async"]

DEFAULT_MAX_ROUNDS: Final = 100
"""Rounds :func:`run_pending` makes at most before it gives up on tasks that keep coming."""
DEFAULT_BATCH: Final = 100
"""Tasks one round starts at most."""


@dataclass(frozen=True, slots=True)
class RanTask:
    """One run of a task by :func:`run_pending`, in the order they ran.

    ``result`` is what the run returned, as ``handle.get()`` returns it once it is written (an
    error result for a run that failed, also when it will be retried). ``retry_in_s`` is set when
    the failure is retried: the task is ``PENDING`` again and due after that many seconds.
    """

    task_id: str
    task_name: str
    result: TaskResult[Any, TaskError]
    retry_in_s: float | None = None


def _helper_unavailable(exc: ImportError) -> ConfigurationError:
    return ConfigurationError(
        "run_pending runs tasks with the worker's code, and the worker package is not installed",
        code=ErrorCode.TESTING_HELPER_UNAVAILABLE,
        notes=[f"{type(exc).__name__}: {exc}"],
        help_text="pip install horsies-worker (in the environment the tests run in)",
    )


def _served_queues(
    configured: Sequence[QueueSpec], chosen: Sequence[str] | None
) -> list[QueueClaimSpec]:
    """The queues to claim from, in a worker's order. Their ``max_concurrency`` is left out: a
    cap needs the claim phase of a capped worker, and one task runs at a time here anyway."""
    if chosen is not None:
        unknown = sorted(set(chosen) - {q.name for q in configured})
        if unknown:
            raise ValueError(f"run_pending: the app has no queue {', '.join(map(repr, unknown))}")
    return [
        QueueClaimSpec(name=q.name, priority=q.priority)
        for q in configured
        if chosen is None or q.name in chosen
    ]


def run_pending(
    app: Horsies,
    *,
    queues: Sequence[str] | None = None,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    batch: int = DEFAULT_BATCH,
) -> list[RanTask]:
    """Run every task of ``app`` that is due now, in this process, until none is left; return
    what ran.

    Each round starts up to ``batch`` due ``PENDING`` tasks of the app's queues (of ``queues``
    only, when given) in the order a worker claims them, runs them one after the other exactly as
    a worker's child would (``async def`` tasks on an event loop), and writes their outcomes as a
    worker writes them: results for ``handle.get()``, retries decided by the task's policy,
    workflows advanced. Tasks that become due meanwhile (sent by a task, a workflow's next nodes)
    run in the next round.

    Not run: a task scheduled for later (``schedule()``) or a retry whose delay has not passed
    (call again once it is due), and tasks of queues the app does not configure. Queue
    ``max_concurrency`` and ``cluster_wide_cap`` do not apply (one task runs at a time), nor does
    ``time_limit_s`` for ``def`` tasks (only a worker can stop one).

    For a test without a running event loop; in async code ``await`` :func:`run_pending_async`,
    which runs ``async def`` tasks on the caller's loop.

    Raises:
        RuntimeError: called with an event loop running in this thread, or tasks were still due
            after ``max_rounds`` rounds (a task that sends itself again at once, for instance).
        ValueError: ``queues`` names a queue the app does not configure.
        ConfigurationError: E213 when horsies-worker is not installed.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(
            run_pending_async(app, queues=queues, max_rounds=max_rounds, batch=batch)
        )
    raise RuntimeError("run_pending() cannot run inside an event loop: await run_pending_async()")


async def run_pending_async(
    app: Horsies,
    *,
    queues: Sequence[str] | None = None,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    batch: int = DEFAULT_BATCH,
) -> list[RanTask]:
    """Async twin of :func:`run_pending`: ``async def`` tasks run on the running loop, ``def``
    tasks in a thread (so that they may block, or start an event loop of their own)."""
    if max_rounds < 1 or batch < 1:
        raise ValueError("max_rounds and batch must be at least 1")
    try:
        # horsies-worker is a separate distribution: tasks run with its code, never a copy of it.
        from horsies_worker import async_runner, completer, config, execution, run
    except ImportError as exc:
        raise _helper_unavailable(exc) from exc

    worker_config = config.WorkerConfig.from_app(app, locator="<run_pending>", processes=1)
    run.import_task_modules_suppressed(app, worker_config.task_modules)  # as a worker's start-up
    served = _served_queues(worker_config.queues, queues)
    request = ClaimRequest(queues=served, local_budget=batch, max_claim_batch=0)
    broker = app.get_broker()
    worker_id = f"run-pending-{uuid.uuid4()}"
    hostname = socket.gethostname()
    pids = [os.getpid()] * batch

    async def run_one(task: ClaimedTask) -> tuple[RanTask, TaskOutcome]:
        facts = execution.RunFacts(
            task.id,
            task.queue_name,
            task.priority,
            task.retry_count,
            task.max_retries,
            task.sent_at,
            time_limit_for_stored(task.task_options),
            task.task_options,
        )
        fn = app.tasks.get(task.task_name)
        if fn is not None and fn.is_async:
            result_json, ok = await async_runner.execute_task_async(
                app, task.task_name, task.args, task.kwargs, facts
            )
        else:
            result_json, ok = await asyncio.to_thread(
                execution.execute_task, app, task.task_name, task.args, task.kwargs, facts
            )
        outcome = completer.build_outcome(task, result_json, ok)
        ran = RanTask(
            task_id=task.id,
            task_name=task.task_name,
            result=task_result_from_json(result_json),
            retry_in_s=outcome.retry_delay_s,
        )
        return ran, outcome

    ran: list[RanTask] = []
    outcomes: list[TaskOutcome] = []
    for _ in range(max_rounds):
        exchange = await broker.exchange_async(
            worker_id, hostname, outcomes=outcomes, request=request, pids=pids
        )
        outcomes = []
        # Conditions and child workflows are the app's code: decided after the commit, as a
        # worker decides them; the tasks they enable are due in the next round.
        await broker.decide_async(exchange.undecided)
        if not exchange.started and not exchange.undecided:
            return ran
        for started in exchange.started:
            done, outcome = await run_one(started.task)
            ran.append(done)
            outcomes.append(outcome)
    if outcomes:
        finished = await broker.exchange_async(worker_id, hostname, outcomes=outcomes)
        await broker.decide_async(finished.undecided)
    names = ", ".join(sorted({r.task_name for r in ran[-batch:]}))
    raise RuntimeError(
        f"run_pending: tasks were still due after {max_rounds} rounds (the last ran: {names}); "
        "does a task send itself again at once?"
    )
