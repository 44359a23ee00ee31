"""Sans-IO workflow operations: the engine's I/O, in one place.

The decisions (which nodes become READY or SKIPPED, when a workflow ends and with what) are pure
functions in :mod:`horsies.workflows.engine`; this module loads the snapshot they decide on, runs
them, evaluates conditions and builds child workflows (the only steps that need user code), and
writes the outcome with batched statements. Like :mod:`horsies.broker.ops`, every operation is a
generator of :class:`~horsies.broker.ops.Query` steps, so the sync and async brokers share it.

Every operation runs in one transaction that first locks the root row of each workflow tree it
touches (``WF_LOCK_ROOTS``), so concurrent advances of one tree are serialised and each sees the
other's committed writes: two dependencies finishing at once enqueue their dependent exactly once.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, cast

import orjson

from horsies.broker.sql import workflows as wf_sql
from horsies.broker.steps import Op, Query, QueryResult, together
from horsies.codec import (
    args_from_json,
    args_to_json,
    kwargs_from_json,
    kwargs_to_json,
    loads_json,
    rehydrate_value,
    task_result_from_json,
    task_result_to_json,
)
from horsies.logs import get_logger
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.workflows import engine
from horsies.workflows.engine import NodeView, WorkflowView
from horsies.workflows.status import OnError, WorkflowStatus, WorkflowTaskStatus

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.workflows.nodes import AnyNode
    from horsies.workflows.spec import WorkflowSpec

__all__ = [
    "FinishedAdvance",
    "StartRows",
    "cancel_op",
    "pause_op",
    "reconcile_op",
    "resume_op",
    "start_op",
    "start_rows",
]

_log = get_logger("workflow.engine")

RECONCILE_BATCH: Final = 200
"""Unsynced nodes and stuck workflows handled per reaper pass."""

_NODE_STATUS: Final = {s.value: s for s in WorkflowTaskStatus}


# -- rows from a spec ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartRows:
    """The parameters of one workflow's WF_INSERT and WF_NODES_INSERT, built from its spec."""

    workflow: dict[str, Any]
    nodes: list[dict[str, Any]]


def _task_options_json(node: Any) -> str:
    """The node task's options JSON, with the node's own good_until when it sets one (03 §6)."""
    options = node.fn.task_options
    if node.good_until is not None:
        options = options.model_copy(update={"good_until": node.good_until})
    return cast("str", options.to_json())


def _success_policy_json(spec: WorkflowSpec) -> str | None:
    policy = spec.success_policy
    if policy is None:
        return None
    return orjson.dumps(
        {
            "cases": [
                {"required_indices": [cast("int", n.index) for n in case.required]}
                for case in policy.cases
            ],
            "optional_indices": [cast("int", n.index) for n in (policy.optional or [])],
        }
    ).decode()


def _node_row(node: AnyNode) -> dict[str, Any]:
    from horsies.workflows.nodes import SubWorkflowNode

    deps = [cast("int", d.index) for d in node.waits_for]
    common: dict[str, Any] = {
        "task_index": node.index,
        "node_id": node.node_id,
        "task_args": args_to_json(tuple(node.args)) if node.args else None,
        "task_kwargs": kwargs_to_json(node.kwargs) if node.kwargs else None,
        "dependencies": deps,
        "args_from": {key: dep.index for key, dep in node.args_from.items()} or None,
        "workflow_ctx_from": (
            None if node.workflow_ctx_from is None else [d.node_id for d in node.workflow_ctx_from]
        ),
        "allow_failed_deps": node.allow_failed_deps,
        "join_type": node.join,
        "min_success": node.min_success,
        "status": "PENDING" if deps else "READY",
        "has_conditions": node.run_when is not None or node.skip_when is not None,
    }
    if isinstance(node, SubWorkflowNode):
        definition = node.workflow_def
        return common | {
            "task_name": definition.name,
            "queue_name": "default",
            "priority": 100,
            "task_options": None,
            "is_subworkflow": True,
            "sub_workflow_name": definition.name,
            "sub_workflow_module": definition.__module__,
            "sub_workflow_qualname": definition.__qualname__,
            "sub_workflow_retry_mode": node.retry_mode.value,
        }
    return common | {
        "task_name": node.fn.task_name,
        "queue_name": node.queue or "default",
        "priority": node.priority if node.priority is not None else 100,
        "task_options": _task_options_json(node),
        "is_subworkflow": False,
        "sub_workflow_name": None,
        "sub_workflow_module": None,
        "sub_workflow_qualname": None,
        "sub_workflow_retry_mode": None,
    }


def start_rows(
    spec: WorkflowSpec,
    workflow_id: str,
    *,
    parent_id: str | None = None,
    parent_index: int | None = None,
    depth: int = 0,
    root_id: str | None = None,
) -> StartRows:
    """Encode a spec's workflow row and node rows (SerializationError for unencodable args)."""
    output = spec.output
    return StartRows(
        workflow={
            "id": workflow_id,
            "name": spec.name,
            "on_error": OnError(spec.on_error).value,
            "output_task_index": None if output is None else output.index,
            "success_policy": _success_policy_json(spec),
            "module": spec.workflow_def_module,
            "qualname": spec.workflow_def_qualname,
            "parent_workflow_id": parent_id,
            "parent_task_index": parent_index,
            "depth": depth,
            "root_workflow_id": root_id or workflow_id,
        },
        nodes=[_node_row(node) for node in spec.tasks],
    )


