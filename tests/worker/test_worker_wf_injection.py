"""Workflow parameters in the worker child: ``workflow_ctx`` and ``workflow_meta`` (the latter
injected into any task that declares it, None outside workflows).

``execute_task`` is called in-process with kwargs JSON shaped as the engine writes it: the
``__horsies_workflow_ctx__`` / ``__horsies_workflow_meta__`` payloads are replaced by a
``WorkflowContext`` / ``WorkflowMeta`` for the functions that declare those parameters and never
reach a function as-is.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from horsies import TaskContext
from horsies.codec import dumps_json, task_result_from_json, task_result_to_json
from horsies.codec.tags import CTX_KEY, META_KEY
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.workflows.context import SubWorkflowSummary, WorkflowContext, WorkflowMeta
from horsies.workflows.nodes import NodeKey
from horsies.workflows.payloads import (
    WorkflowCtxPayload,
    WorkflowMetaPayload,
    node_kwargs_json,
    upstream_skipped_json,
)
from horsies.workflows.status import WorkflowStatus
from horsies_worker.execution import RunFacts, execute_task, injection_params
from worker_wf_app import RECEIVED, Report, app, ctx_probe, missing_id

WF_ID = "6f1c2a4e-0000-4000-8000-000000000001"
META = WorkflowMetaPayload(workflow_id=WF_ID, task_index=3, task_name="wf.probe")


@pytest.fixture(autouse=True)
def _fresh_received() -> Iterator[None]:
    RECEIVED.clear()
    yield
    RECEIVED.clear()


def run(name: str, kwargs_json: str | None, args_json: str | None = "[]") -> tuple[Any, bool]:
    result_json, ok = execute_task(app, name, args_json, kwargs_json)
    return task_result_from_json(result_json), ok


def ctx_payload(
    results: dict[str, str] | None = None, summaries: dict[str, str] | None = None
) -> WorkflowCtxPayload:
    return WorkflowCtxPayload(
        workflow_id=WF_ID,
        task_index=3,
        task_name="wf.probe",
        results=results or {},
        summaries=summaries or {},
    )


def received_ctx() -> WorkflowContext:
    assert len(RECEIVED) == 1
    ctx = RECEIVED[0]["workflow_ctx"]
    assert isinstance(ctx, WorkflowContext)
    return ctx


# -- workflow_ctx ---------------------------------------------------------------------------------


def test_context_carries_completed_failed_and_skipped_dependencies() -> None:
    results = {
        "fetch": task_result_to_json(TaskResult(ok=41)),
        "broken": task_result_to_json(
            TaskResult(err=TaskError(error_code="RATE_LIMITED", message="slow down"))
        ),
        "gone": upstream_skipped_json(2),
    }
    kwargs = node_kwargs_json('{"n": 7}', {}, ctx_payload(results), META)

    result, ok = run("wf.ctx_probe", kwargs)

    assert ok
    assert result.unwrap() == 7
    ctx = received_ctx()
    assert (ctx.workflow_id, ctx.task_index, ctx.task_name) == (WF_ID, 3, "wf.probe")
    assert ctx.result_for(NodeKey("fetch")).unwrap() == 41
    broken = ctx.result_for(NodeKey("broken")).unwrap_err()
    assert (broken.error_code, broken.message) == ("RATE_LIMITED", "slow down")
    gone = ctx.result_for(NodeKey("gone")).unwrap_err()
    assert gone.error_code == LibraryErrorCode.UPSTREAM_SKIPPED
    assert gone.data == {"dependency_index": 2}
    assert not ctx.has_result(NodeKey("elsewhere"))


def test_context_carries_child_workflow_summaries_with_rich_output() -> None:
    summary = SubWorkflowSummary[Report](
        status=WorkflowStatus.COMPLETED,
        output=Report(title="q3", pages=12),
        total_tasks=3,
        completed_tasks=2,
        skipped_tasks=1,
    )
    kwargs = node_kwargs_json(
        None, {}, ctx_payload(summaries={"child": json.dumps(summary.to_json())}), META
    )

    _, ok = run("wf.ctx_probe", kwargs)

    assert ok
    got = received_ctx().summary_for(NodeKey("child"))
    assert got.status == WorkflowStatus.COMPLETED
    assert got.output == Report(title="q3", pages=12)
    assert (got.total, got.completed, got.failed, got.skipped) == (3, 2, 0, 1)


def test_empty_context_is_still_a_context() -> None:
    _, ok = run("wf.ctx_probe", node_kwargs_json(None, {}, ctx_payload(), META))
    assert ok
    assert not received_ctx().has_result(NodeKey("fetch"))


def test_no_context_payload_leaves_the_default() -> None:
    # A workflow node without workflow_ctx_from: only the meta payload is present.
    _, ok = run("wf.ctx_probe", node_kwargs_json('{"n": 1}', {}, None, META))
    assert ok
    assert RECEIVED == [{"n": 1, "workflow_ctx": None}]


def test_plain_send_of_a_ctx_task_gets_no_context() -> None:
    _, ok = run("wf.ctx_probe", '{"n": 2}')
    assert ok
    assert RECEIVED == [{"n": 2, "workflow_ctx": None}]


# -- workflow_meta --------------------------------------------------------------------------------


def test_meta_is_injected_inside_a_workflow() -> None:
    result, ok = run("wf.meta_probe", node_kwargs_json(None, {}, None, META))
    assert ok
    assert result.unwrap() == 3
    assert [{"workflow_meta": WorkflowMeta(WF_ID, 3, "wf.probe")}] == RECEIVED


def test_meta_is_none_outside_a_workflow_even_without_a_default() -> None:
    result, ok = run("wf.meta_no_default", "{}")
    assert ok
    assert result.unwrap() is False
    assert RECEIVED == [{"workflow_meta": None}]


def test_meta_passed_by_the_caller_is_kept() -> None:
    own = WorkflowMeta(workflow_id="mine", task_index=9, task_name="manual")
    plain_kwargs = json.dumps({"workflow_meta": json.loads(dumps_json(own))})
    in_workflow = node_kwargs_json(plain_kwargs, {}, None, META)

    for kwargs in (plain_kwargs, in_workflow):
        RECEIVED.clear()
        _, ok = run("wf.meta_probe", kwargs)
        assert ok
        assert [{"workflow_meta": own}] == RECEIVED


def test_args_from_context_and_meta_together() -> None:
    injected = {"raw": task_result_to_json(TaskResult(ok=10))}
    ctx = ctx_payload({"up": task_result_to_json(TaskResult(ok="x"))})

    result, ok = run("wf.both", node_kwargs_json(None, injected, ctx, META))

    assert ok
    assert result.unwrap() == 11
    (seen,) = RECEIVED
    assert seen["raw"] == TaskResult(ok=10)
    assert seen["workflow_ctx"].result_for(NodeKey("up")).unwrap() == "x"
    assert seen["workflow_meta"] == WorkflowMeta(WF_ID, 3, "wf.probe")


# -- the reserved keys never reach a function -----------------------------------------------------


def test_function_without_workflow_parameters_runs_normally() -> None:
    kwargs = node_kwargs_json('{"n": 4}', {}, ctx_payload({"a": upstream_skipped_json(0)}), META)
    result, ok = run("wf.plain", kwargs)
    assert ok
    assert result.unwrap() == 8


def test_catch_all_kwargs_receive_neither_payloads_nor_injections() -> None:
    kwargs = node_kwargs_json('{"n": 4}', {}, ctx_payload(), META)
    result, ok = run("wf.catch_all", kwargs)
    assert ok
    assert result.unwrap() == ["n"]
    assert RECEIVED == [{"n": 4}]


def test_positional_only_parameter_is_not_injected() -> None:
    result, ok = run("wf.positional_only", node_kwargs_json(None, {}, None, META))
    assert ok
    assert result.unwrap() == "'unset'"


def test_hand_written_payloads_are_accepted() -> None:
    kwargs = json.dumps(
        {
            "n": 5,
            CTX_KEY: {
                "workflow_id": "w",
                "task_index": 0,
                "task_name": "t",
                "results": {"a": json.loads(task_result_to_json(TaskResult(ok=1)))},
                "summaries": {},
            },
            META_KEY: {"workflow_id": "w", "task_index": 0, "task_name": "t"},
        }
    )
    _, ok = run("wf.ctx_probe", kwargs)
    assert ok
    assert received_ctx().result_for(NodeKey("a")).unwrap() == 1


@pytest.mark.parametrize(
    ("task", "payloads"),
    [
        ("wf.ctx_probe", {CTX_KEY: 5}),
        ("wf.ctx_probe", {CTX_KEY: {"task_index": 0, "task_name": "t", "results": {}}}),
        ("wf.ctx_probe", {CTX_KEY: {"workflow_id": "w", "task_index": 0, "task_name": "t",
                                    "results": []}}),
        ("wf.ctx_probe", {CTX_KEY: {"workflow_id": "w", "task_index": 0, "task_name": "t",
                                    "results": {"a": 5}}}),
        ("wf.meta_probe", {META_KEY: "w"}),
        ("wf.meta_probe", {META_KEY: {"workflow_id": "w", "task_index": "x", "task_name": "t"}}),
    ],
)  # fmt: skip
def test_malformed_payload_is_worker_serialization_error(
    task: str, payloads: dict[str, Any]
) -> None:
    result, ok = run(task, json.dumps(payloads))
    assert not ok
    assert result.unwrap_err().error_code == LibraryErrorCode.WORKER_SERIALIZATION_ERROR
    assert RECEIVED == []


def test_malformed_payload_is_ignored_when_the_function_does_not_ask_for_it() -> None:
    result, ok = run("wf.plain", json.dumps({"n": 1, CTX_KEY: 5, META_KEY: "x"}))
    assert ok
    assert result.unwrap() == 2


# -- WORKFLOW_CTX_MISSING_ID ----------------------------------------------------------------------


def test_lookup_by_a_node_without_id_is_workflow_ctx_missing_id() -> None:
    result, ok = run("wf.missing_id", node_kwargs_json(None, {}, ctx_payload(), META))
    assert not ok
    error = result.unwrap_err()
    assert error.error_code == LibraryErrorCode.WORKFLOW_CTX_MISSING_ID
    assert error.data == {"exception_type": "WorkflowContextMissingIdError"}
    assert "node_id" in (error.message or "")


def test_direct_call_maps_missing_id_too() -> None:
    ctx = WorkflowContext.from_serialized(WF_ID, 0, "wf.missing_id", {})
    result = missing_id(workflow_ctx=ctx)
    assert result.unwrap_err().error_code == LibraryErrorCode.WORKFLOW_CTX_MISSING_ID


def test_other_exceptions_stay_unhandled_exception() -> None:
    # missing_id asserts it got a context: without one it fails like any task bug.
    result, ok = run("wf.missing_id", "{}")
    assert not ok
    assert result.unwrap_err().error_code == LibraryErrorCode.UNHANDLED_EXCEPTION


# -- signature inspection is cached ---------------------------------------------------------------


def test_signature_is_inspected_once_per_function(monkeypatch: pytest.MonkeyPatch) -> None:
    real_signature = inspect.signature
    inspected: list[Callable[..., Any]] = []

    def counting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> inspect.Signature:
        inspected.append(fn)
        return real_signature(fn, *args, **kwargs)

    injection_params.cache_clear()
    monkeypatch.setattr(inspect, "signature", counting)
    kwargs = node_kwargs_json(None, {}, ctx_payload(), META)
    for _ in range(3):
        _, ok = run("wf.ctx_probe", kwargs)
        assert ok

    original = ctx_probe._original_fn  # pyright: ignore[reportPrivateUsage]
    assert inspected.count(original) == 1
    assert injection_params(ctx_probe).wants_ctx
    assert not injection_params(ctx_probe).wants_meta


# -- task_ctx -------------------------------------------------------------------------------------

SENT = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
FACTS = RunFacts("task-1", "emails", 7, 2, 5, SENT)


def test_task_ctx_carries_the_run_and_the_workflow_position() -> None:
    kwargs = node_kwargs_json('{"n": 7}', {}, None, META)
    result_json, ok = execute_task(app, "wf.task_ctx_probe", "[]", kwargs, FACTS)
    assert ok, result_json
    assert [
        {
            "task_ctx": TaskContext(
                task_id="task-1",
                task_name="wf.task_ctx_probe",
                queue_name="emails",
                priority=7,
                retry_count=2,
                max_retries=5,
                sent_at=SENT,
                workflow_id=WF_ID,
                workflow_task_index=3,
            )
        }
    ] == RECEIVED
    context = RECEIVED[0]["task_ctx"]
    assert context.attempt == 3
    assert not context.is_last_attempt


def test_task_ctx_outside_a_workflow_has_no_position() -> None:
    _, ok = execute_task(app, "wf.task_ctx_probe", "[1]", None, FACTS)
    assert ok
    context = RECEIVED[0]["task_ctx"]
    assert (context.workflow_id, context.workflow_task_index) == (None, None)
