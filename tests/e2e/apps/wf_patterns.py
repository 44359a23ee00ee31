"""CUSTOM-mode app for the workflow-pattern end-to-end tests.

Two queues: ``main`` (priority 10, every task's own queue) and ``alt`` (priority 50, used only by
node overrides). Tasks, nodes and class-based definitions live at module level so that the worker
(its main process evaluates conditions and advances workflows, its children run the tasks) finds
them by importing ``tests.e2e.apps.wf_patterns``. The tests import this module under that same
name, so the definition module recorded on each workflow row is importable by the worker.

Nodes whose task reads a `WorkflowContext` by node object carry an explicit ``node_id``: in a
worker child the definition is never built, so only explicit ids are set there.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

from horsies import (
    AppConfig,
    CustomQueueConfig,
    Horsies,
    NodeKey,
    PostgresConfig,
    QueueMode,
    RetryPolicy,
    SuccessCase,
    SuccessPolicy,
    TaskError,
    TaskNode,
    TaskResult,
    WorkflowContext,
    WorkflowDefinition,
    WorkflowMeta,
)

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"

MAIN_PRIORITY = 10
ALT_PRIORITY = 50
DECORATOR_GOOD_UNTIL = datetime(2099, 1, 1, tzinfo=UTC)
GATE_TIMEOUT_S = 60.0


def make_app(database_url: str) -> Horsies:
    """An app with this module's queue configuration (the test process uses it as producer)."""
    return Horsies(
        AppConfig(
            broker=PostgresConfig(database_url=database_url),
            queue_mode=QueueMode.CUSTOM,
            custom_queues=[
                CustomQueueConfig(name="main", priority=MAIN_PRIORITY),
                CustomQueueConfig(name="alt", priority=ALT_PRIORITY),
            ],
        )
    )


app = make_app(os.environ.get(ENV_URL, _UNUSED_URL))


def describe(result: object) -> dict[str, Any]:
    """A JSON-able picture of an injected value: its type and, for a TaskResult, its content."""
    if not isinstance(result, TaskResult):
        return {"type": type(result).__name__, "value": repr(result)}
    picture: dict[str, Any] = {"type": "TaskResult", "is_ok": result.is_ok()}
    if result.is_ok():
        picture["ok"] = result.ok
    else:
        error = result.err
        assert isinstance(error, TaskError)
        picture["code"] = str(error.error_code)
        picture["message"] = error.message
        picture["data"] = error.data
    return picture


# -- tasks -----------------------------------------------------------------------------------------


@app.task("wfp.value", queue_name="main")
def value(v: Any) -> TaskResult[Any, TaskError]:
    return TaskResult(ok=v)


@app.task("wfp.fail", queue_name="main")
def fail(message: str = "boom") -> TaskResult[Any, TaskError]:
    return TaskResult(err=TaskError(error_code="BOOM", message=message, data={"message": message}))


@app.task("wfp.inspect", queue_name="main")
def inspect_arg(x: Any = None) -> TaskResult[dict[str, Any], TaskError]:
    """What arrived as ``x`` (args_from injects a TaskResult)."""
    return TaskResult(ok=describe(x))


@app.task("wfp.mul", queue_name="main")
def mul(x: TaskResult[int, TaskError], k: int) -> TaskResult[int, TaskError]:
    return TaskResult(ok=x.unwrap() * k)


@app.task("wfp.sum3", queue_name="main")
def sum3(
    a: TaskResult[int, TaskError], b: TaskResult[int, TaskError], c: TaskResult[int, TaskError]
) -> TaskResult[int, TaskError]:
    return TaskResult(ok=a.unwrap() + b.unwrap() + c.unwrap())


@app.task("wfp.square", queue_name="main")
def square(x: TaskResult[int, TaskError]) -> TaskResult[int, TaskError]:
    return TaskResult(ok=x.unwrap() ** 2)


@app.task("wfp.sum2", queue_name="main")
def sum2(
    a: TaskResult[int, TaskError], b: TaskResult[int, TaskError]
) -> TaskResult[int, TaskError]:
    return TaskResult(ok=a.unwrap() + b.unwrap())


@app.task("wfp.describe", queue_name="main")
def describe_all(**injected: Any) -> TaskResult[dict[str, Any], TaskError]:
    """A picture of every injected keyword argument, by name."""
    return TaskResult(ok={name: describe(v) for name, v in sorted(injected.items())})