# -- the session: one transaction's view of the workflows it touches -------------------------------


@dataclass(slots=True)
class _Workflow:
    """A loaded workflow row and its node snapshot (kept current as the session writes)."""

    id: str
    name: str
    status: WorkflowStatus
    on_error: OnError
    output_index: int | None
    success_cases: tuple[tuple[int, ...], ...] | None
    has_error: bool
    finalized: bool
    parent_id: str | None
    parent_index: int | None
    depth: int
    root_id: str
    module: str | None
    qualname: str | None
    nodes: list[NodeView] = field(default_factory=list[NodeView])

    def view(self) -> WorkflowView:
        return WorkflowView(
            status=self.status,
            on_error=self.on_error,
            nodes=tuple(self.nodes),
            output_index=self.output_index,
            success_cases=self.success_cases,
            has_stored_error=self.has_error,
            finalized=self.finalized,
        )

    def set_status(self, index: int, status: WorkflowTaskStatus) -> None:
        self.nodes[index] = replace(self.nodes[index], status=status)


def _success_cases(text: str | None) -> tuple[tuple[int, ...], ...] | None:
    if text is None:
        return None
    payload = cast("dict[str, Any]", loads_json(text))
    cases = cast("list[dict[str, Any]]", payload.get("cases") or [])
    return tuple(tuple(int(i) for i in case.get("required_indices") or ()) for case in cases)


def _workflow_from_row(row: Sequence[Any]) -> _Workflow:
    return _Workflow(
        id=row[0],
        name=row[1],
        status=WorkflowStatus(row[2]),
        on_error=OnError(row[3]),
        output_index=row[4],
        success_cases=_success_cases(row[5]),
        has_error=bool(row[6]),
        finalized=bool(row[7]),
        parent_id=row[8],
        parent_index=row[9],
        depth=int(row[10]),
        root_id=row[11],
        module=row[12],
        qualname=row[13],
    )


def _node_views(rows: Iterable[Sequence[Any]], workflows: Mapping[str, _Workflow]) -> None:
    by_workflow: dict[str, list[Sequence[Any]]] = {}
    for row in rows:
        by_workflow.setdefault(row[0], []).append(row)
    for workflow_id, node_rows in by_workflow.items():
        wf = workflows.get(workflow_id)
        if wf is None:
            continue
        index_of = {r[2]: int(r[1]) for r in node_rows}
        views: list[NodeView] = []
        for r in node_rows:
            ctx_ids = cast("list[str] | None", r[8])
            args_from = cast("dict[str, int]", loads_json(r[9])) if r[9] else {}
            views.append(
                NodeView(
                    index=int(r[1]),
                    node_id=r[2],
                    status=_NODE_STATUS[r[3]],
                    dependencies=tuple(int(d) for d in r[4]),
                    join=r[5],
                    min_success=r[6],
                    allow_failed_deps=bool(r[7]),
                    ctx_from=(
                        None
                        if ctx_ids is None
                        else tuple(index_of[i] for i in ctx_ids if i in index_of)
                    ),
                    args_from=tuple((k, int(v)) for k, v in args_from.items()),
                    is_subworkflow=bool(r[10]),
                )
            )
        wf.nodes = views
        _remember(workflow_id, views)


_STATUS_ROW_WIDTH: Final = 3
_STRUCTURE_CACHE_SIZE: Final = 1024
_structures: OrderedDict[str, tuple[NodeView, ...]] = OrderedDict()
"""Node structure (everything but the status) of recently advanced workflows, by workflow id.
Nodes never change after a workflow starts, so later advances of the same workflow only read the
statuses (WF_LOAD_STATUSES). Guarded by _structures_lock (brokers may run ops on several
threads)."""
_structures_lock = threading.Lock()


def _remember(workflow_id: str, views: Sequence[NodeView]) -> None:
    with _structures_lock:
        _structures[workflow_id] = tuple(views)
        _structures.move_to_end(workflow_id)
        while len(_structures) > _STRUCTURE_CACHE_SIZE:
            _structures.popitem(last=False)


_child_specs: OrderedDict[str, WorkflowSpec] = OrderedDict()
"""Specs of recently started or rebuilt child workflows, by workflow id (their node objects carry
the conditions). Bounded like _structures and guarded by the same lock."""


def _remember_child_spec(workflow_id: str, spec: WorkflowSpec) -> None:
    with _structures_lock:
        _child_specs[workflow_id] = spec
        _child_specs.move_to_end(workflow_id)
        while len(_child_specs) > _STRUCTURE_CACHE_SIZE:
            _child_specs.popitem(last=False)


