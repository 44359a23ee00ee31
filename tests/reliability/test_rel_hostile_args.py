"""Scenario 8a: hostile argument structures and types.

Every argument either round-trips (through the codec, and through a real worker: the echo task
returns its arguments and ``get()`` gives back an equal value, types included) or is refused at
send time with the documented error (an ``"<error>"`` handle, ``SEND_REFUSED``, the codec's
reason in the message). Never a crash in the worker, never a task left unfinished.

The codec is exercised directly with many examples; the worker-backed property batches up to 20
values per example against one worker for the whole module.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from horsies.app import Horsies
from horsies.codec import (
    SerializationError,
    args_from_json,
    args_to_json,
    dumps_json,
    kwargs_from_json,
    kwargs_to_json,
    loads_json,
    task_result_from_json,
    task_result_to_json,
)
from horsies.codec.tags import CTX_KEY, META_KEY
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.tasks.handle import TaskHandle
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reliability.apps.hostile_types import Box, Reading
from tests.reliability.harness import LedgerWorker
from tests.reliability.hostile import (
    HOSTILE_VALUES,
    KWARG_NAMES,
    MOSTLY_SENDABLE,
    RELAXED,
    Accepted,
    Refused,
    examples,
    expect,
    module_worker_fixture,
    same,
)
from tests.reliability.ledger import compare

pytestmark = pytest.mark.timeout(180)

RESULT_TIMEOUT_MS = 60_000
ZEN = "Beautiful is better than ugly"  # printed by `import this`: a tag look-alike was decoded


# -- the codec, directly --------------------------------------------------------------------------


def _trips(value: Any) -> list[tuple[str, Any]]:
    """(path, decoded value) for each way a value is stored: args, kwargs, result, dumps."""
    return [
        ("args", args_from_json(args_to_json((value,)))[0]),
        ("kwargs", kwargs_from_json(kwargs_to_json({"v": value}))["v"]),
        ("result", task_result_from_json(task_result_to_json(TaskResult(ok=value))).unwrap()),
        ("dumps", args_from_json(f"[{dumps_json(value)}]")[0]),
    ]


def _refusal(value: Any) -> str:
    with pytest.raises((SerializationError, ValueError)) as info:
        _trips(value)
    return str(info.value)


@settings(max_examples=examples(500, 20_000), suppress_health_check=RELAXED)
@given(value=HOSTILE_VALUES)
def test_codec_round_trips_or_refuses_every_hostile_value(value: Any) -> None:
    """The codec alone: a value comes back equal (tuples as lists, keys as strings, enums as
    values) from every storage path, or every path refuses it with a documented message."""
    outcome = expect(value)
    if isinstance(outcome, Refused):
        message = _refusal(value)
        assert outcome.matches(message), (message, outcome.patterns)
        return
    for path, back in _trips(value):
        assert same(back, outcome.value), (path, back, outcome.value)


def test_tag_look_alike_dicts_are_plain_data_not_instructions() -> None:
    """A user dict that looks like a tagged value (``__dataclass__`` naming a module) comes back
    as the same dict: decoding never imports a module or builds a class named by user data."""
    sys.modules.pop("this", None)
    hostile = [
        {"__dataclass__": True, "module": "this", "qualname": "x", "data": {}},
        {"__pydantic_model__": True, "module": "os", "qualname": "system", "data": "id"},
        {"__datetime__": True, "value": "2024-01-01T00:00:00"},
        {"__task_result__": True, "ok": 1, "err": None},
        {"__escaped__": True, "data": {"__date__": True, "value": "2024-01-01"}},
        Box({"__time__": True, "value": "not a time"}),
    ]
    for value in hostile:
        for path, back in _trips(value):
            assert same(back, value), (path, back)
    assert "this" not in sys.modules


def test_error_payloads_holding_tag_look_alikes_round_trip() -> None:
    """``TaskError.data`` and a dict given as ``exception`` may hold tag look-alikes too: they are
    stored escaped and come back unchanged; keyword names that look like tags stay names."""
    look_alike = {"__date__": True, "value": "not a date", "__mapping__": 1}
    error = TaskError(error_code="X", message="m", data=[look_alike], exception=dict(look_alike))
    back = task_result_from_json(task_result_to_json(TaskResult(err=error))).unwrap_err()
    assert back.data == [look_alike]
    assert back.exception == look_alike
    kwargs = {"__dataclass__": True, "module": "this", "v": {"__time__": True}}
    assert kwargs_from_json(kwargs_to_json(kwargs)) == kwargs
    assert "this" not in sys.modules


def test_deep_nesting_is_refused_or_exact() -> None:
    """Nesting deeper than orjson's limit still round-trips exactly (no silent int-to-float
    change on the fallback path); nesting deeper than the codec can walk, and cycles, are
    refused with SerializationError."""
    deep: Any = [2**64 - 1, "ok"]
    for _ in range(300):
        deep = [deep]
    back = args_from_json(args_to_json((deep,)))[0]
    assert back == deep
    huge: Any = [2**64]
    for _ in range(300):
        huge = {"k": huge}
    with pytest.raises(SerializationError, match="64-bit range"):
        args_to_json((huge,))
    surrogate: Any = ["\ud800"]
    for _ in range(300):
        surrogate = [surrogate]
    with pytest.raises(SerializationError, match="surrogates not allowed"):
        args_to_json((surrogate,))
    too_deep: Any = [1]
    for _ in range(5_000):
        too_deep = [too_deep]
    with pytest.raises(SerializationError, match="nesting too deep"):
        args_to_json((too_deep,))
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(SerializationError, match="nesting too deep or circular"):
        args_to_json((cycle,))


def test_model_with_non_finite_float_is_refused_not_nulled() -> None:
    """A pydantic model holding NaN/inf is refused like a bare NaN, instead of being written as
    ``null`` (which the worker could not validate back, or would read as None)."""
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="Out of range float"):
            args_to_json((Reading(name="r", value=bad),))
        with pytest.raises(ValueError, match="Out of range float"):
            task_result_to_json(TaskResult(ok=Reading(name="r", value=bad)))
    ok = Reading(name="r", value=1.5, counts={"a": 1})
    assert args_from_json(args_to_json((ok,))) == [ok]


def test_json_written_by_the_codec_is_always_parseable() -> None:
    """NUL, control characters and every plane of unicode are escaped or kept so that the text
    parses back (and PostgreSQL TEXT columns, which refuse NUL bytes, can hold it)."""
    text = "".join(chr(code) for code in range(0x30)) + "\u2028\u2029\U0010ffff"
    encoded = args_to_json((text,))
    assert "\x00" not in encoded
    assert loads_json(encoded) == [text]


# -- through a real worker ------------------------------------------------------------------------


@dataclass
class Tally:
    """What the worker-backed property sent, across all its examples."""

    ids: dict[str, str] = field(default_factory=dict)
    refused: int = 0
    via_send_many: int = 0


echo_worker = module_worker_fixture("--processes", "2", "--loglevel", "INFO", name="echo_worker")


@pytest.fixture(scope="module")
def tally(database_conninfo: str) -> Iterator[Tally]:
    record = Tally()
    yield record
    report = compare(database_conninfo, record.ids)
    print(
        f"\n[hostile-args] round-tripped={len(record.ids)} (send_many={record.via_send_many}) "
        f"refused_at_send={record.refused} lost={report.lost} duplicated={report.duplicated} "
        f"statuses={dict(report.statuses)}"
    )


Call = tuple[tuple[Any, ...], dict[str, Any]]


def _call(key: str, value: Any, name: str | None) -> tuple[Call, Accepted | Refused, Any]:
    """The call sending ``value`` (positionally, or as keyword ``name``), its oracle, and what
    the echo task must return."""
    if name is None:
        outcome = expect(value)
        returned = [[outcome.value], {}] if isinstance(outcome, Accepted) else None
        return ((key, value), {}), outcome, returned
    outcome = expect(value, kwarg_names=[name])
    returned = [[], {name: outcome.value}] if isinstance(outcome, Accepted) else None
    return ((key,), {name: value}), outcome, returned


def _assert_refused(handle: TaskHandle[Any], outcome: Refused) -> None:
    assert handle.task_id == "<error>"
    error = handle.get().unwrap_err()
    assert error.error_code == LibraryErrorCode.SEND_REFUSED
    message = error.message or ""
    assert message.startswith("Failed to enqueue task echo: "), message
    assert outcome.matches(message), (message, outcome.patterns)


@settings(max_examples=examples(25, 500), suppress_health_check=RELAXED)
@given(
    batch=st.lists(st.tuples(MOSTLY_SENDABLE, st.none() | KWARG_NAMES), min_size=5, max_size=25),
    use_send_many=st.booleans(),
)
def test_random_arguments_round_trip_through_a_worker_or_are_refused_at_send(
    echo_worker: LedgerWorker,
    producer: Horsies,
    tally: Tally,
    database_conninfo: str,
    batch: list[tuple[Any, str | None]],
    use_send_many: bool,
) -> None:
    """Random arguments sent to a real worker: each is refused at send (documented error, nothing
    written) or completes with the echo of exactly what was sent; the worker stays up and the
    ledger shows every accepted task ran to its end once."""
    echo = producer.tasks["rel.echo"]
    accepted: list[tuple[str, Call, Any]] = []
    for value, name in batch:
        key = uuid.uuid4().hex
        (args, kwargs), outcome, returned = _call(key, value, name)
        if isinstance(outcome, Refused):
            _assert_refused(echo.send(*args, **kwargs), outcome)
            if use_send_many:  # one bad call refuses the whole batch: nothing is written
                calls = [(key, value), ("other", 1)] if name is None else [{"key": key, **kwargs}]
                many = echo.send_many(calls)
                for handle in many:
                    _assert_refused(handle, outcome)
            tally.refused += 1
        else:
            accepted.append((key, (args, kwargs), returned))
    if use_send_many and accepted:
        # Keyword calls need the key among the keywords for send_many's mapping form.
        calls = [
            {"key": key, **kwargs} if not args[1:] else args for key, (args, kwargs), _ in accepted
        ]
        handles = echo.send_many(calls)
        tally.via_send_many += len(handles)
    else:
        handles = [echo.send(*args, **kwargs) for _, (args, kwargs), _ in accepted]
    ids: dict[str, str] = {}
    for (key, _, returned), handle in zip(accepted, handles, strict=True):
        assert handle.task_id != "<error>", handle.get().err
        result = handle.get(timeout_ms=RESULT_TIMEOUT_MS)
        assert result.is_ok(), result.err
        assert same(result.unwrap(), returned), (result.unwrap(), returned)
        ids[key] = handle.task_id
    tally.ids.update(ids)
    report = compare(database_conninfo, ids)
    report.assert_nothing_lost_or_duplicated()
    assert report.statuses["COMPLETED"] == len(ids), report.summary()
    assert echo_worker.alive, echo_worker.output()


@pytest.mark.parametrize("depth", [254, 256, 600, 900, 3_000])
def test_deeply_nested_argument_round_trips_or_is_refused_at_send(
    echo_worker: LedgerWorker, producer: Horsies, database_conninfo: str, depth: int
) -> None:
    """Nesting around and far beyond orjson's 255 levels: whatever the producer accepts, the
    worker decodes and returns exactly (it never fails where the producer succeeded)."""
    value: Any = ["leaf", 2**63]
    for _ in range(depth):
        value = [value]
    key = uuid.uuid4().hex
    handle = producer.tasks["rel.echo"].send(key, value)
    if handle.task_id == "<error>":
        _assert_refused(handle, Refused(frozenset({"nesting too deep"})))
        return
    result = handle.get(timeout_ms=RESULT_TIMEOUT_MS)
    assert result.is_ok(), result.err
    assert result.unwrap() == [[value], {}]
    report = compare(database_conninfo, {key: handle.task_id})
    assert (report.lost, report.duplicated) == (0, 0), report.summary()


def test_reserved_keyword_names_are_refused_at_send(producer: Horsies) -> None:
    """The workflow engine's transport keys cannot be smuggled in as keyword arguments: the send
    is refused instead of the worker silently dropping (or misreading) them."""
    echo = producer.tasks["rel.echo"]
    for name in (CTX_KEY, META_KEY):
        handle = echo.send("k", **{name: {"workflow_id": "x"}})
        _assert_refused(handle, Refused(frozenset({"reserved by horsies"})))


def test_worker_survived_every_hostile_argument(echo_worker: LedgerWorker) -> None:
    """After the property ran: the worker process is alive, printed no traceback, and never
    imported a module named by argument data."""
    output = echo_worker.output()
    assert echo_worker.alive, output
    assert "Traceback" not in output, output
    assert ZEN not in output, "a tag look-alike argument made the worker import a module"
