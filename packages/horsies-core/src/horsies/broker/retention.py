"""Retention: removing finished work, heartbeats and snapshots past their period, in small batches.

Every worker's maintenance calls :func:`prune_program` now and then (``horsies_worker/reaper.py``);
``horsies db prune`` calls it by hand. Each batch is one short transaction that first tries the
cluster's prune lock: while another process prunes, this one stops at once (nothing is waited
for). A batch deletes the oldest rows first and skips rows another transaction holds, so claims
and finishes never wait on it. Pending and running tasks are never touched; a workflow's rows go
only with its whole tree, once every task of the tree has ended.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, LiteralString

from horsies.broker.locks import PRUNE_LOCK_KEY
from horsies.broker.programs import Program, Run, Wait
from horsies.broker.sql import retention as retention_sql
from horsies.broker.steps import Op, Query
from horsies.config.retention import RetentionConfig

__all__ = ["PruneReport", "prune_program"]


@dataclass(slots=True)
class PruneReport:
    """What a prune removed (or, dry, would remove), per kind of row; ``busy`` when another
    process was pruning, ``finished`` when nothing past its period is left."""

    tasks: int = 0
    workflows: int = 0
    heartbeats: int = 0
    worker_states: int = 0
    limit_starts: int = 0
    busy: bool = False
    finished: bool = True
    by_rule: dict[str, int] = field(default_factory=dict[str, int])
    """Rows per rule (``tasks``, ``tasks queue=<q>``, ``tasks task=<t>``, ``workflows`` ...)."""

    @property
    def total(self) -> int:
        """Every row removed."""
        return (
            self.tasks + self.workflows + self.heartbeats + self.worker_states + self.limit_starts
        )


@dataclass(frozen=True, slots=True)
class _Rule:
    """One kind of row and the period it is kept: a delete and its dry-run count."""

    name: str
    report_field: str
    delete: LiteralString
    count: LiteralString
    params: dict[str, Any]


def _task_params(
    keep_s: float,
    *,
    queue_name: str | None = None,
    task_name: str | None = None,
    skip_queues: list[str] | None = None,
    skip_tasks: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "keep_s": keep_s,
        "queue_name": queue_name,
        "task_name": task_name,
        "skip_queues": skip_queues or [],
        "skip_tasks": skip_tasks or [],
    }


def _rules(retention: RetentionConfig) -> Iterator[_Rule]:
    """The rules of ``retention``, in order. A task's own period wins over its queue's, which wins
    over the default; None keeps forever, so its rows are only ever skipped."""
    tasks_sql = (retention_sql.TASKS_PRUNE, retention_sql.TASKS_PRUNE_COUNT)
    for task_name, keep_s in retention.tasks.items():
        if keep_s is not None:
            params = _task_params(keep_s, task_name=task_name)
            yield _Rule(f"tasks task={task_name}", "tasks", *tasks_sql, params)
    overridden = list(retention.tasks)
    for queue_name, keep_s in retention.queues.items():
        if keep_s is not None:
            params = _task_params(keep_s, queue_name=queue_name, skip_tasks=overridden)
            yield _Rule(f"tasks queue={queue_name}", "tasks", *tasks_sql, params)
    if retention.finished_tasks_s is not None:
        params = _task_params(
            retention.finished_tasks_s, skip_queues=list(retention.queues), skip_tasks=overridden
        )
        yield _Rule("tasks", "tasks", *tasks_sql, params)
    kinds: list[tuple[str, float | None, LiteralString, LiteralString]] = [
        (
            "workflows",
            retention.workflows_s,
            retention_sql.WORKFLOWS_PRUNE,
            retention_sql.WORKFLOWS_PRUNE_COUNT,
        ),
        (
            "heartbeats",
            retention.heartbeats_s,
            retention_sql.HEARTBEATS_PRUNE,
            retention_sql.HEARTBEATS_PRUNE_COUNT,
        ),
        (
            "worker_states",
            retention.worker_states_s,
            retention_sql.WORKER_STATES_PRUNE,
            retention_sql.WORKER_STATES_PRUNE_COUNT,
        ),
    ]
    for name, keep_s, delete, count in kinds:
        if keep_s is not None:
            yield _Rule(name, name, delete, count, {"keep_s": keep_s})
    yield _Rule(
        "limit_starts",
        "limit_starts",
        retention_sql.LIMIT_STARTS_PRUNE,
        retention_sql.LIMIT_STARTS_PRUNE_COUNT,
        {},
    )


def _batch_op(rule: _Rule, batch: int) -> Op[int | None]:
    """One batch of ``rule`` under the prune lock: rows deleted, or None while another process
    holds the lock."""
    locked = yield Query(retention_sql.PRUNE_TRY_LOCK, {"key": PRUNE_LOCK_KEY})
    if not locked.rows or not locked.rows[0][0]:
        return None
    res = yield Query(rule.delete, {**rule.params, "batch": batch})
    # The task and workflow prunes count what they removed themselves (their statements delete
    # from several tables); the others report it as their row count.
    return int(res.rows[0][0]) if res.rows else res.rowcount


def _count_op(rule: _Rule) -> Op[int]:
    res = yield Query(rule.count, rule.params)
    return int(res.rows[0][0])


def prune_program(
    retention: RetentionConfig, *, dry_run: bool = False, budget_s: float | None = None
) -> Program[PruneReport]:
    """Remove what ``retention`` no longer keeps, batch by batch, until nothing is left or
    ``budget_s`` seconds have passed (None: until nothing is left); ``dry_run`` only counts."""
    report = PruneReport()
    deadline = None if budget_s is None else time.monotonic() + budget_s
    for rule in _rules(retention):
        if dry_run:
            removed = yield Run(_count_op(rule), "prune count")
        else:
            removed = 0
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    report.finished = False
                    break
                began = time.monotonic()
                done = yield Run(_batch_op(rule, retention.batch_size), "prune", transaction=True)
                if done is None:  # another process prunes: stop, counting what went before
                    report.busy, report.finished = True, False
                    break
                removed += done
                if done < retention.batch_size:
                    break
                # Rest as long as the batch took: a prune working through a backlog without a
                # break took a core and most of the WAL's flushes from the queue beside it.
                yield Wait(time.monotonic() - began)
        report.by_rule[rule.name] = removed
        setattr(report, rule.report_field, getattr(report, rule.report_field) + removed)
        if not report.finished:
            break
    return report