def _apply_statuses(rows: Iterable[Sequence[Any]], workflows: Mapping[str, _Workflow]) -> None:
    by_workflow: dict[str, list[Sequence[Any]]] = {}
    for row in rows:
        by_workflow.setdefault(row[0], []).append(row)
    for workflow_id, status_rows in by_workflow.items():
        wf = workflows.get(workflow_id)
        with _structures_lock:
            cached = _structures.get(workflow_id)
        if wf is None or cached is None:
            continue
        views: list[NodeView] = list(cached)
        for row in status_rows:
            index, status = int(row[1]), str(row[2])
            node = views[index]
            if node.status.value != status:
                views[index] = replace(node, status=_NODE_STATUS[status])
        wf.nodes = views
        _remember(workflow_id, views)


@dataclass(frozen=True, slots=True)
class _Details:
    """Heavy columns of one node (WF_LOAD_NODE_DETAILS)."""

    index: int
    node_id: str
    task_name: str
    args: str | None
    kwargs: str | None
    queue_name: str
    priority: int
    task_options: str | None
    result: str | None
    summary: str | None
    sub_module: str | None
    sub_qualname: str | None
    has_conditions: bool


def _stored_results(details: Mapping[int, _Details]) -> dict[int, str | None]:
    """Node index -> stored result text, for the engine's payload functions."""
    return {index: detail.result for index, detail in details.items()}


def _err_result_json(code: str, message: str, data: object = None) -> str:
    return task_result_to_json(
        TaskResult(err=TaskError(error_code=code, message=message, data=data))
    )


