"""The workflow engine's rules, as pure functions over a snapshot of one workflow.

Nothing here touches the database. The I/O layer reads a workflow's rows into a `WorkflowView`,
asks the functions below what changes (which PENDING nodes become READY or SKIPPED, whether and how
the workflow finishes), writes those changes, and builds the JSON it stores with the payload
helpers at the end of this module. Keeping the decisions here lets every rule of spec 03 §9 and §13
be tested without PostgreSQL.

The payload helpers take and return JSON text and never rebuild user objects: the process running
them (a worker's main process, a producer calling `resume()`) may not be able to import the user's
model classes. Stored results are spliced into the output as they are.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Final, Literal, Protocol, TypeAlias, cast

import orjson

from horsies.codec import TASK_RESULT_TAG, dumps_json
from horsies.failures import failure
from horsies.results import LibraryErrorCode
from horsies.workflows.status import OnError, WorkflowStatus, WorkflowTaskStatus

__all__ = [
    "CTX_KEY",
    "META_KEY",
    "ErrorSource",
    "Finalization",
    "JoinType",
    "NodeView",
    "Propagation",
    "Readiness",
    "WorkflowCtxPayload",
    "WorkflowMetaPayload",
    "WorkflowView",
    "args_from_injections",
    "context_indices",
    "context_results",
    "dependency_result_json",
    "dependents_of",
    "error_result_json_from_stored",
    "finalization",
    "node_kwargs_json",
    "propagate",
    "propagate_all",
    "readiness",
    "sink_indices",
    "sinks_result_json",
    "success_case_not_met_json",
    "task_error_json",
    "upstream_skipped_json",
]

JoinType: TypeAlias = Literal["all", "any", "quorum"]

_PENDING: Final = WorkflowTaskStatus.PENDING
_COMPLETED: Final = WorkflowTaskStatus.COMPLETED
_FAILED: Final = WorkflowTaskStatus.FAILED
_SKIPPED: Final = WorkflowTaskStatus.SKIPPED
_READY: Final = WorkflowTaskStatus.READY
_TERMINAL: Final = frozenset({_COMPLETED, _FAILED, _SKIPPED})


# ---------------------------------------------------------------------------------------------
# Snapshot
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeView:
    """One workflow node as the engine sees it.

    `dependencies`, `ctx_from` and the sources in `args_from` are node indices (the I/O layer
    resolves stored node ids to indices). `ctx_from=None` means the node has no
    `workflow_ctx_from`; an empty tuple is a (useless but valid) empty list.
    """

    index: int
    node_id: str
    status: WorkflowTaskStatus
    dependencies: tuple[int, ...] = ()
    join: JoinType = "all"
    min_success: int | None = None
    allow_failed_deps: bool = False
    ctx_from: tuple[int, ...] | None = None
    args_from: tuple[tuple[str, int], ...] = ()
    is_subworkflow: bool = False


@dataclass(frozen=True, slots=True)
class WorkflowView:
    """A consistent snapshot of one workflow: its state and every node (`nodes[i].index == i`).

    `success_cases` holds, per success case, the indices of its required nodes (`None`: the
    workflow has no success policy). `has_stored_error` says whether the workflow row already
    carries an error; `finalized` whether `completed_at` is set.
    """

    status: WorkflowStatus
    on_error: OnError
    nodes: tuple[NodeView, ...]
    output_index: int | None = None
    success_cases: tuple[tuple[int, ...], ...] | None = None
    has_stored_error: bool = False
    finalized: bool = False

    def __post_init__(self) -> None:
        for position, node in enumerate(self.nodes):
            if node.index != position:
                raise ValueError(
                    f"WorkflowView.nodes[{position}] has index {node.index}; "
                    "nodes must be listed in index order"
                )

    def with_statuses(self, changes: Mapping[int, WorkflowTaskStatus]) -> WorkflowView:
        """A copy of this view with the given node statuses replaced (index -> new status)."""
        if not changes:
            return self
        nodes = list(self.nodes)
        for index, status in changes.items():
            nodes[index] = replace(nodes[index], status=status)
        return replace(self, nodes=tuple(nodes))

    def with_status(self, status: WorkflowStatus) -> WorkflowView:
        """A copy of this view with the workflow status replaced."""
        return replace(self, status=status)


# ---------------------------------------------------------------------------------------------
# Readiness (spec 03 §9)
# ---------------------------------------------------------------------------------------------


class Readiness(Enum):
    """What a PENDING node should do given its dependencies' current states."""

    WAIT = "WAIT"
    """Stay PENDING: the join condition is not decided yet."""
    READY = "READY"
    """Become READY (conditions are evaluated next, then the node is enqueued / started)."""
    SKIP = "SKIP"
    """Become SKIPPED: the join can no longer be met, or failed/skipped dependencies forbid it."""


