"""Liveness rows: heartbeats of claimed and running tasks, and worker snapshots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from horsies.broker.claims import AttemptKey, Start
from horsies.broker.sql import heartbeats as hb_sql
from horsies.broker.steps import Query
from horsies.codec import (
    dumps_json,
)


@dataclass(frozen=True, slots=True)
class WorkerStateRow:
    """One worker snapshot for ``horsies_worker_states``; ``snapshot_at`` is set by the database.

    ``stopped``: the last snapshot of a worker that stops cleanly (the row's ``stopped_at`` is
    set), after which monitors no longer count the worker as live nor report it as dead."""

    worker_id: str
    hostname: str
    pid: int
    processes: int
    max_claim_batch: int
    max_claim_per_worker: int
    queues: Sequence[str]
    tasks_running: int
    tasks_claimed: int
    worker_started_at: datetime
    cluster_wide_cap: int | None = None
    queue_priorities: Mapping[str, int] | None = None
    queue_max_concurrency: Mapping[str, int | None] | None = None
    recovery_config: Mapping[str, Any] | None = None
    memory_usage_mb: float | None = None
    memory_percent: float | None = None
    cpu_percent: float | None = None
    stopped: bool = False
    async_concurrency: int | None = None
    """How many ``async def`` tasks one of its children runs at once."""
    limits: Mapping[str, Sequence[str]] | None = None
    """Per served queue, the names of the rate and concurrency limits the worker enforces there
    (empty: none; None: not reported)."""


def heartbeat_query(
    worker_id: str,
    hostname: str,
    pid: int,
    claimed: Sequence[AttemptKey],
    running: Sequence[Start],
) -> Query | None:
    """HEARTBEAT_INSERT_MANY for a worker's CLAIMED (claimer) and RUNNING (runner: (task id,
    attempt, child pid)) claims; None if none. Its rows: the running tasks to stop."""
    if not claimed and not running:
        return None
    return Query(
        hb_sql.HEARTBEAT_INSERT_MANY,
        {
            "hostname": hostname,
            "task_ids": [t for t, _ in claimed] + [t for t, _, _ in running],
            "attempts": [a for _, a in claimed] + [a for _, a, _ in running],
            "sender_ids": [worker_id] * len(claimed) + [f"{worker_id}:{p}" for _, _, p in running],
            "roles": ["claimer"] * len(claimed) + ["runner"] * len(running),
            "pids": [pid] * len(claimed) + [p for _, _, p in running],
            "running_ids": [t for t, _, _ in running],
        },
    )


def worker_state_query(state: WorkerStateRow) -> Query:
    """WORKER_STATE_INSERT for one snapshot."""

    def js(value: Mapping[str, Any] | None) -> str | None:
        return None if value is None else dumps_json(dict(value))

    return Query(
        hb_sql.WORKER_STATE_INSERT,
        {
            "worker_id": state.worker_id,
            "hostname": state.hostname,
            "pid": state.pid,
            "processes": state.processes,
            "max_claim_batch": state.max_claim_batch,
            "max_claim_per_worker": state.max_claim_per_worker,
            "cluster_wide_cap": state.cluster_wide_cap,
            "queues": list(state.queues),
            "queue_priorities": js(state.queue_priorities),
            "queue_max_concurrency": js(state.queue_max_concurrency),
            "recovery_config": js(state.recovery_config),
            "tasks_running": state.tasks_running,
            "tasks_claimed": state.tasks_claimed,
            "memory_usage_mb": state.memory_usage_mb,
            "memory_percent": state.memory_percent,
            "cpu_percent": state.cpu_percent,
            "worker_started_at": state.worker_started_at,
            "stopped": state.stopped,
            "async_concurrency": state.async_concurrency,
            "limits": None
            if state.limits is None
            else dumps_json({queue: list(names) for queue, names in state.limits.items()}),
        },
        rows="none",
    )