class _Session:
    """The workflows one transaction touches, and the steps that advance them.

    Methods are operations (generators of queries). ``app`` is needed to evaluate conditions and
    build child workflows; a session without it (an operator tool that does not import the user's
    code) leaves such READY nodes for a worker's reaper.
    """

    def __init__(self, app: Horsies | None) -> None:
        self.app = app
        self.workflows: dict[str, _Workflow] = {}
        self.finished_children: list[str] = []
        self._loading: list[str] = []

    # -- loading ----------------------------------------------------------------------------------

    def load_queries(self, ids: Iterable[str]) -> list[Query]:
        """The reads that load ``ids`` (workflow rows; node statuses when the node structure is
        cached in this process, else the whole node rows), for :meth:`absorb`."""
        missing = sorted({i for i in ids if i not in self.workflows})
        self._loading = missing
        if not missing:
            return []
        cached = [i for i in missing if i in _structures]
        uncached = [i for i in missing if i not in _structures]
        queries = [Query(wf_sql.WF_LOAD, {"ids": missing})]
        if cached:
            queries.append(Query(wf_sql.WF_LOAD_STATUSES, {"ids": cached}))
        if uncached:
            queries.append(Query(wf_sql.WF_LOAD_NODES, {"ids": uncached}))
        return queries

    def absorb(self, parts: Sequence[QueryResult]) -> None:
        """Take the results of :meth:`load_queries` (in order)."""
        if not self._loading:
            return
        loaded = {row[0]: _workflow_from_row(row) for row in parts[0].rows}
        for part in parts[1:]:
            if part.rows and len(part.rows[0]) == _STATUS_ROW_WIDTH:
                _apply_statuses(part.rows, loaded)
            else:
                _node_views(part.rows, loaded)
        self.workflows.update(loaded)
        self._loading = []

    def load(self, ids: Iterable[str]) -> Op[None]:
        queries = self.load_queries(ids)
        if queries:
            parts = yield from together(queries)
            self.absorb(parts)

    def details(self, wf: _Workflow, indices: Iterable[int]) -> Op[dict[int, _Details]]:
        wanted = sorted(set(indices))
        if not wanted:
            return {}
        res = yield Query(wf_sql.WF_LOAD_NODE_DETAILS, {"workflow_id": wf.id, "indices": wanted})
        return {
            int(r[0]): _Details(
                index=int(r[0]),
                node_id=r[1],
                task_name=r[2],
                args=r[3],
                kwargs=r[4],
                queue_name=r[5],
                priority=int(r[6]),
                task_options=r[7],
                result=r[8],
                summary=r[9],
                sub_module=r[10],
                sub_qualname=r[11],
                has_conditions=bool(r[13]),
            )
            for r in res.rows
        }

    # -- node results -----------------------------------------------------------------------------

    def record_failures(self, wf: _Workflow, failed: Sequence[tuple[int, str | None]]) -> Op[None]:
        """on_error for nodes that just FAILED (03 §12): store the error, or pause."""
        if not failed or wf.status is not WorkflowStatus.RUNNING:
            return
        error = engine.error_result_json_from_stored(failed[-1][1])
        if wf.on_error is OnError.PAUSE:
            yield Query(wf_sql.WF_PAUSE_ON_ERROR, {"id": wf.id, "error": error}, rows="none")
            wf.status = WorkflowStatus.PAUSED
            _log.warning("workflow_paused_on_error: workflow %s (%s)", wf.id, wf.name)
        else:
            yield Query(wf_sql.WF_SET_ERROR, {"id": wf.id, "error": error}, rows="none")
        wf.has_error = True

    # -- advancing --------------------------------------------------------------------------------

    def advance(self, wf: _Workflow, changed: Iterable[int], *, full: bool = False) -> Op[None]:
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
            changed = list(prop.skipped)
            if ready:
                newly_skipped, failed = yield from self._dispatch(wf, sorted(set(ready)), updates)
                changed.extend(newly_skipped)
                changed.extend(i for i, _ in failed)
                yield from self.record_failures(wf, failed)
            elif updates:
                yield Query(wf_sql.WF_NODES_UPDATE, {"updates": _json(updates)}, rows="none")
            if not changed:
                break
        yield from self.finalize_if_done(wf)

    def _dispatch(
        self, wf: _Workflow, ready: list[int], updates: list[dict[str, Any]]
    ) -> Op[tuple[list[int], list[tuple[int, str | None]]]]:
        """Evaluate conditions of READY nodes, then enqueue task nodes and start child workflows;
        writes ``updates`` plus the dispatch's own. Returns (skipped by a condition, failed)."""
        view = wf.view()
        needed: set[int] = set(ready)
        for i in ready:
            needed.update(view.nodes[i].dependencies)
        details = yield from self.details(wf, needed)
        skipped: list[int] = []
        failed: list[tuple[int, str | None]] = []
        tasks: list[dict[str, Any]] = []
        children: list[tuple[int, str, WorkflowSpec]] = []
        app = self.app
        for i in ready:
            node = view.nodes[i]
            detail = details[i]
            if app is None and (detail.has_conditions or node.is_subworkflow):
                # This process cannot run user code (no app: an operator tool such as Syce). The
                # node stays READY for a worker's reaper, which evaluates it with the app.
                updates.append({"workflow_id": wf.id, "task_index": i, "status": "READY"})
                continue
            if (
                detail.has_conditions
                and app is not None
                and (yield from self._condition_skips(app, wf, node, details))
            ):
                skipped.append(i)
                wf.set_status(i, WorkflowTaskStatus.SKIPPED)
                updates.append({"workflow_id": wf.id, "task_index": i, "status": "SKIPPED"})
                continue
            if node.is_subworkflow and app is not None:
                child = self._child_spec(app, wf, node, details)
                if isinstance(child, str):
                    failed.append((i, child))
                    wf.set_status(i, WorkflowTaskStatus.FAILED)
                    updates.append(
                        {"workflow_id": wf.id, "task_index": i, "status": "FAILED", "result": child}
                    )
                    continue
                child_id = str(uuid.uuid4())
                children.append((i, child_id, child[1]))
                wf.set_status(i, WorkflowTaskStatus.RUNNING)
                # The child link is written once the child row exists (start_child).
                updates.append({"workflow_id": wf.id, "task_index": i, "status": "RUNNING"})
                continue
            task_id = str(uuid.uuid4())
            tasks.append(self._task_row(wf, view, node, details, task_id))
            wf.set_status(i, WorkflowTaskStatus.ENQUEUED)
            updates.append(
                {"workflow_id": wf.id, "task_index": i, "status": "ENQUEUED", "task_id": task_id}
            )
        queries: list[Query] = []
        if updates:
            queries.append(Query(wf_sql.WF_NODES_UPDATE, {"updates": _json(updates)}, rows="none"))
        if tasks:
            queries.append(Query(wf_sql.WF_TASKS_INSERT, {"tasks": _json(tasks)}, rows="none"))
        if queries:
            yield from together(queries)
        for i, child_id, spec in children:
            yield from self.start_child(wf, i, child_id, spec)
        return skipped, failed

    def _task_row(
        self,
        wf: _Workflow,
        view: WorkflowView,
        node: NodeView,
        details: Mapping[int, _Details],
        task_id: str,
    ) -> dict[str, Any]:
        from horsies.tasks.retry import TaskOptions

        detail = details[node.index]
        stored = _stored_results(details)
        ctx = None
        if node.ctx_from is not None:
            ctx = engine.WorkflowCtxPayload(
                workflow_id=wf.id,
                task_index=node.index,
                task_name=detail.task_name,
                results=engine.context_results(view, node.ctx_from, stored),
                summaries={
                    view.nodes[d].node_id: summary
                    for d in node.ctx_from
                    if d in details and (summary := details[d].summary) is not None
                },
            )
        meta = engine.WorkflowMetaPayload(
            workflow_id=wf.id, task_index=node.index, task_name=detail.task_name
        )
        injected = engine.args_from_injections(view, node, stored)
        options = TaskOptions.from_json(detail.task_options)
        return {
            "id": task_id,
            "task_name": detail.task_name,
            "queue_name": detail.queue_name,
            "priority": detail.priority,
            "args": detail.args,
            "kwargs": engine.node_kwargs_json(detail.kwargs, injected, ctx, meta),
            "good_until": None if options.good_until is None else options.good_until.isoformat(),
            "max_retries": options.max_retries,
            "task_options": detail.task_options,
            "workflow_id": wf.id,
        }

    def _node_object(self, app: Horsies, wf: _Workflow, index: int) -> Op[AnyNode | None]:
        """The Python node at ``index`` of ``wf``: for a child workflow, from its own spec (built
        here when it started, or rebuilt with ``build_with`` and the parent node's inputs, which
        must be deterministic, 03 §5); else from the registry or the recorded definition class."""
        from horsies.workflows import runtime

        if wf.parent_id is None or wf.parent_index is None:
            return runtime.find_node(app, wf.name, wf.module, wf.qualname, index)
        with _structures_lock:
            spec = _child_specs.get(wf.id)
        if spec is None:
            yield from self.load([wf.parent_id])
            parent = self.workflows[wf.parent_id]
            parent_node = parent.nodes[wf.parent_index]
            details = yield from self.details(parent, {wf.parent_index, *parent_node.dependencies})
            built = self._child_spec(app, parent, parent_node, details)
            if isinstance(built, str):
                return None
            spec = built[1]
            _remember_child_spec(wf.id, spec)
        return spec.tasks[index] if 0 <= index < len(spec.tasks) else None

    def _condition_skips(
        self, app: Horsies, wf: _Workflow, node: NodeView, details: Mapping[int, _Details]
    ) -> Op[bool]:
        """Evaluate skip_when then run_when (03 §11, D30); True when the node must be skipped."""
        from horsies.workflows import runtime

        definition = yield from self._node_object(app, wf, node.index)
        if definition is None:
            _log.warning(
                "workflow_condition_not_found: node %s of workflow %s (%s) has conditions but its "
                "definition cannot be found in this process; running it",
                node.node_id,
                wf.id,
                wf.name,
            )
            return False
        sources = engine.context_indices(node, for_condition=True)
        view = wf.view()
        try:
            results: dict[str, TaskResult[Any, TaskError]] = {
                node_id: task_result_from_json(text)
                for node_id, text in engine.context_results(
                    view, sources, _stored_results(details)
                ).items()
            }
            summaries: dict[str, Any] = {
                view.nodes[d].node_id: rehydrate_value(loads_json(summary))
                for d in sources
                if d in details and (summary := details[d].summary) is not None
            }
        except Exception as exc:
            # The condition cannot see its inputs: the same as a condition that raises (03 §11).
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
        self, app: Horsies, wf: _Workflow, node: NodeView, details: Mapping[int, _Details]
    ) -> tuple[None, WorkflowSpec] | str:
        """Build the child spec of a READY sub-workflow node, or the err result JSON explaining why
        it cannot be built (``SUBWORKFLOW_LOAD_FAILED``)."""
        from horsies.workflows import runtime

        detail = details[node.index]
        data = {"module": detail.sub_module, "qualname": detail.sub_qualname}
        definition = runtime.find_definition(
            app,
            name=wf.name,
            module=wf.module,
            qualname=wf.qualname,
            index=node.index,
            sub_module=detail.sub_module,
            sub_qualname=detail.sub_qualname,
        )
        if definition is None:
            return _err_result_json(
                LibraryErrorCode.SUBWORKFLOW_LOAD_FAILED,
                f"Cannot import workflow definition {detail.sub_module}.{detail.sub_qualname}",
                data,
            )
        try:
            args = args_from_json(detail.args)
            kwargs = kwargs_from_json(detail.kwargs)
            injected = engine.args_from_injections(wf.view(), node, _stored_results(details))
            kwargs.update({key: task_result_from_json(text) for key, text in injected.items()})
            spec = definition.build_with(app, *args, **kwargs)
        except Exception as exc:
            return _err_result_json(
                LibraryErrorCode.SUBWORKFLOW_LOAD_FAILED,
                f"Building child workflow {detail.sub_qualname} failed: "
                f"{type(exc).__name__}: {exc}",
                data,
            )
        return None, spec

    def start_child(
        self, parent: _Workflow, index: int, child_id: str, spec: WorkflowSpec
    ) -> Op[None]:
        _remember_child_spec(child_id, spec)
        rows = start_rows(
            spec,
            child_id,
            parent_id=parent.id,
            parent_index=index,
            depth=parent.depth + 1,
            root_id=parent.root_id,
        )
        yield from self.insert(rows)
        link = {"workflow_id": parent.id, "task_index": index, "status": "RUNNING"}
        yield Query(
            wf_sql.WF_NODES_UPDATE,
            {"updates": _json([link | {"sub_workflow_id": child_id}])},
            rows="none",
        )
        yield from self.load([child_id])
        yield from self.advance(self.workflows[child_id], (), full=True)

    def insert(self, rows: StartRows) -> Op[bool]:
        """Insert a workflow and its nodes; False when the id already existed (nothing written)."""
        res = yield Query(wf_sql.WF_INSERT, rows.workflow)
        if not res.rows:
            return False
        yield Query(
            wf_sql.WF_NODES_INSERT,
            {"workflow_id": rows.workflow["id"], "nodes": _json(rows.nodes)},
            rows="none",
        )
        return True

    # -- finishing --------------------------------------------------------------------------------

    def finalize_if_done(self, wf: _Workflow) -> Op[None]:
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
            result = engine.sinks_result_json(
                {wf.nodes[i].node_id: details[i].result for i in final.sink_indices}
            )
        error: str | None = None
        if final.status is WorkflowStatus.FAILED:
            if final.error_source is engine.ErrorSource.KEEP_STORED:
                error = None
            elif final.error_source is engine.ErrorSource.NODE and final.error_index is not None:
                error = engine.error_result_json_from_stored(details[final.error_index].result)
            elif final.error_source is engine.ErrorSource.SUCCESS_CASE_NOT_MET:
                error = engine.success_case_not_met_json()
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
        """A child workflow ended (COMPLETED, FAILED or CANCELLED): settle its parent node (03 §14,
        D29) and advance the parent."""
        child = self.workflows[child_id]
        if child.parent_id is None or child.parent_index is None:
            return
        res = yield Query(wf_sql.WF_SUMMARY, {"id": child_id})
        if not res.rows:
            return
        status, result = res.rows[0][0], res.rows[0][1]
        summary = _summary_json(res.rows[0])
        if status == WorkflowStatus.COMPLETED.value:
            node_status, node_result = (
                "COMPLETED",
                result or task_result_to_json(TaskResult(ok=None)),
            )
        else:
            node_status = "FAILED"
            node_result = _sub_workflow_failed_json(child_id, status, summary)
        yield from self.load([child.parent_id])
        parent = self.workflows[child.parent_id]
        index = child.parent_index
        if parent.nodes[index].status.is_terminal:
            return
        yield Query(
            wf_sql.WF_NODES_UPDATE,
            {
                "updates": _json(
                    [
                        {
                            "workflow_id": parent.id,
                            "task_index": index,
                            "status": node_status,
                            "result": node_result,
                            "summary": summary,
                        }
                    ]
                )
            },
            rows="none",
        )
        parent.set_status(index, _NODE_STATUS[node_status])
        if node_status == "FAILED":
            yield from self.record_failures(parent, [(index, node_result)])
        yield from self.advance(parent, [index])

    def children_ended(self, wf: _Workflow) -> Op[None]:
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
        """Record ended tasks on their nodes, apply on_error, propagate and finalize (03 §8.2)."""
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
                result = _synthesized_result(task_id, task_status)
                synthesized.append(
                    {
                        "workflow_id": workflow_id,
                        "task_index": int(index),
                        "status": status,
                        "result": result,
                    }
                )
            by_workflow.setdefault(workflow_id, []).append((int(index), status, result))
        if synthesized:
            yield Query(wf_sql.WF_NODES_UPDATE, {"updates": _json(synthesized)}, rows="none")
        yield from self.load(by_workflow)
        for workflow_id in sorted(by_workflow):
            wf = self.workflows.get(workflow_id)
            if wf is None:
                continue
            ended = sorted(by_workflow[workflow_id])
            for index, status, _ in ended:
                wf.set_status(index, _NODE_STATUS[status])
            yield from self.guarded(
                wf,
                self.record_failures(wf, [(i, r) for i, s, r in ended if s == "FAILED"]),
                self.advance(wf, [i for i, _, _ in ended]),
            )
        yield from self.drain()

    def guarded(self, wf: _Workflow, *steps: Op[None]) -> Op[None]:
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