class _StatusLookup(Protocol):
    def __getitem__(self, index: int, /) -> WorkflowTaskStatus: ...


class _NodeStatuses:
    """Index -> status over a view's nodes, without copying them."""

    __slots__ = ("_nodes",)

    def __init__(self, nodes: Sequence[NodeView]) -> None:
        self._nodes = nodes

    def __getitem__(self, index: int, /) -> WorkflowTaskStatus:
        return self._nodes[index].status


def _decide(node: NodeView, status_of: _StatusLookup) -> Readiness:
    deps = node.dependencies
    if not deps:
        # A root has nothing to wait for, whatever its join mode says.
        return Readiness.READY
    total = len(deps)
    completed = failed = skipped = 0
    for dep in deps:
        status = status_of[dep]
        if status == _COMPLETED:
            completed += 1
        elif status == _FAILED:
            failed += 1
        elif status == _SKIPPED:
            skipped += 1
    terminal = completed + failed + skipped

    if node.join == "all":
        if terminal < total:
            return Readiness.WAIT
        # §9.3 step 1 / §9.1: a failed or skipped dependency skips the node unless allowed.
        if (failed or skipped) and not node.allow_failed_deps:
            return Readiness.SKIP
        return Readiness.READY

    if node.join == "any":
        threshold = 1
    else:
        # Validation guarantees 1 <= min_success <= total; stay sane if a row says otherwise.
        threshold = total if node.min_success is None else max(node.min_success, 1)

    if completed >= threshold:
        # workflow_ctx_from gate: the context must hold every listed node's final result.
        ctx = node.ctx_from
        if ctx is not None and any(status_of[i] not in _TERMINAL for i in ctx):
            return Readiness.WAIT
        return Readiness.READY
    if completed + (total - terminal) < threshold:
        return Readiness.SKIP
    return Readiness.WAIT


def readiness(view: WorkflowView, node: NodeView) -> Readiness:
    """Decide a PENDING node from its dependencies' states in `view` (spec 03 §9).

    - `all`: READY when every dependency is terminal, except that a FAILED or SKIPPED dependency
      gives SKIP unless `allow_failed_deps` (§9.1, §9.3 step 1).
    - `any`: READY once one dependency COMPLETED; SKIP when all are terminal and none COMPLETED.
    - `quorum`: READY once `min_success` dependencies COMPLETED; SKIP as soon as that is
      impossible (`completed + not-yet-terminal < min_success`).
    - With `workflow_ctx_from`, READY additionally waits until every listed node is terminal.
    - A node without dependencies is READY.

    Non-PENDING nodes give WAIT (nothing to decide). The workflow's status is not considered here;
    `propagate` applies the RUNNING guard.
    """
    if node.status != _PENDING:
        return Readiness.WAIT
    return _decide(node, _NodeStatuses(view.nodes))


# ---------------------------------------------------------------------------------------------
# Propagation (spec 03 §8.2 step 5, §9.2, §12.3, §16 / D30)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Propagation:
    """Status changes decided by one propagation step (each list in index order)."""

    ready: tuple[int, ...] = ()
    """Nodes going PENDING -> READY."""
    skipped: tuple[int, ...] = ()
    """Nodes going PENDING -> SKIPPED (join / dependency skips, cascaded)."""

    def __bool__(self) -> bool:
        return bool(self.ready or self.skipped)

    def changes(self) -> dict[int, WorkflowTaskStatus]:
        """The decided changes as an index -> new status mapping (for `with_statuses`)."""
        out = dict.fromkeys(self.ready, _READY)
        out.update(dict.fromkeys(self.skipped, _SKIPPED))
        return out


def _dependents_map(nodes: Sequence[NodeView]) -> list[list[int]]:
    dependents: list[list[int]] = [[] for _ in nodes]
    for node in nodes:
        for dep in set(node.dependencies):
            dependents[dep].append(node.index)
    return dependents


