"""Property tests of the workflow engine: random DAGs run by a simulated executor.

The executor repeatedly takes READY nodes and finishes them (ok, err, or a condition skip), one at
a time or as a batch, optionally pausing and resuming the workflow, and applies the engine's
propagation after each step. Every decision the engine makes is checked against an independent
statement of the join rules (all, any, quorum; conditions; allow_failed_deps), written here
without using the engine.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Literal

from horsies.workflows.engine import (
    ErrorSource,
    Finalization,
    JoinType,
    NodeView,
    Propagation,
    WorkflowView,
    finalization,
    propagate,
    propagate_all,
    sink_indices,
)
from horsies.workflows.status import OnError, WorkflowStatus, WorkflowTaskStatus
from hypothesis import given, settings
from hypothesis import strategies as st
from node_status_letters import C, F, P, R, S

TERMINAL = frozenset({C, F, S})

MAX_NODES = 25


@dataclass(frozen=True)
class Dag:
    nodes: tuple[NodeView, ...]
    output_index: int | None
    success_cases: tuple[tuple[int, ...], ...] | None


@st.composite
def dags(draw: st.DrawFn) -> Dag:
    size = draw(st.integers(1, MAX_NODES))
    # Build in topological order, then (usually) scatter the indices so they do not follow the
    # edges. The flag shrinks to "not scattered", which keeps failing examples readable.
    index_of: list[int] = list(range(size))
    if draw(st.booleans()):
        index_of = draw(st.permutations(index_of))
    nodes: list[NodeView] = []
    for position in range(size):
        dep_positions: list[int] = []
        if position > 0:
            dep_positions = draw(
                st.lists(st.integers(0, position - 1), unique=True, max_size=min(position, 5))
            )
        deps = tuple(index_of[p] for p in dep_positions)
        join: JoinType = "all"
        min_success: int | None = None
        allow = False
        ctx: tuple[int, ...] | None = None
        if deps:
            join = draw(st.sampled_from(("all", "any", "quorum")))
            if join == "quorum":
                min_success = draw(st.integers(1, len(deps)))
            allow = draw(st.booleans())
            if draw(st.booleans()):
                ctx = tuple(draw(st.lists(st.sampled_from(deps), unique=True)))
        index = index_of[position]
        nodes.append(
            NodeView(
                index=index,
                node_id=f"node-{index}",
                status=P if deps else R,
                dependencies=deps,
                join=join,
                min_success=min_success,
                allow_failed_deps=allow,
                ctx_from=ctx,
            )
        )
    nodes.sort(key=lambda node: node.index)
    output_index = draw(st.none() | st.integers(0, size - 1))
    success_cases = draw(
        st.none()
        | st.lists(
            st.lists(st.integers(0, size - 1), min_size=1, max_size=4, unique=True).map(tuple),
            min_size=1,
            max_size=3,
        ).map(tuple)
    )
    return Dag(tuple(nodes), output_index, success_cases)


# ---------------------------------------------------------------------------------------------
# The oracle: the join rules over a node's dependencies, stated directly.
# ---------------------------------------------------------------------------------------------


def _counts(node: NodeView, view: WorkflowView) -> tuple[int, int, int, int]:
    statuses = [view.nodes[d].status for d in node.dependencies]
    completed = statuses.count(C)
    bad = statuses.count(F) + statuses.count(S)
    terminal = completed + bad
    return completed, bad, terminal, len(statuses)


def _threshold(node: NodeView) -> int:
    if node.join == "any":
        return 1
    assert node.min_success is not None
    return node.min_success


def may_be_ready(node: NodeView, view: WorkflowView) -> bool:
    completed, bad, terminal, total = _counts(node, view)
    if node.join == "all":
        return terminal == total and (bad == 0 or node.allow_failed_deps)
    ctx_done = all(view.nodes[i].status in TERMINAL for i in node.ctx_from or ())
    return completed >= _threshold(node) and ctx_done


def may_be_skipped(node: NodeView, view: WorkflowView) -> bool:
    completed, bad, terminal, total = _counts(node, view)
    if node.join == "all":
        return terminal == total and bad > 0 and not node.allow_failed_deps
    return completed + (total - terminal) < _threshold(node)


def descendants(view: WorkflowView, roots: set[int]) -> set[int]:
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        frontier = {
            node.index
            for node in view.nodes
            if node.index not in found and not frontier.isdisjoint(node.dependencies)
        }
        found |= frontier
    return found


def expected_finalization(view: WorkflowView) -> tuple[WorkflowStatus, ErrorSource, int | None]:
    statuses = [node.status for node in view.nodes]
    if view.success_cases is None:
        failed = [i for i, status in enumerate(statuses) if status == F]
        if view.has_stored_error:
            return WorkflowStatus.FAILED, ErrorSource.KEEP_STORED, None
        if failed:
            return WorkflowStatus.FAILED, ErrorSource.NODE, min(failed)
        return WorkflowStatus.COMPLETED, ErrorSource.NONE, None
    if any(all(statuses[i] == C for i in case) for case in view.success_cases):
        return WorkflowStatus.COMPLETED, ErrorSource.NONE, None
    required_failed = [i for case in view.success_cases for i in case if statuses[i] == F]
    if required_failed:
        return WorkflowStatus.FAILED, ErrorSource.NODE, min(required_failed)
    return WorkflowStatus.FAILED, ErrorSource.SUCCESS_CASE_NOT_MET, None


# ---------------------------------------------------------------------------------------------
# The simulated executor
# ---------------------------------------------------------------------------------------------

Outcome = Literal["ok", "err", "skip"]
_OUTCOME_STATUS = {"ok": C, "err": F, "skip": S}


class Run:
    """Drives one workflow and checks every engine decision as it is applied."""

    def __init__(self, dag: Dag) -> None:
        self.view = WorkflowView(
            status=WorkflowStatus.RUNNING,
            on_error=OnError.FAIL,
            nodes=dag.nodes,
            output_index=dag.output_index,
            success_cases=dag.success_cases,
        )
        self.ready_count: Counter[int] = Counter(n.index for n in dag.nodes if n.status == R)
        self.finalizations: list[Finalization] = []
        self.paused_finished: set[int] = set()

    def ready_nodes(self) -> list[int]:
        return [node.index for node in self.view.nodes if node.status == R]

    def finish(self, indices: list[int], outcomes: list[Outcome]) -> None:
        before = self.view.with_statuses(
            {i: _OUTCOME_STATUS[o] for i, o in zip(indices, outcomes, strict=True)}
        )
        if "err" in outcomes and before.status == WorkflowStatus.RUNNING:
            # on_error=FAIL stores the failure on the workflow while it is RUNNING.
            before = replace(before, has_stored_error=True)
        if before.status != WorkflowStatus.RUNNING:
            # Paused: results are recorded but nothing propagates until resume.
            assert propagate(before, indices) == Propagation()
            self.paused_finished.update(indices)
            self.view = before
            return
        self.apply(before, propagate(before, indices), set(indices))

    def pause(self) -> None:
        assert self.view.status == WorkflowStatus.RUNNING
        self.view = self.view.with_status(WorkflowStatus.PAUSED)
        assert propagate_all(self.view) == Propagation()
        assert finalization(self.view) is None

    def resume(self) -> None:
        assert self.view.status == WorkflowStatus.PAUSED
        before = self.view.with_status(WorkflowStatus.RUNNING)
        self.paused_finished.clear()
        self.apply(before, propagate_all(before), None)

    def apply(self, before: WorkflowView, prop: Propagation, changed: set[int] | None) -> None:
        ready, skipped = prop.ready, prop.skipped
        # Shape: index order, no duplicates, ready and skipped disjoint, only PENDING nodes.
        assert list(ready) == sorted(set(ready))
        assert list(skipped) == sorted(set(skipped))
        assert not set(ready) & set(skipped)
        for index in (*ready, *skipped):
            assert before.nodes[index].status == P, index
        if changed is not None:
            # Only nodes downstream of what changed are touched.
            assert set(ready) | set(skipped) <= descendants(before, changed)

        after = before.with_statuses(prop.changes())
        for index in ready:
            assert self.ready_count[index] == 0, f"node {index} READY twice"
            self.ready_count[index] += 1
            assert may_be_ready(after.nodes[index], after), f"node {index} READY too early"
        for index in skipped:
            assert may_be_skipped(after.nodes[index], after), f"node {index} skipped unjustified"
        # Nothing decidable is left behind: the step reached its fixpoint.
        for node in after.nodes:
            if node.status == P:
                assert not may_be_ready(node, after), f"node {node.index} should be READY"
                assert not may_be_skipped(node, after), f"node {node.index} should be SKIPPED"
        assert propagate_all(after) == Propagation()
        self.view = after
        self.check_finalization()

    def check_finalization(self) -> None:
        decision = finalization(self.view)
        all_terminal = all(node.status in TERMINAL for node in self.view.nodes)
        if not all_terminal or self.view.finalized:
            assert decision is None
            return
        assert decision is not None
        self.finalizations.append(decision)
        assert (decision.status, decision.error_source, decision.error_index) == (
            expected_finalization(self.view)
        )
        assert decision.output_index == self.view.output_index
        assert decision.sink_indices == sink_indices(self.view)
        self.view = replace(self.view, status=decision.status, finalized=True)
        assert finalization(self.view) is None


Step = Literal["one", "batch", "pause", "resume"]


def simulate(dag: Dag, data: st.DataObject, *, with_pauses: bool) -> Run:
    run = Run(dag)
    outcome = st.sampled_from(("ok", "ok", "err", "skip"))
    # Each step finishes at least one node or toggles the pause, so this bound is never reached
    # by a correct engine; it only keeps a broken one from looping forever.
    for _ in range(4 * MAX_NODES + 10):
        ready = run.ready_nodes()
        paused = run.view.status == WorkflowStatus.PAUSED
        if not ready:
            if paused:
                run.resume()
                continue
            break
        steps: list[Step] = ["one", "batch"]
        if with_pauses:
            steps.append("resume" if paused else "pause")
        step = data.draw(st.sampled_from(steps))
        if step == "pause":
            run.pause()
        elif step == "resume":
            run.resume()
        elif step == "one":
            index = data.draw(st.sampled_from(ready))
            run.finish([index], [data.draw(outcome)])
        else:
            batch = data.draw(st.lists(st.sampled_from(ready), min_size=1, unique=True))
            run.finish(batch, [data.draw(outcome) for _ in batch])
    return run


def check_end(run: Run) -> None:
    assert run.view.status in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED)
    for node in run.view.nodes:
        assert node.status in TERMINAL, f"node {node.index} stuck in {node.status}"
        # Every non-root node that ran or was condition-skipped went through READY exactly once.
        if node.dependencies and node.status in (C, F):
            assert run.ready_count[node.index] == 1
    assert len(run.finalizations) == 1


@settings(max_examples=150, report_multiple_bugs=False)
@given(dag=dags(), data=st.data())
def test_random_dags_run_to_completion(dag: Dag, data: st.DataObject) -> None:
    check_end(simulate(dag, data, with_pauses=False))


@settings(max_examples=100, report_multiple_bugs=False)
@given(dag=dags(), data=st.data())
def test_random_dags_with_pause_and_resume(dag: Dag, data: st.DataObject) -> None:
    check_end(simulate(dag, data, with_pauses=True))


@settings(max_examples=100, report_multiple_bugs=False)
@given(dag=dags(), data=st.data())
def test_propagate_from_scratch_matches_step_by_step(dag: Dag, data: st.DataObject) -> None:
    # Recovery applies the same rules as the normal path: it re-decides a whole workflow with
    # propagate_all; starting from the roots' outcomes it must reach the same states as the
    # step-by-step run with the same outcomes.
    run = Run(dag)
    view = run.view
    outcome_of: dict[int, WorkflowTaskStatus] = {}
    while True:
        ready = [node.index for node in view.nodes if node.status == R]
        if not ready:
            break
        changes: dict[int, WorkflowTaskStatus] = {}
        for index in ready:
            changes[index] = outcome_of.setdefault(
                index, data.draw(st.sampled_from((C, F, S)), label=f"outcome {index}")
            )
        view = view.with_statuses(changes)
        view = view.with_statuses(propagate(view, ready).changes())

    # The same outcomes applied all at once on the scratch view, then one propagate_all per wave.
    scratch = run.view
    for _ in range(MAX_NODES + 1):
        ready = [node.index for node in scratch.nodes if node.status == R]
        scratch = scratch.with_statuses({i: outcome_of[i] for i in ready})
        prop = propagate_all(scratch)
        if not prop and not ready:
            break
        scratch = scratch.with_statuses(prop.changes())
    assert [node.status for node in scratch.nodes] == [node.status for node in view.nodes]
