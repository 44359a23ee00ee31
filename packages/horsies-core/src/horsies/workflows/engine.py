"""The workflow engine's decisions, as pure functions over a snapshot of one workflow.

Nothing here touches the database. The I/O layer reads a workflow's rows into a `WorkflowView`,
asks the functions below what changes (which PENDING nodes become READY or SKIPPED, whether and how
the workflow finishes), writes those changes, and builds the JSON it stores with
`horsies.workflows.payloads`. Keeping the decisions here lets every join, skip and finishing rule
be tested without PostgreSQL.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Final, Literal, Protocol, TypeAlias

from horsies.workflows.status import OnError, WorkflowStatus, WorkflowTaskStatus

__all__ = [
    "ErrorSource",
    "Finalization",
    "JoinType",
    "NodeView",
    "Propagation",
    "Readiness",
    "WorkflowView",
    "dependents_of",
    "finalization",
    "propagate",
    "propagate_all",
    "readiness",
    "sink_indices",
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
# Readiness
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
        # A node that needs all its dependencies cannot run on a failed or skipped one, unless it
        # asked to receive such results.
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
    """Decide a PENDING node from its dependencies' states in `view`.

    - `all`: READY when every dependency is terminal, except that a FAILED or SKIPPED dependency
      gives SKIP unless `allow_failed_deps`.
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
# Propagation
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
            # A skipped node is terminal: its dependents may now be decidable (skip cascade).
            for dependent in dependents[index]:
                if dependent not in queued and statuses[dependent] == _PENDING:
                    queued.add(dependent)
                    heapq.heappush(heap, dependent)
    return Propagation(ready=tuple(sorted(ready)), skipped=tuple(sorted(skipped)))


def propagate(view: WorkflowView, changed: Iterable[int]) -> Propagation:
    """Decide the PENDING dependents of `changed` (nodes that just became terminal in `view`).

    `view` must already show the new statuses of `changed`. A node skipped here is terminal too, so
    its own PENDING dependents are decided in the same step (skip cascade) until nothing
    changes. Returns an empty `Propagation` unless the workflow is RUNNING. Every returned index
    was PENDING in `view` and appears once.
    """
    dependents = _dependents_map(view.nodes)
    start = {dependent for index in changed for dependent in dependents[index]}
    return _run(view, start, dependents)


def propagate_all(view: WorkflowView) -> Propagation:
    """Decide every PENDING node of `view`, with the same rules and cascade as `propagate`.

    Used where no single finished node triggers the step: `resume()` and the recovery pass.
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
# Finalization
# ---------------------------------------------------------------------------------------------


class ErrorSource(Enum):
    """Where a finishing workflow's `error` comes from."""

    KEEP_STORED = "KEEP_STORED"
    """FAILED: keep the error already stored on the workflow row."""
    NODE = "NODE"
    """FAILED: the `err` of the stored result of node `Finalization.error_index`."""
    SUCCESS_CASE_NOT_MET = "SUCCESS_CASE_NOT_MET"
    """FAILED: `WORKFLOW_SUCCESS_CASE_NOT_MET` (see `payloads.success_case_not_met_json`)."""
    NONE = "NONE"
    """COMPLETED: the workflow has no error."""


@dataclass(frozen=True, slots=True)
class Finalization:
    """How a workflow whose nodes are all terminal finishes.

    The final `result` is the stored result of `output_index` when it is set (JSON null when that
    node has none), else `payloads.sinks_result_json` over `sink_indices` (always filled in).
    """

    status: WorkflowStatus
    output_index: int | None
    sink_indices: tuple[int, ...]
    error_source: ErrorSource
    error_index: int | None = None


def finalization(view: WorkflowView) -> Finalization | None:
    """Decide whether and how the workflow finishes.

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
