"""Workflow operations that write: start, pause, resume, cancel, the reaper's reconciliation and
the advance of finished tasks' workflows; and the programs the handles run.

Each operation runs in one transaction that locks the workflow tree first, and returns the nodes it
left READY for a decision (see ``decisions``); each program runs the operation, then decides those
nodes, so a call returns with its workflow as far along as it can go.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, cast

from horsies.broker.channels import TASK_STOP, notify_query
from horsies.broker.hooks import BrokerApp, NodeRef
from horsies.broker.programs import Program, Run
from horsies.broker.sql import workflows as wf_sql
from horsies.broker.steps import Op, Query, QueryResult, together
from horsies.logs import get_logger
from horsies.workflows.status import WorkflowStatus
from horsies.workflows.store.decisions import decide_program
from horsies.workflows.store.rows import StartRows
from horsies.workflows.store.session import Session, finish_nodes_query, lock_roots_query

__all__ = [
    "FinishedAdvance",
    "cancel_program",
    "pause_op",
    "reconcile_op",
    "resume_program",
    "start_program",
]

_log = get_logger("workflow.engine")

RECONCILE_BATCH: Final = 200
"""Unsynced nodes and stuck workflows handled per reaper pass."""


class FinishedAdvance:
    """Advancing the workflows of tasks finished in the current transaction, with its first reads
    folded into the caller's finish round trip (see ``horsies.broker.hooks.WorkflowAdvance``)."""

    def __init__(self, task_ids: Sequence[str], workflow_ids: Iterable[str]) -> None:
        self._session = Session()
        self._queries = [finish_nodes_query(task_ids), *self._session.load_queries(workflow_ids)]

    def queries(self) -> list[Query]:
        """Node update + snapshot reads, to send after the finish statement."""
        return list(self._queries)

    def run(self, parts: Sequence[QueryResult]) -> Op[list[NodeRef]]:
        """Continue with the results of :meth:`queries` (same order)."""
        self._session.absorb(parts[1:])
        yield from self._session.nodes_finished(parts[0])
        return self._session.undecided


def _start_op(rows: StartRows) -> Op[tuple[bool, list[NodeRef]]]:
    """Insert the workflow and enqueue its roots; False when the id already existed (an idempotent
    start: nothing changed)."""
    session = Session()
    inserted = yield from session.insert(rows)
    if not inserted:
        return False, []
    workflow_id = cast("str", rows.workflow["id"])
    yield lock_roots_query([workflow_id])
    yield from session.load([workflow_id])
    yield from session.advance(session.workflows[workflow_id], (), full=True)
    yield from session.drain()
    return True, session.undecided


def _tree_op(workflow_id: str) -> Op[list[tuple[str, str, str | None, int | None]]]:
    yield lock_roots_query([workflow_id])
    res = yield Query(wf_sql.WF_TREE, {"id": workflow_id})
    return [(r[0], r[1], r[2], r[3]) for r in res.rows]


def pause_op(workflow_id: str) -> Op[bool]:
    """RUNNING -> PAUSED for the workflow and its running descendants."""
    tree = yield from _tree_op(workflow_id)
    if not tree or tree[0][1] != WorkflowStatus.RUNNING.value:
        return False
    ids = [wid for wid, status, _, _ in tree if status == WorkflowStatus.RUNNING.value]
    yield Query(wf_sql.WF_SET_STATUS, {"ids": ids, "from_status": "RUNNING", "to_status": "PAUSED"})
    return True


def _resume_op(workflow_id: str) -> Op[tuple[bool, list[NodeRef]]]:
    """PAUSED -> RUNNING for the workflow and its paused descendants, re-evaluating their pending
    nodes and enqueuing their ready ones; the workflow is finalized if it is done."""
    tree = yield from _tree_op(workflow_id)
    if not tree or tree[0][1] != WorkflowStatus.PAUSED.value:
        return False, []
    ids = [wid for wid, status, _, _ in tree if status == WorkflowStatus.PAUSED.value]
    yield Query(wf_sql.WF_SET_STATUS, {"ids": ids, "from_status": "PAUSED", "to_status": "RUNNING"})
    session = Session()
    yield from session.load(ids)
    for wid in ids:
        wf = session.workflows[wid]
        yield from session.advance(wf, (), full=True)
        yield from session.children_ended(wf)
    yield from session.drain()
    return True, session.undecided


