"""Spans for the tests of traces: the SDK's in-memory exporter in the test process
(``captured_spans()``), a JSON-lines file exporter for worker processes (``JsonLinesExporter``,
one file per process), and the reading back of those files (``read_span_files``).

OpenTelemetry lets a process set its global tracer provider once; ``captured_spans`` sets it for
one test and puts the API's "none set" state back afterwards, so the other tests of the same
pytest process send without traces, as an application without an SDK does.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once


def _reset_global_provider() -> None:
    # The API offers no way to unset its global provider; these are the two globals its own
    # set-once logic reads (the SDK's test utilities reset them the same way).
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # pyright: ignore[reportPrivateUsage]
    trace._TRACER_PROVIDER = None  # pyright: ignore[reportPrivateUsage]


@contextlib.contextmanager
def captured_spans() -> Iterator[InMemorySpanExporter]:
    """A global SDK tracer provider exporting every ended span, at once, to the exporter yielded;
    the process has no provider again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_global_provider()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        _reset_global_provider()


@dataclass(frozen=True)
class SpanRecord:
    """One exported span, as written by `JsonLinesExporter` (ids in hex, as in a traceparent)."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str | None
    status: str
    description: str | None
    attributes: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    pid: int = 0


def record_of(span: ReadableSpan, pid: int = 0) -> SpanRecord:
    """The `SpanRecord` of an SDK span."""
    context = span.get_span_context()
    assert context is not None
    parent = span.parent
    return SpanRecord(
        name=span.name,
        kind=span.kind.name,
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_id=None if parent is None else f"{parent.span_id:016x}",
        status=span.status.status_code.name,
        description=span.status.description,
        attributes=dict(span.attributes or {}),
        events=[{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
        pid=pid,
    )


class JsonLinesExporter(SpanExporter):
    """Appends each span as one JSON line to ``<folder>/spans-<pid>.jsonl``, flushed at once: a
    process's spans are in its file by the time it answers for the work they describe."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        pid = os.getpid()
        lines = b"".join(orjson.dumps(record_of(span, pid).__dict__) + b"\n" for span in spans)
        with self._lock, (self._folder / f"spans-{pid}.jsonl").open("ab") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS


def install_file_exporter(folder: Path) -> None:
    """Make this process's global tracer provider export to a `JsonLinesExporter` in ``folder``
    (a worker's app module calls it when imported, in the main process and in every child)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(folder)))
    trace.set_tracer_provider(provider)


def read_span_files(folder: Path) -> list[SpanRecord]:
    """Every span the processes exporting to ``folder`` have written so far."""
    records: list[SpanRecord] = []
    for path in sorted(folder.glob("spans-*.jsonl")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                records.append(SpanRecord(**orjson.loads(line)))
    return records
