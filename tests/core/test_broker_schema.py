"""Schema migrations (fresh, idempotent, concurrent), the documented tables, columns, indexes and
notification triggers, and a
PREPARE of every SQL constant against the migrated schema (a renamed column fails here)."""

from __future__ import annotations

import re
import threading

import psycopg
import pytest
from horsies.broker import PostgresBroker
from horsies.broker.migrations import LATEST_VERSION, next_migration
from horsies.broker.sql import (
    attempts,
    heartbeats,
    limit_claim,
    limits,
    monitoring,
    ready,
    retention,
    schema,
    tasks,
    unique,
)
from horsies.config import PostgresConfig
from psycopg import sql
from schema_setup import migrate


def _versions(conninfo: str) -> list[int]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT version FROM horsies_schema_version ORDER BY version"
        ).fetchall()
    return [r[0] for r in rows]


def test_migrations_are_numbered_without_gaps() -> None:
    assert [m.version for m in schema.MIGRATIONS] == list(range(1, len(schema.MIGRATIONS) + 1))
    assert next_migration(0) == schema.MIGRATIONS[0]
    assert next_migration(LATEST_VERSION) is None
    assert next_migration(LATEST_VERSION + 5) is None  # a newer schema is left alone


def test_fresh_database_is_migrated_and_recorded(empty_db: str) -> None:
    migrate(empty_db)
    assert _versions(empty_db) == list(range(1, LATEST_VERSION + 1))


def test_migrating_twice_changes_nothing(empty_db: str) -> None:
    migrate(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO horsies_tasks (id, task_name, queue_name, status, sent_at) "
            "VALUES ('keep-me', 't', 'default', 'PENDING', now())"
        )
    migrate(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM horsies_tasks").fetchone() == (1,)
    assert _versions(empty_db) == list(range(1, LATEST_VERSION + 1))


@pytest.mark.timeout(60)
def test_ten_concurrent_migrators_apply_each_migration_once(empty_db: str) -> None:
    start = threading.Barrier(10)
    done: list[bool] = []
    errors: list[BaseException] = []

    def migrate() -> None:
        broker = PostgresBroker(PostgresConfig(database_url=empty_db, pool_size=1))
        try:
            start.wait(timeout=20)
            broker.ensure_schema_initialized_sync()
            done.append(True)
        except BaseException as exc:
            errors.append(exc)
        finally:
            broker.close()

    threads = [threading.Thread(target=migrate) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=40)
    assert not errors, errors
    assert done == [True] * 10
    assert _versions(empty_db) == list(range(1, LATEST_VERSION + 1))


def test_the_task_table_is_vacuumed_by_the_queues_dead_rows(database_conninfo: str) -> None:
    """Autovacuum of horsies_tasks fires at 2,000 dead rows plus 0.2 % of the table and cleans the
    indexes every time: the claim index's dead entries are what each claim walks over."""
    with psycopg.connect(database_conninfo) as conn:
        row = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = 'horsies_tasks'::regclass"
        ).fetchone()
    assert row is not None
    assert sorted(row[0]) == [
        "autovacuum_vacuum_scale_factor=0.002",
        "autovacuum_vacuum_threshold=2000",
        "vacuum_index_cleanup=on",
    ]


def test_every_claim_takes_tasks_without_a_limit_from_the_ready_table(
    database_conninfo: str,
) -> None:
    # Migration 17 replaced the limited claim's function so that it reads horsies_ready as the
    # ordinary claims do (their plans: test_broker_exchange.py).
    with psycopg.connect(database_conninfo) as conn:
        row = conn.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = 'horsies_claim_and_start_limited'"
        ).fetchone()
    assert row is not None
    assert "FROM horsies_ready AS r" in row[0]
    assert "t.queue_name = p_queue_name AND t.limit_name IS NULL" not in row[0]