def _cancel_op(workflow_id: str) -> Op[tuple[bool, list[NodeRef]]]:
    """Cancel the workflow and its descendants: unstarted tasks are cancelled, running ones are
    stopped by their workers (their ends change nothing); a cancelled child settles a parent that
    is still going. False when the workflow was already terminal or unknown."""
    tree = yield from _tree_op(workflow_id)
    active = {wid for wid, status, _, _ in tree if status in ("PENDING", "RUNNING", "PAUSED")}
    if not tree or tree[0][0] not in active:
        return False, []
    ids = sorted(active)
    yield Query(wf_sql.WF_CANCEL, {"ids": ids})
    res = yield Query(wf_sql.WF_CANCEL_UNSTARTED_TASKS, {"ids": ids})
    cancelled_tasks = [r[0] for r in res.rows]
    running = yield Query(wf_sql.WF_STOP_RUNNING_TASKS, {"ids": ids})
    if running.rows:
        yield from together([notify_query(TASK_STOP, str(r[0])) for r in running.rows])
    yield Query(
        wf_sql.WF_SKIP_UNRUN_NODES,
        {"ids": ids, "cancelled_task_ids": cancelled_tasks},
        rows="none",
    )
    session = Session()
    yield from session.load(ids)
    # Deepest first: each cancelled child settles its parent's node (recorded only, since that
    # parent is cancelled too), and the top one settles a parent that is still going.
    for wid, _, parent_id, _ in reversed(tree):
        if wid in active and parent_id is not None:
            session.finished_children.append(wid)
    yield from session.drain()
    return True, session.undecided


def reconcile_op(min_age_ms: int) -> Op[tuple[int, list[NodeRef]]]:
    """The reaper's workflow pass: nodes whose task ended without the workflow knowing, and
    RUNNING workflows that cannot move by themselves (READY nodes, PENDING nodes with every
    dependency terminal, all nodes terminal, a child that ended), with the same join and condition
    rules as the normal path. Roots another transaction holds are skipped until the next pass.
    Returns the number of items handled and the nodes left for a decision."""
    unsynced, stuck = yield from together(
        (
            Query(wf_sql.WF_FIND_UNSYNCED_TASKS, {"limit": RECONCILE_BATCH}),
            Query(wf_sql.WF_FIND_STUCK, {"min_age_ms": min_age_ms, "limit": RECONCILE_BATCH}),
        )
    )
    if not unsynced.rows and not stuck.rows:
        return 0, []
    workflow_ids = {r[1] for r in unsynced.rows} | {r[0] for r in stuck.rows}
    locked = yield lock_roots_query(workflow_ids, skip_locked=True)
    roots = {r[0] for r in locked.rows}
    session = Session()
    yield from session.load(workflow_ids)
    usable = {wid for wid, wf in session.workflows.items() if wf.root_id in roots}
    task_ids = [r[0] for r in unsynced.rows if r[1] in usable]
    yield from session.finished_tasks(task_ids)
    handled = len(task_ids)
    stuck_ids = [r[0] for r in stuck.rows if r[0] in usable]
    for wid in stuck_ids:
        wf = session.workflows[wid]
        yield from session.guarded(
            wf, session.advance(wf, (), full=True), session.children_ended(wf)
        )
    yield from session.drain()
    if stuck_ids:
        yield Query(wf_sql.WF_TOUCH, {"ids": stuck_ids}, rows="none")
    handled += len(stuck_ids)
    if handled:
        _log.warning("workflow_recovered: %d item(s) reconciled", handled)
    return handled, session.undecided


def _then_decide(
    app: BrokerApp | None, op: Op[tuple[bool, list[NodeRef]]], action: str
) -> Program[bool]:
    outcome: tuple[bool, list[NodeRef]] = yield Run(op, action, transaction=True)
    changed, undecided = outcome
    yield from decide_program(app, undecided)
    return changed


def start_program(app: BrokerApp | None, rows: StartRows) -> Program[bool]:
    """Start a workflow: insert it and its nodes, enqueue its roots, decide the roots that need
    user code; False when a workflow with that id already existed (nothing changed)."""
    return _then_decide(app, _start_op(rows), "workflow_start")


def resume_program(app: BrokerApp | None, workflow_id: str) -> Program[bool]:
    """Resume a PAUSED workflow (see ``_resume_op``); False if it was not PAUSED."""
    return _then_decide(app, _resume_op(workflow_id), "workflow_resume")


def cancel_program(app: BrokerApp | None, workflow_id: str) -> Program[bool]:
    """Cancel a workflow (see ``_cancel_op``); False if it had already ended or is unknown."""
    return _then_decide(app, _cancel_op(workflow_id), "workflow_cancel")
