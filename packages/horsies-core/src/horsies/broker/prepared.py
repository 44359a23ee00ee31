"""Named prepared statements sent through libpq directly: the single send's INSERT.

A send is one INSERT, and psycopg's cursor costs about 20 us of Python around it (query conversion,
parameter dumping, result bookkeeping): a tenth of a send. A :class:`~horsies.broker.steps.Prepared`
step skips it. The statement is prepared once per connection under its own name, then executed with
text parameters through the connection's ``pgconn`` (psycopg's public libpq wrapper). Both drivers
wait for the result with the connection's own wait loop (so Ctrl-C still cancels, and a broken
connection raises the same ``OperationalError`` as a cursor) and decide everything else here.

Anything this path cannot send exactly as psycopg would (other value types, text holding NUL, a
client encoding other than UTF-8, ``echo``) falls back to an ordinary prepared cursor execution of
the same statement: same statement, same errors.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

import psycopg
from psycopg import pq

from horsies.broker.steps import Prepared, Query, QueryResult

__all__ = [
    "PreparedNames",
    "await_results",
    "check_prepare",
    "fallback_query",
    "is_deallocated",
    "prepare_args",
    "prepared_names",
    "prepared_result",
    "text_params",
]

_TYPE_OIDS: Final = {"text": 25, "int4": 23, "timestamptz": 1184}
_INT4_MIN: Final = -(2**31)
_INT4_MAX: Final = 2**31 - 1
_DUPLICATE_PREPARED: Final = "42P05"
_UNDEFINED_PREPARED: Final = "26000"
_PREPARED_ATTR: Final = "_horsies_prepared"
_PLACEHOLDER: Final = re.compile(r"%\((\w+)\)s")
_numbered_cache: dict[str, tuple[bytes, tuple[str, ...]]] = {}

AnyConn = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]
Wait: TypeAlias = Literal["r", "w"]
"""What :func:`await_results` waits for: the socket readable or writable."""


class PreparedNames:
    """Per connection: the statement names prepared on it, and whether the libpq path may be used
    (UTF-8 client encoding)."""

    __slots__ = ("names", "usable")

    def __init__(self, conn: AnyConn) -> None:
        self.names: set[str] = set()
        self.usable = conn.info.encoding == "utf-8"


def prepared_names(conn: AnyConn) -> PreparedNames:
    """The :class:`PreparedNames` of ``conn`` (kept on the connection object)."""
    names: PreparedNames | None = getattr(conn, _PREPARED_ATTR, None)
    if names is None:
        names = PreparedNames(conn)
        setattr(conn, _PREPARED_ATTR, names)
    return names


def _numbered(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """``sql`` with its ``%(name)s`` placeholders numbered ``$1``, ``$2``, ... (libpq's form), and
    the names in that order."""
    numbered = _numbered_cache.get(sql)
    if numbered is None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            names.append(match.group(1))
            return f"${len(names)}"

        numbered = (_PLACEHOLDER.sub(number, sql).encode(), tuple(names))
        _numbered_cache[sql] = numbered
    return numbered


def prepare_args(step: Prepared) -> tuple[bytes, bytes, list[int]]:
    """(name, numbered SQL, parameter type oids) for ``pgconn.send_prepare``."""
    return step.name.encode(), _numbered(step.sql)[0], [_TYPE_OIDS[t] for t in step.types]


def text_params(step: Prepared) -> list[bytes | None] | None:
    """The parameters as libpq text values, or None when one is not a plain value this path sends
    exactly as psycopg would (the caller then uses :func:`fallback_query`)."""
    out: list[bytes | None] = []
    for value, type_name in zip(step.params, step.types, strict=True):
        if value is None:
            out.append(None)
            continue
        tp: type[Any] = type(value)  # pyright: ignore[reportUnknownVariableType]
        if tp is str:
            if "\x00" in value:
                return None  # psycopg refuses NUL with its own error
            try:
                out.append(value.encode())
            except UnicodeEncodeError:
                return None
        elif tp is int and type_name == "int4" and _INT4_MIN <= value <= _INT4_MAX:
            out.append(str(value).encode())
        elif tp is datetime and type_name == "timestamptz" and value.tzinfo is not None:
            out.append(str(value).encode())  # what psycopg's text datetime dumper sends
        else:
            return None
    return out


def fallback_query(step: Prepared) -> Query:
    """The same statement as an ordinary prepared cursor execution."""
    _, names = _numbered(step.sql)
    return Query(step.sql, dict(zip(names, step.params, strict=True)), rows="none", prepare=True)


def await_results(pgconn: pq.abc.PGconn) -> Generator[Wait, None, list[pq.abc.PGresult]]:
    """Flush a command sent on ``pgconn`` and collect its results, without blocking: yields
    ``"w"`` when the driver must wait until the socket is writable, ``"r"`` until it is readable.

    psycopg keeps its connections in non-blocking mode, so every libpq call here returns at once; a
    broken connection raises ``OperationalError`` from ``flush`` or ``consume_input``."""
    while pgconn.flush():
        yield "w"
    results: list[pq.abc.PGresult] = []
    while True:
        while pgconn.is_busy():
            yield "r"
            pgconn.consume_input()
        res = pgconn.get_result()
        if res is None:
            return results
        results.append(res)


def _sqlstate(res: pq.abc.PGresult) -> str:
    return (res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode("ascii", "replace")


def _error(res: pq.abc.PGresult) -> psycopg.Error:
    """The psycopg exception class of the result's SQLSTATE, with the server's message."""
    message = (res.error_message or b"").decode("utf-8", "replace").strip()
    cls = psycopg.errors.lookup(_sqlstate(res)) if _sqlstate(res) else psycopg.DatabaseError
    return cls(message)


def check_prepare(res: pq.abc.PGresult) -> None:
    """Raise for a failed PREPARE, unless the statement already existed on the connection."""
    if res.status == pq.ExecStatus.FATAL_ERROR and _sqlstate(res) != _DUPLICATE_PREPARED:
        raise _error(res)


def is_deallocated(res: pq.abc.PGresult, pgconn: pq.abc.PGconn) -> bool:
    """True when the statement was deallocated behind our back (``DEALLOCATE ALL``,
    ``DISCARD ALL``) outside a transaction: prepare it again and repeat."""
    return (
        res.status == pq.ExecStatus.FATAL_ERROR
        and _sqlstate(res) == _UNDEFINED_PREPARED
        and pgconn.transaction_status == pq.TransactionStatus.IDLE
    )


def prepared_result(res: pq.abc.PGresult) -> QueryResult:
    """The result of an executed prepared statement: its row count, or the error it raised."""
    if res.status == pq.ExecStatus.FATAL_ERROR:
        raise _error(res)
    count = res.command_tuples
    return QueryResult([], -1 if count is None else count)
