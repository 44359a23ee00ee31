"""One transaction's work on the workflows it touches: record ended nodes, propagate, enqueue what
became ready, finish workflows, settle the parents of ended child workflows.

Every operation (a generator of queries, see ``horsies.broker.steps``) runs in a transaction that
first locked the root row of each workflow tree it touches, so concurrent advances of one tree are
serialised and each sees the other's committed writes: two dependencies finishing at once enqueue
their dependent exactly once.

No user code runs here, since it would run while the tree's root lock is held and delay every
other worker finishing a node of that tree. A READY node whose next step needs user code (a
``run_when``/``skip_when`` condition, or a child workflow to build) stays READY and is listed in
:attr:`Session.undecided`; the caller decides it after the commit (``decisions``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from horsies.broker.hooks import NodeRef
from horsies.broker.sql import workflows as wf_sql
from horsies.broker.steps import Op, Query, QueryResult, together
from horsies.codec import task_result_to_json
from horsies.logs import get_logger
from horsies.results import TaskResult
from horsies.retry import TaskOptions
from horsies.workflows import engine, payloads
from horsies.workflows.engine import NodeView, WorkflowView
from horsies.workflows.status import OnError, WorkflowStatus, WorkflowTaskStatus
from horsies.workflows.store.node_results import (
    dumps,
    sub_workflow_failed_json,
    summary_json,
    synthesized_result,
)
from horsies.workflows.store.rows import StartRows, start_rows
from horsies.workflows.store.snapshot import (
    NODE_STATUS,
    LoadedWorkflow,
    NodeDetails,
    Snapshot,
    remember_child_spec,
    stored_results,
)

if TYPE_CHECKING:
    from horsies.workflows.spec import WorkflowSpec

__all__ = ["Session", "finish_nodes_query", "lock_roots_query", "nodes_update_query"]

_log = get_logger("workflow.engine")


class Session(Snapshot):
    """The workflows one transaction touches, and the steps that advance them. Methods that take a
    workflow expect it loaded (:meth:`Snapshot.load`)."""

    def __init__(self) -> None:
        super().__init__()
        self.finished_children: list[str] = []
        self.undecided: list[NodeRef] = []
        """READY nodes waiting for a decision that needs user code, in the order they became
        READY."""

    # -- node results -----------------------------------------------------------------------------

    def record_failures(
        self, wf: LoadedWorkflow, failed: Sequence[tuple[int, str | None]]
    ) -> Op[None]:
        """Apply on_error for nodes that just FAILED: store the error, or pause the workflow."""
        if not failed or wf.status is not WorkflowStatus.RUNNING:
            return
        error = payloads.error_result_json_from_stored(failed[-1][1])
        if wf.on_error is OnError.PAUSE:
            yield Query(wf_sql.WF_PAUSE_ON_ERROR, {"id": wf.id, "error": error}, rows="none")
            wf.status = WorkflowStatus.PAUSED
            _log.warning("workflow_paused_on_error: workflow %s (%s)", wf.id, wf.name)
        else:
            yield Query(wf_sql.WF_SET_ERROR, {"id": wf.id, "error": error}, rows="none")
        wf.has_error = True

    def write(
        self, updates: Sequence[dict[str, Any]], tasks: Sequence[dict[str, Any]] = ()
    ) -> Op[None]:
        """Node updates and new task rows, in one round trip."""
        queries: list[Query] = []
        if updates:
            queries.append(nodes_update_query(updates))
        if tasks:
            queries.append(Query(wf_sql.WF_TASKS_INSERT, {"tasks": dumps(tasks)}, rows="none"))
        if queries:
            yield from together(queries)

    # -- advancing --------------------------------------------------------------------------------

    def advance(
        self, wf: LoadedWorkflow, changed: Iterable[int], *, full: bool = False
    ) -> Op[None]:
        """Propagate from ``changed`` nodes (or re-evaluate everything when ``full``), enqueue what
        became READY, then finalize the workflow if every node is terminal."""
        changed = list(changed)
        first = True
        while wf.status is WorkflowStatus.RUNNING:
            view = wf.view()
            prop = engine.propagate_all(view) if full and first else engine.propagate(view, changed)
            ready = list(prop.ready)
            if full and first:
                ready.extend(n.index for n in view.nodes if n.status is WorkflowTaskStatus.READY)
            first = False
            updates: list[dict[str, Any]] = [
                {"workflow_id": wf.id, "task_index": i, "status": "SKIPPED"} for i in prop.skipped
            ]
            for i in prop.skipped:
                wf.set_status(i, WorkflowTaskStatus.SKIPPED)
            for i in prop.ready:
                wf.set_status(i, WorkflowTaskStatus.READY)
            if ready:
                yield from self._dispatch(wf, sorted(set(ready)), updates)
            else:
                yield from self.write(updates)
            changed = list(prop.skipped)
            if not changed:
                break
        yield from self.finalize_if_done(wf)

    def _dispatch(
        self, wf: LoadedWorkflow, ready: list[int], updates: list[dict[str, Any]]
    ) -> Op[None]:
        """Enqueue the READY nodes that need no decision and write ``updates`` with them; the
        others stay READY and join :attr:`undecided`."""
        view = wf.view()
        needed: set[int] = set(ready)
        for i in ready:
            needed.update(view.nodes[i].dependencies)
        details = yield from self.details(wf, needed)
        plain: list[int] = []
        for i in ready:
            if details[i].has_conditions or view.nodes[i].is_subworkflow:
                updates.append({"workflow_id": wf.id, "task_index": i, "status": "READY"})
                self.undecided.append((wf.id, i))
            else:
                plain.append(i)
        yield from self.enqueue(wf, plain, details, updates)

    def enqueue(
        self,
        wf: LoadedWorkflow,
        indices: Sequence[int],
        details: Mapping[int, NodeDetails],
        updates: list[dict[str, Any]],
    ) -> Op[None]:
        """Enqueue the tasks of the task nodes ``indices`` (``details`` holds them and their
        dependencies), writing ``updates`` in the same round trip."""
        view = wf.view()
        tasks: list[dict[str, Any]] = []
        for i in indices:
            task_id = str(uuid.uuid4())
            tasks.append(_task_row(wf, view, view.nodes[i], details, task_id))
            wf.set_status(i, WorkflowTaskStatus.ENQUEUED)
            updates.append(
                {"workflow_id": wf.id, "task_index": i, "status": "ENQUEUED", "task_id": task_id}
            )
        yield from self.write(updates, tasks)

    def start_child(
        self,
        parent: LoadedWorkflow,
        index: int,
        spec: WorkflowSpec,
        carrier: Mapping[str, str] | None = None,
    ) -> Op[None]:
        """Start the child workflow of sub-workflow node ``index`` from its built ``spec``; its
        nodes carry the trace ``carrier`` of the parent's node (that of the root's start)."""
        child_id = str(uuid.uuid4())
        remember_child_spec(child_id, spec)
        rows = start_rows(
            spec,
            child_id,
            parent_id=parent.id,
            parent_index=index,
            depth=parent.depth + 1,
            root_id=parent.root_id,
            carrier=carrier,
        )
        yield from self.insert(rows)
        parent.set_status(index, WorkflowTaskStatus.RUNNING)
        link = {"workflow_id": parent.id, "task_index": index, "status": "RUNNING"}
        yield from self.write([link | {"sub_workflow_id": child_id}])
        yield from self.load([child_id])
        yield from self.advance(self.workflows[child_id], (), full=True)

    def insert(self, rows: StartRows) -> Op[bool]:
        """Insert a workflow and its nodes; False when the id already existed (nothing written)."""
        res = yield Query(wf_sql.WF_INSERT, rows.workflow)
        if not res.rows:
            return False
        yield Query(
            wf_sql.WF_NODES_INSERT,
            {"workflow_id": rows.workflow["id"], "nodes": dumps(rows.nodes)},
            rows="none",
        )
        return True

    # -- finishing --------------------------------------------------------------------------------

    def finalize_if_done(self, wf: LoadedWorkflow) -> Op[None]:
        """Finish the workflow when every node is terminal: status, result, error."""
        final = engine.finalization(wf.view())
        if final is None:
            return
        indices: set[int] = (
            {final.output_index} if final.output_index is not None else set(final.sink_indices)
        )
        if final.error_index is not None:
            indices.add(final.error_index)
        details = yield from self.details(wf, indices)
        if final.output_index is not None:
            result = details[final.output_index].result
        else:
            result = payloads.sinks_result_json(
                {wf.nodes[i].node_id: details[i].result for i in final.sink_indices}
            )
        error: str | None = None
        if final.status is WorkflowStatus.FAILED:
            if final.error_source is engine.ErrorSource.NODE and final.error_index is not None:
                error = payloads.error_result_json_from_stored(details[final.error_index].result)
            elif final.error_source is engine.ErrorSource.SUCCESS_CASE_NOT_MET:
                error = payloads.success_case_not_met_json()
        res = yield Query(
            wf_sql.WF_FINALIZE,
            {"id": wf.id, "status": final.status.value, "result": result, "error": error},
        )
        if not res.rows:
            return
        wf.status = final.status
        wf.finalized = True
        _log.info("workflow_finished: workflow %s (%s) %s", wf.id, wf.name, final.status.value)
        if wf.parent_id is not None:
            self.finished_children.append(wf.id)

    def notify_parent(self, child_id: str) -> Op[None]:
        """A child workflow ended (COMPLETED, FAILED or CANCELLED): settle its parent node and
        advance the parent. A child that did not complete fails the node with a
        `SubWorkflowError`, also when it was cancelled through its own handle."""
        child = self.workflows[child_id]
        if child.parent_id is None or child.parent_index is None:
            return
        res = yield Query(wf_sql.WF_SUMMARY, {"id": child_id})
        if not res.rows:
            return
        status, result = res.rows[0][0], res.rows[0][1]
        summary = summary_json(res.rows[0])
        if status == WorkflowStatus.COMPLETED.value:
            node_status = WorkflowTaskStatus.COMPLETED
            node_result = result or task_result_to_json(TaskResult(ok=None))
        else:
            node_status = WorkflowTaskStatus.FAILED
            node_result = sub_workflow_failed_json(child_id, status, summary)
        yield from self.load([child.parent_id])
        parent = self.workflows[child.parent_id]
        index = child.parent_index
        if parent.nodes[index].status.is_terminal:
            return
        yield from self.write(
            [
                {
                    "workflow_id": parent.id,
                    "task_index": index,
                    "status": node_status.value,
                    "result": node_result,
                    "summary": summary,
                }
            ]
        )
        parent.set_status(index, node_status)
        if node_status is WorkflowTaskStatus.FAILED:
            yield from self.record_failures(parent, [(index, node_result)])
        yield from self.advance(parent, [index])

    def children_ended(self, wf: LoadedWorkflow) -> Op[None]:
        """Queue the parent notification of every child of ``wf`` that ended while its node still
        says RUNNING (recovery and resume; normally the child's own finalization does it)."""
        res = yield Query(wf_sql.WF_ENDED_CHILDREN, {"id": wf.id})
        ended = [r[0] for r in res.rows]
        if ended:
            yield from self.load(ended)
            self.finished_children.extend(ended)

    def drain(self) -> Op[None]:
        """Settle the parents of every child workflow that ended during this session."""
        while self.finished_children:
            child_id = self.finished_children.pop(0)
            yield from self.notify_parent(child_id)

    def finished_tasks(self, task_ids: Sequence[str]) -> Op[None]:
        """Record ended tasks on their nodes, apply on_error, propagate and finalize."""
        if not task_ids:
            return
        res = yield finish_nodes_query(task_ids)
        yield from self.load(r[0] for r in res.rows)
        yield from self.nodes_finished(res)

    def nodes_finished(self, res: QueryResult) -> Op[None]:
        """Continue from a WF_NODES_FINISH_FROM_TASKS result, the workflows already loaded."""
        if not res.rows:
            return
        by_workflow: dict[str, list[tuple[int, str, str | None]]] = {}
        synthesized: list[dict[str, Any]] = []
        for workflow_id, index, status, task_id, task_status, stored in res.rows:
            result = stored
            if status == "FAILED" and stored is None:
                result = synthesized_result(task_id, task_status)
                synthesized.append(
                    {
                        "workflow_id": workflow_id,
                        "task_index": int(index),
                        "status": status,
                        "result": result,
                    }
                )
            by_workflow.setdefault(workflow_id, []).append((int(index), status, result))
        yield from self.write(synthesized)
        yield from self.load(by_workflow)
        for workflow_id in sorted(by_workflow):
            wf = self.workflows.get(workflow_id)
            if wf is None:
                continue
            ended = sorted(by_workflow[workflow_id])
            for index, status, _ in ended:
                wf.set_status(index, NODE_STATUS[status])
            yield from self.guarded(
                wf,
                self.record_failures(wf, [(i, r) for i, s, r in ended if s == "FAILED"]),
                self.advance(wf, [i for i, _, _ in ended]),
            )
        yield from self.drain()

    def guarded(self, wf: LoadedWorkflow, *steps: Op[None]) -> Op[None]:
        """Run ``steps`` for one workflow; a Python error in them (a bug, unreadable stored data)
        is logged and stops this workflow's advance without failing the transaction, so the
        task results and other workflows of the batch still commit. What was written stays
        consistent (each step writes whole decisions); the reaper's stuck-workflow pass picks the
        workflow up again. Database errors never reach here: they end the operation."""
        try:
            for step in steps:
                yield from step
        except Exception:
            _log.exception(
                "workflow_advance_failed: workflow %s (%s); left for the reaper to retry",
                wf.id,
                wf.name,
            )
        finally:
            for step in steps:
                step.close()


_NODE_UPDATE_COLUMNS: Final = (
    ("workflow_ids", "workflow_id"),
    ("task_indexes", "task_index"),
    ("statuses", "status"),
    ("task_ids", "task_id"),
    ("sub_workflow_ids", "sub_workflow_id"),
    ("results", "result"),
    ("summaries", "summary"),
)
"""WF_NODES_UPDATE's array parameters and the key of a node update each takes (None when the
update has no such key: the column keeps its value)."""


def nodes_update_query(updates: Sequence[Mapping[str, Any]]) -> Query:
    """WF_NODES_UPDATE for node updates (dicts with ``workflow_id``, ``task_index``, ``status`` and
    any of the other columns it writes)."""
    params = {param: [update.get(key) for update in updates] for param, key in _NODE_UPDATE_COLUMNS}
    return Query(wf_sql.WF_NODES_UPDATE, params, rows="none")


def lock_roots_query(workflow_ids: Iterable[str], *, skip_locked: bool = False) -> Query:
    """The root lock of every tree holding ``workflow_ids`` (take it before any other write)."""
    sql = wf_sql.WF_LOCK_ROOTS_SKIP_LOCKED if skip_locked else wf_sql.WF_LOCK_ROOTS
    return Query(sql, {"ids": sorted(set(workflow_ids))})


def finish_nodes_query(task_ids: Sequence[str]) -> Query:
    """WF_NODES_FINISH_FROM_TASKS for these tasks (only ended tasks' nodes change)."""
    return Query(wf_sql.WF_NODES_FINISH_FROM_TASKS, {"task_ids": list(task_ids)})


def _task_row(
    wf: LoadedWorkflow,
    view: WorkflowView,
    node: NodeView,
    details: Mapping[int, NodeDetails],
    task_id: str,
) -> dict[str, Any]:
    """The task row of a task node: its arguments with the injected results, context and meta."""
    detail = details[node.index]
    stored = stored_results(details)
    ctx = None
    if node.ctx_from is not None:
        ctx = payloads.WorkflowCtxPayload(
            workflow_id=wf.id,
            task_index=node.index,
            task_name=detail.task_name,
            results=payloads.context_results(view, node.ctx_from, stored),
            summaries={
                view.nodes[d].node_id: summary
                for d in node.ctx_from
                if d in details and (summary := details[d].summary) is not None
            },
        )
    meta = payloads.WorkflowMetaPayload(
        workflow_id=wf.id, task_index=node.index, task_name=detail.task_name
    )
    injected = payloads.args_from_injections(view, node, stored)
    options = TaskOptions.from_json(detail.task_options)
    return {
        "id": task_id,
        "task_name": detail.task_name,
        "queue_name": detail.queue_name,
        "priority": detail.priority,
        "args": detail.args,
        "kwargs": payloads.node_kwargs_json(detail.kwargs, injected, ctx, meta),
        "good_until": None if options.good_until is None else options.good_until.isoformat(),
        "max_retries": options.max_retries,
        "task_options": detail.task_options,
        "workflow_id": wf.id,
    }
