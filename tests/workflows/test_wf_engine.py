"""Unit tests of the workflow engine's pure rules: readiness and joins, propagation, finalization
and the payloads a task receives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from horsies import codec
from horsies.codec.tags import CTX_KEY, META_KEY
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.workflows.engine import (
    ErrorSource,
    Finalization,
    JoinType,
    NodeView,
    Propagation,
    Readiness,
    WorkflowView,
    dependents_of,
    finalization,
    propagate,
    propagate_all,
    readiness,
    sink_indices,
)
from horsies.workflows.payloads import (
    WorkflowCtxPayload,
    WorkflowMetaPayload,
    args_from_injections,
    context_indices,
    context_results,
    dependency_result_json,
    error_result_json_from_stored,
    node_kwargs_json,
    sinks_result_json,
    success_case_not_met_json,
    task_error_json,
    upstream_skipped_json,
)
from horsies.workflows.status import OnError, WorkflowStatus, WorkflowTaskStatus
from node_status_letters import RUN, C, E, F, P, R, S


def n(
    index: int,
    status: WorkflowTaskStatus = P,
    deps: tuple[int, ...] = (),
    join: JoinType = "all",
    min_success: int | None = None,
    *,
    allow: bool = False,
    ctx: tuple[int, ...] | None = None,
    args_from: tuple[tuple[str, int], ...] = (),
) -> NodeView:
    return NodeView(
        index=index,
        node_id=f"n{index}",
        status=status,
        dependencies=deps,
        join=join,
        min_success=min_success,
        allow_failed_deps=allow,
        ctx_from=ctx,
        args_from=args_from,
    )


def wf(
    *nodes: NodeView, status: WorkflowStatus = WorkflowStatus.RUNNING, **kw: Any
) -> WorkflowView:
    return WorkflowView(status=status, on_error=OnError.FAIL, nodes=tuple(nodes), **kw)


def decide(dep_statuses: list[WorkflowTaskStatus], **node_kw: Any) -> Readiness:
    """Readiness of a node (last index) over dependencies with the given statuses."""
    deps = [n(i, status) for i, status in enumerate(dep_statuses)]
    target = n(len(deps), P, tuple(range(len(deps))), **node_kw)
    return readiness(wf(*deps, target), target)


# ---------------------------------------------------------------------------------------------
# readiness: join "all"
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("waiting", [P, R, E, RUN])
def test_all_waits_until_every_dependency_is_terminal(waiting: WorkflowTaskStatus) -> None:
    assert decide([C, waiting]) is Readiness.WAIT


def test_all_ready_when_every_dependency_completed() -> None:
    assert decide([C, C, C]) is Readiness.READY


@pytest.mark.parametrize("bad", [F, S])
def test_all_skips_on_failed_or_skipped_dependency(bad: WorkflowTaskStatus) -> None:
    assert decide([C, bad]) is Readiness.SKIP


def test_all_with_a_failed_dependency_still_waits_for_the_others() -> None:
    # The reference decides `all` only once every dependency is terminal.
    assert decide([F, RUN]) is Readiness.WAIT


@pytest.mark.parametrize("deps", [[C, F], [S, C], [F, S], [F, F]])
def test_all_with_allow_failed_deps_runs(deps: list[WorkflowTaskStatus]) -> None:
    assert decide(deps, allow=True) is Readiness.READY


def test_all_with_allow_failed_deps_still_waits_for_terminal() -> None:
    assert decide([F, P], allow=True) is Readiness.WAIT


# ---------------------------------------------------------------------------------------------
# readiness: join "any"
# ---------------------------------------------------------------------------------------------


def test_any_ready_on_first_completed_dependency() -> None:
    assert decide([C, P, RUN], join="any") is Readiness.READY


def test_any_ready_with_failures_once_one_completed() -> None:
    assert decide([F, S, C], join="any") is Readiness.READY


def test_any_waits_while_a_dependency_can_still_complete() -> None:
    assert decide([F, S, RUN], join="any") is Readiness.WAIT


def test_any_skips_when_all_terminal_and_none_completed() -> None:
    assert decide([F, S, F], join="any") is Readiness.SKIP


def test_any_ignores_allow_failed_deps() -> None:
    assert decide([F, S], join="any", allow=True) is Readiness.SKIP


# ---------------------------------------------------------------------------------------------
# readiness: join "quorum"
# ---------------------------------------------------------------------------------------------


def test_quorum_ready_at_min_success() -> None:
    assert decide([C, C, P, P], join="quorum", min_success=2) is Readiness.READY


def test_quorum_waits_below_min_success_while_possible() -> None:
    assert decide([C, F, P, P], join="quorum", min_success=2) is Readiness.WAIT


def test_quorum_skips_as_soon_as_impossible() -> None:
    # completed 1 + not terminal 1 < 3: impossible before every dependency is terminal.
    assert decide([C, F, F, RUN], join="quorum", min_success=3) is Readiness.SKIP


def test_quorum_boundary_still_possible() -> None:
    # completed 1 + not terminal 2 == 3: still possible.
    assert decide([C, F, P, P], join="quorum", min_success=3) is Readiness.WAIT


def test_quorum_ready_despite_failures_and_ignores_allow_failed_deps() -> None:
    assert decide([C, F, C], join="quorum", min_success=2) is Readiness.READY
    assert decide([F, F, C], join="quorum", min_success=2, allow=True) is Readiness.SKIP


def test_quorum_without_min_success_requires_every_dependency() -> None:
    assert decide([C, C, RUN], join="quorum") is Readiness.WAIT
    assert decide([C, C, C], join="quorum") is Readiness.READY
    assert decide([C, F, RUN], join="quorum") is Readiness.SKIP


# ---------------------------------------------------------------------------------------------
# readiness: workflow_ctx_from gate, roots, non-PENDING nodes
# ---------------------------------------------------------------------------------------------


def test_ctx_gate_holds_any_until_listed_nodes_are_terminal() -> None:
    assert decide([C, RUN], join="any", ctx=(1,)) is Readiness.WAIT
    assert decide([C, F], join="any", ctx=(1,)) is Readiness.READY
    assert decide([C, RUN], join="any", ctx=(0,)) is Readiness.READY


def test_ctx_gate_holds_quorum_until_listed_nodes_are_terminal() -> None:
    assert decide([C, C, P], join="quorum", min_success=2, ctx=(2,)) is Readiness.WAIT
    assert decide([C, C, S], join="quorum", min_success=2, ctx=(2,)) is Readiness.READY


def test_ctx_gate_does_not_delay_an_impossible_quorum() -> None:
    assert decide([F, F, P], join="quorum", min_success=2, ctx=(2,)) is Readiness.SKIP


def test_root_is_ready_whatever_its_join() -> None:
    for join in ("all", "any", "quorum"):
        root = n(0, P, join=join)
        assert readiness(wf(root), root) is Readiness.READY


@pytest.mark.parametrize("status", [R, E, RUN, C, F, S])
def test_non_pending_node_is_never_decided(status: WorkflowTaskStatus) -> None:
    view = wf(n(0, C), n(1, status, (0,)))
    assert readiness(view, view.nodes[1]) is Readiness.WAIT


# ---------------------------------------------------------------------------------------------
# propagate / propagate_all
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [
        WorkflowStatus.PAUSED,
        WorkflowStatus.CANCELLED,
        WorkflowStatus.COMPLETED,
        WorkflowStatus.PENDING,
    ],
)
def test_propagate_only_while_running(status: WorkflowStatus) -> None:
    view = wf(n(0, C), n(1, P, (0,)), n(2, F), n(3, P, (2,)), status=status)
    assert propagate(view, [0, 2]) == Propagation()
    assert propagate_all(view) == Propagation()
    assert not propagate(view, [0])


def test_propagate_marks_ready_dependents() -> None:
    view = wf(n(0, C), n(1, P, (0,)), n(2, P, (0,)), n(3, P, (1, 2)))
    assert propagate(view, [0]) == Propagation(ready=(1, 2), skipped=())


def test_propagate_only_looks_at_dependents_of_changed() -> None:
    # Node 3 is decidable but not downstream of node 0: propagate leaves it to its own trigger.
    view = wf(n(0, C), n(1, P, (0,)), n(2, C), n(3, P, (2,)))
    assert propagate(view, [0]) == Propagation(ready=(1,))
    assert propagate_all(view) == Propagation(ready=(1, 3))


def test_skip_cascades_through_descendants() -> None:
    view = wf(n(0, F), n(1, P, (0,)), n(2, P, (1,)), n(3, P, (2,)))
    assert propagate(view, [0]) == Propagation(ready=(), skipped=(1, 2, 3))


def test_cascade_stops_at_allow_failed_deps() -> None:
    view = wf(n(0, F), n(1, P, (0,)), n(2, P, (1,), allow=True), n(3, P, (2,)))
    assert propagate(view, [0]) == Propagation(ready=(2,), skipped=(1,))


def test_cascade_stops_at_any_join_with_a_completed_dependency() -> None:
    view = wf(n(0, F), n(1, C), n(2, P, (0,)), n(3, P, (2, 1), "any"))
    assert propagate(view, [0]) == Propagation(ready=(3,), skipped=(2,))


def test_cascade_skips_any_join_when_no_dependency_can_complete() -> None:
    view = wf(n(0, F), n(1, F), n(2, P, (0,)), n(3, P, (2, 1), "any"))
    assert propagate(view, [0]) == Propagation(skipped=(2, 3))


def test_cascade_makes_quorum_impossible() -> None:
    view = wf(
        n(0, F),
        n(1, P, (0,)),
        n(2, P, (0,)),
        n(3, RUN),
        n(4, P, (1, 2, 3), "quorum", 2),
    )
    assert propagate(view, [0]) == Propagation(skipped=(1, 2, 4))


def test_cascade_waits_for_other_dependencies_of_all_join() -> None:
    view = wf(n(0, F), n(1, P, (0,)), n(2, RUN), n(3, P, (1, 2)))
    assert propagate(view, [0]) == Propagation(skipped=(1,))


def test_cascade_readies_allow_failed_deps_once_all_terminal() -> None:
    view = wf(n(0, F), n(1, P, (0,)), n(2, C), n(3, P, (1, 2), allow=True))
    assert propagate(view, [0]) == Propagation(ready=(3,), skipped=(1,))


def test_propagate_with_non_topological_indices_is_in_index_order() -> None:
    # Edges 4 -> 0 -> 3 -> 1 and 4 -> 2: indices do not follow the graph.
    view = wf(
        n(0, P, (4,)),
        n(1, P, (3,)),
        n(2, P, (4,)),
        n(3, P, (0,)),
        n(4, F),
    )
    assert propagate(view, [4]) == Propagation(skipped=(0, 1, 2, 3))


def test_propagate_never_touches_non_pending_nodes() -> None:
    view = wf(n(0, F), n(1, R, (0,)), n(2, S, (0,)), n(3, P, (1,)), n(4, P, (2,)))
    result = propagate(view, [0])
    # Node 1 is READY (not PENDING): it is not re-decided and does not unblock node 3.
    assert result == Propagation(skipped=())
    assert propagate(view, [2]) == Propagation(skipped=(4,))


def test_propagate_multiple_changed_nodes_returns_each_once() -> None:
    view = wf(n(0, C), n(1, C), n(2, P, (0, 1)), n(3, P, (0, 1), "any"))
    result = propagate(view, [0, 1, 0])
    assert result == Propagation(ready=(2, 3))


def test_propagate_all_decides_every_pending_node_with_cascade() -> None:
    view = wf(
        n(0, C),
        n(1, F),
        n(2, P, (0,)),
        n(3, P, (1,)),
        n(4, P, (3,)),
        n(5, P, (0, 4), allow=True),
        n(6, RUN),
        n(7, P, (6,)),
        n(8, P, (2,)),
    )
    # Node 8 waits: its dependency became READY, which is not terminal.
    assert propagate_all(view) == Propagation(ready=(2, 5), skipped=(3, 4))


def test_propagation_changes_and_truthiness() -> None:
    prop = Propagation(ready=(1, 4), skipped=(2,))
    assert prop
    assert not Propagation()
    assert prop.changes() == {1: R, 4: R, 2: S}
    view = wf(n(0, C), n(1, P, (0,)), n(2, P, (0,)), n(3, P), n(4, P, (0,)))
    updated = view.with_statuses(prop.changes())
    assert [node.status for node in updated.nodes] == [C, R, S, P, R]
    assert [node.status for node in view.nodes] == [C, P, P, P, P]


def test_statuses_given_as_plain_strings_are_understood() -> None:
    # Rows read from the database may carry the plain stored text.
    dep = NodeView(index=0, node_id="a", status="FAILED")  # type: ignore[arg-type]
    target = NodeView(index=1, node_id="b", status="PENDING", dependencies=(0,))  # type: ignore[arg-type]
    view = wf(dep, target)
    assert readiness(view, target) is Readiness.SKIP
    assert propagate(view, [0]) == Propagation(skipped=(1,))


# ---------------------------------------------------------------------------------------------
# WorkflowView, sinks, dependents
# ---------------------------------------------------------------------------------------------


def test_view_rejects_nodes_out_of_index_order() -> None:
    with pytest.raises(ValueError, match="index order"):
        wf(n(1), n(0))


def test_with_statuses_and_with_status_copy() -> None:
    view = wf(n(0, C), n(1, P, (0,)))
    assert view.with_statuses({}) is view
    assert view.with_statuses({1: R}).nodes[1].status is R
    paused = view.with_status(WorkflowStatus.PAUSED)
    assert paused.status is WorkflowStatus.PAUSED
    assert view.status is WorkflowStatus.RUNNING


def test_sink_indices_and_dependents_of() -> None:
    view = wf(n(0), n(1, P, (0,)), n(2, P, (0,)), n(3, P, (1,)), n(4))
    assert sink_indices(view) == (2, 3, 4)
    assert dependents_of(view, [0]) == (1, 2)
    assert dependents_of(view, [1, 0]) == (1, 2, 3)
    assert dependents_of(view, [4]) == ()


# ---------------------------------------------------------------------------------------------
# finalization
# ---------------------------------------------------------------------------------------------


def test_finalization_needs_running_unfinalized_all_terminal() -> None:
    done = (n(0, C), n(1, C, (0,)))
    assert finalization(wf(*done)) is not None
    assert finalization(wf(n(0, C), n(1, RUN, (0,)))) is None
    assert finalization(wf(n(0, C), n(1, R, (0,)))) is None
    assert finalization(wf(*done, finalized=True)) is None
    for status in (WorkflowStatus.PAUSED, WorkflowStatus.CANCELLED, WorkflowStatus.FAILED):
        assert finalization(wf(*done, status=status)) is None


def test_finalization_completed_without_policy() -> None:
    view = wf(n(0, C), n(1, C, (0,)), n(2, S, (0,)), n(3, C))
    assert finalization(view) == Finalization(
        status=WorkflowStatus.COMPLETED,
        output_index=None,
        sink_indices=(1, 2, 3),
        error_source=ErrorSource.NONE,
        error_index=None,
    )


def test_finalization_output_index_is_passed_through() -> None:
    result = finalization(wf(n(0, C), n(1, C, (0,)), output_index=0))
    assert result is not None
    assert result.output_index == 0
    assert result.sink_indices == (1,)


def test_finalization_failed_node_without_stored_error() -> None:
    view = wf(n(0, C), n(1, C), n(2, F, (0,)), n(3, F, (1,)), n(4, C, (2, 3), allow=True))
    result = finalization(view)
    assert result is not None
    assert result.status is WorkflowStatus.FAILED
    assert result.error_source is ErrorSource.NODE
    assert result.error_index == 2


def test_finalization_keeps_stored_error() -> None:
    view = wf(n(0, F), n(1, F), has_stored_error=True)
    result = finalization(view)
    assert result is not None
    assert (result.status, result.error_source, result.error_index) == (
        WorkflowStatus.FAILED,
        ErrorSource.KEEP_STORED,
        None,
    )


def test_finalization_stored_error_alone_fails_the_workflow() -> None:
    result = finalization(wf(n(0, C), has_stored_error=True))
    assert result is not None
    assert result.status is WorkflowStatus.FAILED
    assert result.error_source is ErrorSource.KEEP_STORED


def test_finalization_recovery_node_does_not_rescue_the_workflow() -> None:
    view = wf(n(0, F), n(1, C, (0,), allow=True))
    result = finalization(view)
    assert result is not None
    assert result.status is WorkflowStatus.FAILED


def test_policy_completed_when_a_case_is_met_despite_failures() -> None:
    view = wf(
        n(0, F),
        n(1, C),
        n(2, C, (1,)),
        success_cases=((0,), (1, 2)),
        has_stored_error=True,
    )
    result = finalization(view)
    assert result is not None
    assert result.status is WorkflowStatus.COMPLETED
    assert result.error_source is ErrorSource.NONE


def test_policy_skipped_required_does_not_satisfy() -> None:
    view = wf(n(0, C), n(1, S, (0,)), success_cases=((0, 1),))
    result = finalization(view)
    assert result is not None
    assert result.status is WorkflowStatus.FAILED
    assert result.error_source is ErrorSource.SUCCESS_CASE_NOT_MET
    assert result.error_index is None


def test_policy_error_is_lowest_failed_required_node() -> None:
    # Node 0 failed but is in no case; among required nodes 2 and 3 failed.
    view = wf(
        n(0, F),
        n(1, C),
        n(2, F),
        n(3, F),
        success_cases=((1, 3), (2,)),
        has_stored_error=True,
    )
    result = finalization(view)
    assert result is not None
    assert (result.status, result.error_source, result.error_index) == (
        WorkflowStatus.FAILED,
        ErrorSource.NODE,
        2,
    )


def test_policy_ignores_stored_error_when_no_required_node_failed() -> None:
    view = wf(n(0, F), n(1, S, (0,)), success_cases=((1,),), has_stored_error=True)
    result = finalization(view)
    assert result is not None
    assert result.error_source is ErrorSource.SUCCESS_CASE_NOT_MET


def test_policy_without_cases_never_completes() -> None:
    result = finalization(wf(n(0, C), success_cases=()))
    assert result is not None
    assert result.status is WorkflowStatus.FAILED
    assert result.error_source is ErrorSource.SUCCESS_CASE_NOT_MET


# ---------------------------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------------------------


def _ok_json(value: Any) -> str:
    return codec.task_result_to_json(TaskResult(ok=value))


def _err_json(code: str, message: str = "boom", data: Any = None) -> str:
    return codec.task_result_to_json(
        TaskResult(err=TaskError(error_code=code, message=message, data=data))
    )


def test_upstream_skipped_sentinel_round_trips() -> None:
    text = upstream_skipped_json(7)
    expected = TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.UPSTREAM_SKIPPED,
            message="Upstream dependency was SKIPPED",
            data={"dependency_index": 7},
        )
    )
    assert codec.task_result_from_json(text) == expected
    assert text == codec.task_result_to_json(expected)
    payload = orjson.loads(text)
    assert payload["__task_result__"] is True
    assert payload["ok"] is None
    assert payload["err"]["__task_error__"] is True
    assert payload["err"]["error_code"] == "UPSTREAM_SKIPPED"


def test_dependency_result_json_by_status() -> None:
    stored = _ok_json(3)
    assert dependency_result_json(n(0, C), stored) == stored
    assert dependency_result_json(n(0, F), stored) == stored
    assert dependency_result_json(n(4, S), stored) == upstream_skipped_json(4)
    assert dependency_result_json(n(4, S), None) == upstream_skipped_json(4)
    assert dependency_result_json(n(0, C), None) is None
    for status in (P, R, E, RUN):
        assert dependency_result_json(n(0, status), stored) is None


def test_task_error_json_round_trips() -> None:
    text = task_error_json(
        "SUBWORKFLOW_LOAD_FAILED", "cannot load", {"module": "m", "qualname": "Q"}
    )
    error = codec.rehydrate_value(codec.loads_json(text))
    assert error == TaskError(
        error_code="SUBWORKFLOW_LOAD_FAILED",
        message="cannot load",
        data={"module": "m", "qualname": "Q"},
    )
    assert orjson.loads(text)["__task_error__"] is True


def test_task_error_json_accepts_library_codes_and_unencodable_data() -> None:
    text = task_error_json(LibraryErrorCode.WORKER_CRASHED, "gone", {"ids": {1, 2}})
    error = codec.rehydrate_value(codec.loads_json(text))
    assert isinstance(error, TaskError)
    assert error.error_code == LibraryErrorCode.WORKER_CRASHED
    assert sorted(error.data["ids"]) == [1, 2]


def test_success_case_not_met_json() -> None:
    error = codec.rehydrate_value(codec.loads_json(success_case_not_met_json()))
    assert error == TaskError(
        error_code=LibraryErrorCode.WORKFLOW_SUCCESS_CASE_NOT_MET,
        message="No success case was satisfied",
    )


def test_node_kwargs_json_layers_static_injected_ctx_meta() -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    static = codec.kwargs_to_json({"when": when, "raw": "static", "n": 1})
    injected = {"raw": _ok_json({"a": [1, 2]}), "other": upstream_skipped_json(0)}
    ctx = WorkflowCtxPayload(
        workflow_id="wf-1",
        task_index=2,
        task_name="tasks.join",
        results={"fetch": _ok_json(5), "gone": upstream_skipped_json(1)},
        summaries={"child": orjson.dumps({"status": "COMPLETED", "total_tasks": 2}).decode()},
    )
    meta = WorkflowMetaPayload(workflow_id="wf-1", task_index=2, task_name="tasks.join")
    text = node_kwargs_json(static, injected, ctx, meta)

    raw = orjson.loads(text)
    assert list(raw) == ["when", "raw", "n", "other", CTX_KEY, META_KEY]

    kwargs = codec.kwargs_from_json(text)
    assert kwargs["when"] == when
    assert kwargs["n"] == 1
    assert kwargs["raw"] == TaskResult(ok={"a": [1, 2]})
    assert kwargs["other"] == codec.task_result_from_json(upstream_skipped_json(0))
    assert kwargs[META_KEY] == {"workflow_id": "wf-1", "task_index": 2, "task_name": "tasks.join"}
    payload = kwargs[CTX_KEY]
    assert payload["workflow_id"] == "wf-1"
    assert payload["task_index"] == 2
    assert payload["task_name"] == "tasks.join"
    assert payload["results"]["fetch"] == TaskResult(ok=5)
    assert payload["results"]["gone"] == codec.task_result_from_json(upstream_skipped_json(1))
    assert payload["summaries"] == {"child": {"status": "COMPLETED", "total_tasks": 2}}


def test_node_kwargs_json_without_static_or_ctx() -> None:
    meta = WorkflowMetaPayload(workflow_id="w", task_index=0, task_name="t")
    text = node_kwargs_json(None, {}, None, meta)
    assert orjson.loads(text) == {META_KEY: {"workflow_id": "w", "task_index": 0, "task_name": "t"}}
    assert CTX_KEY not in codec.kwargs_from_json(node_kwargs_json("{}", {}, None, meta))


def test_node_kwargs_json_replaces_reserved_keys_in_static_kwargs() -> None:
    meta = WorkflowMetaPayload(workflow_id="w", task_index=1, task_name="t")
    static = orjson.dumps({CTX_KEY: "forged", META_KEY: "forged", "x": 1}).decode()
    raw = orjson.loads(node_kwargs_json(static, {}, None, meta))
    assert raw == {"x": 1, META_KEY: {"workflow_id": "w", "task_index": 1, "task_name": "t"}}


def test_node_kwargs_json_empty_ctx_payload() -> None:
    meta = WorkflowMetaPayload(workflow_id="w", task_index=1, task_name="t")
    ctx = WorkflowCtxPayload(workflow_id="w", task_index=1, task_name="t", results={}, summaries={})
    raw = orjson.loads(node_kwargs_json(None, {}, ctx, meta))
    assert raw[CTX_KEY] == {
        "workflow_id": "w",
        "task_index": 1,
        "task_name": "t",
        "results": {},
        "summaries": {},
    }


def test_node_kwargs_json_rejects_non_object_static_kwargs() -> None:
    meta = WorkflowMetaPayload(workflow_id="w", task_index=0, task_name="t")
    with pytest.raises(ValueError, match="JSON object"):
        node_kwargs_json("[1, 2]", {}, None, meta)


def test_node_kwargs_json_keeps_deeply_nested_static_kwargs() -> None:
    deep: Any = "leaf"
    for _ in range(400):
        deep = [deep]
    static = codec.kwargs_to_json({"deep": deep})
    meta = WorkflowMetaPayload(workflow_id="w", task_index=0, task_name="t")
    kwargs = codec.kwargs_from_json(node_kwargs_json(static, {}, None, meta))
    assert kwargs["deep"] == deep


def test_node_kwargs_json_preserves_unicode_and_big_values() -> None:
    static = codec.kwargs_to_json({"name": "żółw ☃", "big": 2**62})
    meta = WorkflowMetaPayload(workflow_id="w", task_index=0, task_name="ünï")
    kwargs = codec.kwargs_from_json(node_kwargs_json(static, {}, None, meta))
    assert kwargs["name"] == "żółw ☃"
    assert kwargs["big"] == 2**62
    assert kwargs[META_KEY]["task_name"] == "ünï"


def test_sinks_result_json_round_trips() -> None:
    text = sinks_result_json({"b": _ok_json([1]), "c": None, "d": _err_json("E1")})
    result = codec.task_result_from_json(text)
    assert result.is_ok()
    assert result.ok == {
        "b": TaskResult(ok=[1]),
        "c": None,
        "d": TaskResult(err=TaskError(error_code="E1", message="boom")),
    }


def test_sinks_result_json_empty() -> None:
    assert codec.task_result_from_json(sinks_result_json({})) == TaskResult(ok={})


def test_error_result_json_from_stored() -> None:
    stored = _err_json("DOMAIN", "bad input", {"field": "x"})
    text = error_result_json_from_stored(stored)
    assert text is not None
    assert codec.rehydrate_value(codec.loads_json(text)) == TaskError(
        error_code="DOMAIN", message="bad input", data={"field": "x"}
    )
    assert error_result_json_from_stored(_ok_json({"err": 1})) is None
    assert error_result_json_from_stored(None) is None
    assert error_result_json_from_stored("not json") is None
    assert error_result_json_from_stored("[1]") is None
    assert error_result_json_from_stored('{"ok": null, "err": "text"}') is None


def test_error_result_json_from_stored_keeps_the_stored_form() -> None:
    # Tagged extra keys (e.g. a TaskError subclass location) are copied untouched.
    err = {
        "__task_error__": True,
        "error_code": "SUBWORKFLOW_FAILED",
        "data": None,
        "message": "m",
        "module": "not.importable",
        "qualname": "Nope",
        "fields": {"sub_workflow_id": "x"},
    }
    stored = orjson.dumps({"__task_result__": True, "ok": None, "err": err}).decode()
    text = error_result_json_from_stored(stored)
    assert text is not None
    assert orjson.loads(text) == err


def test_args_from_injections_and_context_results() -> None:
    view = wf(
        n(0, C),
        n(1, F),
        n(2, S),
        n(3, RUN),
        n(4, P, (0, 1, 2, 3), "any", args_from=(("a", 0), ("b", 1), ("c", 2), ("d", 3))),
    )
    stored = {0: _ok_json(10), 1: _err_json("X")}
    injected = args_from_injections(view, view.nodes[4], stored)
    assert injected == {"a": stored[0], "b": stored[1], "c": upstream_skipped_json(2)}
    results = context_results(view, (0, 1, 2, 3), stored)
    assert results == {"n0": stored[0], "n1": stored[1], "n2": upstream_skipped_json(2)}
    # A COMPLETED node without a stored result is omitted.
    assert context_results(view, (0,), {}) == {}


def test_context_indices() -> None:
    with_ctx = n(3, P, (0, 1, 2), ctx=(1,))
    without = n(3, P, (0, 1, 2))
    assert context_indices(with_ctx) == (1,)
    assert context_indices(with_ctx, for_condition=True) == (1,)
    assert context_indices(without) == ()
    assert context_indices(without, for_condition=True) == (0, 1, 2)
