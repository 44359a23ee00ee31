"""Writing through the caller's own connection, inside the caller's transaction: the connections
a send or a workflow start accepts with ``within(connection)``, and the drivers that run a
program's statements on one.

Accepted: a psycopg 3 ``Connection`` or ``AsyncConnection``; a SQLAlchemy 2 ``Connection``,
``Session``, ``AsyncConnection`` or ``AsyncSession`` on the psycopg driver; Django's connection
(``django.db.connection`` or ``connections[alias]``) on its PostgreSQL backend with psycopg 3.
Each is reduced to the psycopg connection under it when the statements run, through the
libraries' public API; neither library is imported here: an object of one can exist only once
its library is loaded.

What differs from the broker's pooled drivers, and why:

- no transaction of horsies' own: the statements join the caller's open transaction, so they
  commit or roll back with it (a connection in autocommit mode outside any transaction gives an
  operation that must be atomic a transaction of its own);
- server-side prepared statements only where the caller's connection allows them: with its
  ``prepare_threshold`` set to None (a pooler in transaction mode, Django's default) every
  statement goes as an ordinary one; otherwise a send uses the same prepared INSERT as on the
  pool (prepared again if the owner deallocates it);
- no migration: DDL never runs in the caller's transaction. The schema version is read once per
  broker, and a missing or older schema refuses the call (E212);
- a lost connection is final: the caller's transaction is gone with it, so nothing is repeated.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from dataclasses import replace
from typing import Any, Final, Literal, TypeVar, cast

import psycopg
from psycopg import pq

from horsies.broker import prepared
from horsies.broker.async_pools import AsyncConn
from horsies.broker.driver_async import AsyncEffects
from horsies.broker.driver_async import run_any as run_any_async
from horsies.broker.driver_async import run_op as run_op_async
from horsies.broker.driver_errors import translate_error
from horsies.broker.driver_sync import SyncConn, SyncEffects, run_any, run_op
from horsies.broker.errors import BrokerError
from horsies.broker.migrations import LATEST_VERSION, SchemaGate, schema_version_op
from horsies.broker.programs import Run
from horsies.broker.steps import STEP_TYPES, Op, Pipeline, Prepared, Query, QueryResult, Step
from horsies.errors import ConfigurationError, ErrorCode

__all__ = ["CallerAsyncDriver", "CallerConnection", "CallerSyncDriver"]

T = TypeVar("T")

Kind = Literal["psycopg", "psycopg_async", "sqlalchemy", "sqlalchemy_async", "django"]

_ASYNC_KINDS: Final = frozenset({"psycopg_async", "sqlalchemy_async"})
_IDLE: Final = pq.TransactionStatus.IDLE
_ACCEPTED: Final = (
    "a psycopg 3 Connection or AsyncConnection, a SQLAlchemy 2 Connection, Session, "
    "AsyncConnection or AsyncSession on the psycopg driver, or Django's connection"
)


def _unsupported(message: str, help_text: str) -> ConfigurationError:
    return ConfigurationError(message, code=ErrorCode.CONNECTION_UNSUPPORTED).with_help(help_text)


def _class_in(obj: object, module: str, *names: str) -> bool:
    """True when ``obj`` is an instance of one of the classes ``names`` of ``module``, which is
    only looked at once something else has imported it."""
    loaded = sys.modules.get(module)
    if loaded is None:
        return False
    classes = tuple(c for c in (getattr(loaded, n, None) for n in names) if isinstance(c, type))
    return isinstance(obj, classes)


def _kind_of(obj: object) -> Kind:
    if isinstance(obj, psycopg.Connection):
        return "psycopg"
    if isinstance(obj, psycopg.AsyncConnection):
        return "psycopg_async"
    if _class_in(obj, "sqlalchemy.ext.asyncio", "AsyncConnection", "AsyncSession"):
        return "sqlalchemy_async"
    if _class_in(obj, "sqlalchemy.engine", "Connection") or _class_in(
        obj, "sqlalchemy.orm", "Session"
    ):
        return "sqlalchemy"
    if type(obj).__module__.startswith("django.") and hasattr(obj, "ensure_connection"):
        vendor = getattr(obj, "vendor", None)
        if vendor != "postgresql":
            raise _unsupported(
                f"Django's connection is to {vendor!r}, not PostgreSQL",
                "send within the connection of a database that uses django.db.backends.postgresql",
            )
        return "django"
    raise _unsupported(
        f"cannot send within {type(obj).__module__}.{type(obj).__qualname__}",
        f"pass {_ACCEPTED}",
    )


def _driver_connection(raw: object, kind: str) -> Any:
    """The psycopg connection under SQLAlchemy's pooled DB-API connection ``raw``."""
    conn: object = getattr(raw, "driver_connection", None)
    wanted = psycopg.AsyncConnection if kind == "sqlalchemy_async" else psycopg.Connection
    if not isinstance(conn, wanted):
        raise _unsupported(
            f"the SQLAlchemy engine uses {type(conn).__module__}, not psycopg 3",
            "create the engine with a postgresql+psycopg:// URL",
        )
    return cast(Any, conn)


