"""Traces (``horsies-core[otel]``), read from the SDK's in-memory exporter: a send is one PRODUCER
span in a trace of its own (or a child of the caller's span) whose context the stored task
carries; a workflow start is one span whose context every node's task carries; an error handle
is an error status. The carrier in ``task_options`` is invisible to everything that reads the
options. Without a tracer provider nothing is stored differently, and without the extra nothing
of opentelemetry is imported.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
from db_rows import sql
from horsies import TaskNode
from horsies.app import Horsies
from horsies.codec import task_result_from_json
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult
from horsies.retry import (
    RetryPolicy,
    TaskOptions,
    is_retried_stored,
    retry_delay_for_stored,
    stored_options,
    time_limit_for_stored,
)
from horsies.testing import run_pending
from horsies.tracing import carrier_of, with_carrier, without_carrier
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from span_capture import SpanRecord, captured_spans, record_of

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with captured_spans() as exporter:
        yield exporter


@pytest.fixture
def tasks(app: Horsies, clean_db: str) -> dict[str, Any]:
    @app.task("traces.add", retry_policy=RetryPolicy.fixed([1]), auto_retry_for=["FLAKY"])
    def add(a: int, b: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=a + b)

    @app.task("traces.flaky", retry_policy=RetryPolicy.fixed([1]), auto_retry_for=["FLAKY"])
    def flaky() -> TaskResult[int, TaskError]:
        return TaskResult(err=TaskError(error_code="FLAKY", message="always"))

    @app.task("traces.double")
    def double(value: TaskResult[int, TaskError]) -> TaskResult[int, TaskError]:
        return TaskResult(ok=value.unwrap() * 2)

    return {"add": add, "flaky": flaky, "double": double}


def _records(exporter: InMemorySpanExporter) -> list[SpanRecord]:
    return [record_of(span) for span in exporter.get_finished_spans()]


def _options(conninfo: str, task_id: str) -> str:
    rows = sql(conninfo, "SELECT task_options FROM horsies_tasks WHERE id = %s", (task_id,))
    return str(rows[0]["task_options"])


def _carried(options_json: str) -> tuple[str, str] | None:
    """The (trace id, span id) a task's options carry, or None."""
    carrier = carrier_of(options_json)
    if carrier is None:
        return None
    version, trace_id, span_id, _flags = carrier["traceparent"].split("-")
    assert version == "00"
    assert set(carrier) <= {"traceparent", "tracestate"}
    return trace_id, span_id


def _ids(record: SpanRecord) -> tuple[str, str]:
    return record.trace_id, record.span_id


# -- sends -----------------------------------------------------------------------------------------


def test_each_send_is_one_producer_span_in_a_trace_of_its_own(
    tasks: dict[str, Any], spans: InMemorySpanExporter, clean_db: str
) -> None:
    first = tasks["add"].send(1, 2)
    second = tasks["add"].send(3, 4)
    records = _records(spans)
    assert [r.name for r in records] == ["send traces.add", "send traces.add"]
    assert records[0].trace_id != records[1].trace_id
    for record, handle in zip(records, (first, second), strict=True):
        assert record.kind == "PRODUCER"
        assert record.parent_id is None
        assert record.status == "UNSET"
        assert record.attributes == {
            "messaging.system": "horsies",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": "default",
            "messaging.message.id": handle.task_id,
            "horsies.task.name": "traces.add",
        }
        stored = _options(clean_db, handle.task_id)
        assert _carried(stored) == _ids(record)
        # What the task's options are is unchanged by the carrier.
        assert without_carrier(stored) == tasks["add"].task_options_json
    assert tasks["add"].task_options_json == tasks["add"].task_options.to_json()


def test_a_send_inside_the_callers_span_is_its_child(
    tasks: dict[str, Any], spans: InMemorySpanExporter
) -> None:
    with trace.get_tracer("test").start_as_current_span("request"):
        tasks["add"].send(1, 2)
    send, request = _records(spans)
    assert request.name == "request"
    assert (send.trace_id, send.parent_id) == (request.trace_id, request.span_id)


