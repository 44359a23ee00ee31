"""Rate and concurrency limits, the broker's side: the rows of limited sends, the numbers the
workers register, and the claim that honours them.

A task under a limit carries the limit's name and its key (a tenant, an account, or one key for
the whole limit). Producers only write those two columns. A worker writes the numbers of the
limits it knows into ``horsies_limits`` when it starts, and claims in each queue that has limited
tasks through ``horsies_claim_and_start_limited`` (``broker/sql/limits.py``): under the limits'
advisory locks it counts, per key, the tasks in flight and the starts within the rate's window,
and starts only what both allow. The database's clock times the windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from horsies.broker.locks import limit_lock_key
from horsies.broker.sql import limits as limit_sql
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Op, Query

__all__ = [
    "LimitNumbers",
    "LimitTag",
    "limited_claim_only_query",
    "limited_claim_query",
    "limited_rows_query",
    "register_limits_op",
    "row_tag",
    "tagged_row",
]

_TASK_COLUMNS: Final = len(task_sql.TASK_COPY_COLUMNS)
"""A new row's values in ``TASK_COPY_COLUMNS`` order; a limited row adds its limit name and key."""
_SENT_AT: Final = task_sql.TASK_COPY_COLUMNS.index("sent_at")


@dataclass(frozen=True, slots=True)
class LimitTag:
    """The limit a new task is subject to, and its key under that limit."""

    name: str
    key: str


@dataclass(frozen=True, slots=True)
class LimitNumbers:
    """What a limit allows per key: ``concurrency`` tasks in flight at once, ``rate`` starts per
    ``per_ms`` milliseconds (either may be None, not both)."""

    name: str
    concurrency: int | None = None
    rate: int | None = None
    per_ms: int | None = None


def tagged_row(row: tuple[Any, ...], tag: LimitTag | None) -> tuple[Any, ...]:
    """A new task row with its limit's name and key appended (unchanged without a limit)."""
    return row if tag is None else (*row, tag.name, tag.key)


def row_tag(row: Sequence[Any]) -> LimitTag | None:
    """The limit of a new task row built by :func:`tagged_row`, or None."""
    return (
        LimitTag(row[_TASK_COLUMNS], row[_TASK_COLUMNS + 1]) if len(row) > _TASK_COLUMNS else None
    )


def limited_rows_query(rows: Sequence[Sequence[Any]]) -> Query:
    """One TASK_INSERT_LIMITED_MANY for new task rows, some of them tagged (:func:`tagged_row`).
    A ``sent_at`` that is a delay (a timedelta) becomes the row's delay after ``now()``."""
    columns: dict[str, list[Any]] = {
        name: []
        for name in (*task_sql.TASK_INSERT_MANY_ARRAYS, "delays_s", "limit_names", "limit_keys")
    }
    for row in rows:
        for name, value in zip(task_sql.TASK_INSERT_MANY_ARRAYS, row[:_TASK_COLUMNS], strict=True):
            columns[name].append(value)
        sent_at = row[_SENT_AT]
        delay = None
        if isinstance(sent_at, timedelta):
            columns["sent_ats"][-1] = None
            delay = sent_at.total_seconds()
        columns["delays_s"].append(delay)
        tag = row_tag(row)
        columns["limit_names"].append(None if tag is None else tag.name)
        columns["limit_keys"].append(None if tag is None else tag.key)
    return Query(limit_sql.TASK_INSERT_LIMITED_MANY, columns, rows="none")


def register_limits_op(limits: Sequence[LimitNumbers]) -> Op[list[LimitNumbers]]:
    """Write the numbers of ``limits``; returns the ones whose stored numbers differed (as they
    were), so the caller can say that another version of the app had written them."""
    if not limits:
        return []
    res = yield Query(
        limit_sql.LIMITS_REGISTER,
        {
            "names": [n.name for n in limits],
            "concurrency": [n.concurrency for n in limits],
            "rate": [n.rate for n in limits],
            "per_ms": [n.per_ms for n in limits],
        },
    )
    return [LimitNumbers(str(r[0]), r[1], r[2], r[3]) for r in res.rows]


def limited_claim_query(
    worker_id: str,
    hostname: str,
    queue_name: str,
    pids: Sequence[int],
    *,
    limit_names: Sequence[str],
    task_names: Sequence[str] | None = None,
) -> Query:
    """The claim-and-start of a queue with limited tasks, for ``pids`` (one task each), honouring
    the limits of ``limit_names``: rows of the same shape as TASK_CLAIM_AND_START_AVAILABLE's,
    then ``wake_in_ms`` (a row without an id carries only that: when a rate-limited key may start
    again)."""
    return _limited_query(
        worker_id, queue_name, limit_names, task_names, hostname=hostname, pids=list(pids)
    )


def limited_claim_only_query(
    worker_id: str,
    queue_name: str,
    limit: int,
    lease_ms: int | None,
    *,
    limit_names: Sequence[str],
    task_names: Sequence[str] | None = None,
) -> Query:
    """The claim of up to ``limit`` tasks of a queue with limited tasks, left CLAIMED (with a lease
    of ``lease_ms``, when not None) for a worker that starts its claims afterwards; rows of
    ``ClaimedTask``'s columns, then two NULLs (and a wake row as :func:`limited_claim_query`)."""
    return _limited_query(
        worker_id, queue_name, limit_names, task_names, claim_limit=limit, lease_ms=lease_ms
    )


def _limited_query(
    worker_id: str,
    queue_name: str,
    limit_names: Sequence[str],
    task_names: Sequence[str] | None,
    *,
    hostname: str = "",
    pids: list[int] | None = None,
    claim_limit: int | None = None,
    lease_ms: int | None = None,
) -> Query:
    names = sorted(limit_names)
    return Query(
        limit_sql.TASK_CLAIM_AND_START_LIMITED,
        {
            "queue_name": queue_name,
            "pids": pids,
            "worker_id": worker_id,
            "hostname": hostname,
            "task_names": None if task_names is None else list(task_names),
            "limit_names": names,
            "lock_keys": [limit_lock_key(name) for name in names],
            "claim_limit": claim_limit,
            "lease_ms": lease_ms,
        },
    )