def _json(rows: object) -> str:
    return orjson.dumps(rows).decode()


def _synthesized_result(task_id: str, task_status: str) -> str:
    """03 §16 case 4: the result of a node whose task ended without one."""
    data = {"task_id": task_id, "task_status": task_status, "recovery": "case_1_7"}
    if task_status == "CANCELLED":
        return _err_result_json(
            LibraryErrorCode.TASK_CANCELLED, f"Task {task_id} was cancelled", data
        )
    if task_status == "COMPLETED":
        return _err_result_json(
            LibraryErrorCode.RESULT_NOT_AVAILABLE,
            "Result not available - task may not have been executed",
            data,
        )
    return _err_result_json(
        LibraryErrorCode.WORKER_CRASHED, f"Task {task_id} failed without a stored result", data
    )


def _summary_json(row: Sequence[Any]) -> str:
    """SubWorkflowSummary as the plain JSON object stored on the parent node, from a WF_SUMMARY
    row."""
    status, result, error, total, completed, failed, skipped = row
    output: Any = None
    if status == WorkflowStatus.COMPLETED.value and result is not None:
        with_tags = loads_json(result)
        if isinstance(with_tags, dict):
            output = cast("dict[str, Any]", with_tags).get("ok")
    error_summary: str | None = None
    if error is not None:
        payload = loads_json(error)
        if isinstance(payload, dict):
            message = cast("dict[str, Any]", payload).get("message")
            error_summary = message if isinstance(message, str) else None
    return _json(
        {
            "status": status,
            "success_case": None,
            "output": output,
            "total_tasks": int(total),
            "completed_tasks": int(completed),
            "failed_tasks": int(failed),
            "skipped_tasks": int(skipped),
            "error_summary": error_summary,
        }
    )


