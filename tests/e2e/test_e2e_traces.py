"""Traces across a real worker (``horsies-core[otel]``): the test process keeps its send spans
in memory, the worker's processes write theirs to files (``apps/traced.py``). One trace per send,
the run span a child of the send span (for ``def`` and ``async def`` tasks, and the task's own
spans children of the run span); a failure and a retry recorded on the run spans; every node of a
workflow, a child workflow's too, run in the trace of the workflow's start.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_harness import StartWorker, WorkerProcess, producer_app, wait_until
from horsies.app import Horsies
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from span_capture import SpanRecord, captured_spans, read_span_files, record_of
from wf_apps import traced

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GET_MS = 30_000
SPANS_WAIT_S = 10.0

app = producer_app(traced.create_app)


@pytest.fixture(scope="module")
def span_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the worker's processes write their spans to."""
    return tmp_path_factory.mktemp("spans")


@pytest.fixture(scope="module")
def worker(start_worker: StartWorker, app: Horsies, span_files: Path) -> WorkerProcess:
    del app  # the producer creates the schema before the worker starts
    with pytest.MonkeyPatch.context() as patch:
        # Read into the worker's environment when it is started; the test process never
        # installs the file exporter (its app module was imported without the variable).
        patch.setenv(traced.ENV_SPANS, str(span_files))
        return start_worker("traced", "--processes", "2")


@pytest.fixture
def sent() -> Iterator[InMemorySpanExporter]:
    """The spans of the test process: its sends and workflow starts."""
    with captured_spans() as exporter:
        yield exporter


def _sends(exporter: InMemorySpanExporter) -> list[SpanRecord]:
    return [record_of(span) for span in exporter.get_finished_spans()]


def _runs(span_files: Path, task_id: str, count: int = 1) -> list[SpanRecord]:
    """The run spans of ``task_id`` the worker wrote, in attempt order, once there are
    ``count`` of them (a child writes a run's span before it hands back the run's result)."""

    def found() -> list[SpanRecord]:
        spans = [
            s
            for s in read_span_files(span_files)
            if s.kind == "CONSUMER" and s.attributes.get("messaging.message.id") == task_id
        ]
        return spans if len(spans) >= count else []

    runs: list[SpanRecord] = wait_until(found, SPANS_WAIT_S, f"{count} run span(s) of {task_id}")
    return sorted(runs, key=lambda s: s.attributes["horsies.task.attempt"])


def test_each_send_is_a_trace_whose_run_span_is_the_child_of_the_send_span(
    worker: WorkerProcess, app: Horsies, span_files: Path, sent: InMemorySpanExporter
) -> None:
    handles = [app.tasks["traced.add"].send(n, n) for n in range(3)]
    assert [h.get(timeout_ms=GET_MS).unwrap() for h in handles] == [0, 2, 4]
    sends = _sends(sent)
    assert len({s.trace_id for s in sends}) == 3
    for handle, send in zip(handles, sends, strict=True):
        assert send.attributes["messaging.message.id"] == handle.task_id
        (run,) = _runs(span_files, handle.task_id)
        assert run.name == "process traced.add"
        assert (run.trace_id, run.parent_id) == (send.trace_id, send.span_id)
        assert run.status == "UNSET"
        assert run.pid != worker.proc.pid  # a child process ran it
        assert run.attributes["messaging.system"] == "horsies"
        assert run.attributes["messaging.destination.name"] == "default"
        assert run.attributes["horsies.task.attempt"] == 1


def test_an_async_task_and_the_spans_a_task_makes_are_in_the_trace(
    worker: WorkerProcess, app: Horsies, span_files: Path, sent: InMemorySpanExporter
) -> None:
    added = app.tasks["traced.async_add"].send(2, 3)
    nested = app.tasks["traced.nested"].send()
    assert added.get(timeout_ms=GET_MS).unwrap() == 5
    inside_id = nested.get(timeout_ms=GET_MS).unwrap()
    add_send, nested_send = _sends(sent)
    (async_run,) = _runs(span_files, added.task_id)
    assert (async_run.trace_id, async_run.parent_id) == (add_send.trace_id, add_send.span_id)
    (nested_run,) = _runs(span_files, nested.task_id)
    assert nested_run.parent_id == nested_send.span_id
    (inside,) = [s for s in read_span_files(span_files) if s.span_id == inside_id]
    assert inside.name == traced.NESTED_SPAN
    assert (inside.trace_id, inside.parent_id) == (nested_run.trace_id, nested_run.span_id)


def test_a_failing_task_records_its_error_on_the_run_span(
    worker: WorkerProcess, app: Horsies, span_files: Path, sent: InMemorySpanExporter
) -> None:
    handle = app.tasks["traced.fail"].send("boom")
    assert handle.get(timeout_ms=GET_MS).is_err()
    (send,) = _sends(sent)
    (run,) = _runs(span_files, handle.task_id)
    assert run.parent_id == send.span_id
    assert run.status == "ERROR"
    assert run.attributes["error.type"] == "UNHANDLED_EXCEPTION"
    assert (run.description or "").startswith("UNHANDLED_EXCEPTION: ")
    (event,) = run.events
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ValueError"
    assert event["attributes"]["exception.message"] == "boom"
    assert "raise ValueError(message)" in event["attributes"]["exception.stacktrace"]


def test_a_retried_task_has_one_run_span_per_attempt_under_its_send(
    worker: WorkerProcess, app: Horsies, span_files: Path, sent: InMemorySpanExporter
) -> None:
    handle = app.tasks["traced.flaky"].send()
    assert handle.get(timeout_ms=GET_MS).unwrap() == 2
    (send,) = _sends(sent)
    first, second = _runs(span_files, handle.task_id, count=2)
    for run in (first, second):
        assert (run.trace_id, run.parent_id) == (send.trace_id, send.span_id)
        assert run.attributes["horsies.task.max_retries"] == 1
    assert first.attributes["horsies.task.attempt"] == 1
    assert (first.status, first.attributes["error.type"]) == ("ERROR", "FLAKY")
    assert first.events == [
        {"name": "horsies.retry", "attributes": {"horsies.task.next_attempt": 2}}
    ]
    assert second.attributes["horsies.task.attempt"] == 2
    assert (second.status, second.events) == ("UNSET", [])


def test_every_node_of_a_workflow_runs_in_the_trace_of_its_start(
    worker: WorkerProcess, app: Horsies, span_files: Path, sent: InMemorySpanExporter
) -> None:
    handle = traced.Pipeline.build(app).start()
    result = handle.get(timeout_ms=GET_MS)
    assert result.is_ok(), result
    (start,) = _sends(sent)
    assert start.name == "start traced_pipeline"
    assert start.attributes["horsies.workflow.id"] == handle.workflow_id
    child = next(t for t in handle.tasks() if t.node_id == "child")
    assert child.status.value == "COMPLETED"

    def node_runs() -> list[SpanRecord]:
        runs = [s for s in read_span_files(span_files) if s.trace_id == start.trace_id]
        return runs if len(runs) >= 3 else []

    runs = wait_until(node_runs, SPANS_WAIT_S, "the run spans of the three task nodes")
    assert sorted(r.name for r in runs) == [
        "process traced.add",  # first
        "process traced.add",  # the child workflow's node
        "process traced.double",  # second
    ]
    assert {(r.kind, r.parent_id) for r in runs} == {("CONSUMER", start.span_id)}
