"""Read-only monitoring operations (dict rows)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, LiteralString

from horsies.broker.sql import monitoring as mon_sql
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Op, Query


def dict_rows(
    sql: LiteralString, params: Mapping[str, Any] | None = None
) -> Op[list[dict[str, Any]]]:
    """A read-only statement whose rows come back as dicts."""
    res = yield Query(sql, params, rows="dict")
    return list(res.rows)


def get_task_op(task_id: str) -> Op[dict[str, Any] | None]:
    """The row of one task as a dict, or None."""
    res = yield Query(task_sql.TASK_GET, {"id": task_id}, rows="dict")
    return dict(res.rows[0]) if res.rows else None


def stale_tasks_op(stale_threshold_minutes: int) -> Op[list[dict[str, Any]]]:
    """get_stale_tasks rows."""
    return dict_rows(mon_sql.MONITOR_STALE_TASKS, {"threshold_minutes": stale_threshold_minutes})


def limit_stats_op(top_keys: int) -> Op[list[dict[str, Any]]]:
    """get_limit_stats rows (``busiest_keys`` decoded from JSON by the driver)."""
    return dict_rows(mon_sql.MONITOR_LIMIT_STATS, {"top_keys": top_keys})
