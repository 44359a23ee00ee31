"""`WorkflowSpec` construction-time validation, node ids, queues and the registry:
each problem raises the error code that names it, `on_error` accepts a string, `with_on_error`
exists, and a spec built outside `app.workflow(...)` takes queues from each task's options."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from horsies import (
    AnyNode,
    ErrorCode,
    MultipleValidationErrors,
    OnError,
    SubWorkflowNode,
    SubWorkflowRetryMode,
    SuccessCase,
    SuccessPolicy,
    TaskNode,
    WorkflowDefinition,
    WorkflowSpec,
    WorkflowValidationError,
)
from horsies.errors import ConfigurationError, HorsiesError, MultipleConfigurationErrors
from horsies.workflows.registry import registered_spec
from wf_app import (
    Child,
    add,
    app,
    custom_app,
    fast_job,
    fetch,
    no_ctx,
    slow_job,
    store,
    summarize,
    summarize_kwonly,
)


def spec(tasks: Sequence[Any], name: str = "wf", **options: Any) -> WorkflowSpec:
    return WorkflowSpec(name=name, tasks=list(tasks), **options)


def raised(tasks: Sequence[Any], name: str = "wf", **options: Any) -> HorsiesError:
    with pytest.raises(HorsiesError) as info:
        spec(tasks, name, **options)
    return info.value


def codes(error: HorsiesError) -> list[ErrorCode | None]:
    if isinstance(error, MultipleValidationErrors):
        return [item.code for item in error.errors]
    return [error.code]


def only(error: HorsiesError, code: ErrorCode) -> WorkflowValidationError:
    """The error is a single WorkflowValidationError with this code."""
    assert isinstance(error, WorkflowValidationError)
    assert not isinstance(error, MultipleValidationErrors), codes(error)
    assert error.code is code
    return error


def chain(count: int) -> list[AnyNode]:
    nodes: list[AnyNode] = [TaskNode(fn=add)]
    for _ in range(count - 1):
        nodes.append(TaskNode(fn=add, waits_for=[nodes[-1]]))
    return nodes


# -- indices and node ids --------------------------------------------------------------------------


def test_valid_spec_assigns_indices_and_ids() -> None:
    a = TaskNode(fn=fetch)
    b = TaskNode(fn=store, waits_for=[a], args_from={"raw": a}, node_id="keep-me")
    built = spec([a, b], name="Order Processing!")
    assert [node.index for node in built.tasks] == [0, 1]
    assert a.node_id == "Order_Processing:0"
    assert b.node_id == "keep-me"
    assert built.tasks == [a, b]
    assert built.on_error is OnError.FAIL
    assert built.output is None
    assert built.success_policy is None
    assert built.broker is None


def test_tasks_is_copied_into_a_list() -> None:
    nodes = (TaskNode(fn=add),)
    built = spec(nodes)
    assert isinstance(built.tasks, list)


def test_reused_node_keeps_its_first_id() -> None:
    node = TaskNode(fn=add)
    spec([node], name="first")
    other = TaskNode(fn=add)
    spec([other, node], name="second")
    assert node.node_id == "first:0"
    assert node.index == 1
    assert other.node_id == "second:0"


def test_failed_build_writes_no_ids() -> None:
    node = TaskNode(fn=add)
    outside = TaskNode(fn=add)
    raised([node, TaskNode(fn=add, waits_for=[outside])])
    assert node.node_id is None


@pytest.mark.parametrize("name", ["", " ", None])
def test_e001_workflow_without_a_name(name: Any) -> None:
    only(raised([TaskNode(fn=add)], name=name), ErrorCode.WORKFLOW_NO_NAME)


@pytest.mark.parametrize("bad", ["", "   "])
def test_e003_empty_node_id(bad: str) -> None:
    error = only(raised([TaskNode(fn=add, node_id=bad)]), ErrorCode.WORKFLOW_INVALID_NODE_ID)
    assert error.message == "empty node id"


def test_e003_node_id_with_bad_characters() -> None:
    error = only(
        raised([TaskNode(fn=add, node_id="has space")]), ErrorCode.WORKFLOW_INVALID_NODE_ID
    )
    assert "has space" in error.message
    assert error.help_text is not None
    assert "'has_space'" in error.help_text


def test_e003_explicit_node_id_too_long() -> None:
    assert spec([TaskNode(fn=add, node_id="x" * 128)])
    error = only(raised([TaskNode(fn=add, node_id="x" * 129)]), ErrorCode.WORKFLOW_INVALID_NODE_ID)
    assert error.message == "node id too long"


def test_e003_generated_node_id_too_long_blames_the_workflow_name() -> None:
    assert spec([TaskNode(fn=add)], name="n" * 126)  # "nnn…:0" is 128 characters
    error = only(raised([TaskNode(fn=add)], name="n" * 127), ErrorCode.WORKFLOW_INVALID_NODE_ID)
    assert error.message == "workflow name too long"


def test_e004_duplicate_node_ids() -> None:
    nodes = [TaskNode(fn=add, node_id="same"), TaskNode(fn=add, node_id="same")]
    error = only(raised(nodes), ErrorCode.WORKFLOW_DUPLICATE_NODE_ID)
    assert "tasks[0] and tasks[1]" in error.notes[0]


def test_e004_explicit_id_colliding_with_a_generated_one() -> None:
    nodes = [TaskNode(fn=add), TaskNode(fn=add, node_id="wf:0")]
    only(raised(nodes), ErrorCode.WORKFLOW_DUPLICATE_NODE_ID)


def test_e004_same_node_object_listed_twice() -> None:
    node = TaskNode(fn=add)
    only(raised([node, node]), ErrorCode.WORKFLOW_DUPLICATE_NODE_ID)


def test_node_id_errors_are_collected() -> None:
    nodes = [TaskNode(fn=add, node_id=""), TaskNode(fn=add, node_id="a b")]
    error = raised(nodes)
    assert isinstance(error, MultipleValidationErrors)
    assert codes(error) == [ErrorCode.WORKFLOW_INVALID_NODE_ID] * 2
    assert error.report.phase_name == "workflow 'wf'"


def test_gate_one_stops_before_gate_two() -> None:
    outside = TaskNode(fn=add)
    # Bad id, plus problems gate 2 would report (no root, unknown dependency).
    nodes = [TaskNode(fn=add, node_id="bad id", waits_for=[outside])]
    only(raised(nodes), ErrorCode.WORKFLOW_INVALID_NODE_ID)


def test_tasks_must_be_nodes() -> None:
    error = raised([TaskNode(fn=add), add])
    assert isinstance(error, WorkflowValidationError)
    assert error.message == "workflow tasks must be TaskNode or SubWorkflowNode objects"


def test_task_node_fn_must_be_a_task_function() -> None:
    def plain() -> None: ...

    error = raised([TaskNode(fn=plain)])  # pyright: ignore[reportArgumentType]
    assert isinstance(error, WorkflowValidationError)
    assert error.message == "TaskNode fn is not a task function"


def test_sub_workflow_node_needs_a_definition_class() -> None:
    error = raised([SubWorkflowNode(workflow_def=object)])  # pyright: ignore[reportArgumentType]
    assert isinstance(error, WorkflowValidationError)
    assert "WorkflowDefinition" in error.message


# -- gate 2: the DAG checks, each with the error code that names the problem -----------------------


def test_e005_empty_workflow() -> None:
    error = only(raised([]), ErrorCode.WORKFLOW_NO_ROOT_TASKS)
    assert error.notes == ["tasks is empty"]


def test_e005_every_node_waits() -> None:
    a = TaskNode(fn=add)
    b = TaskNode(fn=add, waits_for=[a])
    a.waits_for = [b]
    error = raised([a, b])
    assert codes(error) == [ErrorCode.WORKFLOW_NO_ROOT_TASKS, ErrorCode.WORKFLOW_CYCLE_DETECTED]


def test_e006_dependency_outside_the_workflow() -> None:
    outside = TaskNode(fn=fetch, node_id="elsewhere")
    node = TaskNode(fn=add, waits_for=[outside])
    error = only(raised([TaskNode(fn=add), node]), ErrorCode.WORKFLOW_INVALID_DEPENDENCY)
    assert error.message == "node 'wf:1' waits for a node that is not in the workflow"
    assert "elsewhere" in error.notes[0]


def test_e006_identity_not_equality() -> None:
    member = TaskNode(fn=add)
    lookalike = TaskNode(fn=add)  # equal fields, different object
    dependent = TaskNode(fn=add, waits_for=[lookalike])
    only(raised([member, dependent]), ErrorCode.WORKFLOW_INVALID_DEPENDENCY)


def test_e006_waits_for_given_a_single_node() -> None:
    root = TaskNode(fn=add)
    node = TaskNode(fn=add, waits_for=root)  # pyright: ignore[reportArgumentType]
    error = only(raised([root, node]), ErrorCode.WORKFLOW_INVALID_DEPENDENCY)
    assert error.message == "waits_for must be a list of nodes"


def test_e007_cycle_is_reported_with_its_path() -> None:
    root = TaskNode(fn=add, node_id="root")
    a = TaskNode(fn=add, node_id="a", waits_for=[root])
    b = TaskNode(fn=add, node_id="b", waits_for=[a])
    c = TaskNode(fn=add, node_id="c", waits_for=[b])
    after = TaskNode(fn=add, node_id="after", waits_for=[c])
    a.waits_for = [root, c]
    error = only(raised([root, a, b, c, after]), ErrorCode.WORKFLOW_CYCLE_DETECTED)
    assert error.notes[0] == "'a' -> 'c' -> 'b' -> 'a'"


def test_e007_self_dependency() -> None:
    root = TaskNode(fn=add)
    node = TaskNode(fn=add, node_id="me")
    node.waits_for = [root, node]
    error = only(raised([root, node]), ErrorCode.WORKFLOW_CYCLE_DETECTED)
    assert error.notes[0] == "'me' -> 'me'"


def test_a_diamond_is_not_a_cycle() -> None:
    top = TaskNode(fn=add)
    left = TaskNode(fn=add, waits_for=[top])
    right = TaskNode(fn=add, waits_for=[top])
    bottom = TaskNode(fn=add, waits_for=[left, right, top])
    assert spec([bottom, left, right, top]).tasks[0] is bottom  # any order is fine


def test_e008_args_from_source_not_in_waits_for() -> None:
    a = TaskNode(fn=fetch)
    b = TaskNode(fn=fetch)
    node = TaskNode(fn=store, waits_for=[a], args_from={"raw": b})
    error = only(raised([a, b, node]), ErrorCode.WORKFLOW_INVALID_ARGS_FROM)
    assert error.message == "args_from['raw'] of node 'wf:2' is not in its waits_for"
    assert error.notes == ["source: 'wf:1'"]


def test_e009_ctx_from_entry_not_in_waits_for() -> None:
    a = TaskNode(fn=add)
    b = TaskNode(fn=add)
    node = TaskNode(fn=summarize, waits_for=[a], workflow_ctx_from=[a, b])
    only(raised([a, b, node]), ErrorCode.WORKFLOW_INVALID_CTX_FROM)


def test_e010_task_without_workflow_ctx_parameter() -> None:
    a = TaskNode(fn=add)
    node = TaskNode(fn=add, waits_for=[a], workflow_ctx_from=[a])
    error = only(raised([a, node]), ErrorCode.WORKFLOW_CTX_PARAM_MISSING)
    assert error.message == "task 'wf.add' does not declare a 'workflow_ctx' parameter"
    assert error.location is not None
    assert error.location.file.endswith("wf_app.py")  # points at the task function


def test_e010_var_keyword_is_not_a_workflow_ctx_parameter() -> None:
    a = TaskNode(fn=add)
    node = TaskNode(fn=no_ctx, waits_for=[a], workflow_ctx_from=[a])
    only(raised([a, node]), ErrorCode.WORKFLOW_CTX_PARAM_MISSING)


def test_workflow_ctx_parameter_accepted_positional_or_keyword_only() -> None:
    a = TaskNode(fn=add)
    b = TaskNode(fn=summarize, waits_for=[a], workflow_ctx_from=[a])
    c = TaskNode(fn=summarize_kwonly, waits_for=[a], workflow_ctx_from=[a])
    # An empty workflow_ctx_from asks for no context: no parameter needed.
    d = TaskNode(fn=add, waits_for=[a], workflow_ctx_from=[])
    assert len(spec([a, b, c, d]).tasks) == 4


def test_e011_output_not_in_tasks() -> None:
    a = TaskNode(fn=add)
    only(raised([a], output=TaskNode(fn=add)), ErrorCode.WORKFLOW_INVALID_OUTPUT)


def test_e011_output_as_string_outside_a_definition() -> None:
    a = TaskNode(fn=add, node_id="a")
    error = only(raised([a], output="a"), ErrorCode.WORKFLOW_INVALID_OUTPUT)
    assert "WorkflowDefinition" in error.notes[0]


def test_output_in_tasks_is_accepted() -> None:
    a = TaskNode(fn=add)
    b = TaskNode(fn=add, waits_for=[a])
    built = spec([a, b], output=b)
    assert built.output is b
    assert built.output_index == 1


def test_e012_policy_without_cases() -> None:
    a = TaskNode(fn=add)
    only(
        raised([a], success_policy=SuccessPolicy(cases=[])),
        ErrorCode.WORKFLOW_INVALID_SUCCESS_POLICY,
    )


def test_e012_case_without_required_nodes() -> None:
    a = TaskNode(fn=add)
    policy = SuccessPolicy(cases=[SuccessCase(required=[])])
    only(raised([a], success_policy=policy), ErrorCode.WORKFLOW_INVALID_SUCCESS_POLICY)


def test_e012_required_and_optional_nodes_must_be_in_tasks() -> None:
    a = TaskNode(fn=add)
    policy = SuccessPolicy(
        cases=[SuccessCase(required=[a, TaskNode(fn=add)])], optional=[TaskNode(fn=add)]
    )
    error = raised([a], success_policy=policy)
    assert codes(error) == [ErrorCode.WORKFLOW_INVALID_SUCCESS_POLICY] * 2


def test_e012_string_entries_outside_a_definition() -> None:
    a = TaskNode(fn=add, node_id="a")
    policy = SuccessPolicy(cases=[SuccessCase(required=["a"])])
    only(raised([a], success_policy=policy), ErrorCode.WORKFLOW_INVALID_SUCCESS_POLICY)


def test_e012_not_a_policy() -> None:
    a = TaskNode(fn=add)
    only(raised([a], success_policy=[a]), ErrorCode.WORKFLOW_INVALID_SUCCESS_POLICY)


def test_valid_success_policy() -> None:
    a = TaskNode(fn=add)
    b = TaskNode(fn=add)
    policy = SuccessPolicy(
        cases=[SuccessCase(required=[a]), SuccessCase(required=[b])], optional=[b]
    )
    assert spec([a, b], success_policy=policy).success_policy is policy


def quorum_node(**options: Any) -> list[AnyNode]:
    deps = [TaskNode(fn=add), TaskNode(fn=add), TaskNode(fn=add)]
    return [*deps, TaskNode(fn=add, waits_for=deps, **options)]


@pytest.mark.parametrize(
    "options",
    [
        {"join": "quorum"},
        {"join": "quorum", "min_success": 0},
        {"join": "quorum", "min_success": 4},
        {"join": "quorum", "min_success": True},
        {"join": "all", "min_success": 1},
        {"join": "any", "min_success": 2},
        {"join": "some"},
    ],
)
def test_e013_invalid_join(options: dict[str, Any]) -> None:
    only(raised(quorum_node(**options)), ErrorCode.WORKFLOW_INVALID_JOIN)


@pytest.mark.parametrize(
    "options",
    [{"join": "quorum", "min_success": 1}, {"join": "quorum", "min_success": 3}, {"join": "any"}],
)
def test_valid_joins(options: dict[str, Any]) -> None:
    assert spec(quorum_node(**options))


def test_e017_unsupported_retry_mode() -> None:
    node = SubWorkflowNode(workflow_def=Child, retry_mode=SubWorkflowRetryMode.RERUN_ALL)
    error = only(raised([node]), ErrorCode.WORKFLOW_INVALID_SUBWORKFLOW_RETRY_MODE)
    assert "RERUN_FAILED_ONLY" in (error.help_text or "")


def test_retry_mode_given_as_its_value_is_converted() -> None:
    node = SubWorkflowNode(workflow_def=Child, retry_mode="rerun_failed_only")  # pyright: ignore[reportArgumentType]
    spec([node])
    assert node.retry_mode is SubWorkflowRetryMode.RERUN_FAILED_ONLY


def test_e007_workflow_containing_itself_as_a_sub_workflow() -> None:
    error = only(
        raised([SubWorkflowNode(workflow_def=Child)], name="child"),
        ErrorCode.WORKFLOW_CYCLE_DETECTED,
    )
    assert error.notes[0] == "'child' -> 'child'"


def test_e007_definitions_containing_each_other() -> None:
    class DefA(WorkflowDefinition[int]):
        name = "cycle_a"
        start = TaskNode(fn=add)

    class DefB(WorkflowDefinition[int]):
        name = "cycle_b"
        inner = SubWorkflowNode(workflow_def=DefA)

    DefA.nested = SubWorkflowNode(workflow_def=DefB)  # pyright: ignore[reportAttributeAccessIssue]
    error = only(
        raised([SubWorkflowNode(workflow_def=DefA)], name="outer"),
        ErrorCode.WORKFLOW_CYCLE_DETECTED,
    )
    assert error.notes[0] == "'cycle_a' -> 'cycle_b' -> 'cycle_a'"
    with pytest.raises(WorkflowValidationError) as info:
        DefA.build(app)
    assert info.value.code is ErrorCode.WORKFLOW_CYCLE_DETECTED


def test_nested_definitions_without_a_cycle_are_fine() -> None:
    class Inner(WorkflowDefinition[int]):
        name = "inner_ok"
        step = TaskNode(fn=add)

    class Middle(WorkflowDefinition[int]):
        name = "middle_ok"
        first = SubWorkflowNode(workflow_def=Inner)
        second = SubWorkflowNode(workflow_def=Inner)

    assert spec([SubWorkflowNode(workflow_def=Middle), SubWorkflowNode(workflow_def=Inner)])


def test_gate_two_errors_are_collected_in_order() -> None:
    outside = TaskNode(fn=add)
    a = TaskNode(fn=add)
    b = TaskNode(fn=add, waits_for=[a, outside], join="quorum")
    error = raised([a, b], output=outside)
    assert isinstance(error, MultipleValidationErrors)
    assert codes(error) == [
        ErrorCode.WORKFLOW_INVALID_DEPENDENCY,
        ErrorCode.WORKFLOW_INVALID_JOIN,
        ErrorCode.WORKFLOW_INVALID_OUTPUT,
    ]
    assert "aborting due to 3 previous errors" in str(error)


# -- on_error (a string is accepted) and with_on_error ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("pause", OnError.PAUSE),
        ("PAUSE", OnError.PAUSE),
        ("fail", OnError.FAIL),
        (OnError.PAUSE, OnError.PAUSE),
    ],
)
def test_on_error_strings_are_coerced(value: Any, expected: OnError) -> None:
    built = spec([TaskNode(fn=add)], on_error=value)
    assert built.on_error is expected


def test_invalid_on_error() -> None:
    error = raised([TaskNode(fn=add)], on_error="explode")
    assert isinstance(error, WorkflowValidationError)
    assert error.message == "invalid on_error"


def test_with_on_error_returns_a_modified_copy() -> None:
    a = TaskNode(fn=add)
    original = app.workflow("copy me", [a])
    paused = original.with_on_error(OnError.PAUSE)
    assert paused is not original
    assert original.on_error is OnError.FAIL
    assert paused.on_error is OnError.PAUSE
    assert paused.tasks == original.tasks
    assert paused.tasks is not original.tasks
    assert paused.broker is original.broker
    assert paused.name == original.name
    assert a.node_id == "copy_me:0"
    assert original.with_on_error("pause").on_error is OnError.PAUSE


# -- registry --------------------------------------------------------------------------------------


def test_valid_specs_are_registered_last_one_wins() -> None:
    first = spec([TaskNode(fn=add)], name="registry-demo")
    assert registered_spec("registry-demo") is first
    second = spec([TaskNode(fn=add)], name="registry-demo")
    assert registered_spec("registry-demo") is second
    raised([], name="registry-demo")
    assert registered_spec("registry-demo") is second
    raised([], name="registry-never-valid")
    assert registered_spec("registry-never-valid") is None


# -- queues and priorities (also for a spec built directly with a broker) --------------------------


def test_direct_spec_resolves_queue_and_priority_from_the_task() -> None:
    default_node = TaskNode(fn=add)
    fast = TaskNode(fn=fast_job)
    slow_override = TaskNode(fn=fast_job, queue="slow")
    pinned = TaskNode(fn=slow_job, priority=7)
    spec([default_node, fast, slow_override, pinned])
    assert (default_node.queue, default_node.priority) == ("default", 100)
    assert (fast.queue, fast.priority) == ("fast", 3)
    assert (slow_override.queue, slow_override.priority) == ("slow", 70)
    assert (pinned.queue, pinned.priority) == ("slow", 7)


def test_app_workflow_sets_queue_priority_and_broker() -> None:
    fast = TaskNode(fn=fast_job)
    slow = TaskNode(fn=fast_job, queue="slow", waits_for=[fast])
    built = custom_app.workflow("custom", [fast, slow], on_error="pause", output=slow)
    assert (fast.queue, fast.priority) == ("fast", 3)
    assert (slow.queue, slow.priority) == ("slow", 70)
    assert built.broker is custom_app.get_broker()
    assert built.on_error is OnError.PAUSE
    assert built.output is slow
    assert built.workflow_def_module is None
    assert built.workflow_def_qualname is None


def test_app_workflow_skips_sub_workflow_nodes_for_queues() -> None:
    node = SubWorkflowNode(workflow_def=Child)
    built = app.workflow("with child", [node])
    assert built.tasks == [node]


def test_e200_non_default_queue_in_default_mode() -> None:
    with pytest.raises(ConfigurationError) as info:
        app.workflow("bad queue", [TaskNode(fn=add, queue="fast")])
    assert info.value.code is ErrorCode.CONFIG_INVALID_QUEUE_MODE
    assert info.value.message == "TaskNode has non-default queue in DEFAULT mode"


def test_e103_unknown_queue_in_custom_mode() -> None:
    with pytest.raises(ConfigurationError) as info:
        custom_app.workflow("bad queue", [TaskNode(fn=fast_job, queue="nowhere")])
    assert info.value.code is ErrorCode.TASK_INVALID_QUEUE
    assert info.value.message == "TaskNode queue not in app config"


def test_queue_errors_are_collected_as_configuration_errors() -> None:
    nodes = [TaskNode(fn=fast_job, queue="x"), TaskNode(fn=fast_job, queue="y")]
    with pytest.raises(MultipleConfigurationErrors) as info:
        custom_app.workflow("two bad queues", nodes)
    assert isinstance(info.value, ValueError)
    assert [error.code for error in info.value.errors] == [ErrorCode.TASK_INVALID_QUEUE] * 2


def test_app_workflow_runs_the_spec_validation() -> None:
    with pytest.raises(WorkflowValidationError) as info:
        app.workflow("empty", [])
    assert info.value.code is ErrorCode.WORKFLOW_NO_ROOT_TASKS


# -- start -----------------------------------------------------------------------------------------


def test_start_without_broker_raises() -> None:
    built = spec([TaskNode(fn=add)])
    with pytest.raises(RuntimeError, match="requires a broker"):
        built.start()


async def test_start_async_without_broker_raises() -> None:
    built = spec([TaskNode(fn=add)])
    with pytest.raises(RuntimeError, match="requires a broker"):
        await built.start_async("some-id")


def test_start_delegates_to_start_workflow(monkeypatch: pytest.MonkeyPatch) -> None:
    import horsies.workflows.start as start_module

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        start_module,
        "start_workflow",
        lambda *args, within: calls.append((*args, within)) or "handle",
    )
    built = app.workflow("delegating", [TaskNode(fn=add)])
    assert built.start("wf-id") == "handle"
    assert calls == [(built, app.get_broker(), "wf-id", None)]


async def test_start_async_delegates_to_start_workflow_async(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import horsies.workflows.start as start_module

    calls: list[tuple[Any, ...]] = []

    async def fake(*args: Any, within: Any) -> str:
        calls.append((*args, within))
        return "handle"

    monkeypatch.setattr(start_module, "start_workflow_async", fake)
    built = app.workflow("delegating async", [TaskNode(fn=add)])
    assert await built.start_async() == "handle"
    assert calls == [(built, app.get_broker(), None, None)]


def test_spec_repr() -> None:
    built = spec([TaskNode(fn=add)], name="shown")
    assert repr(built) == "WorkflowSpec(name='shown', tasks=1, on_error='fail')"


# -- node arguments against the task's parameters ------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: [TaskNode(fn=add, args=(1, 2, 3))], "too many positional arguments"),
        (lambda: [TaskNode(fn=add, kwargs={"c": 3})], "unexpected keyword argument 'c'"),
        (
            lambda: (
                a := TaskNode(fn=fetch),
                [a, TaskNode(fn=add, waits_for=[a], args_from={"raw": a})],
            )[1],
            "unexpected keyword argument 'raw'",
        ),
        (
            lambda: (
                a := TaskNode(fn=fetch),
                [a, TaskNode(fn=store, waits_for=[a], args=(1,), args_from={"raw": a})],
            )[1],
            "multiple values for argument 'raw'",
        ),
    ],
)
def test_node_arguments_that_cannot_bind_are_refused_at_build(make: Any, reason: str) -> None:
    error = only(raised(make()), ErrorCode.WORKFLOW_INVALID_NODE_ARGS)
    assert reason in str(error)
    assert "parameters: " in str(error)


def test_node_arguments_count_what_the_workflow_fills_in() -> None:
    a = TaskNode(fn=fetch)
    spec([a, TaskNode(fn=store, waits_for=[a], args_from={"raw": a})])
    spec([a, TaskNode(fn=summarize, waits_for=[a], workflow_ctx_from=[a])])
    spec([TaskNode(fn=add, args=(1,), kwargs={"b": 5})])
