"""A claimed task row as the worker holds it, for tests that drive children without a database."""

from __future__ import annotations

from datetime import UTC, datetime

from horsies.broker.claims import ClaimedTask


def claimed(task_id: str, name: str, args: str = "[]") -> ClaimedTask:
    """A task ``name`` with positional ``args`` (JSON), no keyword arguments, never retried, in its
    first claim (attempt 1)."""
    return ClaimedTask(
        id=task_id,
        task_name=name,
        queue_name="default",
        priority=100,
        args=args,
        kwargs="{}",
        retry_count=0,
        max_retries=0,
        task_options=None,
        sent_at=datetime.now(UTC),
        attempt=1,
    )