class CallerConnection:
    """The connection object given to ``within()``, checked at once and reduced to its psycopg
    connection when a call runs (a SQLAlchemy session may only then begin its transaction)."""

    __slots__ = ("given", "kind")

    def __init__(self, given: object) -> None:
        """Raises ``ConfigurationError`` (E211) for an object horsies cannot write through."""
        self.kind: Kind = _kind_of(given)
        self.given = given

    def _wrong_flavour(self, wanted: str) -> ConfigurationError:
        given = "an asyncio" if self.kind in _ASYNC_KINDS else "a blocking"
        return _unsupported(
            f"{given} connection ({type(self.given).__qualname__}) cannot serve {wanted}",
            "use send()/send_many()/schedule()/start() with a blocking connection and "
            "send_async()/send_many_async()/start_async() with an asyncio one",
        )

    def sync_connection(self) -> SyncConn:
        """The psycopg connection for a blocking call."""
        given: Any = self.given
        match self.kind:
            case "psycopg":
                return given
            case "sqlalchemy":
                if _class_in(given, "sqlalchemy.orm", "Session"):
                    given = given.connection()  # the session's, in its transaction
                return _driver_connection(given.connection, self.kind)
            case "django":
                given.ensure_connection()
                raw: object = given.connection
                if not isinstance(raw, psycopg.Connection):
                    raise _unsupported(
                        "Django's PostgreSQL backend runs on psycopg2 here, not psycopg 3",
                        "install psycopg 3 (Django 4.2 and later use it when it is installed)",
                    )
                return cast(SyncConn, raw)
            case _:
                raise self._wrong_flavour("a blocking call")

    async def async_connection(self) -> AsyncConn:
        """The psycopg connection for an async call."""
        given: Any = self.given
        match self.kind:
            case "psycopg_async":
                return given
            case "sqlalchemy_async":
                if _class_in(given, "sqlalchemy.ext.asyncio", "AsyncSession"):
                    given = await given.connection()
                return _driver_connection(await given.get_raw_connection(), self.kind)
            case _:
                raise self._wrong_flavour("an async call")


# -- running statements on the caller's connection ------------------------------------------------


def _plain_query(query: Query) -> Query:
    return replace(query, prepare=None) if query.prepare else query


def _plain_step(step: Step) -> Step:
    """``step`` without server-side statements of horsies' own (see the module docstring)."""
    if isinstance(step, Prepared):
        return _plain_query(prepared.fallback_query(step))
    if isinstance(step, Query):
        return _plain_query(step)
    if isinstance(step, Pipeline):
        return Pipeline(tuple(_plain_query(q) for q in step.queries))
    return step


def _plain_op(op: Op[T]) -> Generator[Step, QueryResult, T]:
    try:
        step = next(op)
        while True:
            result = yield _plain_step(step)
            step = op.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


