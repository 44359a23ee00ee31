"""Finishing tasks: the outcome of an execution and the statement that writes a batch of them."""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import orjson

from horsies.broker.channels import CAPACITY_FREED
from horsies.broker.hooks import NodeRef, WorkflowAdvance, WorkflowEngine
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Op, Query, QueryResult, together
from horsies.logs import get_logger

_log = get_logger("broker")

_Named = TypeVar("_Named", str, tuple[str, int])


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """The end of one execution, for `PostgresBroker.finish_async`.

    ``result_json`` is the encoded TaskResult; ``ok`` selects COMPLETED vs FAILED. A non-None
    ``retry_delay_s`` sends the task back to PENDING for another attempt after that delay instead
    (the result is not stored). ``attempt`` (from `ClaimedTask.attempt`), when given, must equal the
    row's attempt: it pins the outcome to the claim that produced it, so a late result (a worker
    that was frozen, a retry started meanwhile) can never finish a later attempt. ``workflow_id``
    (from `ClaimedTask.workflow_id`) makes the write advance that workflow in the same transaction.
    """

    task_id: str
    result_json: str
    ok: bool
    retry_delay_s: float | None = None
    failed_reason: str | None = None
    attempt: int | None = None
    workflow_id: str | None = None


def finish_query(outcomes: Sequence[TaskOutcome], worker_id: str | None) -> Query:
    """TASK_FINISH_IF_RUNNING_MANY for a batch: final outcomes and retries in one statement."""
    rows = [
        {
            "id": o.task_id,
            "result": o.result_json,
            "ok": o.ok,
            "failed_reason": o.failed_reason,
            "attempt": o.attempt,
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


def log_lost(action: str, requested: Iterable[_Named], done: Container[_Named], why: str) -> None:
    """Log the requested tasks (ids, or (id, attempt) claims) a statement did not change."""
    lost = [t for t in requested if t not in done]
    if lost:
        shown = ", ".join(
            t if isinstance(t, str) else f"{t[0]} (attempt {t[1]})" for t in lost[:20]
        )
        _log.info("%s: %d task(s) %s: %s", action, len(lost), why, shown)


def finished_ids(outcomes: Sequence[TaskOutcome], res: QueryResult) -> set[str]:
    done = {r[0] for r in res.rows}
    log_lost(
        "task_finish_lost",
        (o.task_id for o in outcomes),
        done,
        "no longer RUNNING for this worker in this attempt",
    )
    return done


def workflow_ids_of(outcomes: Sequence[TaskOutcome]) -> list[str]:
    """The workflows of a batch's outcomes, sorted (the order their trees are locked in)."""
    return sorted({o.workflow_id for o in outcomes if o.workflow_id is not None})


def workflow_advance(
    engine: WorkflowEngine | None, outcomes: Sequence[TaskOutcome], workflow_ids: Sequence[str]
) -> WorkflowAdvance | None:
    """The workflow advance of a finish batch (its reads go in the finish round trip), or None."""
    if engine is None or not workflow_ids:
        return None
    task_ids = [o.task_id for o in outcomes if o.workflow_id is not None]
    return engine.advance(task_ids, workflow_ids)


@dataclass(frozen=True, slots=True)
class Finished:
    """What writing a batch of outcomes did: the ids written (the others lost a race and changed
    nothing), and the workflow nodes left waiting for a decision (see ``hooks.WorkflowHooks``)."""

    ids: set[str] = field(default_factory=set[str])
    undecided: list[NodeRef] = field(default_factory=list[NodeRef])


def finish_op(
    outcomes: Sequence[TaskOutcome],
    worker_id: str | None,
    *,
    notify_capacity: bool = True,
    engine: WorkflowEngine | None = None,
) -> Op[Finished]:
    """Finalise a batch in one statement (COMPLETED/FAILED rows and retries) plus, when
    ``notify_capacity``, one capacity wake-up in the same round trip.

    With an ``engine``, outcomes of workflow tasks (``workflow_id`` set) also advance their
    workflows in the same transaction (run the op in one): the trees' root rows are locked before
    the finish, then the engine runs. Without one, the reaper's reconciliation does it later.
    """
    if not outcomes:
        return Finished()
    workflow_ids = workflow_ids_of(outcomes) if engine is not None else []
    queries = [engine.lock_query(workflow_ids)] if engine is not None and workflow_ids else []
    finish_at = len(queries)
    queries.append(finish_query(outcomes, worker_id))
    if notify_capacity:
        queries.append(CAPACITY_FREED)
    advance = workflow_advance(engine, outcomes, workflow_ids)
    advance_at = len(queries)
    if advance is not None:
        queries.extend(advance.queries())
    parts = yield from together(queries)
    finished = finished_ids(outcomes, parts[finish_at])
    undecided: list[NodeRef] = []
    if advance is not None:
        undecided = yield from advance.run(parts[advance_at:])
    return Finished(finished, undecided)
