"""Direct SQL helpers for tests that inspect or prepare rows behind the broker's back."""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
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
