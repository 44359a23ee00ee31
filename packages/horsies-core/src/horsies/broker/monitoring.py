"""Read-only monitoring operations (dict rows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, LiteralString

from horsies.broker.sql import monitoring as mon_sql
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Op, Query, together


@dataclass(frozen=True, slots=True)
class QueueBacklog:
    """The due PENDING tasks of one queue: how many, and how long the oldest has waited since it
    became due (None when there is none)."""

    queue: str
    depth: int
    oldest_pending_s: float | None


@dataclass(frozen=True, slots=True)
class ClusterGauges:
    """What a metrics exporter reports about the whole cluster: the backlog of each queue asked
    about, in queue name order, and how many workers are live (as ``get_worker_states`` counts
    them)."""

    queues: list[QueueBacklog]
    workers_alive: int


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


def cluster_gauges_op(queues: Sequence[str], worker_max_age_s: float) -> Op[ClusterGauges]:
    """The backlog of ``queues`` and the live worker count, in one round trip."""
    backlog, alive = yield from together(
        (
            Query(mon_sql.MONITOR_QUEUE_BACKLOG, {"queues": list(queues)}),
            Query(mon_sql.MONITOR_WORKERS_ALIVE, {"max_age_s": worker_max_age_s}),
        )
    )
    return ClusterGauges(
        queues=[QueueBacklog(name, depth, oldest) for name, depth, oldest in backlog.rows],
        workers_alive=alive.rows[0][0],
    )