def test_schedule_send_many_and_send_async_are_spans_too(
    tasks: dict[str, Any], spans: InMemorySpanExporter, clean_db: str
) -> None:
    import asyncio

    scheduled = tasks["add"].schedule(60, 1, 2)
    batch = tasks["add"].send_many([(1, 2), (3, 4), {"a": 5, "b": 6}])

    async def both() -> list[Any]:
        one = await tasks["add"].send_async(1, 1)
        many = await tasks["add"].send_many_async([(2, 2), (3, 3)])
        return [one, many]

    one, many = asyncio.run(both())
    records = _records(spans)
    assert [(r.name, r.attributes["messaging.operation.name"]) for r in records] == [
        ("send traces.add", "schedule"),
        ("send traces.add", "send"),
        ("send traces.add", "send"),
        ("send traces.add", "send"),
    ]
    assert records[0].attributes["messaging.message.id"] == scheduled.task_id
    assert records[1].attributes["messaging.batch.message_count"] == 3
    assert records[2].attributes["messaging.message.id"] == one.task_id
    assert records[3].attributes["messaging.batch.message_count"] == 2
    assert len({r.trace_id for r in records}) == 4
    # Every task of a batch carries the batch's span.
    for record, handles in ((records[1], batch), (records[3], many)):
        for handle in handles:
            assert _carried(_options(clean_db, handle.task_id)) == _ids(record)


def test_an_error_handle_is_an_error_status(
    tasks: dict[str, Any], spans: InMemorySpanExporter, database_url: str
) -> None:
    refused = tasks["add"].send(1)  # a missing argument
    assert refused.task_id == "<error>"
    missing = urlunsplit(urlsplit(database_url)._replace(path="/no_such_database_traces"))
    unreachable = Horsies(AppConfig(broker=PostgresConfig(database_url=missing, pool_timeout=1)))

    @unreachable.task("traces.lost")
    def lost() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    try:
        failed = lost.send()
    finally:
        unreachable.get_broker().close()
    assert failed.task_id == "<error>"
    records = _records(spans)
    assert [(r.status, r.attributes["error.type"]) for r in records] == [
        ("ERROR", "SEND_REFUSED"),
        ("ERROR", "BROKER_ERROR"),
    ]
    assert (records[0].description or "").startswith("SEND_REFUSED: ")
    assert "messaging.message.id" not in records[0].attributes


def test_without_a_tracer_provider_a_send_stores_its_options_as_before(
    tasks: dict[str, Any], clean_db: str
) -> None:
    handle = tasks["add"].send(1, 2)
    assert _options(clean_db, handle.task_id) == tasks["add"].task_options_json


def test_with_the_api_alone_a_send_inside_a_valid_span_carries_that_span(
    tasks: dict[str, Any], clean_db: str
) -> None:
    """No SDK: nothing is recorded, but an incoming trace (a request's) still travels on."""
    parent = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    with trace.use_span(NonRecordingSpan(parent)):
        handle = tasks["add"].send(1, 2)
    assert carrier_of(_options(clean_db, handle.task_id)) == {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    }


def test_a_task_run_in_process_is_the_child_of_its_send(
    app: Horsies, tasks: dict[str, Any], spans: InMemorySpanExporter
) -> None:
    """`run_pending` runs tasks with the worker's own code: its run span is the one a worker
    child makes (the end-to-end tests check a real worker)."""
    handle = tasks["flaky"].send()
    (ran,) = run_pending(app)  # the retry is not due yet
    assert ran.retry_in_s is not None
    send, run = _records(spans)
    assert run.name == "process traces.flaky"
    assert run.kind == "CONSUMER"
    assert (run.trace_id, run.parent_id) == (send.trace_id, send.span_id)
    assert run.attributes["messaging.message.id"] == handle.task_id
    assert run.attributes["horsies.task.attempt"] == 1
    assert run.attributes["horsies.task.max_retries"] == 1
    assert (run.status, run.attributes["error.type"]) == ("ERROR", "FLAKY")
    assert run.events == [{"name": "horsies.retry", "attributes": {"horsies.task.next_attempt": 2}}]


# -- workflows -------------------------------------------------------------------------------------