def _run(view: WorkflowView, start: Iterable[int], dependents: list[list[int]]) -> Propagation:
    if view.status != WorkflowStatus.RUNNING:
        return Propagation()
    nodes = view.nodes
    statuses = [node.status for node in nodes]
    # A min-heap keeps the evaluation order deterministic (lowest index first); the outcome does
    # not depend on it because READY and SKIP are both final for a node within one step.
    heap = [i for i in set(start) if statuses[i] == _PENDING]
    heapq.heapify(heap)
    queued = set(heap)
    ready: list[int] = []
    skipped: list[int] = []
    while heap:
        index = heapq.heappop(heap)
        queued.discard(index)
        if statuses[index] != _PENDING:
            continue
        decision = _decide(nodes[index], statuses)
        if decision is Readiness.READY:
            statuses[index] = _READY
            ready.append(index)
        elif decision is Readiness.SKIP:
            statuses[index] = _SKIPPED
            skipped.append(index)
            # A skipped node is terminal: its dependents may now be decidable (§9.2 cascade).
            for dependent in dependents[index]:
                if dependent not in queued and statuses[dependent] == _PENDING:
                    queued.add(dependent)
                    heapq.heappush(heap, dependent)
    return Propagation(ready=tuple(sorted(ready)), skipped=tuple(sorted(skipped)))


def propagate(view: WorkflowView, changed: Iterable[int]) -> Propagation:
    """Decide the PENDING dependents of `changed` (nodes that just became terminal in `view`).

    `view` must already show the new statuses of `changed`. A node skipped here is terminal too, so
    its own PENDING dependents are decided in the same step (skip cascade, §9.2) until nothing
    changes. Returns an empty `Propagation` unless the workflow is RUNNING. Every returned index
    was PENDING in `view` and appears once.
    """
    dependents = _dependents_map(view.nodes)
    start = {dependent for index in changed for dependent in dependents[index]}
    return _run(view, start, dependents)


def propagate_all(view: WorkflowView) -> Propagation:
    """Decide every PENDING node of `view`, with the same rules and cascade as `propagate`.

    Used where no single finished node triggers the step: `resume()` and the recovery pass (D30).
    """
    return _run(view, range(len(view.nodes)), _dependents_map(view.nodes))


def dependents_of(view: WorkflowView, indices: Iterable[int]) -> tuple[int, ...]:
    """Every node that lists one of `indices` among its dependencies, in index order."""
    wanted = set(indices)
    return tuple(node.index for node in view.nodes if not wanted.isdisjoint(node.dependencies))


def sink_indices(view: WorkflowView) -> tuple[int, ...]:
    """Nodes no other node depends on, in index order."""
    depended = {dep for node in view.nodes for dep in node.dependencies}
    return tuple(node.index for node in view.nodes if node.index not in depended)


# ---------------------------------------------------------------------------------------------
# Finalization (spec 03 §13)
# ---------------------------------------------------------------------------------------------


class ErrorSource(Enum):
    """Where a finishing workflow's `error` comes from."""

    KEEP_STORED = "KEEP_STORED"
    """FAILED: keep the error already stored on the workflow row."""
    NODE = "NODE"
    """FAILED: the `err` of the stored result of node `Finalization.error_index`."""
    SUCCESS_CASE_NOT_MET = "SUCCESS_CASE_NOT_MET"
    """FAILED: `WORKFLOW_SUCCESS_CASE_NOT_MET` (see `success_case_not_met_json`)."""
    NONE = "NONE"
    """COMPLETED: the workflow has no error."""


@dataclass(frozen=True, slots=True)
class Finalization:
    """How a workflow whose nodes are all terminal finishes.

    The final `result` is the stored result of `output_index` when it is set (JSON null when that
    node has none), else `sinks_result_json` over `sink_indices` (always filled in).
    """

    status: WorkflowStatus
    output_index: int | None
    sink_indices: tuple[int, ...]
    error_source: ErrorSource
    error_index: int | None = None


