"""The step protocol of the broker's sans-IO operations.

An operation is a generator that yields steps (:class:`Query`, :class:`Pipeline`, :class:`Copy`,
:class:`CopyData`, :class:`Prepared`) and receives a :class:`QueryResult` for each
(``Op[T] = Generator[Step, QueryResult, T]``); its return value is the operation's result. It
holds every decision and no I/O, so the same operation runs on a sync connection and on an async
one, and its parameter building and row interpretation are testable without a database.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, LiteralString, TypeAlias, TypeVar

__all__ = [
    "STEP_TYPES",
    "Copy",
    "CopyData",
    "Op",
    "Pipeline",
    "Prepared",
    "Query",
    "QueryResult",
    "RowKind",
    "Step",
    "run_query",
    "together",
]

T = TypeVar("T")

RowKind = Literal["tuple", "dict", "none"]


@dataclass(frozen=True, slots=True)
class Query:
    """One statement to execute: SQL constant, named parameters, and how to return rows."""

    sql: LiteralString
    params: Mapping[str, Any] | None = None
    rows: RowKind = "tuple"
    prepare: bool | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """One single-row statement run as a named server-side prepared statement, sent through libpq
    directly (``pools``): no psycopg cursor, no query conversion, text parameters.

    ``sql`` uses named ``%(name)s`` placeholders, each once; ``params`` are their values in order
    of appearance (None, str, int or aware datetime) and ``types`` their PostgreSQL types. The
    executor falls back to an ordinary prepared cursor execution (same statement, same errors) for
    anything it cannot send as is: other value types, text holding NUL, a non-UTF-8 connection,
    echo. Its result has no rows, only the row count.
    """

    name: str
    sql: LiteralString
    types: tuple[str, ...]
    params: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Statements sent together in one round trip, in order.

    Outside an explicit transaction they run in one implicit transaction: all commit or none does
    (an error skips the rest). Only for statements whose parameters do not depend on each other's
    results.
    """

    queries: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Rows (tuples or dicts, per ``Query.rows``) and the server's row count of one statement; for a
    :class:`Pipeline` step, one result per statement in ``parts`` (``rows`` empty)."""

    rows: list[Any]
    rowcount: int
    parts: tuple[QueryResult, ...] = ()


@dataclass(frozen=True, slots=True)
class Copy:
    """Rows streamed into a table with ``COPY ... FROM STDIN (FORMAT BINARY)``: the fastest bulk
    insert. ``types`` are the PostgreSQL types of the columns, in order. Its result's ``rowcount``
    is the number of rows sent."""

    sql: LiteralString
    types: tuple[str, ...]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class CopyData:
    """A ``COPY ... FROM STDIN (FORMAT BINARY)`` whose stream (header, rows, trailer) comes as
    ready-made chunks: written as they come, no per-row work in the driver.

    The stream's text fields are UTF-8: on a connection with another client encoding the executor
    streams ``rows()`` with ``types`` instead (as :class:`Copy`). ``data`` None always takes that
    path. Its result's ``rowcount`` is ``count``.
    """

    sql: LiteralString
    data: Iterable[bytes] | None
    count: int
    types: tuple[str, ...]
    rows: Callable[[], Iterable[Sequence[Any]]]


Step: TypeAlias = Query | Pipeline | Copy | Prepared | CopyData
STEP_TYPES: Final = (Query, Pipeline, Copy, Prepared, CopyData)
"""The step classes, to tell a single step from an operation."""
Op: TypeAlias = Generator[Step, QueryResult, T]


def run_query(query: Query) -> Op[QueryResult]:
    """The trivial operation: one statement, its result."""
    result = yield query
    return result


def together(queries: Sequence[Query]) -> Op[tuple[QueryResult, ...]]:
    """Run ``queries`` in one round trip: a plain step for one, a :class:`Pipeline` for several."""
    if len(queries) == 1:
        res = yield queries[0]
        return (res,)
    res = yield Pipeline(tuple(queries))
    return res.parts