def test_schema_objects_of_spec_06(database_conninfo: str) -> None:
    with psycopg.connect(database_conninfo) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'horsies%%'"
            ).fetchall()
        }
        triggers = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal"
            ).fetchall()
        }
        task_columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'horsies_tasks'"
            ).fetchall()
        }
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename LIKE 'horsies%%'"
            ).fetchall()
        }
    assert tables == {
        "horsies_tasks",
        "horsies_heartbeats",
        "horsies_worker_states",
        "horsies_schedule_state",
        "horsies_workflows",
        "horsies_workflow_tasks",
        "horsies_schema_version",
        "horsies_limits",
        "horsies_limit_starts",
        "horsies_task_attempts",
        "horsies_ready",
    }
    assert triggers["horsies_task_notify_trigger"] == "horsies_tasks"
    assert triggers["horsies_workflow_notify_trigger"] == "horsies_workflows"
    assert triggers["horsies_ready_update_trigger"] == "horsies_tasks"
    documented = {
        "id", "task_name", "queue_name", "priority", "args", "kwargs", "status", "sent_at",
        "claimed_at", "started_at", "completed_at", "failed_at", "result", "failed_reason",
        "claimed", "claimed_by_worker_id", "claim_expires_at", "good_until", "retry_count",
        "max_retries", "next_retry_at", "task_options", "worker_pid", "worker_hostname",
        "worker_process_name", "created_at", "updated_at",
    }  # fmt: skip
    assert documented <= task_columns
    assert {
        "ix_horsies_tasks_claim",
        "ix_horsies_heartbeats_task_role_sent",
        "uq_horsies_workflow_task_index",
        "idx_horsies_workflow_tasks_deps",
    } <= indexes


@pytest.mark.parametrize(
    ("status", "with_time", "ok"),
    [
        ("PENDING", False, True),
        ("BOGUS", False, False),
        ("COMPLETED", False, False),  # a finished state needs its timestamp
        ("COMPLETED", True, True),
        ("RUNNING", False, False),
    ],
)
def test_status_check_constraints(clean_db: str, status: str, with_time: bool, ok: bool) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO horsies_tasks (id, task_name, queue_name, status, sent_at) "
            "VALUES ('c1', 't', 'default', 'PENDING', now())"
        )
        stamp = sql.SQL(", completed_at = now()" if with_time else "")
        update = sql.SQL("UPDATE horsies_tasks SET status = {}{} WHERE id = 'c1'").format(
            sql.Literal(status), stamp
        )
        if ok:
            conn.execute(update)
        else:
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(update)


def test_priority_must_be_between_1_and_100(clean_db: str) -> None:
    with (
        psycopg.connect(clean_db, autocommit=True) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        conn.execute(
            "INSERT INTO horsies_tasks (id, task_name, queue_name, status, priority, sent_at) "
            "VALUES ('p', 't', 'default', 'PENDING', 0, now())"
        )


# -- every SQL constant prepares against the migrated schema -------------------------------------

_CONSTANT_MODULES = (
    tasks,
    monitoring,
    heartbeats,
    schema,
    limits,
    limit_claim,
    unique,
    retention,
    attempts,
    ready,
)


def _sql_constants() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for module in _CONSTANT_MODULES:
        for name, value in vars(module).items():
            if name.isupper() and not name.startswith("_") and isinstance(value, str):
                found.append((f"{module.__name__.rsplit('.', 1)[-1]}.{name}", value))
    return found


def _to_positional(query: str) -> str:
    numbers: dict[str, int] = {}

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        name = match.group(1)
        if name not in numbers:
            numbers[name] = len(numbers) + 1
        return f"${numbers[name]}"

    return re.sub(r"%%|%\((\w+)\)s", repl, query)


_DDL = (
    "SCHEMA_VERSION_CREATE",
    "V10_LIMITS",
    "V11_RETENTION",
    "V12_ATTEMPTS",
    "V14_LIMIT_START_NUMBERS",
    "V16_READY",
    "V17_LIMIT_CLAIM_READY",
)


@pytest.mark.parametrize(("name", "query"), _sql_constants(), ids=lambda v: v if "." in v else "")
def test_sql_constant_prepares(database_conninfo: str, name: str, query: str) -> None:
    if name.rsplit(".", 1)[-1] in _DDL:
        pytest.skip("DDL cannot be prepared; it runs in every migration test")
    with psycopg.connect(database_conninfo, autocommit=True) as conn:
        res = conn.pgconn.prepare(b"horsies_probe", _to_positional(query).encode())
        assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message.decode()


def test_all_constant_modules_are_covered() -> None:
    names = {n for n, _ in _sql_constants()}
    assert {"tasks.TASK_CLAIM_AVAILABLE", "tasks.TASK_FINISH_IF_RUNNING_MANY"} <= names
    assert len(names) >= 25
