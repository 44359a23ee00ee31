"""App of the traces end-to-end tests (DEFAULT mode).

Imported by a worker whose environment names a folder in ``HORSIES_E2E_SPANS``, it sets an SDK
tracer provider that writes every span, as it ends, to a JSON-lines file of that folder, one file
per process (the worker's main process and each child): the test reads them back with
``span_capture.read_span_files``. Imported by the test process (no such variable), it exports
nothing: the test captures its own spans in memory.

The tests import this module as ``tests.e2e.apps.traced`` (see ``wf_apps``), the name the worker
re-imports the workflow definitions under.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from horsies import (
    AppConfig,
    Horsies,
    PostgresConfig,
    RetryPolicy,
    SubWorkflowNode,
    TaskContext,
    TaskError,
    TaskNode,
    TaskResult,
    WorkflowDefinition,
)
from opentelemetry import trace

from tests.span_capture import install_file_exporter

ENV_URL = "HORSIES_E2E_DATABASE_URL"
ENV_SPANS = "HORSIES_E2E_SPANS"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"

NESTED_SPAN = "traced.inside"
"""The span `traced.nested` makes inside the task: a child of the run span."""


def create_app(database_url: str) -> Horsies:
    """The app with its tasks (the same names in the worker and the test process)."""
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))

    @app.task("traced.add")
    def add(a: int, b: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=a + b)

    @app.task("traced.fail")
    def fail(message: str) -> TaskResult[int, TaskError]:
        raise ValueError(message)

    @app.task(
        "traced.flaky",
        retry_policy=RetryPolicy.fixed([1], jitter=False),
        auto_retry_for=["FLAKY"],
    )
    def flaky(task_ctx: TaskContext | None = None) -> TaskResult[int, TaskError]:
        assert task_ctx is not None
        if task_ctx.attempt == 1:
            return TaskResult(err=TaskError(error_code="FLAKY", message="first attempt fails"))
        return TaskResult(ok=task_ctx.attempt)

    @app.task("traced.nested")
    def nested() -> TaskResult[str, TaskError]:
        with trace.get_tracer("traced-app").start_as_current_span(NESTED_SPAN) as span:
            return TaskResult(ok=f"{span.get_span_context().span_id:016x}")

    @app.task("traced.async_add")
    async def async_add(a: int, b: int) -> TaskResult[int, TaskError]:
        await asyncio.sleep(0)
        return TaskResult(ok=a + b)

    @app.task("traced.double")
    def double(value: TaskResult[int, TaskError]) -> TaskResult[int, TaskError]:
        return TaskResult(ok=value.unwrap() * 2)

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))

_add: Any = app.tasks["traced.add"]
_double: Any = app.tasks["traced.double"]


class Child(WorkflowDefinition[int]):
    """A child workflow of one node: 1 + 2."""

    name = "traced_child"
    one = TaskNode(fn=_add, args=(1, 2))

    class Meta:
        output = "one"


_first = TaskNode(fn=_add, args=(2, 3))


class Pipeline(WorkflowDefinition[dict[str, Any]]):
    """first (2 + 3) -> second (doubles it), and the child workflow beside second."""

    name = "traced_pipeline"
    first = _first
    second = TaskNode(fn=_double, waits_for=[_first], args_from={"value": _first})
    child = SubWorkflowNode(workflow_def=Child, waits_for=[_first])


_spans = os.environ.get(ENV_SPANS)
if _spans:
    install_file_exporter(Path(_spans))
