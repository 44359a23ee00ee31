"""Apps, tasks and definitions shared by the workflow tests.

Nothing here connects to a database: building specs, validating them and creating a broker object
do no I/O. `app` uses the DEFAULT queue mode; `custom_app` uses CUSTOM mode with two queues.
"""

from __future__ import annotations

from horsies import (
    AppConfig,
    CustomQueueConfig,
    Horsies,
    OnError,
    PostgresConfig,
    QueueMode,
    SubWorkflowNode,
    SuccessCase,
    SuccessPolicy,
    TaskError,
    TaskNode,
    TaskResult,
    WorkflowContext,
    WorkflowDefinition,
)
from pydantic import BaseModel

UNUSED_URL = "postgresql+psycopg://u:p@localhost:1/unused"

app = Horsies(AppConfig(broker=PostgresConfig(database_url=UNUSED_URL)))

custom_app = Horsies(
    AppConfig(
        broker=PostgresConfig(database_url=UNUSED_URL),
        queue_mode=QueueMode.CUSTOM,
        custom_queues=[
            CustomQueueConfig(name="fast", priority=3),
            CustomQueueConfig(name="slow", priority=70),
        ],
    )
)


class Report(BaseModel):
    """An importable model, used as a workflow output."""

    title: str
    rows: int


# -- tasks of the DEFAULT-mode app -----------------------------------------------------------------


@app.task("wf.fetch")
def fetch(url: str = "https://example.invalid") -> TaskResult[str, TaskError]:
    return TaskResult(ok=f"data from {url}")


@app.task("wf.store")
def store(raw: TaskResult[str, TaskError] | None = None) -> TaskResult[bool, TaskError]:
    return TaskResult(ok=raw is not None and raw.is_ok())


@app.task("wf.add")
def add(a: int = 1, b: int = 2) -> TaskResult[int, TaskError]:
    return TaskResult(ok=a + b)


@app.task("wf.summarize")
def summarize(workflow_ctx: WorkflowContext | None = None) -> TaskResult[int, TaskError]:
    return TaskResult(ok=0 if workflow_ctx is None else workflow_ctx.task_index)


@app.task("wf.summarize_kwonly")
def summarize_kwonly(*, workflow_ctx: WorkflowContext | None = None) -> TaskResult[int, TaskError]:
    return TaskResult(ok=0 if workflow_ctx is None else 1)


@app.task("wf.no_ctx")
def no_ctx(**extra: object) -> TaskResult[int, TaskError]:
    return TaskResult(ok=len(extra))


# -- tasks of the CUSTOM-mode app ------------------------------------------------------------------


@custom_app.task("wf.fast", queue_name="fast")
def fast_job() -> TaskResult[int, TaskError]:
    return TaskResult(ok=1)


@custom_app.task("wf.slow", queue_name="slow")
def slow_job() -> TaskResult[int, TaskError]:
    return TaskResult(ok=2)


# -- class-based definitions -----------------------------------------------------------------------

_fetch = TaskNode(fn=fetch, args=("https://x",))
_store = TaskNode(fn=store, waits_for=[_fetch], args_from={"raw": _fetch})


class Pipeline(WorkflowDefinition[bool]):
    """The documented example: Meta refers to module-level names."""

    name = "pipeline"
    fetch = _fetch
    store = _store

    class Meta:
        output = _store
        on_error = OnError.FAIL


class NamedMetaPipeline(WorkflowDefinition[int]):
    """Meta given as attribute names, on_error as a string."""

    name = "named meta pipeline"
    first = TaskNode(fn=add, kwargs={"a": 1, "b": 1})
    second = TaskNode(fn=add, node_id="explicit-second")
    last = TaskNode(fn=add, waits_for=[first, second])

    class Meta:
        output = "last"
        on_error = "pause"
        success_policy = SuccessPolicy(
            cases=[SuccessCase(required=["first", "last"])], optional=["second"]
        )


class Child(WorkflowDefinition[int]):
    """A one-node child workflow."""

    name = "child"
    only = TaskNode(fn=add)


class Parent(WorkflowDefinition[int]):
    """Runs `Child` as a sub-workflow after a first task."""

    name = "parent"
    prepare = TaskNode(fn=add)
    child = SubWorkflowNode(workflow_def=Child, kwargs={"size": 2}, waits_for=[prepare])
