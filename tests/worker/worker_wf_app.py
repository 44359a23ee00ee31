"""Tasks with workflow parameters, for the worker-child injection tests (run in-process).

Each probe records the keyword arguments it received in ``RECEIVED`` so a test can look at the
actual objects. Never connects to a database.
"""

from __future__ import annotations

from typing import Any

from horsies import TaskContext
from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult
from horsies.workflows.context import WorkflowContext, WorkflowMeta
from horsies.workflows.nodes import TaskNode
from pydantic import BaseModel

app = Horsies(
    AppConfig(broker=PostgresConfig(database_url="postgresql+psycopg://u:p@localhost:1/unused"))
)

RECEIVED: list[dict[str, Any]] = []
"""Keyword arguments seen by the probes, most recent last."""


class Report(BaseModel):
    """A rich value carried as a child workflow's output."""

    title: str
    pages: int


@app.task("wf.ctx_probe")
def ctx_probe(
    n: int = 0, workflow_ctx: WorkflowContext | None = None
) -> TaskResult[int, TaskError]:
    RECEIVED.append({"n": n, "workflow_ctx": workflow_ctx})
    return TaskResult(ok=n)


@app.task("wf.meta_probe")
def meta_probe(workflow_meta: WorkflowMeta | None = None) -> TaskResult[int, TaskError]:
    RECEIVED.append({"workflow_meta": workflow_meta})
    return TaskResult(ok=0 if workflow_meta is None else workflow_meta.task_index)


@app.task("wf.task_ctx_probe")
def task_ctx_probe(n: int, task_ctx: TaskContext | None = None) -> TaskResult[int, TaskError]:
    RECEIVED.append({"task_ctx": task_ctx})
    return TaskResult(ok=n)


@app.task("wf.meta_no_default")
def meta_no_default(workflow_meta: WorkflowMeta | None) -> TaskResult[bool, TaskError]:
    RECEIVED.append({"workflow_meta": workflow_meta})
    return TaskResult(ok=workflow_meta is not None)


@app.task("wf.both")
def both(
    raw: TaskResult[int, TaskError],
    *,
    workflow_ctx: WorkflowContext | None = None,
    workflow_meta: WorkflowMeta | None = None,
) -> TaskResult[int, TaskError]:
    RECEIVED.append({"raw": raw, "workflow_ctx": workflow_ctx, "workflow_meta": workflow_meta})
    return TaskResult(ok=raw.unwrap() + 1)


@app.task("wf.plain")
def plain(n: int) -> TaskResult[int, TaskError]:
    return TaskResult(ok=n * 2)


@app.task("wf.catch_all")
def catch_all(**kwargs: Any) -> TaskResult[list[str], TaskError]:
    RECEIVED.append(dict(kwargs))
    return TaskResult(ok=sorted(kwargs))


@app.task("wf.positional_only")
def positional_only(workflow_meta: object = "unset", /) -> TaskResult[str, TaskError]:
    return TaskResult(ok=repr(workflow_meta))


@app.task("wf.missing_id")
def missing_id(workflow_ctx: WorkflowContext | None = None) -> TaskResult[int, TaskError]:
    assert workflow_ctx is not None
    # A node that never went through a spec has no node_id.
    unbuilt = TaskNode(fn=plain, args=(1,))
    return workflow_ctx.result_for(unbuilt)
