"""NOTIFY channels: one place for their names and for the statements that send notifications.

A notification only wakes; the tables are the truth, and every listener also polls. The
``horsies_tasks`` triggers (see the migrations in ``sql/schema.py``) notify :data:`TASK_NEW` and
:func:`queue_channel` on every insert, so these names must match what they send.
"""

from __future__ import annotations

from typing import Final

from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Query

__all__ = [
    "CAPACITY_FREED",
    "TASK_DONE",
    "TASK_NEW",
    "TASK_STOP",
    "WORKFLOW_DONE",
    "notify_query",
    "queue_channel",
    "wake_workers_query",
]

TASK_NEW: Final = "task_new"
"""Wakes every worker: a task became claimable (inserted, requeued, released, due again)."""
TASK_DONE: Final = "task_done"
"""A task ended (payload: its id): wakes the result waiters."""
TASK_STOP: Final = "task_stop"
"""A stop of a running task was requested (payload: its id): wakes the worker running it."""
WORKFLOW_DONE: Final = "workflow_done"
"""A workflow ended or paused (payload: its id): wakes the workflow waiters."""
_QUEUE_PREFIX: Final = "task_queue_"


def queue_channel(queue_name: str) -> str:
    """The channel of one queue: wakes only the workers that serve it."""
    return _QUEUE_PREFIX + queue_name


def notify_query(channel: str, payload: str) -> Query:
    """``pg_notify(channel, payload)``: delivered when the transaction commits."""
    return Query(task_sql.NOTIFY, {"channel": channel, "payload": payload})


def wake_workers_query(reason: str) -> Query:
    """A :data:`TASK_NEW` wake-up; ``reason`` (the payload) only tells a reader of the log why."""
    return notify_query(TASK_NEW, reason)


CAPACITY_FREED: Final = wake_workers_query("capacity")
"""Wakes workers held back by a cluster-wide cap (``cluster_wide_cap``, queue ``max_concurrency``)
after rows left RUNNING. Only they need it: without such a cap no worker's claim budget depends on
another worker's tasks, so finishing workers skip it; a wake-up sent when every outcome lost its
race is harmless."""
