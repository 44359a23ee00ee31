"""Throw-away databases: the template's schema, a database per test that starts empty, copies
and drops, and pointing an app created at import time at a test's database."""

from __future__ import annotations

from typing import LiteralString

import psycopg
import pytest
from horsies import Horsies
from horsies.config import PostgresConfig
from horsies.testing import ThrowawayServer, throwaway_database, use_database
from orders_app import ADD_THEN_DOUBLE, add, app

pytestmark = pytest.mark.timeout(60)

_COUNT_ROWS: dict[str, LiteralString] = {
    "horsies_tasks": "SELECT count(*) FROM horsies_tasks",
    "horsies_workflows": "SELECT count(*) FROM horsies_workflows",
    "horsies_workflow_tasks": "SELECT count(*) FROM horsies_workflow_tasks",
    "horsies_heartbeats": "SELECT count(*) FROM horsies_heartbeats",
    "horsies_worker_states": "SELECT count(*) FROM horsies_worker_states",
    "horsies_schedule_state": "SELECT count(*) FROM horsies_schedule_state",
}


def _scalar(database_url: str, query: LiteralString) -> int:
    conninfo = PostgresConfig(database_url=database_url).conninfo
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _row_counts(database_url: str) -> dict[str, int]:
    return {table: _scalar(database_url, query) for table, query in _COUNT_ROWS.items()}


def test_a_test_may_leave_rows_behind(horsies_app: Horsies, horsies_database_url: str) -> None:
    """Rows in every kind of table, for the next test not to see (the tests of one file run in
    order, in one process)."""
    del horsies_app  # the app sends to the test's database
    assert add.send(1, 2).task_id != "<error>"
    ADD_THEN_DOUBLE.start()
    conninfo = PostgresConfig(database_url=horsies_database_url).conninfo
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO horsies_heartbeats (task_id, sender_id, role) VALUES ('t', 's', 'runner')"
        )
    counts = _row_counts(horsies_database_url)
    assert counts["horsies_tasks"] == 2
    assert counts["horsies_workflows"] == 1
    assert counts["horsies_workflow_tasks"] == 2
    assert counts["horsies_heartbeats"] == 1


def test_each_test_starts_with_an_empty_database(horsies_database_url: str) -> None:
    assert _row_counts(horsies_database_url) == dict.fromkeys(_COUNT_ROWS, 0)
    assert _scalar(horsies_database_url, "SELECT max(version) FROM horsies_schema_version") >= 1


def test_a_fresh_database_is_a_copy_of_the_template_of_the_tests_own(
    horsies_database_url: str, horsies_fresh_database_url: str
) -> None:
    assert horsies_fresh_database_url != horsies_database_url
    assert _row_counts(horsies_fresh_database_url) == dict.fromkeys(_COUNT_ROWS, 0)
    fresh_version = "SELECT max(version) FROM horsies_schema_version"
    assert _scalar(horsies_fresh_database_url, fresh_version) == _scalar(
        horsies_database_url, fresh_version
    )


def test_a_dropped_database_is_gone_and_only_own_databases_are_dropped(
    horsies_server: ThrowawayServer, horsies_database_url: str
) -> None:
    url = horsies_server.create_database()
    assert _scalar(url, "SELECT 1") == 1
    horsies_server.drop_database(url)
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        _scalar(url, "SELECT 1")
    with pytest.raises(ValueError, match="not a database this ThrowawayServer created"):
        horsies_server.drop_database(horsies_server.url_for("postgres"))
    with pytest.raises(ValueError, match="not a database this ThrowawayServer created"):
        horsies_server.empty_database(horsies_server.url_for(horsies_server.template))
    assert _scalar(horsies_database_url, "SELECT 1") == 1


def test_throwaway_database_outside_pytest_fixtures(horsies_server: ThrowawayServer) -> None:
    with throwaway_database(horsies_server) as url:
        assert _row_counts(url)["horsies_tasks"] == 0
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        _scalar(url, "SELECT 1")


def test_use_database_points_the_app_there_and_gives_its_own_back(
    horsies_fresh_database_url: str,
) -> None:
    own_config = app.config.broker
    with use_database(app, horsies_fresh_database_url) as bound:
        assert bound is app
        assert app.config.broker.database_url == horsies_fresh_database_url
        assert app.config.broker.pool_size == own_config.pool_size
        handle = add.send(2, 3)
        broker = app.get_broker()
    assert app.config.broker is own_config
    assert app.get_broker() is not broker
    added = "SELECT count(*) FROM horsies_tasks WHERE task_name = 'orders.add'"
    assert _scalar(horsies_fresh_database_url, added) == 1
    assert handle.task_id != "<error>"