@app.task("wfp.ctx", queue_name="main")
def read_ctx(
    ids: list[str], workflow_ctx: WorkflowContext | None = None
) -> TaskResult[dict[str, Any], TaskError]:
    """What the WorkflowContext holds for each of ``ids`` (``None`` when it is absent)."""
    if workflow_ctx is None:
        return TaskResult(ok={"ctx": None})
    seen: dict[str, Any] = {}
    for node_id in ids:
        key: NodeKey[Any] = NodeKey(node_id)
        if workflow_ctx.has_result(key):
            seen[node_id] = describe(workflow_ctx.result_for(key))
        else:
            try:
                workflow_ctx.result_for(key)
                seen[node_id] = "no KeyError"
            except KeyError:
                seen[node_id] = None
    by_object = workflow_ctx.result_for(ctx_a).unwrap() if workflow_ctx.has_result(ctx_a) else None
    return TaskResult(
        ok={
            "workflow_id": workflow_ctx.workflow_id,
            "task_index": workflow_ctx.task_index,
            "task_name": workflow_ctx.task_name,
            "seen": seen,
            "by_node_object": by_object,
        }
    )


@app.task("wfp.meta", queue_name="main")
def read_meta(workflow_meta: WorkflowMeta | None = None) -> TaskResult[Any, TaskError]:
    if workflow_meta is None:
        return TaskResult(ok=None)
    return TaskResult(
        ok={
            "type": type(workflow_meta).__name__,
            "workflow_id": workflow_meta.workflow_id,
            "task_index": workflow_meta.task_index,
            "task_name": workflow_meta.task_name,
        }
    )


@app.task("wfp.gate", queue_name="main")
def gate(path: str, result: Any = "opened") -> TaskResult[Any, TaskError]:
    """Block until the test creates ``path`` (bounded), then return ``result``."""
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return TaskResult(err=TaskError(error_code="GATE_TIMEOUT", message=path))
        time.sleep(0.02)
    return TaskResult(ok=result)


@app.task(
    "wfp.flaky",
    queue_name="main",
    retry_policy=RetryPolicy.fixed([1], jitter=False),
    auto_retry_for=["FLAKY"],
)
def flaky(attempts_path: str, gate_path: str) -> TaskResult[int, TaskError]:
    """First attempt fails with FLAKY; the retry waits for the gate, then returns the attempt."""
    with open(attempts_path, "a", encoding="utf-8") as fh:
        fh.write("x\n")
    with open(attempts_path, encoding="utf-8") as fh:
        attempt = sum(1 for _ in fh)
    if attempt == 1:
        return TaskResult(err=TaskError(error_code="FLAKY", message="first attempt"))
    opened = gate(gate_path)
    return TaskResult(ok=attempt) if opened.is_ok() else TaskResult(err=opened.unwrap_err())


@app.task("wfp.expiring", queue_name="main", good_until=DECORATOR_GOOD_UNTIL)
def expiring(v: Any) -> TaskResult[Any, TaskError]:
    return TaskResult(ok=v)


# -- chain with args_from --------------------------------------------------------------------------

chain_a = TaskNode(fn=value, args=(20,))
chain_b = TaskNode(
    fn=inspect_arg, kwargs={"x": "static value"}, waits_for=[chain_a], args_from={"x": chain_a}
)
chain_c = TaskNode(fn=inspect_arg, waits_for=[chain_b], args_from={"x": chain_b})


class ChainWorkflow(WorkflowDefinition[dict[str, Any]]):
    name = "wfp_chain"
    a = chain_a
    b = chain_b
    c = chain_c

    class Meta:
        output = "c"


# -- fan-out / fan-in (the same task function three times) -----------------------------------------

fan_src = TaskNode(fn=value, args=(3,))
fan_x1 = TaskNode(fn=mul, kwargs={"k": 1}, waits_for=[fan_src], args_from={"x": fan_src})
fan_x2 = TaskNode(fn=mul, kwargs={"k": 2}, waits_for=[fan_src], args_from={"x": fan_src})
fan_x3 = TaskNode(fn=mul, kwargs={"k": 3}, waits_for=[fan_src], args_from={"x": fan_src})
fan_total = TaskNode(
    fn=sum3,
    waits_for=[fan_x1, fan_x2, fan_x3],
    args_from={"a": fan_x1, "b": fan_x2, "c": fan_x3},
)


class FanWorkflow(WorkflowDefinition[int]):
    name = "wfp_fan"
    src = fan_src
    x1 = fan_x1
    x2 = fan_x2
    x3 = fan_x3
    total = fan_total

    class Meta:
        output = fan_total


# -- diamond ---------------------------------------------------------------------------------------

