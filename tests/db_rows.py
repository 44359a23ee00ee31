"""Direct SQL helpers for tests that inspect or prepare rows behind the broker's back."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from horsies.broker.sql.tasks import TASK_PLANS_GENERIC_IN_TRANSACTION
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


def generic_plan(
    conninfo: str, query: str, params: Mapping[str, Any], costs: Mapping[str, float] | None = None
) -> str:
    """The plan of ``query`` (``%(name)s`` placeholders) with ``params`` under the settings a
    worker's exchange runs its statements with (generic plans, no sequential or bitmap scans:
    ``TASK_PLANS_GENERIC_IN_TRANSACTION``; EXPLAIN without costs; a data-modifying statement is
    not run). ``costs``: planner cost settings for the session (``random_page_cost``...), to plan
    as on a table too big to make in a test."""
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${names.setdefault(match.group(1), len(names) + 1)}"

    positional = re.sub(r"%\((\w+)\)s", number, query)
    with psycopg.connect(conninfo, cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute(TASK_PLANS_GENERIC_IN_TRANSACTION)
        for name, value in (costs or {}).items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, str(value)))
        conn.execute(f"PREPARE probe AS {positional}")  # type: ignore[arg-type]
        values = [params[name] for name in names]
        placeholders = ", ".join("%s" for _ in values)
        plan = conn.execute(
            f"EXPLAIN (COSTS OFF) EXECUTE probe({placeholders})",  # type: ignore[arg-type]
            values,
        ).fetchall()
        conn.rollback()
    return "\n".join(str(r[0]) for r in plan)


# The tasks an ordinary claim may take without their horsies_ready row ("missing": a task no claim
# would find) and the horsies_ready rows without such a task ("ghost"), compared by the whole key.
_READY_MISMATCHES: LiteralString = """
WITH claimable AS (
    SELECT queue_name, priority, sent_at, id FROM horsies_tasks
    WHERE status IN ('PENDING', 'CLAIMED') AND limit_name IS NULL AND sent_at IS NOT NULL
)
(SELECT 'missing' AS kind, id FROM (SELECT * FROM claimable EXCEPT ALL
                                    SELECT * FROM horsies_ready) AS m)
UNION ALL
(SELECT 'ghost', id FROM (SELECT * FROM horsies_ready EXCEPT ALL SELECT * FROM claimable) AS g)
ORDER BY 1, 2
"""


def ready_mismatches(conninfo: str) -> list[tuple[str, str]]:
    """Where ``horsies_ready`` and the task table disagree: ``(kind, task id)`` pairs, kind
    "missing" (a claimable task without its row) or "ghost" (a row without a claimable task)."""
    return [(r["kind"], r["id"]) for r in sql(conninfo, _READY_MISMATCHES)]


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

    def failed_task(self, task_id: str) -> dict[str, Any]:
        """The row of a task that must have failed: status FAILED with a ``failed_at`` time."""
        row = self.task(task_id)
        assert row["status"] == "FAILED", row
        assert row["failed_at"] is not None, row
        return row

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

    # -- workflows ---------------------------------------------------------------------------------

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        """The ``horsies_workflows`` row of one workflow."""
        rows = self.query("SELECT * FROM horsies_workflows WHERE id = %s", (workflow_id,))
        assert rows, f"workflow {workflow_id} not found"
        return rows[0]

    def nodes(self, workflow_id: str) -> dict[str, dict[str, Any]]:
        """The node rows (``horsies_workflow_tasks``) of a workflow by node id, in index order."""
        rows = self.query(
            "SELECT * FROM horsies_workflow_tasks WHERE workflow_id = %s ORDER BY task_index",
            (workflow_id,),
        )
        return {row["node_id"]: row for row in rows}

    def node_statuses(self, workflow_id: str) -> dict[str, str]:
        return {node_id: row["status"] for node_id, row in self.nodes(workflow_id).items()}

    def no_active_nodes(self, workflow_id: str) -> bool:
        """No node of the workflow is ENQUEUED or RUNNING."""
        statuses = self.node_statuses(workflow_id).values()
        return not any(status in ("ENQUEUED", "RUNNING") for status in statuses)

    def workflow_tasks(self, workflow_id: str) -> list[dict[str, Any]]:
        """The ``horsies_tasks`` rows created for a workflow's task nodes, in sending order."""
        return self.query(
            "SELECT * FROM horsies_tasks WHERE workflow_id = %s ORDER BY sent_at, id",
            (workflow_id,),
        )

    def wait_node(
        self, workflow_id: str, node_id: str, *statuses: str, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Wait until the node's status is one of ``statuses``; its row."""

        def check() -> dict[str, Any] | None:
            row = self.nodes(workflow_id).get(node_id)
            return row if row is not None and row["status"] in statuses else None

        return wait_until(check, timeout, f"node {node_id} of {workflow_id} to be {statuses}")

    def wait_workflow(self, workflow_id: str, status: str, timeout: float = 30.0) -> None:
        wait_until(
            lambda: self.workflow(workflow_id)["status"] == status,
            timeout,
            f"workflow {workflow_id} to be {status}",
        )

    def child_workflow_id(self, workflow_id: str, node_id: str, timeout: float = 30.0) -> str:
        """The child workflow started by a sub-workflow node (waits until it is recorded)."""
        row = wait_until(
            lambda: (r := self.nodes(workflow_id)[node_id])["sub_workflow_id"] and r,
            timeout,
            f"child workflow of node {node_id}",
        )
        return str(row["sub_workflow_id"])
