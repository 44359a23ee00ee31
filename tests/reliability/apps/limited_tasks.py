"""Tasks under a per-key concurrency limit, added to the ledger app in default queue mode when
``RELIABILITY_LIMITS=1`` (a queue with limited tasks is claimed through the limited claim, so the
other scenarios keep the ordinary claim).

- ``rel.limited(key, seconds, tenant)``: records its start, sleeps ``seconds``, records its end
  (``rel.work``'s body), under :data:`PER_TENANT`;
- ``rel.async_limited(key, seconds, tenant)``: the same as an ``async def`` (several share a
  child with ``--async-concurrency``), under the same limit: both count against one tenant's slots.

Both are retried after a crash (``WORKER_CRASHED`` in ``auto_retry_for``, ``CRASH_RETRIES``), so a
task whose worker was killed runs again and competes for its tenant's slots once more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from horsies import Limit
from horsies.app import Horsies
from horsies.results import LibraryErrorCode, TaskError, TaskResult

from tests.reliability.apps.wf_ledger_app import CRASH_RETRIES

__all__ = ["PER_TENANT", "add_limited_tasks"]

PER_TENANT = Limit("rel-per-key", concurrency=2, on=["tenant"])
"""At most two tasks of one tenant in flight (CLAIMED or RUNNING) at once, across every worker."""


def add_limited_tasks(
    app: Horsies,
    work: Callable[[str, float], TaskResult[str, TaskError]],
    async_work: Callable[[str, float], Awaitable[TaskResult[str, TaskError]]],
) -> None:
    """Register ``rel.limited`` and ``rel.async_limited`` on the ledger app (``work`` and
    ``async_work`` are the bodies of ``rel.work`` and ``rel.async_retried``)."""

    def limited(key: str, seconds: float, tenant: str) -> TaskResult[str, TaskError]:
        del tenant  # only the limit's key
        return work(key, seconds)

    async def async_limited(key: str, seconds: float, tenant: str) -> TaskResult[str, TaskError]:
        del tenant
        return await async_work(key, seconds)

    crashed = [LibraryErrorCode.WORKER_CRASHED]
    app.task("rel.limited", limit=PER_TENANT, retry_policy=CRASH_RETRIES, auto_retry_for=crashed)(
        limited
    )
    app.task(
        "rel.async_limited", limit=PER_TENANT, retry_policy=CRASH_RETRIES, auto_retry_for=crashed
    )(async_limited)
