"""Prepared statements behind a real PgBouncer in transaction pooling.

psycopg prepares, under names of its own (``_pg3_0``, ``_pg3_1``, ...), every statement a connection
runs five times, and horsies prepares its single send's INSERT; in transaction pooling the
statements of one client connection land on whichever server connection serves each transaction.
Without PgBouncer's tracking of prepared statements (before 1.21, or ``max_prepared_statements =
0``) two clients' ``_pg3_0`` meet on one server: the second one's statement fails, or runs the
first one's. With the tracking each client gets its own statement wherever it runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg
import pytest
from horsies.broker import PostgresBroker
from horsies.config import PostgresConfig
from horsies.results import LibraryErrorCode, TaskError
from pgbouncer_harness import Bouncer, PgBouncerBinary, StartBouncer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

_THRESHOLD_RUNS = 6
"""psycopg prepares a statement on its sixth run on one connection (``prepare_threshold`` 5)."""


def _without_tracking(pgbouncer: PgBouncerBinary) -> dict[str, str]:
    # An old PgBouncer has no such setting (and refuses it); a new one must be told to stay out.
    return {"max_prepared_statements": "0"} if pgbouncer.tracks_prepared_statements else {}


def _prepared_here(conn: psycopg.Connection[Any]) -> list[str]:
    """The statements prepared on the server connection serving ``conn``'s transaction."""
    return [str(r[0]) for r in conn.execute("SELECT statement FROM pg_prepared_statements")]


def _what_b_runs(bouncer: Bouncer, database: str) -> str:
    """Make clients ``a`` and ``b`` each prepare a statement (both named ``_pg3_0`` by psycopg) on
    two different server connections, then run ``b``'s on the server holding ``a``'s; returns what
    ``b`` got back. Two clients hold transactions open to pin the server connections."""
    with ExitStack() as stack:
        a, b, pin_a, pin_b = (
            stack.enter_context(psycopg.connect(bouncer.conninfo(database), autocommit=True))
            for _ in range(4)
        )
        for _ in range(_THRESHOLD_RUNS):
            a.execute("SELECT 'a:' || %s::text", ("x",))
        pin_a.execute("BEGIN")
        assert any("'a:'" in s for s in _prepared_here(pin_a)), "pin_a holds a's server"
        for _ in range(_THRESHOLD_RUNS):
            b.execute("SELECT 'b:' || %s::text", ("x",))
        pin_b.execute("BEGIN")
        assert any("'b:'" in s for s in _prepared_here(pin_b)), "pin_b holds b's server"
        pin_a.execute("COMMIT")  # a's server is now the only free one
        row = b.execute("SELECT 'b:' || %s::text", ("x",)).fetchone()
        pin_b.execute("COMMIT")
    assert row is not None
    return str(row[0])


def test_pgbouncer_before_1_21_refuses_max_prepared_statements(
    pgbouncer: PgBouncerBinary, start_bouncer: StartBouncer
) -> None:
    if pgbouncer.tracks_prepared_statements:
        pytest.skip("this PgBouncer supports max_prepared_statements")
    bouncer = start_bouncer(settings={"max_prepared_statements": "100"}, ready=False)
    assert bouncer.wait_exit(timeout=15) != 0
    assert "unknown parameter" in bouncer.output()


def test_without_tracking_a_client_runs_another_clients_statement(
    pgbouncer: PgBouncerBinary, start_bouncer: StartBouncer, database_name: str
) -> None:
    bouncer = start_bouncer(pool_size=2, settings=_without_tracking(pgbouncer))
    assert _what_b_runs(bouncer, database_name) == "a:x"


def test_with_tracking_each_client_runs_its_own_statement(
    pgbouncer: PgBouncerBinary, start_bouncer: StartBouncer, database_name: str
) -> None:
    pgbouncer.skip_without_tracking()
    bouncer = start_bouncer(pool_size=2, settings={"max_prepared_statements": "100"})
    assert _what_b_runs(bouncer, database_name) == "b:x"


def _read_results(brokers: list[PostgresBroker]) -> list[TaskError]:
    """Each broker reads an unknown task's result often enough for psycopg to prepare the read
    (each connection names it ``_pg3_0``); the errors of every read, in order."""
    return [
        broker.get_result(str(uuid.uuid4()), timeout_ms=5_000).unwrap_err()
        for broker in brokers
        for _ in range(_THRESHOLD_RUNS)
    ]


@contextmanager
def _brokers_through(
    start_bouncer: StartBouncer,
    database_name: str,
    settings: dict[str, str],
    pool_mode: str = "transaction",
) -> Iterator[list[PostgresBroker]]:
    """Two brokers through a new bouncer, closed when the block ends."""
    # In transaction pooling, one server connection: the two brokers' statements meet on it.
    pool_size = 1 if pool_mode == "transaction" else 2
    bouncer = start_bouncer(pool_mode=pool_mode, pool_size=pool_size, settings=settings)
    config = PostgresConfig(database_url=bouncer.url(database_name), pool_size=1)
    brokers = [PostgresBroker(config) for _ in range(2)]
    try:
        yield brokers
    finally:
        for broker in brokers:
            broker.close()


def test_without_tracking_horsies_reads_fail_once_psycopg_prepares_them(
    pgbouncer: PgBouncerBinary, start_bouncer: StartBouncer, database_name: str
) -> None:
    with _brokers_through(start_bouncer, database_name, _without_tracking(pgbouncer)) as brokers:
        *first, last = _read_results(brokers)
    assert [e.error_code for e in first] == [LibraryErrorCode.TASK_NOT_FOUND] * len(first)
    assert last.error_code == LibraryErrorCode.BROKER_ERROR
    assert 'prepared statement "_pg3_0" already exists' in str(last.exception)


def test_with_tracking_horsies_reads_keep_working(
    pgbouncer: PgBouncerBinary, start_bouncer: StartBouncer, database_name: str
) -> None:
    pgbouncer.skip_without_tracking()
    tracking = {"max_prepared_statements": "100"}
    with _brokers_through(start_bouncer, database_name, tracking) as brokers:
        codes = [e.error_code for e in _read_results(brokers)]
    assert codes == [LibraryErrorCode.TASK_NOT_FOUND] * (2 * _THRESHOLD_RUNS)


def test_in_session_pooling_each_client_keeps_its_statements(
    start_bouncer: StartBouncer, database_name: str
) -> None:
    with _brokers_through(start_bouncer, database_name, {}, pool_mode="session") as brokers:
        codes = [e.error_code for e in _read_results(brokers)]
    assert codes == [LibraryErrorCode.TASK_NOT_FOUND] * (2 * _THRESHOLD_RUNS)


def test_the_default_of_max_prepared_statements(
    pgbouncer: PgBouncerBinary, start_bouncer: StartBouncer, database_name: str
) -> None:
    # PgBouncer turned the tracking on by default in 1.24 (200 statements); 1.21 to 1.23 have it
    # off unless set. (Before 1.21 there is nothing to turn on: tested above.)
    pgbouncer.skip_without_tracking()
    with _brokers_through(start_bouncer, database_name, {}) as brokers:
        codes = [e.error_code for e in _read_results(brokers)]
    works = codes == [LibraryErrorCode.TASK_NOT_FOUND] * (2 * _THRESHOLD_RUNS)
    assert works is (pgbouncer.version >= (1, 24, 0)), codes