def _sub_workflow_failed_json(child_id: str, status: str, summary_json: str) -> str:
    from horsies.results import SubWorkflowError
    from horsies.workflows.context import SubWorkflowSummary

    summary = SubWorkflowSummary[Any].from_json(
        cast("dict[str, Any]", rehydrate_value(loads_json(summary_json)))
    )
    error = SubWorkflowError(
        error_code=LibraryErrorCode.SUBWORKFLOW_FAILED,
        message=f"Subworkflow {child_id} failed with status {status}",
        sub_workflow_id=child_id,
        sub_workflow_summary=summary,
    )
    return task_result_to_json(TaskResult(err=error))


# -- operations ------------------------------------------------------------------------------------


def lock_roots_query(workflow_ids: Iterable[str], *, skip_locked: bool = False) -> Query:
    """The root lock of every tree holding ``workflow_ids`` (take it before any other write)."""
    sql = wf_sql.WF_LOCK_ROOTS_SKIP_LOCKED if skip_locked else wf_sql.WF_LOCK_ROOTS
    return Query(sql, {"ids": sorted(set(workflow_ids))})


def finish_nodes_query(task_ids: Sequence[str]) -> Query:
    """WF_NODES_FINISH_FROM_TASKS for these tasks (only ended tasks' nodes change)."""
    return Query(wf_sql.WF_NODES_FINISH_FROM_TASKS, {"task_ids": list(task_ids)})