dia_top = TaskNode(fn=value, args=(2,))
dia_left = TaskNode(fn=mul, kwargs={"k": 10}, waits_for=[dia_top], args_from={"x": dia_top})
dia_right = TaskNode(fn=square, waits_for=[dia_top], args_from={"x": dia_top})
dia_bottom = TaskNode(
    fn=sum2, waits_for=[dia_left, dia_right], args_from={"a": dia_left, "b": dia_right}
)


class DiamondWorkflow(WorkflowDefinition[int]):
    name = "wfp_diamond"
    top = dia_top
    left = dia_left
    right = dia_right
    bottom = dia_bottom


# -- join all with a failure: skip cascade, on_error FAIL ------------------------------------------

casc_ok = TaskNode(fn=value, args=(1,))
casc_bad = TaskNode(fn=fail, kwargs={"message": "cascade root failed"}, waits_for=[casc_ok])
casc_mid = TaskNode(fn=value, args=("never",), waits_for=[casc_bad])
casc_end = TaskNode(fn=value, args=("never",), waits_for=[casc_mid])
casc_side = TaskNode(fn=value, args=("side",), waits_for=[casc_ok])


class CascadeWorkflow(WorkflowDefinition[Any]):
    name = "wfp_cascade"
    ok = casc_ok
    bad = casc_bad
    mid = casc_mid
    end = casc_end
    side = casc_side


# -- allow_failed_deps: err result and UPSTREAM_SKIPPED sentinel -----------------------------------

afd_ok = TaskNode(fn=value, args=(5,))
afd_bad = TaskNode(fn=fail, kwargs={"message": "dependency failed"})
afd_skipped = TaskNode(fn=value, args=("never",), waits_for=[afd_bad])
afd_recover = TaskNode(
    fn=describe_all,
    waits_for=[afd_ok, afd_bad, afd_skipped],
    args_from={"good": afd_ok, "failed": afd_bad, "skipped": afd_skipped},
    allow_failed_deps=True,
)


class AllowFailedWorkflow(WorkflowDefinition[Any]):
    name = "wfp_allow_failed"
    ok = afd_ok
    bad = afd_bad
    skipped = afd_skipped
    recover = afd_recover


# -- workflow_ctx_from -----------------------------------------------------------------------------

ctx_a = TaskNode(fn=value, args=(10,), node_id="ctx_a")
ctx_b = TaskNode(fn=fail, kwargs={"message": "b failed"}, node_id="ctx_b")
ctx_c = TaskNode(fn=value, args=(30,), node_id="ctx_c")
ctx_reader = TaskNode(
    fn=read_ctx,
    kwargs={"ids": ["ctx_a", "ctx_b", "ctx_c"]},
    waits_for=[ctx_a, ctx_b, ctx_c],
    workflow_ctx_from=[ctx_a, ctx_b],
    allow_failed_deps=True,
    node_id="ctx_reader",
)


class ContextWorkflow(WorkflowDefinition[Any]):
    name = "wfp_context"
    a = ctx_a
    b = ctx_b
    c = ctx_c
    reader = ctx_reader

    class Meta:
        output = ctx_reader


# -- WorkflowMeta injection -----------------------------------------------------------------------

meta_first = TaskNode(fn=value, args=(0,))
meta_reader = TaskNode(fn=read_meta, waits_for=[meta_first])


class MetaWorkflow(WorkflowDefinition[Any]):
    name = "wfp_meta"
    first = meta_first
    reader = meta_reader

    class Meta:
        output = meta_reader


# -- conditions (run_when / skip_when) -----------------------------------------------------------


def _always(ctx: WorkflowContext) -> bool:
    del ctx
    return True


def _never(ctx: WorkflowContext) -> bool:
    del ctx
    return False


def _raises(ctx: WorkflowContext) -> bool:
    raise RuntimeError(f"condition failed in {ctx.workflow_id}")


def _src_is_five(ctx: WorkflowContext) -> bool:
    # No workflow_ctx_from on the node: the condition must still see its dependency.
    return ctx.result_for(NodeKey("cond_src")).unwrap() == 5


def _only_ctx_from_visible(ctx: WorkflowContext) -> bool:
    return ctx.has_result(NodeKey("cond_other")) and not ctx.has_result(NodeKey("cond_src"))


def _root_context_is_empty(ctx: WorkflowContext) -> bool:
    # Root nodes are evaluated too, with an empty context.
    return not ctx.has_result(NodeKey("cond_src")) and ctx.task_name == "wfp.value"