def finalization(view: WorkflowView) -> Finalization | None:
    """Decide whether and how the workflow finishes (spec 03 §13).

    None unless the workflow is RUNNING, not finalized yet, and every node is terminal.

    Without a success policy the workflow is FAILED iff a node FAILED or an error is stored; the
    error is the stored one if any (KEEP_STORED), else that of the lowest-index FAILED node.
    With a policy it is COMPLETED iff some case has all its required nodes COMPLETED; otherwise
    FAILED with the error of the lowest-index FAILED node among all cases' required nodes, or
    SUCCESS_CASE_NOT_MET when none of them failed (a stored error is ignored).
    """
    if view.status != WorkflowStatus.RUNNING or view.finalized:
        return None
    nodes = view.nodes
    if any(node.status not in _TERMINAL for node in nodes):
        return None
    sinks = sink_indices(view)

    def done(status: WorkflowStatus, source: ErrorSource, index: int | None = None) -> Finalization:
        return Finalization(status, view.output_index, sinks, source, index)

    cases = view.success_cases
    if cases is None:
        failed = [node.index for node in nodes if node.status == _FAILED]
        if view.has_stored_error:
            return done(WorkflowStatus.FAILED, ErrorSource.KEEP_STORED)
        if failed:
            return done(WorkflowStatus.FAILED, ErrorSource.NODE, failed[0])
        return done(WorkflowStatus.COMPLETED, ErrorSource.NONE)

    for required in cases:
        if all(nodes[i].status == _COMPLETED for i in required):
            return done(WorkflowStatus.COMPLETED, ErrorSource.NONE)
    required_failed = sorted({i for case in cases for i in case if nodes[i].status == _FAILED})
    if required_failed:
        return done(WorkflowStatus.FAILED, ErrorSource.NODE, required_failed[0])
    return done(WorkflowStatus.FAILED, ErrorSource.SUCCESS_CASE_NOT_MET)


# ---------------------------------------------------------------------------------------------
# JSON payloads (spec 03 §9.4, §10, §13)
# ---------------------------------------------------------------------------------------------

CTX_KEY: Final = "__horsies_workflow_ctx__"
"""Reserved kwargs key carrying the `WorkflowContext` payload (removed by the worker)."""
META_KEY: Final = "__horsies_workflow_meta__"
"""Reserved kwargs key carrying the `WorkflowMeta` payload (removed by the worker, D14)."""

_UPSTREAM_SKIPPED_MESSAGE: Final = "Upstream dependency was SKIPPED"
_SUCCESS_CASE_NOT_MET_MESSAGE: Final = "No success case was satisfied"


