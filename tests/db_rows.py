"""Direct SQL helpers for tests that inspect or prepare rows behind the broker's back."""

from __future__ import annotations

from datetime import datetime
from typing import Any, LiteralString

import psycopg
from horsies.config import PostgresConfig
from process_harness import wait_until
from psycopg.rows import dict_row


def sql(conninfo: str, query: LiteralString, params: Any = None) -> list[dict[str, Any]]:
    """Run one statement in autocommit mode; the rows it returns as dicts (empty without rows)."""
    with (
        psycopg.connect(conninfo, autocommit=True) as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        cur.execute(query, params)
        return cur.fetchall() if cur.description else []


def row(conninfo: str, task_id: str) -> dict[str, Any]:
    """The whole ``horsies_tasks`` row of one task."""
    return sql(conninfo, "SELECT * FROM horsies_tasks WHERE id = %s", (task_id,))[0]


class Db:
    """Direct reads and test-only writes on the horsies tables of a test database (what the
    library writes is read back here, never through the code under test)."""

    def __init__(self, database_url: str) -> None:
        self.conninfo = PostgresConfig(database_url=database_url).conninfo

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            cursor = conn.cursor(row_factory=dict_row)
            return cursor.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(sql, params)  # type: ignore[arg-type]

    def task(self, task_id: str) -> dict[str, Any]:
        rows = self.query("SELECT * FROM horsies_tasks WHERE id = %s", (task_id,))
        assert rows, f"task {task_id} not found"
        return rows[0]

    def status(self, task_id: str) -> str:
        return str(self.task(task_id)["status"])

    def wait_status(self, task_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            row = self.task(task_id)
            return row if row["status"] == status else None

        return wait_until(check, timeout, f"task {task_id} to be {status}")

    def tasks(self, task_name: str | None = None) -> list[dict[str, Any]]:
        """Task rows (optionally of one task name) in insertion order."""
        if task_name is None:
            return self.query("SELECT * FROM horsies_tasks ORDER BY created_at, sent_at")
        return self.query(
            "SELECT * FROM horsies_tasks WHERE task_name = %s ORDER BY created_at, sent_at",
            (task_name,),
        )

    def task_count(self) -> int:
        return int(self.query("SELECT count(*) AS n FROM horsies_tasks")[0]["n"])

    def state(self, name: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM horsies_schedule_state WHERE schedule_name = %s", (name,))
        return rows[0] if rows else None

    def states(self) -> dict[str, dict[str, Any]]:
        return {r["schedule_name"]: r for r in self.query("SELECT * FROM horsies_schedule_state")}

    def set_next_run(self, name: str, seconds_from_now: float) -> datetime:
        """Move a schedule's stored next run to ``now() + seconds_from_now`` (database clock)."""
        rows = self.query(
            "UPDATE horsies_schedule_state "
            "SET next_run_at = now() + make_interval(secs => %s) "
            "WHERE schedule_name = %s RETURNING next_run_at",
            (seconds_from_now, name),
        )
        assert rows, f"no state row for {name}"
        return rows[0]["next_run_at"]

    def now(self) -> datetime:
        return self.query("SELECT clock_timestamp() AS now")[0]["now"]
