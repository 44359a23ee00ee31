"""Recovery of tasks whose worker went silent: stale claims back to PENDING, stale runs failed as
crashed (or retried), and the reaper pass that runs both under one cluster-wide lock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, NamedTuple

from horsies import failures
from horsies.broker.channels import wake_workers_query
from horsies.broker.finish import TaskOutcome, finish_op
from horsies.broker.hooks import NodeRef, WorkflowEngine, run_then_decide
from horsies.broker.locks import REAPER_LOCK_KEY
from horsies.broker.programs import Program
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Op, Query
from horsies.codec import (
    task_result_to_json,
)
from horsies.config import RecoveryConfig
from horsies.logs import get_logger
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.retry import retry_delay_for_stored

_log = get_logger("broker")


@dataclass(frozen=True, slots=True)
class ReapReport:
    """What one reaper pass did: CLAIMED rows requeued, RUNNING rows failed, RUNNING rows sent to
    retry, workflow items reconciled."""

    requeued: int = 0
    failed: int = 0
    retried: int = 0
    reconciled: int = 0
    ran: bool = field(default=True)
    """False when another process held the reaper lock, so this pass did nothing."""


STALE_RUNNING_BATCH: Final = 500
"""Stale RUNNING rows handled per statement (keeps reaper transactions short)."""


def requeue_stale_claimed_op(threshold_ms: int) -> Op[int]:
    """Stale CLAIMED -> PENDING (safe: their code never started); returns the number requeued."""
    res = yield Query(task_sql.TASK_REQUEUE_STALE_CLAIMED, {"threshold_ms": threshold_ms})
    if res.rows:
        _log.warning(
            "task_requeued_stale_claim: %d task(s) whose claimer stopped heartbeating went back to "
            "PENDING: %s",
            len(res.rows),
            ", ".join(r[0] for r in res.rows[:20]),
        )
        yield wake_workers_query("requeued")
    return len(res.rows)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class _StaleRun(NamedTuple):
    """A row of TASK_GET_STALE_RUNNING, in its column order."""

    task_id: str
    task_name: str
    queue_name: str
    worker_pid: int | None
    worker_hostname: str | None
    worker_id: str | None
    started_at: datetime | None
    last_heartbeat: datetime | None
    retry_count: int
    max_retries: int
    task_options: str | None
    detected_at: datetime
    workflow_id: str | None
    attempt: int


def _worker_crashed(threshold_ms: int, run: _StaleRun) -> tuple[TaskResult[Any, TaskError], str]:
    """(WORKER_CRASHED result, failed_reason) for a task whose runner went silent."""
    seconds = f"{threshold_ms / 1000:g}s"
    reason = f"Worker process crashed (no runner heartbeat for {threshold_ms}ms = {seconds})"
    data = {
        "stale_threshold_ms": threshold_ms,
        "stale_threshold_seconds": threshold_ms / 1000,
        "worker_pid": run.worker_pid,
        "worker_hostname": run.worker_hostname,
        "worker_id": run.worker_id,
        "started_at": _iso(run.started_at),
        "last_heartbeat": _iso(run.last_heartbeat),
        "detected_at": _iso(run.detected_at),
    }
    return failures.failure(LibraryErrorCode.WORKER_CRASHED, reason, data), reason


def fail_stale_running_op(
    threshold_ms: int, *, allow_retry: bool, max_batches: int | None
) -> Op[tuple[int, int]]:
    """Stale RUNNING -> FAILED with WORKER_CRASHED, or -> PENDING for a retry when the task's
    auto_retry_for lists WORKER_CRASHED and retries remain (only with ``allow_retry``).

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
            run = _StaleRun(*row)
            result, reason = _worker_crashed(threshold_ms, run)
            delay = (
                retry_delay_for_stored(
                    result,
                    retry_count=run.retry_count,
                    max_retries=run.max_retries,
                    options_json=run.task_options,
                )
                if allow_retry
                else None
            )
            outcomes.append(
                TaskOutcome(
                    task_id=run.task_id,
                    result_json=task_result_to_json(result),
                    ok=False,
                    retry_delay_s=delay,
                    failed_reason=reason,
                    attempt=run.attempt,
                    workflow_id=run.workflow_id,
                )
            )
            _log.warning(
                "task_worker_crashed: task %s (%s) on %s pid %s: %s%s",
                run.task_id,
                run.task_name,
                run.worker_hostname,
                run.worker_pid,
                reason,
                f"; retrying in {delay:g}s" if delay is not None else "",
            )
        # Workflows learn about these through the reconciliation (same transaction), which never
        # waits for a tree lock: this transaction already holds task rows a finishing worker may
        # need.
        done = (yield from finish_op(outcomes, worker_id=None)).ids
        retried += sum(1 for o in outcomes if o.retry_delay_s is not None and o.task_id in done)
        failed += sum(1 for o in outcomes if o.retry_delay_s is None and o.task_id in done)
        if len(res.rows) < STALE_RUNNING_BATCH:
            break
    return failed, retried


RECONCILE_MIN_AGE_MS: Final = 1_000
"""A RUNNING workflow must have been quiet this long before the reaper re-examines it."""


def _reap_op(
    recovery: RecoveryConfig, engine: WorkflowEngine | None
) -> Op[tuple[ReapReport, list[NodeRef]]]:
    """One reaper pass (run in a transaction); does nothing when another reaper holds the lock.
    Ends with the workflow reconciliation, which also carries the tasks failed here into their
    workflows."""
    res = yield Query(task_sql.TASK_REAPER_TRY_LOCK, {"key": REAPER_LOCK_KEY})
    if not res.rows or not res.rows[0][0]:
        return ReapReport(ran=False), []
    requeued = failed = retried = 0
    if recovery.auto_requeue_stale_claimed:
        requeued = yield from requeue_stale_claimed_op(recovery.claimed_stale_threshold_ms)
    if recovery.auto_fail_stale_running:
        failed, retried = yield from fail_stale_running_op(
            recovery.running_stale_threshold_ms, allow_retry=True, max_batches=4
        )
    reconciled, undecided = 0, []
    if engine is not None:
        reconciled, undecided = yield from engine.reconcile(RECONCILE_MIN_AGE_MS)
    report = ReapReport(requeued=requeued, failed=failed, retried=retried, reconciled=reconciled)
    return report, undecided


def reap_program(recovery: RecoveryConfig, engine: WorkflowEngine | None) -> Program[ReapReport]:
    """One reaper pass (see ``_reap_op``), then the decisions of the workflow nodes it left
    READY."""
    return (yield from run_then_decide(engine, _reap_op(recovery, engine), "reap"))