def _dump(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # orjson caps nesting at 255 levels; the codec writes deeper values with the stdlib.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _load(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # Values nested deeper than orjson reads may have been written by the stdlib fallback.
        return json.loads(text)


def _object_text(members: Iterable[tuple[str, str]]) -> str:
    """A JSON object from (key, already-encoded JSON value text) pairs; later keys win."""
    merged = dict(members)
    return "{" + ",".join(f"{_dump(key)}:{text}" for key, text in merged.items()) + "}"


def task_error_json(code: str, message: str, data: object = None) -> str:
    """Tagged `TaskError` JSON text (what the workflow `error` column stores).

    `data` is encoded leniently, like every error payload: it never makes encoding fail.
    """
    return dumps_json(failure(code, message, data).err)


def success_case_not_met_json() -> str:
    """The workflow error for `ErrorSource.SUCCESS_CASE_NOT_MET` (tagged `TaskError` JSON)."""
    return task_error_json(
        LibraryErrorCode.WORKFLOW_SUCCESS_CASE_NOT_MET, _SUCCESS_CASE_NOT_MET_MESSAGE
    )


def upstream_skipped_json(dependency_index: int) -> str:
    """The `UPSTREAM_SKIPPED` sentinel as tagged `TaskResult` JSON text: what a node that
    allows failed dependencies receives for a dependency that was skipped."""
    return dumps_json(
        failure(
            LibraryErrorCode.UPSTREAM_SKIPPED,
            _UPSTREAM_SKIPPED_MESSAGE,
            {"dependency_index": dependency_index},
        )
    )


def dependency_result_json(node: NodeView, stored_result: str | None) -> str | None:
    """What a dependent receives for `node`: its stored result when COMPLETED or FAILED, the
    `UPSTREAM_SKIPPED` sentinel when SKIPPED, else None (the entry is omitted)."""
    status = node.status
    if status == _SKIPPED:
        return upstream_skipped_json(node.index)
    if status in (_COMPLETED, _FAILED):
        return stored_result
    return None


def args_from_injections(
    view: WorkflowView, node: NodeView, stored_results: Mapping[int, str | None]
) -> dict[str, str]:
    """The `args_from` kwargs of `node`: kwarg name -> TaskResult JSON text (§10.1).

    Sources that are not terminal yet, or have no stored result, are omitted. `stored_results`
    maps node index -> stored result text (missing index = no result).
    """
    injected: dict[str, str] = {}
    for name, source in node.args_from:
        text = dependency_result_json(view.nodes[source], stored_results.get(source))
        if text is not None:
            injected[name] = text
    return injected


def context_indices(node: NodeView, *, for_condition: bool = False) -> tuple[int, ...]:
    """The nodes whose results go into `node`'s `WorkflowContext`.

    For the task call: its `workflow_ctx_from` (empty when unset). For `run_when`/`skip_when`
    (`for_condition=True`): `workflow_ctx_from` when set, else every dependency (D30).
    """
    if node.ctx_from is not None:
        return node.ctx_from
    return node.dependencies if for_condition else ()


def context_results(
    view: WorkflowView, indices: Iterable[int], stored_results: Mapping[int, str | None]
) -> dict[str, str]:
    """node_id -> TaskResult JSON text for the terminal nodes among `indices` (§10.2): stored
    results for COMPLETED/FAILED, the sentinel for SKIPPED; others are omitted."""
    results: dict[str, str] = {}
    for index in indices:
        source = view.nodes[index]
        text = dependency_result_json(source, stored_results.get(index))
        if text is not None:
            results[source.node_id] = text
    return results


@dataclass(frozen=True, slots=True)
class WorkflowMetaPayload:
    """The `WorkflowMeta` fields injected under `META_KEY`."""

    workflow_id: str
    task_index: int
    task_name: str

    def to_json(self) -> str:
        """`{"workflow_id", "task_index", "task_name"}` as JSON text."""
        return _dump(
            {
                "workflow_id": self.workflow_id,
                "task_index": self.task_index,
                "task_name": self.task_name,
            }
        )


@dataclass(frozen=True, slots=True)
class WorkflowCtxPayload:
    """The `WorkflowContext` payload injected under `CTX_KEY`.

    `results`: node_id -> TaskResult JSON text (stored result or sentinel); `summaries`:
    node_id -> SubWorkflowSummary JSON text (a plain JSON object).
    """

    workflow_id: str
    task_index: int
    task_name: str
    results: Mapping[str, str]
    summaries: Mapping[str, str]

    def to_json(self) -> str:
        """`{"workflow_id", "task_index", "task_name", "results": {...}, "summaries": {...}}`
        with the result and summary texts embedded as JSON values."""
        return _object_text(
            [
                ("workflow_id", _dump(self.workflow_id)),
                ("task_index", _dump(self.task_index)),
                ("task_name", _dump(self.task_name)),
                ("results", _object_text(self.results.items())),
                ("summaries", _object_text(self.summaries.items())),
            ]
        )


def node_kwargs_json(
    static_kwargs_json: str | None,
    injected: Mapping[str, str],
    ctx: WorkflowCtxPayload | None,
    meta: WorkflowMetaPayload,
) -> str:
    """The kwargs JSON object of a node's task row (§8.3, §10).

    Static kwargs first, then the `args_from` injections (TaskResult JSON texts, overriding static
    kwargs of the same name), then `CTX_KEY` (when `ctx` is given) and `META_KEY`. Static values
    are copied as they are; injected texts are embedded as JSON values, so `kwargs_from_json`
    hands the task `TaskResult` objects.
    Raises `ValueError` when `static_kwargs_json` is not a JSON object.
    """
    members: list[tuple[str, str]] = []
    if static_kwargs_json is not None:
        static = _load(static_kwargs_json)
        if type(static) is not dict:
            raise ValueError(f"static kwargs must be a JSON object, got {type(static).__name__}")
        for key, value in cast("dict[str, Any]", static).items():
            # The reserved keys are the engine's alone.
            if key not in (CTX_KEY, META_KEY):
                members.append((key, _dump(value)))
    members.extend(injected.items())
    if ctx is not None:
        members.append((CTX_KEY, ctx.to_json()))
    members.append((META_KEY, meta.to_json()))
    return _object_text(members)


def sinks_result_json(results_by_node_id: Mapping[str, str | None]) -> str:
    """The final result without `output`: `TaskResult(ok={node_id: TaskResult | None})` as tagged
    JSON text; a None value (e.g. a SKIPPED sink) is written as JSON null."""
    ok = _object_text(
        (node_id, "null" if text is None else text) for node_id, text in results_by_node_id.items()
    )
    return f'{{"{TASK_RESULT_TAG}":true,"ok":{ok},"err":null}}'


def error_result_json_from_stored(stored_result: str | None) -> str | None:
    """The `err` part of a stored TaskResult text, as TaskError JSON text.

    None when there is no result, it is not an error result, or it cannot be parsed. The error is
    copied as stored (a TaskError subclass keeps its tagged form).
    """
    if stored_result is None:
        return None
    try:
        payload = _load(stored_result)
    except ValueError:
        return None
    if type(payload) is not dict:
        return None
    err: object = cast("dict[str, Any]", payload).get("err")
    if type(err) is not dict:
        return None
    return _dump(cast("dict[str, Any]", err))