class FinishedAdvance:
    """Advancing the workflows of tasks finished in the current transaction (03 §8.2), with its
    first reads folded into the caller's finish round trip.

    The caller locks the roots (:func:`lock_roots_query`), sends :meth:`queries` right after the
    finish statement in the same pipeline, then runs :meth:`run` with their results.
    """

    def __init__(
        self, app: Horsies | None, task_ids: Sequence[str], workflow_ids: Iterable[str]
    ) -> None:
        self._session = _Session(app)
        self._queries = [finish_nodes_query(task_ids), *self._session.load_queries(workflow_ids)]

    def queries(self) -> list[Query]:
        """Node update + snapshot reads, to send after the finish statement."""
        return list(self._queries)

    def run(self, parts: Sequence[QueryResult]) -> Op[None]:
        """Continue with the results of :meth:`queries` (same order)."""
        self._session.absorb(parts[1:])
        yield from self._session.nodes_finished(parts[0])


def start_op(app: Horsies | None, rows: StartRows) -> Op[bool]:
    """Start a workflow (03 §6): insert it, enqueue its roots; False when the id already existed
    (idempotent start: nothing changed)."""
    session = _Session(app)
    inserted = yield from session.insert(rows)
    if not inserted:
        return False
    workflow_id = cast("str", rows.workflow["id"])
    yield Query(wf_sql.WF_LOCK_ROOTS, {"ids": [workflow_id]}, rows="none")
    yield from session.load([workflow_id])
    yield from session.advance(session.workflows[workflow_id], (), full=True)
    yield from session.drain()
    return True


def _tree_op(workflow_id: str) -> Op[list[tuple[str, str, str | None, int | None]]]:
    yield lock_roots_query([workflow_id])
    res = yield Query(wf_sql.WF_TREE, {"id": workflow_id})
    return [(r[0], r[1], r[2], r[3]) for r in res.rows]


def pause_op(workflow_id: str) -> Op[bool]:
    """RUNNING -> PAUSED for the workflow and its running descendants (03 §12.2)."""
    tree = yield from _tree_op(workflow_id)
    if not tree or tree[0][1] != WorkflowStatus.RUNNING.value:
        return False
    ids = [wid for wid, status, _, _ in tree if status == WorkflowStatus.RUNNING.value]
    yield Query(wf_sql.WF_SET_STATUS, {"ids": ids, "from_status": "RUNNING", "to_status": "PAUSED"})
    return True


def resume_op(app: Horsies | None, workflow_id: str) -> Op[bool]:
    """PAUSED -> RUNNING for the workflow and its paused descendants, re-evaluating their pending
    nodes and enqueuing their ready ones (03 §12.3); the workflow is finalized if it is done."""
    tree = yield from _tree_op(workflow_id)
    if not tree or tree[0][1] != WorkflowStatus.PAUSED.value:
        return False
    ids = [wid for wid, status, _, _ in tree if status == WorkflowStatus.PAUSED.value]
    yield Query(wf_sql.WF_SET_STATUS, {"ids": ids, "from_status": "PAUSED", "to_status": "RUNNING"})
    session = _Session(app)
    yield from session.load(ids)
    for wid in ids:
        wf = session.workflows[wid]
        yield from session.advance(wf, (), full=True)
        yield from session.children_ended(wf)
    yield from session.drain()
    return True


def cancel_op(app: Horsies | None, workflow_id: str) -> Op[bool]:
    """Cancel the workflow and its descendants (D28); a cancelled child notifies a parent that is
    still going (D29). False when the workflow was already terminal or unknown."""
    tree = yield from _tree_op(workflow_id)
    active = {wid for wid, status, _, _ in tree if status in ("PENDING", "RUNNING", "PAUSED")}
    if not tree or tree[0][0] not in active:
        return False
    ids = sorted(active)
    yield Query(wf_sql.WF_CANCEL, {"ids": ids})
    res = yield Query(wf_sql.WF_CANCEL_UNSTARTED_TASKS, {"ids": ids})
    cancelled_tasks = [r[0] for r in res.rows]
    yield Query(
        wf_sql.WF_SKIP_UNRUN_NODES,
        {"ids": ids, "cancelled_task_ids": cancelled_tasks},
        rows="none",
    )
    session = _Session(app)
    yield from session.load(ids)
    # Deepest first: each cancelled child settles its parent's node (recorded only, since that
    # parent is cancelled too), and the top one settles a parent that is still going.
    for wid, _, parent_id, _ in reversed(tree):
        if wid in active and parent_id is not None:
            session.finished_children.append(wid)
    yield from session.drain()
    return True


