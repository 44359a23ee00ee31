"""Deciding READY nodes whose next step is user code, outside every lock.

A node with a ``run_when``/``skip_when`` condition, or a sub-workflow node whose child is built by
``build_with``, cannot be advanced inside the transaction that made it READY: that transaction
holds the root lock of the workflow tree, and user code may take any time. So it stays READY
(``Session.undecided``), and :func:`decide_program` decides it after the commit, in three steps:

1. read what the decisions need (node rows, dependency results; plain reads, no lock);
2. run the user code (conditions, ``build_with``) with no transaction open, each node's in a
   thread of its own for at most ``AppConfig.condition_timeout_s``: a node whose code is still
   running then is decided as if the code had raised (a condition skips the node, ``build_with``
   fails it), so a hanging condition holds up only its own node, and never the worker's loop,
   its heartbeats or its shutdown (the threads are daemons);
3. apply the decisions in one transaction that locks the trees again and applies a decision only
   if its node is still READY in a RUNNING workflow: when two processes decide the same node (a
   worker and a reaper), the first to commit wins and the other changes nothing.

Applying may make more nodes READY that need a decision; the steps repeat until none is left.
Decisions are deterministic functions of stored results, so deciding twice is harmless.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from horsies.broker.hooks import BrokerApp, NodeRef
from horsies.broker.programs import Offload, Program, Run
from horsies.broker.steps import Op
from horsies.codec import (
    args_from_json,
    kwargs_from_json,
    loads_json,
    rehydrate_value,
    task_result_from_json,
    task_result_to_json,
)
from horsies.failures import failure
from horsies.logs import get_logger
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.tracing import carrier_of
from horsies.workflows import payloads, runtime
from horsies.workflows.engine import NodeView
from horsies.workflows.status import WorkflowStatus, WorkflowTaskStatus
from horsies.workflows.store.rows import check_payloads
from horsies.workflows.store.session import Session, lock_roots_query
from horsies.workflows.store.snapshot import (
    LoadedWorkflow,
    NodeDetails,
    Snapshot,
    child_spec_of,
    remember_child_spec,
    stored_results,
)

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.workflows.nodes import AnyNode
    from horsies.workflows.spec import WorkflowSpec

__all__ = ["Decision", "decide_program"]

_log = get_logger("workflow.engine")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one READY node: ``skip`` it, ``run`` its task, start ``child`` (the built
    ``spec``, its nodes carrying the trace ``carrier`` of the parent's node), or ``fail`` it with
    ``result`` (the child could not be built)."""

    node: NodeRef
    verdict: Literal["skip", "run", "child", "fail"]
    spec: WorkflowSpec | None = None
    result: str | None = None
    carrier: dict[str, str] | None = None


@dataclass(slots=True)
class _Inputs:
    """What the decisions read: the workflows (and the parents of child workflows whose spec must
    be rebuilt) and the details of the nodes and their dependencies."""

    nodes: list[NodeRef]
    workflows: dict[str, LoadedWorkflow]
    details: dict[str, dict[int, NodeDetails]] = field(
        default_factory=dict[str, dict[int, NodeDetails]]
    )


def _inputs_op(nodes: Sequence[NodeRef]) -> Op[_Inputs]:
    """Read the inputs of deciding ``nodes`` (those still READY in a RUNNING workflow)."""
    snapshot = Snapshot()
    yield from snapshot.load({workflow_id for workflow_id, _ in nodes})
    parents = {
        wf.parent_id
        for wf in snapshot.workflows.values()
        if wf.parent_id is not None and child_spec_of(wf.id) is None
    }
    yield from snapshot.load(parents)
    wanted: dict[str, set[int]] = {}
    ready: list[NodeRef] = []
    for workflow_id, index in dict.fromkeys(nodes):
        wf = snapshot.workflows.get(workflow_id)
        if wf is None or wf.status is not WorkflowStatus.RUNNING:
            continue
        if wf.nodes[index].status is not WorkflowTaskStatus.READY:
            continue
        ready.append((workflow_id, index))
        wanted.setdefault(workflow_id, set()).update({index, *wf.nodes[index].dependencies})
        if wf.parent_id in parents and wf.parent_index is not None:
            parent = snapshot.workflows[wf.parent_id]
            parent_node = parent.nodes[wf.parent_index]
            wanted.setdefault(parent.id, set()).update({wf.parent_index, *parent_node.dependencies})
    inputs = _Inputs(ready, snapshot.workflows)
    for workflow_id, indices in wanted.items():
        inputs.details[workflow_id] = yield from snapshot.details(
            snapshot.workflows[workflow_id], indices
        )
    return inputs


# -- user code: runs with no transaction open ------------------------------------------------------


