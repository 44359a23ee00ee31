"""Shared parts of the hostile-input scenarios (issue 7, scenario 8).

- Hypothesis strategies for hostile task arguments: nested dicts/lists/tuples, ints of any size,
  floats incl. NaN/inf, strings with NUL, surrogates, SQL and tag look-alikes, bytes, sets,
  datetimes, pydantic models, dataclasses, and values no codec can store (lambdas, sockets, locks).
- :func:`expect`, the oracle: what a value must come back as after a trip through the codec and a
  worker (:class:`Accepted`), or which documented refusals a send may answer with
  (:class:`Refused`).
- :func:`same`: strict structural comparison (types included: ``1`` is not ``True`` nor ``1.0``).
- ``module_worker_fixture``: one real ``horsies worker`` of the ledger app for a whole test module
  (hypothesis runs many examples against it).
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime as dt
import math
import os
import re
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pytest
from horsies.codec.tags import CTX_KEY, META_KEY
from hypothesis import HealthCheck
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.reliability.apps.hostile_types import Box, Color, Coord, Level, Pair, Plain, Reading
from tests.reliability.harness import LedgerWorker
from tests.reliability.ledger import create_ledger

__all__ = [
    "HOSTILE_VALUES",
    "KWARG_NAMES",
    "MOSTLY_SENDABLE",
    "RELAXED",
    "SOAK",
    "SQL_STRINGS",
    "Accepted",
    "Refused",
    "examples",
    "expect",
    "module_worker_fixture",
    "same",
]

SOAK = os.environ.get("HORSIES_SOAK") == "1"
"""``HORSIES_SOAK=1``: run many more examples (the CI run stays inside its time budget)."""


def examples(ci: int, soak: int) -> int:
    """Hypothesis example count: ``ci`` normally, ``soak`` under ``HORSIES_SOAK=1``."""
    return soak if SOAK else ci


RELAXED = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]
"""Health checks the hostile strategies trip on purpose (big, nested, filtered examples)."""


# -- refusals -------------------------------------------------------------------------------------

UNSUPPORTED = r"Cannot serialize value of type "
BIG_INT = r"Cannot serialize int outside the 64-bit range"
NON_FINITE = r"Out of range float values are not JSON compliant"
SURROGATE = r"surrogates not allowed"
RESERVED = r"reserved by horsies"

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1  # orjson writes unsigned 64-bit ints too


@dataclass(frozen=True)
class Accepted:
    """The value must round-trip: ``value`` is what comes back."""

    value: Any


@dataclass(frozen=True)
class Refused:
    """The value must be refused at send time with a message matching one of ``patterns``."""

    patterns: frozenset[str]

    def matches(self, message: str) -> bool:
        return any(re.search(pattern, message) for pattern in self.patterns)


def _key_to_str(key: object) -> str:
    # The documented rule of the JSON encoding: non-string keys become strings.
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return int.__repr__(key)
    return str(key)


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(char) <= 0xDFFF for char in text)


class _Oracle:
    def __init__(self) -> None:
        self.issues: set[str] = set()

    def text(self, value: str) -> str:
        if _has_surrogate(value):
            self.issues.add(SURROGATE)
        return str.__str__(value)

    def model_data(self, value: Any) -> None:
        # A model's dumped data is written as is: check what JSON cannot hold.
        if isinstance(value, float) and not math.isfinite(value):
            self.issues.add(NON_FINITE)
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
            self.issues.add(BIG_INT)
        elif isinstance(value, str):
            self.text(value)
        elif isinstance(value, dict):
            for key, item in value.items():  # pyright: ignore[reportUnknownVariableType]
                self.text(str(key))  # pyright: ignore[reportUnknownArgumentType]
                self.model_data(item)
        elif isinstance(value, list | tuple):
            for item in value:  # pyright: ignore[reportUnknownVariableType]
                self.model_data(item)

    def walk(self, value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, Enum):
            if isinstance(value, str | int):
                return self.walk(value.value)
            self.issues.add(UNSUPPORTED)
            return None
        if isinstance(value, int):
            if not INT_MIN <= value <= INT_MAX:
                self.issues.add(BIG_INT)
            return int(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                self.issues.add(NON_FINITE)
            return float(value)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return value
        if isinstance(value, BaseModel):
            # A model is stored as its `model_dump(mode="json")`: it comes back as
            # pydantic's own JSON round trip (which, e.g., replaces lone surrogates in dict keys).
            dumped = value.model_dump(mode="json")
            known = len(self.issues)
            self.model_data(dumped)
            return type(value).model_validate(dumped) if len(self.issues) == known else None
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            cls = type(value)
            init = {f.name: self.walk(getattr(value, f.name)) for f in dataclasses.fields(value)}
            rebuilt = cls(**{f.name: init[f.name] for f in dataclasses.fields(value) if f.init})
            for f in dataclasses.fields(value):
                if not f.init:
                    object.__setattr__(rebuilt, f.name, init[f.name])
            return rebuilt
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():  # pyright: ignore[reportUnknownVariableType]
                out[self.text(_key_to_str(key))] = self.walk(item)  # pyright: ignore[reportUnknownArgumentType]
            return out
        if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray | memoryview):
            return [self.walk(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
        self.issues.add(UNSUPPORTED)
        return None


def expect(value: Any, *, kwarg_names: Sequence[str] = ()) -> Accepted | Refused:
    """What sending ``value`` (with keyword arguments named ``kwarg_names``) must give."""
    oracle = _Oracle()
    normalized = oracle.walk(value)
    for name in kwarg_names:
        oracle.text(name)
        if name in (CTX_KEY, META_KEY):
            oracle.issues.add(RESERVED)
    if oracle.issues:
        return Refused(frozenset(oracle.issues))
    return Accepted(normalized)


def same(actual: Any, expected: Any) -> bool:
    """Strict structural equality: types must match exactly (``True`` is not ``1``); datetimes
    compare by ISO text (offset and microseconds included); models and dataclasses by type and
    fields."""
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, dt.datetime | dt.date | dt.time):
        return actual.isoformat() == expected.isoformat()
    if isinstance(expected, list):
        return len(actual) == len(expected) and all(
            same(a, e) for a, e in zip(actual, expected, strict=True)
        )
    if isinstance(expected, dict):
        return list(actual) == list(expected) and all(
            same(actual[k], expected[k]) for k in expected
        )
    if isinstance(expected, BaseModel):
        return same(actual.model_dump(), expected.model_dump())
    if dataclasses.is_dataclass(expected):
        return all(
            same(getattr(actual, f.name), getattr(expected, f.name))
            for f in dataclasses.fields(expected)
        )
    return bool(actual == expected)


# -- strategies ---------------------------------------------------------------------------------

SQL_STRINGS = (
    "'; DROP TABLE horsies_tasks; --",
    "\"; DELETE FROM horsies_tasks WHERE '1'='1",
    "' OR '1'='1",
    "$$; TRUNCATE horsies_tasks; $$",
    "\\'; SELECT pg_sleep(10); --",
    "%(id)s %s {0} $1 ?",
    "E'\\x00' || chr(0)",
    "/* */ UNION SELECT password FROM pg_shadow --",
    "a\x00b",
    "\u202eevil\u200b\ufeff",
    "𝕳𝖔𝖗𝖘𝖎𝖊𝖘 🐎 ✓ 中文 العربية",
)

TAG_KEYS = (
    "__datetime__",
    "__date__",
    "__time__",
    "__task_result__",
    "__task_error__",
    "__pydantic_model__",
    "__dataclass__",
    "value",
    "module",
    "qualname",
    "data",
    "ok",
    "err",
)

_SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
SAFE_TEXT = (
    st.text(max_size=20)
    | st.sampled_from(SQL_STRINGS)
    | st.sampled_from(TAG_KEYS)
    | st.text(st.characters(max_codepoint=0x1F), max_size=5)  # NUL and other controls
)
TEXT = SAFE_TEXT | st.builds(
    lambda a, s, b: a + s + b, st.text(max_size=4), _SURROGATES, st.text(max_size=4)
)

SAFE_INTS = st.integers(INT_MIN, INT_MAX) | st.sampled_from(
    [0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, INT_MAX, INT_MIN]
)
INTS = st.integers() | SAFE_INTS | st.sampled_from([INT_MAX + 1, INT_MIN - 1, 10**40])
SAFE_FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [-0.0, 5e-324, 1.7976931348623157e308]
)
FLOATS = st.floats() | SAFE_FLOATS | st.sampled_from([float("nan"), float("inf"), -float("inf")])
_OFFSETS = st.builds(
    dt.timezone, st.integers(-23 * 60, 23 * 60).map(lambda minutes: dt.timedelta(minutes=minutes))
)
_ZONES = st.none() | _OFFSETS | st.just(dt.UTC) | st.timezones()
DATETIMES = st.datetimes(timezones=_ZONES)
TIMES = st.times(timezones=st.none() | _OFFSETS)

_SOCKET = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
atexit.register(_SOCKET.close)

UNSERIALIZABLE = st.sampled_from(
    [
        lambda: None,
        print,
        object(),
        threading.Lock(),
        _SOCKET,
        Plain.A,
        1 + 2j,
        Ellipsis,
        int,
        range(3).__iter__(),
        memoryview(b"ab"),
    ]
) | st.one_of(
    st.binary(max_size=8),
    st.binary(max_size=8).map(bytearray),
    st.sets(st.integers(), max_size=3),
    st.frozensets(st.text(max_size=3), max_size=3),
)


def _readings(text: st.SearchStrategy[str], floats: st.SearchStrategy[float], ints: Any) -> Any:
    return st.builds(
        Reading,
        name=text,
        value=floats,
        at=st.none() | st.datetimes(timezones=st.none() | _OFFSETS),
        tags=st.lists(text, max_size=3),
        counts=st.dictionaries(text, ints, max_size=3),
    )


_SAFE_LEAVES = (
    st.none()
    | st.booleans()
    | SAFE_INTS
    | SAFE_FLOATS
    | SAFE_TEXT
    | DATETIMES
    | st.dates()
    | TIMES
    | st.sampled_from(list(Color))
    | st.sampled_from(list(Level))
    | _readings(SAFE_TEXT, SAFE_FLOATS, SAFE_INTS)
)
_HOSTILE_LEAVES = (
    INTS | FLOATS | TEXT | _readings(TEXT, FLOATS, INTS) | UNSERIALIZABLE | _SAFE_LEAVES
)

_KEYS = TEXT | INTS | st.booleans() | st.none() | FLOATS | st.tuples(st.integers(), TEXT)
_SAFE_KEYS = SAFE_TEXT | SAFE_INTS | st.booleans() | st.none() | SAFE_FLOATS


def _containers_of(keys: st.SearchStrategy[Any], text: st.SearchStrategy[str]) -> Any:
    def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return (
            st.lists(children, max_size=4)
            | st.tuples(children, children)
            | st.dictionaries(keys, children, max_size=4)
            | st.fixed_dictionaries({"__datetime__": st.just(True), "value": children})
            | st.fixed_dictionaries(
                {"__pydantic_model__": st.just(True), "module": st.just("os"), "qualname": text}
            )
            | st.fixed_dictionaries(
                {"__dataclass__": st.just(True), "module": st.just("this"), "data": children}
            )
            | st.builds(Box, children)
            | st.builds(Pair, children, children)
            | st.builds(Coord, st.integers(-5, 5), st.integers(-5, 5))
        )

    return containers


HOSTILE_VALUES: st.SearchStrategy[Any] = st.recursive(
    _HOSTILE_LEAVES, _containers_of(_KEYS, TEXT), max_leaves=12
)
"""Any argument a user (or an attacker feeding a user's code) might pass to ``send``."""

_STORABLE = st.recursive(_SAFE_LEAVES, _containers_of(_SAFE_KEYS, SAFE_TEXT), max_leaves=12)
MOSTLY_SENDABLE: st.SearchStrategy[Any] = st.one_of(_STORABLE, _STORABLE, _STORABLE, HOSTILE_VALUES)
"""Hostile structures, three times out of four built from storable parts only (so most of them
reach the worker)."""

KWARG_NAMES = (SAFE_TEXT | SAFE_TEXT | TEXT | st.sampled_from([CTX_KEY, META_KEY])).filter(
    lambda name: name != "key"
)
"""Keyword argument names (``key`` is the ledger key of the echo task)."""


# -- one worker for the whole module ------------------------------------------------------------


def module_worker_fixture(
    *args: str, env: Mapping[str, str] | None = None, name: str = "worker"
) -> Any:
    """A module-scoped fixture ``name``: ``worker = module_worker_fixture("--processes", "1")``.

    A ready ``horsies worker`` of the ledger app on the module's database (ledger created), with
    the command-line options ``args`` and the app environment ``env``; stopped (only it) after
    the module.
    """

    @pytest.fixture(scope="module", name=name)
    def worker(
        database_url: str, database_conninfo: str, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[LedgerWorker]:
        create_ledger(database_conninfo)
        log_path = tmp_path_factory.mktemp(name) / "worker.log"
        started = LedgerWorker(database_url, log_path, list(args), env or {})
        try:
            started.wait_ready()
            yield started
        finally:
            started.reap()

    return worker