def reconcile_op(app: Horsies | None, min_age_ms: int) -> Op[int]:
    """The reaper's workflow pass (03 §16, D30): nodes whose task ended without the workflow
    knowing, and RUNNING workflows that cannot move by themselves (READY nodes, PENDING nodes with
    every dependency terminal, all nodes terminal, a child that ended). Roots another transaction
    holds are skipped until the next pass. Returns the number of items handled."""
    unsynced, stuck = yield from together(
        (
            Query(wf_sql.WF_FIND_UNSYNCED_TASKS, {"limit": RECONCILE_BATCH}),
            Query(wf_sql.WF_FIND_STUCK, {"min_age_ms": min_age_ms, "limit": RECONCILE_BATCH}),
        )
    )
    if not unsynced.rows and not stuck.rows:
        return 0
    workflow_ids = {r[1] for r in unsynced.rows} | {r[0] for r in stuck.rows}
    locked = yield lock_roots_query(workflow_ids, skip_locked=True)
    roots = {r[0] for r in locked.rows}
    session = _Session(app)
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
    return handled


# -- reads (WorkflowHandle) ------------------------------------------------------------------------


def _not_found(workflow_id: str) -> ValueError:
    return ValueError(f"Workflow {workflow_id} not found")


def _stored_error(error_json: str | None, code: LibraryErrorCode, message: str) -> TaskError:
    if error_json is not None:
        decoded = task_result_from_json({"ok": None, "err": loads_json(error_json)})
        if decoded.is_err() and decoded.err is not None:
            return decoded.err
    return TaskError(error_code=code, message=message)


def outcome_from_row(
    workflow_id: str, row: Sequence[Any] | None
) -> TaskResult[Any, TaskError] | None:
    """Interpret a WF_GET row for ``get()`` (03 §15, D26): the final outcome, an immediate
    WORKFLOW_PAUSED, or None while the workflow is still running."""
    if row is None:
        raise _not_found(workflow_id)
    status, result, error = row
    if status == WorkflowStatus.COMPLETED.value:
        return task_result_from_json(result) if result is not None else TaskResult(ok=None)
    if status == WorkflowStatus.FAILED.value:
        return TaskResult(
            err=_stored_error(error, LibraryErrorCode.WORKFLOW_FAILED, "Workflow failed")
        )
    if status == WorkflowStatus.CANCELLED.value:
        return TaskResult(
            err=_stored_error(error, LibraryErrorCode.WORKFLOW_CANCELLED, "Workflow cancelled")
        )
    if status == WorkflowStatus.PAUSED.value:
        return TaskResult(
            err=TaskError(
                error_code=LibraryErrorCode.WORKFLOW_PAUSED,
                message="Workflow is paused awaiting intervention",
                data={"workflow_id": workflow_id},
            )
        )
    return None


def outcome_op(workflow_id: str) -> Op[TaskResult[Any, TaskError] | None]:
    """Read a workflow's outcome (see :func:`outcome_from_row`)."""
    res = yield Query(wf_sql.WF_GET, {"id": workflow_id})
    return outcome_from_row(workflow_id, res.rows[0] if res.rows else None)


def wait_timeout(timeout_ms: int | None) -> TaskResult[Any, TaskError]:
    """WAIT_TIMEOUT outcome of a workflow ``get()``."""
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.WAIT_TIMEOUT,
            message=f"Workflow did not complete within {timeout_ms}ms",
            data={"timeout_ms": timeout_ms},
        )
    )


def status_op(workflow_id: str) -> Op[WorkflowStatus]:
    """The workflow's status; ValueError for an unknown id."""
    res = yield Query(wf_sql.WF_GET, {"id": workflow_id})
    if not res.rows:
        raise _not_found(workflow_id)
    return WorkflowStatus(res.rows[0][0])


def results_op(workflow_id: str) -> Op[dict[str, TaskResult[Any, TaskError]]]:
    """Every stored node result, keyed by node id (D25)."""
    res = yield Query(wf_sql.WF_GET_RESULTS, {"id": workflow_id})
    return {node_id: task_result_from_json(result) for node_id, result in res.rows}


def node_result_op(workflow_id: str, node_id: str) -> Op[TaskResult[Any, TaskError]]:
    """One node's stored result, or err RESULT_NOT_READY (non-blocking)."""
    res = yield Query(wf_sql.WF_GET_NODE_RESULT, {"id": workflow_id, "node_id": node_id})
    if res.rows and res.rows[0][0] is not None:
        return task_result_from_json(res.rows[0][0])
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.RESULT_NOT_READY,
            message=f"Task '{node_id}' has not completed yet in workflow '{workflow_id}'",
            data={"workflow_id": workflow_id, "node_id": node_id},
        )
    )


def nodes_op(workflow_id: str) -> Op[list[tuple[Any, ...]]]:
    """WF_GET_NODES rows: (index, node_id, task name, status, result, started_at, completed_at)."""
    res = yield Query(wf_sql.WF_GET_NODES, {"id": workflow_id})
    return [tuple(r) for r in res.rows]