def _evaluate(app: Horsies, inputs: _Inputs) -> list[Decision]:
    """Decide every node of ``inputs`` at once, each in a daemon thread, within the app's
    ``condition_timeout_s`` (see the module docstring)."""
    limit = app.config.condition_timeout_s
    jobs = [_Job(functools.partial(_decide_one, app, inputs, ref)) for ref in inputs.nodes]
    for ref, job in zip(inputs.nodes, jobs, strict=True):
        threading.Thread(
            target=job.run, name=f"horsies-decide-{ref[0]}:{ref[1]}", daemon=True
        ).start()
    deadline = time.monotonic() + limit
    decisions: list[Decision] = []
    for ref, job in zip(inputs.nodes, jobs, strict=True):
        if not job.done.wait(max(0.0, deadline - time.monotonic())):
            decisions.append(_timed_out(inputs, ref, limit))
        elif job.error is not None:
            raise job.error
        elif job.decision is not None:
            decisions.append(job.decision)
    return decisions


@dataclass(slots=True)
class _Job:
    """One node's decision, made in a thread of its own."""

    fn: functools.partial[Decision]
    done: threading.Event = field(default_factory=threading.Event)
    decision: Decision | None = None
    error: BaseException | None = None

    def run(self) -> None:
        try:
            self.decision = self.fn()
        except BaseException as exc:  # handed to the waiting thread, which raises it
            self.error = exc
        finally:
            self.done.set()


def _decide_one(app: Horsies, inputs: _Inputs, ref: NodeRef) -> Decision:
    workflow_id, index = ref
    wf = inputs.workflows[workflow_id]
    node = wf.nodes[index]
    if node.is_subworkflow:
        details = inputs.details[workflow_id]
        built = _child_spec(app, wf, node, details)
        if isinstance(built, str):
            return Decision(ref, "fail", result=built)
        carrier = carrier_of(details[index].task_options)
        return Decision(ref, "child", spec=built, carrier=carrier)
    return Decision(ref, "skip" if _condition_skips(app, wf, node, inputs) else "run")


def _timed_out(inputs: _Inputs, ref: NodeRef, limit: float) -> Decision:
    """The decision for a node whose code outran ``limit``: as if that code had raised."""
    workflow_id, index = ref
    wf = inputs.workflows[workflow_id]
    node = wf.nodes[index]
    if not node.is_subworkflow:
        _log.warning(
            "workflow_condition_timeout: a condition of node %s of workflow %s ran longer than "
            "condition_timeout_s (%gs); skipping the node",
            node.node_id,
            workflow_id,
            limit,
        )
        return Decision(ref, "skip")
    detail = inputs.details[workflow_id][index]
    message = (
        f"Building child workflow {detail.sub_qualname} took longer than condition_timeout_s "
        f"({limit:g}s)"
    )
    _log.warning("workflow_build_timeout: node %s of workflow %s: %s", node.node_id, wf.id, message)
    data = {"module": detail.sub_module, "qualname": detail.sub_qualname, "timeout_s": limit}
    failed = failure(LibraryErrorCode.SUBWORKFLOW_LOAD_FAILED, message, data)
    return Decision(ref, "fail", result=task_result_to_json(failed))


def _origin(wf: LoadedWorkflow) -> runtime.WorkflowOrigin:
    return runtime.WorkflowOrigin(wf.name, wf.module, wf.qualname, wf.build_args, wf.build_kwargs)


def _node_object(app: Horsies, wf: LoadedWorkflow, index: int, inputs: _Inputs) -> AnyNode | None:
    """The Python node at ``index`` of ``wf``: for a child workflow, from its own spec (built in
    this process when it started, or rebuilt with ``build_with`` from the parent node's inputs,
    which must be deterministic); else from the registry or the recorded definition class."""
    if wf.parent_id is None or wf.parent_index is None:
        return runtime.find_node(app, _origin(wf), index)
    spec = child_spec_of(wf.id)
    if spec is None:
        parent = inputs.workflows.get(wf.parent_id)
        if parent is None:
            return None
        built = _child_spec(app, parent, parent.nodes[wf.parent_index], inputs.details[parent.id])
        if isinstance(built, str):
            return None
        spec = built
        remember_child_spec(wf.id, spec)
    return spec.tasks[index] if 0 <= index < len(spec.tasks) else None


def _condition_skips(app: Horsies, wf: LoadedWorkflow, node: NodeView, inputs: _Inputs) -> bool:
    """Evaluate skip_when then run_when; True when the node must be skipped. A condition sees the
    results of its ``workflow_ctx_from`` nodes, or of all its dependencies without it."""
    definition = _node_object(app, wf, node.index, inputs)
    if definition is None:
        _log.warning(
            "workflow_condition_not_found: node %s of workflow %s (%s) has conditions but its "
            "definition cannot be found in this process; running it",
            node.node_id,
            wf.id,
            wf.name,
        )
        return False
    details = inputs.details[wf.id]
    sources = payloads.context_indices(node, for_condition=True)
    view = wf.view()
    try:
        results: dict[str, TaskResult[Any, TaskError]] = {
            node_id: task_result_from_json(text)
            for node_id, text in payloads.context_results(
                view, sources, stored_results(details)
            ).items()
        }
        summaries: dict[str, Any] = {
            view.nodes[d].node_id: rehydrate_value(loads_json(summary))
            for d in sources
            if d in details and (summary := details[d].summary) is not None
        }
    except Exception as exc:
        # The condition cannot see its inputs: the same as a condition that raises.
        _log.warning(
            "workflow_condition_failed: inputs of node %s of workflow %s unreadable: %s; "
            "skipping it",
            node.node_id,
            wf.id,
            exc,
        )
        return True
    return runtime.condition_skips(
        definition,
        workflow_id=wf.id,
        index=node.index,
        task_name=details[node.index].task_name,
        results=results,
        summaries=summaries,
    )