def _plain(op: Op[Any] | Step) -> Op[Any] | Step:
    return _plain_step(op) if isinstance(op, STEP_TYPES) else _plain_op(op)


def _own_transaction(conn: SyncConn | AsyncConn, effect: Run[Any]) -> bool:
    """True when an operation that must be atomic needs a transaction of its own: the connection
    is in autocommit mode and outside any transaction (otherwise it joins the caller's)."""
    return effect.transaction and conn.autocommit and conn.info.transaction_status == _IDLE


def _not_begun(conn: SyncConn | AsyncConn) -> bool:
    """True when psycopg has yet to begin the caller's transaction: it does so before the next
    statement sent through it, never before a prepared statement sent through libpq directly
    (which would then commit on its own), so the first statements go through psycopg."""
    return not conn.autocommit and conn.info.transaction_status == _IDLE


def _check_schema(version: int, schema: SchemaGate) -> None:
    if version < LATEST_VERSION:
        found = "no horsies schema" if version == 0 else f"schema version {version}"
        raise ConfigurationError(
            f"the database of this connection has {found}; this horsies needs version "
            f"{LATEST_VERSION}",
            code=ErrorCode.SCHEMA_NOT_INSTALLED,
        ).with_help(
            "install or upgrade the schema before sending in your own transaction (never done "
            "inside it): call app.get_broker().ensure_schema_initialized_sync() at start-up, or "
            "start a worker once"
        )
    schema.ready = True


def _final(exc: psycopg.Error, action: str) -> BrokerError:
    """The BrokerError of a statement on the caller's connection: never marked as a lost
    connection to repeat, since the caller's transaction cannot be repeated by horsies."""
    error = translate_error(exc, action)
    return BrokerError(str(error), sqlstate=error.sqlstate, unreachable=error.unreachable)


class CallerSyncDriver(SyncEffects):
    """Runs a program's statements on the caller's blocking connection, in its transaction."""

    def __init__(self, conn: SyncConn, schema: SchemaGate, *, echo: bool = False) -> None:
        self._conn = conn
        self._schema = schema
        self._echo = echo
        self._plain = conn.prepare_threshold is None

    def run(self, effect: Run[T], *, bootstrap: bool = False) -> T:
        """Carry out one ``Run`` on the caller's connection (see the module docstring)."""
        conn, op = self._conn, effect.op
        steps = _plain(op) if self._plain or _not_begun(conn) else op
        try:
            if not self._schema.ready:
                _check_schema(run_op(conn, schema_version_op()), self._schema)
            if _own_transaction(conn, effect):
                with conn.transaction():
                    return run_any(conn, steps, self._echo)
            return run_any(conn, steps, self._echo)
        except psycopg.Error as exc:
            raise _final(exc, effect.action) from exc
        finally:
            if not isinstance(op, STEP_TYPES):
                op.close()


class CallerAsyncDriver(AsyncEffects):
    """Async twin of :class:`CallerSyncDriver`."""

    def __init__(self, conn: AsyncConn, schema: SchemaGate, *, echo: bool = False) -> None:
        self._conn = conn
        self._schema = schema
        self._echo = echo
        self._plain = conn.prepare_threshold is None

    async def run(self, effect: Run[T], *, bootstrap: bool = False) -> T:
        """Carry out one ``Run`` on the caller's connection (see the module docstring)."""
        conn, op = self._conn, effect.op
        steps = _plain(op) if self._plain or _not_begun(conn) else op
        try:
            if not self._schema.ready:
                _check_schema(await run_op_async(conn, schema_version_op()), self._schema)
            if _own_transaction(conn, effect):
                async with conn.transaction():
                    return await run_any_async(conn, steps, self._echo)
            return await run_any_async(conn, steps, self._echo)
        except psycopg.Error as exc:
            raise _final(exc, effect.action) from exc
        finally:
            if not isinstance(op, STEP_TYPES):
                op.close()
