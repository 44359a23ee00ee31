"""OpenTelemetry traces of sends, workflow starts and runs, with the ``otel`` extra installed.

The extra is detected once, by the try-import below: the one place horsies imports
``opentelemetry``. Without it, :data:`AVAILABLE` is False and every function here returns None
at once, so callers do nothing else (the send methods are not even wrapped). With the API
installed but no tracer provider set (no SDK configured), a span is made only when the caller
already runs inside a valid span, whose context then travels on; otherwise nothing is done either.

**The carrier.** A task's trace context travels in its row's ``task_options`` JSON text, which
every insert path already stores: the W3C ``traceparent`` (and ``tracestate`` when there is one)
are appended as the object's last members, ``{...,"traceparent":"00-…","tracestate":"…"}``
(:meth:`TaskSpan.carry`). Only a send made inside a valid span context carries them; the task's
cached options text is stored unchanged otherwise. :func:`without_carrier` gives the options text
back without them, so the readers of the options (retries, time limits) see the same text for
every row of a task and keep their per-text cache; :func:`carrier_of` reads them back in a worker
child, where :func:`start_run` makes the run span a child of the send span.

Spans follow OpenTelemetry's messaging conventions where they fit: ``messaging.system`` is
``"horsies"``, the destination is the queue, the message id the task id; a send is a PRODUCER
span named ``send <task>``, a run a CONSUMER span named ``process <task>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, cast

import orjson

if TYPE_CHECKING:
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from opentelemetry.trace.propagation import tracecontext

    _imported = True
    _PROPAGATOR: tracecontext.TraceContextTextMapPropagator
else:
    try:
        # The `otel` extra. Without it nothing below touches these names: every entry point
        # checks AVAILABLE first, and a TaskSpan exists only when a start_* function made one.
        from opentelemetry import context as otel_context
        from opentelemetry import trace as otel_trace
        from opentelemetry.trace.propagation import tracecontext
    except ImportError:
        _imported = False
    else:
        _imported = True
        _PROPAGATOR = tracecontext.TraceContextTextMapPropagator()

__all__ = [
    "AVAILABLE",
    "TaskSpan",
    "carrier_of",
    "start_run",
    "start_send",
    "start_workflow",
    "with_carrier",
    "without_carrier",
]


AVAILABLE: Final[bool] = _imported
"""True when opentelemetry-api can be imported (the ``otel`` extra)."""

SYSTEM: Final = "horsies"
"""The ``messaging.system`` of every span."""

_CARRIER_KEY: Final = '"traceparent":'
"""Where the carrier starts in an options text: its first member (see the module docstring)."""

_tracer_of: tuple[TracerProvider, Tracer] | None = None
"""The horsies tracer of the last provider seen (the global provider may be replaced)."""


def _tracer(parent_valid: bool) -> Tracer | None:
    """The tracer to make a span with, or None when nothing would be traced: no opentelemetry, or
    no tracer provider set and no valid parent to continue."""
    global _tracer_of
    if not AVAILABLE:
        return None
    provider = otel_trace.get_tracer_provider()
    if isinstance(provider, otel_trace.ProxyTracerProvider | otel_trace.NoOpTracerProvider):
        # No SDK: a span would record nothing. With a valid parent, the no-op tracer's span
        # carries that parent's context on to the worker; without one there is nothing to do.
        return otel_trace.NoOpTracer() if parent_valid else None
    cached = _tracer_of
    if cached is None or cached[0] is not provider:
        cached = _tracer_of = (provider, provider.get_tracer(SYSTEM))
    return cached[1]


class TaskSpan:
    """One span of horsies, current (attached to the context) from its start to :meth:`end`:
    what the caller's code and the libraries it calls trace meanwhile are its children.

    Used as a context manager by the producers (an exception leaving the block is recorded and
    sets an error status); a worker child calls :meth:`end` itself.
    """

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token = otel_context.attach(otel_trace.set_span_in_context(span))

    @property
    def recording(self) -> bool:
        """True when the span records what is set on it (an SDK that samples it)."""
        return self._span.is_recording()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._span.record_exception(exc)
            self.failed(type(exc).__name__, str(exc))
        self.end()

    def carrier(self) -> dict[str, str] | None:
        """This span's context in W3C form (``traceparent``, maybe ``tracestate``), or None when
        it has no valid context to pass on."""
        if not self._span.get_span_context().is_valid:
            return None
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, otel_trace.set_span_in_context(self._span))
        return carrier

    def carry(self, options_json: str | None) -> str | None:
        """``options_json`` with this span's context as its last members, or ``options_json``
        itself when the span has no valid context."""
        carrier = self.carrier()
        return options_json if carrier is None else with_carrier(options_json, carrier)

    def sent(self, task_ids: Sequence[str]) -> None:
        """Record the ids of the tasks written: the message id of one, the count of a batch."""
        if len(task_ids) == 1:
            self._span.set_attribute("messaging.message.id", task_ids[0])
        else:
            self._span.set_attribute("messaging.batch.message_count", len(task_ids))

    def failed(self, code: str, message: str, exception: Mapping[str, Any] | None = None) -> None:
        """Set an error status: ``code`` (an error code, or an exception's class name) also as
        ``error.type``; ``exception``, the stored form of an exception (``type``, ``message``,
        ``traceback``), as an ``exception`` event."""
        span = self._span
        span.set_attribute("error.type", code)
        span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, f"{code}: {message}"))
        if exception is not None:
            span.add_event(
                "exception",
                {
                    "exception.type": str(exception.get("type", "")),
                    "exception.message": str(exception.get("message", "")),
                    "exception.stacktrace": str(exception.get("traceback", "")),
                },
            )

    def retried(self, next_attempt: int) -> None:
        """Record that the task's retry policy runs it again, as attempt ``next_attempt``."""
        self._span.add_event("horsies.retry", {"horsies.task.next_attempt": next_attempt})

    def end(self) -> None:
        """Detach the span from the context and end it."""
        otel_context.detach(self._token)
        self._span.end()


def _producer(name: str, attributes: Mapping[str, str]) -> TaskSpan | None:
    """A PRODUCER span, a child of the current span if any, or None when nothing is traced."""
    if not AVAILABLE:
        return None
    tracer = _tracer(otel_trace.get_current_span().get_span_context().is_valid)
    if tracer is None:
        return None
    kind = otel_trace.SpanKind.PRODUCER
    span = tracer.start_span(name, kind=kind, attributes={"messaging.system": SYSTEM, **attributes})
    return TaskSpan(span)


def start_send(operation: str, task_name: str, queue_name: str) -> TaskSpan | None:
    """The PRODUCER span of a send (``operation``: ``send`` or ``schedule``), or None when nothing
    is traced. Its context is carried by the tasks' options (:meth:`TaskSpan.carry`)."""
    return _producer(
        f"send {task_name}",
        {
            "messaging.operation.type": "send",
            "messaging.operation.name": operation,
            "messaging.destination.name": queue_name,
            "horsies.task.name": task_name,
        },
    )


def start_workflow(workflow_name: str, workflow_id: str) -> TaskSpan | None:
    """The PRODUCER span of a workflow start, or None when nothing is traced. Its context is
    carried by every node's task (and every child workflow's)."""
    return _producer(
        f"start {workflow_name}",
        {
            "messaging.operation.type": "send",
            "messaging.operation.name": "start",
            "horsies.workflow.name": workflow_name,
            "horsies.workflow.id": workflow_id,
        },
    )


def carrier_of(options_json: str | None) -> dict[str, str] | None:
    """The carrier of a task row's options text (``traceparent``, ``tracestate``), or None."""
    if not options_json:
        return None
    start = options_json.rfind(_CARRIER_KEY)
    if start < 0:
        return None
    try:
        members: object = orjson.loads("{" + options_json[start:])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(members, dict):
        return None
    items = cast("dict[str, object]", members).items()
    fields = {key: value for key, value in items if isinstance(value, str)}
    return fields or None


def with_carrier(options_json: str | None, carrier: Mapping[str, str]) -> str:
    """A task row's options text (None: no options) with ``carrier`` as its last members."""
    members = orjson.dumps({"traceparent": carrier["traceparent"], **carrier}).decode()[1:-1]
    if options_json is None or options_json == "{}":
        return "{" + members + "}"
    return options_json[:-1] + "," + members + "}"


def without_carrier(options_json: str | None) -> str | None:
    """A task row's options text without its carrier: what the task's options are."""
    if options_json is None:
        return None
    start = options_json.rfind(_CARRIER_KEY)
    if start < 1:
        return options_json
    if options_json[start - 1] == "{":
        return "{}"
    return options_json[: start - 1] + "}"


def start_run(
    task_name: str,
    *,
    task_id: str,
    queue_name: str,
    attempt: int,
    max_retries: int,
    options_json: str | None,
) -> TaskSpan | None:
    """The CONSUMER span of one run of a task in a worker child, a child of the send span its
    options carry (else a new trace), or None when nothing is traced."""
    if not AVAILABLE:
        return None
    carrier = carrier_of(options_json)
    parent: Context | None = None
    if carrier is not None:
        parent = _PROPAGATOR.extract(carrier)
    tracer = _tracer(
        parent is not None and otel_trace.get_current_span(parent).get_span_context().is_valid
    )
    if tracer is None:
        return None
    span = tracer.start_span(
        f"process {task_name}",
        context=parent,
        kind=otel_trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": queue_name,
            "messaging.message.id": task_id,
            "horsies.task.name": task_name,
            "horsies.task.attempt": attempt,
            "horsies.task.max_retries": max_retries,
        },
    )
    return TaskSpan(span)
