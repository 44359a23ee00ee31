"""The monitoring calls of `PostgresBroker`.

They keep the names of the original API: coroutines under the plain name (``get_stale_tasks``,
``get_worker_stats``, ``get_expired_tasks``, ``mark_stale_tasks_as_failed``,
``requeue_stale_claimed``, and the companions ``get_queue_stats``, ``get_limit_stats``,
``get_worker_states``, ``get_task``), sync twins with the ``_sync`` suffix, so code written for
that API keeps working. Calls added since follow the broker's own naming (``cluster_gauges`` /
``cluster_gauges_async``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, LiteralString

from horsies.broker import (
    monitoring,
    recovery,
)
from horsies.broker.broker_core import BrokerCore
from horsies.broker.monitoring import ClusterGauges
from horsies.broker.sql import monitoring as mon_sql
from horsies.broker.steps import Op

__all__ = ["MonitoringCalls"]


class MonitoringCalls(BrokerCore):
    """Read-only views and the two explicit recovery actions."""

    # -- monitoring --------------------------------------------------------------------------------

    async def get_stale_tasks(self, stale_threshold_minutes: int = 2) -> list[dict[str, Any]]:
        """RUNNING tasks whose latest runner heartbeat (or start) is older than N minutes."""
        return await self._run_async(
            monitoring.stale_tasks_op(stale_threshold_minutes), "get_stale_tasks"
        )

    def get_stale_tasks_sync(self, stale_threshold_minutes: int = 2) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_stale_tasks`."""
        return self._run_sync(monitoring.stale_tasks_op(stale_threshold_minutes), "get_stale_tasks")

    async def get_worker_stats(self) -> list[dict[str, Any]]:
        """RUNNING tasks per executing child process (hostname, pid, name), busiest first."""
        return await self._run_async(_rows(mon_sql.MONITOR_WORKER_STATS), "get_worker_stats")

    def get_worker_stats_sync(self) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_worker_stats`."""
        return self._run_sync(_rows(mon_sql.MONITOR_WORKER_STATS), "get_worker_stats")

    async def get_expired_tasks(self) -> list[dict[str, Any]]:
        """PENDING tasks past their ``good_until`` (they will never be claimed)."""
        return await self._run_async(_rows(mon_sql.MONITOR_EXPIRED_TASKS), "get_expired_tasks")

    def get_expired_tasks_sync(self) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_expired_tasks`."""
        return self._run_sync(_rows(mon_sql.MONITOR_EXPIRED_TASKS), "get_expired_tasks")

    async def get_queue_stats(self) -> list[dict[str, Any]]:
        """Per queue: pending, claimed, running, completed, failed, cancelled counts and
        oldest_pending_at."""
        return await self._run_async(_rows(mon_sql.MONITOR_QUEUE_STATS), "get_queue_stats")

    def get_queue_stats_sync(self) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_queue_stats`."""
        return self._run_sync(_rows(mon_sql.MONITOR_QUEUE_STATS), "get_queue_stats")

    async def get_limit_stats(self, top_keys: int = 10) -> list[dict[str, Any]]:
        """Per rate or concurrency limit (registered by a worker, or named by live tasks): its
        numbers (``concurrency``, ``rate``, ``per_ms``; None when no worker registered it, then
        ``registered`` is False), ``waiting`` (its PENDING tasks), ``held`` (those whose key is at
        its concurrency or rate, or whose limit no worker enforces: they wait on the limit, the
        others for a free worker), ``in_flight`` (CLAIMED or RUNNING), ``starts_in_window`` (starts
        within the rate's window), ``keys_waiting`` and ``busiest_keys``: the first ``top_keys``
        keys by waiting, then in flight, each a dict of ``key``, ``waiting``, ``in_flight``,
        ``starts_in_window`` and ``held``. Reads live tasks only, through their partial indexes."""
        return await self._run_async(monitoring.limit_stats_op(top_keys), "get_limit_stats")

    def get_limit_stats_sync(self, top_keys: int = 10) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_limit_stats`."""
        return self._run_sync(monitoring.limit_stats_op(top_keys), "get_limit_stats")

    async def get_worker_states(self, max_age_s: float = 30) -> list[dict[str, Any]]:
        """The latest snapshot (``horsies_worker_states`` row) of every worker seen in the last
        max_age_s and not stopped (a worker that stopped cleanly leaves at once)."""
        return await self._run_async(_worker_states(max_age_s), "get_worker_states")

    def get_worker_states_sync(self, max_age_s: float = 30) -> list[dict[str, Any]]:
        """Sync twin of :meth:`get_worker_states`."""
        return self._run_sync(_worker_states(max_age_s), "get_worker_states")

    async def cluster_gauges_async(
        self, queues: Sequence[str], *, worker_max_age_s: float = 30
    ) -> ClusterGauges:
        """Per queue of ``queues``: its due PENDING tasks and the age of the oldest; and the live
        workers (``get_worker_states``' definition), in one round trip. What the worker's metrics
        report (docs/production.md, "Metrics"); cheap: it never reads finished rows."""
        return await self._run_async(
            monitoring.cluster_gauges_op(queues, worker_max_age_s), "cluster_gauges"
        )

    def cluster_gauges(
        self, queues: Sequence[str], *, worker_max_age_s: float = 30
    ) -> ClusterGauges:
        """Sync twin of :meth:`cluster_gauges_async`."""
        return self._run_sync(
            monitoring.cluster_gauges_op(queues, worker_max_age_s), "cluster_gauges"
        )

    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        """The ``horsies_tasks`` row of a task as a dict, or None."""
        return await self._run_async(monitoring.get_task_op(task_id), "get_task")

    def get_task_sync(self, task_id: str) -> dict[str, Any] | None:
        """Sync twin of :meth:`get_task`."""
        return self._run_sync(monitoring.get_task_op(task_id), "get_task")

    async def mark_stale_tasks_as_failed(self, stale_threshold_ms: int = 300_000) -> int:
        """Fail every RUNNING task without a runner heartbeat for ``stale_threshold_ms``
        (WORKER_CRASHED, as the reaper does but without retrying: an explicit operator action).
        Returns rows failed."""
        failed, _ = await self._run_async(
            _fail_stale(stale_threshold_ms), "mark_stale_tasks_as_failed", transaction=True
        )
        return failed

    def mark_stale_tasks_as_failed_sync(self, stale_threshold_ms: int = 300_000) -> int:
        """Sync twin of :meth:`mark_stale_tasks_as_failed`."""
        failed, _ = self._run_sync(
            _fail_stale(stale_threshold_ms), "mark_stale_tasks_as_failed", transaction=True
        )
        return failed

    async def requeue_stale_claimed(self, stale_threshold_ms: int = 120_000) -> int:
        """Return CLAIMED tasks whose claimer stopped heartbeating to PENDING; returns rows
        requeued."""
        return await self._run_async(
            recovery.requeue_stale_claimed_op(stale_threshold_ms),
            "requeue_stale_claimed",
            transaction=True,
        )

    def requeue_stale_claimed_sync(self, stale_threshold_ms: int = 120_000) -> int:
        """Sync twin of :meth:`requeue_stale_claimed`."""
        return self._run_sync(
            recovery.requeue_stale_claimed_op(stale_threshold_ms),
            "requeue_stale_claimed",
            transaction=True,
        )


def _rows(sql: LiteralString) -> Op[list[dict[str, Any]]]:
    return monitoring.dict_rows(sql)


def _worker_states(max_age_s: float) -> Op[list[dict[str, Any]]]:
    return monitoring.dict_rows(mon_sql.MONITOR_WORKER_STATES, {"max_age_s": max_age_s})


def _fail_stale(threshold_ms: int) -> Op[tuple[int, int]]:
    return recovery.fail_stale_running_op(threshold_ms, allow_retry=False, max_batches=None)