def test_a_workflow_start_is_one_span_that_every_node_carries(
    app: Horsies, tasks: dict[str, Any], spans: InMemorySpanExporter, clean_db: str
) -> None:
    first = TaskNode(fn=tasks["add"], args=(2, 3), node_id="first")
    second = TaskNode(
        fn=tasks["double"], waits_for=[first], args_from={"value": first}, node_id="second"
    )
    handle = app.workflow("traces_chain", tasks=[first, second], output=second).start()
    (start,) = _records(spans)
    assert start.name == "start traces_chain"
    assert start.kind == "PRODUCER"
    assert start.attributes["horsies.workflow.id"] == handle.workflow_id
    assert start.attributes["horsies.workflow.name"] == "traces_chain"
    nodes = sql(
        clean_db,
        "SELECT task_options FROM horsies_workflow_tasks WHERE workflow_id = %s",
        (handle.workflow_id,),
    )
    assert [_carried(str(n["task_options"])) for n in nodes] == [_ids(start)] * 2
    run_pending(app)
    assert handle.get(timeout_ms=5_000).unwrap() == 10
    runs = [r for r in _records(spans) if r.kind == "CONSUMER"]
    assert sorted(r.name for r in runs) == ["process traces.add", "process traces.double"]
    assert {(r.trace_id, r.parent_id) for r in runs} == {(start.trace_id, start.span_id)}


# -- the carrier ----------------------------------------------------------------------------------


def test_the_carrier_is_appended_and_taken_off_the_options_text() -> None:
    options = TaskOptions(
        auto_retry_for=['tricky","traceparent":"x'],
        retry_policy=RetryPolicy.fixed([5]),
        time_limit_s=2.5,
    )
    text = options.to_json()
    carrier = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": 'vendor=a"b,other=c',
    }
    carried = with_carrier(text, carrier)
    assert orjson.loads(carried)["tracestate"] == carrier["tracestate"]
    assert carrier_of(carried) == carrier
    assert without_carrier(carried) == text
    assert carrier_of(text) is None
    assert without_carrier(text) == text
    assert carrier_of(with_carrier(None, carrier)) == carrier
    assert without_carrier(with_carrier(None, carrier)) == "{}"
    # Everything that reads a row's options sees the options, and caches one entry for the task.
    assert TaskOptions.from_json(carried) == options
    assert stored_options(carried) is stored_options(text)
    assert time_limit_for_stored(carried) == 2.5
    failed = TaskResult[Any, TaskError](err=TaskError(error_code='tricky","traceparent":"x'))
    assert retry_delay_for_stored(failed, retry_count=0, max_retries=1, options_json=carried)
    assert is_retried_stored(failed, retry_count=0, max_retries=1, options_json=carried)
    assert not is_retried_stored(failed, retry_count=1, max_retries=1, options_json=carried)
    ok = task_result_from_json('{"__task_result__":true,"ok":1,"err":null}')
    assert not is_retried_stored(ok, retry_count=0, max_retries=1, options_json=carried)


def test_without_the_extra_nothing_of_opentelemetry_is_imported_or_done(
    database_url: str,
) -> None:
    """opentelemetry made unimportable: the send methods are not wrapped, a send stores the task's
    options text as it is, and no opentelemetry module is loaded."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # import opentelemetry now raises ImportError
        from horsies import AppConfig, Horsies, PostgresConfig, TaskError, TaskResult, TaskNode
        from horsies import tracing
        from horsies.tasks.function import TaskFunction

        assert not tracing.AVAILABLE
        assert not hasattr(TaskFunction.send, "__wrapped__")
        app = Horsies(AppConfig(broker=PostgresConfig(database_url=sys.argv[1])))

        @app.task("traces.absent")
        def absent(n: int) -> TaskResult[int, TaskError]:
            return TaskResult(ok=n)

        handle = absent.send(7)
        assert handle.sent, handle.get()
        row = app.get_broker().get_task_sync(handle.task_id)
        assert row is not None and row["task_options"] == absent.task_options_json, row
        node = TaskNode(fn=absent, args=(1,))
        app.workflow("traces_absent", tasks=[node]).start()
        loaded = [name for name in sys.modules if name.startswith("opentelemetry.")]
        assert not loaded, loaded
        app.get_broker().close()
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