cond_src = TaskNode(fn=value, args=(5,), node_id="cond_src")
cond_other = TaskNode(fn=value, args=(6,), node_id="cond_other")
cond_skip_wins = TaskNode(
    fn=value, args=("ran",), waits_for=[cond_src], skip_when=_always, run_when=_always
)
cond_run_false = TaskNode(fn=value, args=("ran",), waits_for=[cond_src], run_when=_never)
cond_after_skip = TaskNode(fn=value, args=("ran",), waits_for=[cond_run_false])
cond_run_true = TaskNode(fn=value, args=("ran",), waits_for=[cond_src], run_when=_src_is_five)
cond_skip_false = TaskNode(fn=value, args=("ran",), waits_for=[cond_src], skip_when=_never)
cond_raises = TaskNode(fn=value, args=("ran",), waits_for=[cond_src], run_when=_raises)
cond_ctx_from = TaskNode(
    fn=read_ctx,
    kwargs={"ids": ["cond_src", "cond_other"]},
    waits_for=[cond_src, cond_other],
    workflow_ctx_from=[cond_other],
    run_when=_only_ctx_from_visible,
)
cond_root_skipped = TaskNode(fn=value, args=("ran",), run_when=_never)
cond_root_runs = TaskNode(fn=value, args=("ran",), run_when=_root_context_is_empty)


class ConditionWorkflow(WorkflowDefinition[Any]):
    name = "wfp_conditions"
    src = cond_src
    other = cond_other
    skip_wins = cond_skip_wins
    run_false = cond_run_false
    after_skip = cond_after_skip
    run_true = cond_run_true
    skip_false = cond_skip_false
    raises = cond_raises
    ctx_from = cond_ctx_from
    root_skipped = cond_root_skipped
    root_runs = cond_root_runs


# -- success policies ------------------------------------------------------------------------------

sp_ok_a = TaskNode(fn=value, args=(1,))
sp_ok_bad = TaskNode(fn=fail, kwargs={"message": "tolerated"})
sp_ok_c = TaskNode(fn=value, args=(3,), waits_for=[sp_ok_a])


class PolicySatisfiedWorkflow(WorkflowDefinition[Any]):
    name = "wfp_policy_satisfied"
    a = sp_ok_a
    bad = sp_ok_bad
    c = sp_ok_c

    class Meta:
        success_policy = SuccessPolicy(
            cases=[SuccessCase(required=["bad"]), SuccessCase(required=["a", "c"])],
            optional=["bad"],
        )


sp_fail_x = TaskNode(fn=value, args=(1,))
sp_fail_y = TaskNode(fn=fail, kwargs={"message": "y failed first"})
# Runs after y failed and fails too: the most recent failure is z's, the reported one must be y's.
sp_fail_z = TaskNode(
    fn=fail, kwargs={"message": "z failed last"}, waits_for=[sp_fail_y], allow_failed_deps=True
)


class PolicyFailedWorkflow(WorkflowDefinition[Any]):
    name = "wfp_policy_failed"
    x = sp_fail_x
    y = sp_fail_y
    z = sp_fail_z

    class Meta:
        success_policy = SuccessPolicy(
            cases=[SuccessCase(required=["z"]), SuccessCase(required=["x", "y"])]
        )


sp_nm_p = TaskNode(fn=value, args=(1,))
sp_nm_q = TaskNode(fn=fail, kwargs={"message": "q failed"})
sp_nm_r = TaskNode(fn=value, args=("never",), waits_for=[sp_nm_q])


class PolicyNotMetWorkflow(WorkflowDefinition[Any]):
    name = "wfp_policy_not_met"
    p = sp_nm_p
    q = sp_nm_q
    r = sp_nm_r

    class Meta:
        success_policy = SuccessPolicy(cases=[SuccessCase(required=["p", "r"])])


# -- queue / priority override ---------------------------------------------------------------------

qp_plain = TaskNode(fn=value, args=("plain",))
qp_override = TaskNode(fn=value, args=("override",), queue="alt", priority=7)
qp_queue_only = TaskNode(fn=value, args=("queue only",), queue="alt")


class QueueOverrideWorkflow(WorkflowDefinition[Any]):
    name = "wfp_queue_override"
    plain = qp_plain
    override = qp_override
    queue_only = qp_queue_only


# -- idempotent start ------------------------------------------------------------------------------

idem_a = TaskNode(fn=value, args=("a",))
idem_b = TaskNode(fn=value, args=("b",), waits_for=[idem_a])


class IdempotentWorkflow(WorkflowDefinition[Any]):
    name = "wfp_idempotent"
    a = idem_a
    b = idem_b