def _child_spec(
    app: Horsies, wf: LoadedWorkflow, node: NodeView, details: Mapping[int, NodeDetails]
) -> WorkflowSpec | str:
    """Build the child spec of a sub-workflow node, or the err result JSON explaining why it
    cannot be built (``SUBWORKFLOW_LOAD_FAILED``)."""
    detail = details[node.index]
    data = {"module": detail.sub_module, "qualname": detail.sub_qualname}
    definition = runtime.find_definition(
        app,
        _origin(wf),
        index=node.index,
        sub_module=detail.sub_module,
        sub_qualname=detail.sub_qualname,
    )
    if definition is None:
        return task_result_to_json(
            failure(
                LibraryErrorCode.SUBWORKFLOW_LOAD_FAILED,
                f"Cannot import workflow definition {detail.sub_module}.{detail.sub_qualname}",
                data,
            )
        )
    try:
        args = args_from_json(detail.args)
        kwargs = kwargs_from_json(detail.kwargs)
        injected = payloads.args_from_injections(wf.view(), node, stored_results(details))
        kwargs.update({key: task_result_from_json(text) for key, text in injected.items()})
        spec = definition.build_with(app, *args, **kwargs)
        check_payloads(spec, app.config.max_payload_bytes)
        return spec
    except Exception as exc:
        return task_result_to_json(
            failure(
                LibraryErrorCode.SUBWORKFLOW_LOAD_FAILED,
                f"Building child workflow {detail.sub_qualname} failed: "
                f"{type(exc).__name__}: {exc}",
                data,
            )
        )


# -- applying: one transaction, the trees locked ---------------------------------------------------


def _apply_op(decisions: Sequence[Decision]) -> Op[list[NodeRef]]:
    """Apply the decisions whose node is still READY in a RUNNING workflow; returns the nodes that
    became READY and wait for a decision in turn."""
    if not decisions:
        return []
    session = Session()
    workflow_ids = {decision.node[0] for decision in decisions}
    yield lock_roots_query(workflow_ids)
    yield from session.load(workflow_ids)
    for decision in decisions:
        workflow_id, index = decision.node
        wf = session.workflows.get(workflow_id)
        if wf is None or wf.status is not WorkflowStatus.RUNNING:
            continue
        if wf.nodes[index].status is not WorkflowTaskStatus.READY:
            continue  # decided meanwhile by another process
        yield from session.guarded(wf, _apply_one(session, wf, index, decision))
    yield from session.drain()
    return session.undecided


def _apply_one(session: Session, wf: LoadedWorkflow, index: int, decision: Decision) -> Op[None]:
    update: dict[str, Any] = {"workflow_id": wf.id, "task_index": index}
    if decision.verdict == "run":
        node = wf.nodes[index]
        details = yield from session.details(wf, {index, *node.dependencies})
        yield from session.enqueue(wf, [index], details, [])
    elif decision.verdict == "child" and decision.spec is not None:
        yield from session.start_child(wf, index, decision.spec, decision.carrier)
    elif decision.verdict == "skip":
        wf.set_status(index, WorkflowTaskStatus.SKIPPED)
        yield from session.write([update | {"status": "SKIPPED"}])
        yield from session.advance(wf, [index])
    else:
        wf.set_status(index, WorkflowTaskStatus.FAILED)
        yield from session.write([update | {"status": "FAILED", "result": decision.result}])
        yield from session.record_failures(wf, [(index, decision.result)])
        yield from session.advance(wf, [index])


def decide_program(app: BrokerApp | None, nodes: Sequence[NodeRef]) -> Program[None]:
    """Decide ``nodes`` and whatever becomes READY because of them (see the module docstring).
    Without an app there is no user code to run: the nodes stay READY for a worker's reaper."""
    if app is None:
        return
    # The broker's app is the Horsies app, which is what the workflow layer builds specs with.
    workflow_app = cast("Horsies", app)
    pending = list(nodes)
    while pending:
        inputs: _Inputs = yield Run(_inputs_op(pending), "workflow_decide")
        if not inputs.nodes:
            return
        decisions: list[Decision] = yield Offload(
            functools.partial(_evaluate, workflow_app, inputs)
        )
        pending = yield Run(_apply_op(decisions), "workflow_decide", transaction=True)
