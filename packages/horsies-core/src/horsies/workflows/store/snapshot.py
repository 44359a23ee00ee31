"""What one transaction knows of the workflows it touches: their rows and node snapshots, loaded
in as few round trips as possible.

Node structure (everything but the status) never changes once a workflow has started, so it is kept
per process for recently advanced workflows and later loads only read the statuses. Child workflow
specs (their node objects carry the conditions) are kept the same way, for the decisions about
their nodes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, cast

from horsies.broker.sql import workflows as wf_sql
from horsies.broker.steps import Op, Query, QueryResult, together
from horsies.codec import loads_json
from horsies.workflows.engine import NodeView, WorkflowView
from horsies.workflows.status import OnError, WorkflowStatus, WorkflowTaskStatus

if TYPE_CHECKING:
    from horsies.workflows.spec import WorkflowSpec

__all__ = [
    "NODE_STATUS",
    "LoadedWorkflow",
    "NodeDetails",
    "Snapshot",
    "child_spec_of",
    "remember_child_spec",
    "stored_results",
]

NODE_STATUS: Final = {s.value: s for s in WorkflowTaskStatus}


@dataclass(slots=True)
class LoadedWorkflow:
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
    build_args: str | None = None
    build_kwargs: str | None = None
    """The encoded parameters of a parameterised root workflow (see `WorkflowSpec.build_params`)."""
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


def _workflow_from_row(row: Sequence[Any]) -> LoadedWorkflow:
    return LoadedWorkflow(
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
        build_args=row[14],
        build_kwargs=row[15],
    )


def _by_workflow(rows: Iterable[Sequence[Any]]) -> dict[str, list[Sequence[Any]]]:
    """Rows whose first column is a workflow id, grouped by it."""
    grouped: dict[str, list[Sequence[Any]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    return grouped


def _node_views(rows: Iterable[Sequence[Any]], workflows: Mapping[str, LoadedWorkflow]) -> None:
    for workflow_id, node_rows in _by_workflow(rows).items():
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
                    status=NODE_STATUS[r[3]],
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


def remember_child_spec(workflow_id: str, spec: WorkflowSpec) -> None:
    with _structures_lock:
        _child_specs[workflow_id] = spec
        _child_specs.move_to_end(workflow_id)
        while len(_child_specs) > _STRUCTURE_CACHE_SIZE:
            _child_specs.popitem(last=False)


def _apply_statuses(rows: Iterable[Sequence[Any]], workflows: Mapping[str, LoadedWorkflow]) -> None:
    for workflow_id, status_rows in _by_workflow(rows).items():
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
                views[index] = replace(node, status=NODE_STATUS[status])
        wf.nodes = views
        _remember(workflow_id, views)


@dataclass(frozen=True, slots=True)
class NodeDetails:
    """Heavy columns of one node: the columns of WF_LOAD_NODE_DETAILS, in order."""

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


def stored_results(details: Mapping[int, NodeDetails]) -> dict[int, str | None]:
    """Node index -> stored result text, for the engine's payload functions."""
    return {index: detail.result for index, detail in details.items()}


def child_spec_of(workflow_id: str) -> WorkflowSpec | None:
    """The spec of a child workflow started or rebuilt in this process, if still remembered."""
    with _structures_lock:
        return _child_specs.get(workflow_id)


class Snapshot:
    """The workflows one transaction has loaded, by id."""

    def __init__(self) -> None:
        self.workflows: dict[str, LoadedWorkflow] = {}
        self._loading: list[str] = []

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

    def details(self, wf: LoadedWorkflow, indices: Iterable[int]) -> Op[dict[int, NodeDetails]]:
        wanted = sorted(set(indices))
        if not wanted:
            return {}
        res = yield Query(wf_sql.WF_LOAD_NODE_DETAILS, {"workflow_id": wf.id, "indices": wanted})
        # The statement's columns are NodeDetails' fields, in order.
        return {int(row[0]): NodeDetails(*row) for row in res.rows}
