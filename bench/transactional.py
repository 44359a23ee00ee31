"""W1t: sends made within the caller's transaction (``task.within(conn)``), and their limit: the
same statements written by hand through psycopg, in the same run, on the same table.

* ``w1t_batch_rate``: N sends inside one transaction of a psycopg connection, then one commit;
* ``w1t_rows_rate``: N transactions, each writing an app row and its task, then committing.

The hand-written statement is the INSERT a send makes (the same columns and trigger: the row is a
real task), with the connection's own prepare policy, as a send within it uses. Rounds alternate
between horsies and the hand-written SQL so the machine's noise falls on both; each figure is the
median of the rounds.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

_ROUNDS = 3

_APP_TABLE = """
CREATE TABLE IF NOT EXISTS bench_orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    note text NOT NULL
)
"""
_APP_ROW = "INSERT INTO bench_orders (note) VALUES (%s)"

# A PENDING task of the no-op, written by hand: what a send of it stores.
_TASK_ROW = """
INSERT INTO horsies_tasks (
    id, task_name, queue_name, priority, args, kwargs, status, sent_at, good_until,
    max_retries, retry_count, task_options, claimed, created_at, updated_at)
VALUES (%s, %s, 'default', 100, NULL, NULL, 'PENDING', now(), NULL, 0, 0, %s, false, now(), now())
"""


def _batch_by_hand(conn: psycopg.Connection[Any], noop: Any, n: int) -> None:
    for _ in range(n):
        conn.execute(_TASK_ROW, (str(uuid.uuid4()), noop.task_name, noop.task_options_json))
    conn.commit()


def _batch_within(conn: psycopg.Connection[Any], noop: Any, n: int) -> None:
    task = noop.within(conn)
    for _ in range(n):
        _check(task.send())
    conn.commit()


def _rows_by_hand(conn: psycopg.Connection[Any], noop: Any, n: int) -> None:
    for i in range(n):
        conn.execute(_APP_ROW, (f"order {i}",))
        conn.execute(_TASK_ROW, (str(uuid.uuid4()), noop.task_name, noop.task_options_json))
        conn.commit()


def _rows_within(conn: psycopg.Connection[Any], noop: Any, n: int) -> None:
    for i in range(n):
        conn.execute(_APP_ROW, (f"order {i}",))
        _check(noop.within(conn).send())
        conn.commit()


def _check(handle: Any) -> None:
    if handle.task_id in ("<error>", "<suppressed>"):
        raise RuntimeError(f"send within a transaction failed: {handle.get(timeout_ms=1)}")


def _rate(
    conninfo: str, run: Callable[[psycopg.Connection[Any], Any, int], None], noop: Any, n: int
) -> float:
    with psycopg.connect(conninfo) as conn:
        run(conn, noop, min(20, n))  # warm: connection, statements, caches
        started = time.perf_counter()
        run(conn, noop, n)
        return n / (time.perf_counter() - started)


def measure_w1t(conninfo: str, noop: Any, n: int) -> tuple[dict[str, float], dict[str, float]]:
    """(horsies' figures, the limit's figures) of W1t for ``n`` sends or transactions."""
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(_APP_TABLE)
    pairs = {
        "w1t_batch_rate": (_batch_within, _batch_by_hand),
        "w1t_rows_rate": (_rows_within, _rows_by_hand),
    }
    ours: dict[str, list[float]] = {key: [] for key in pairs}
    limit: dict[str, list[float]] = {key: [] for key in pairs}
    for _ in range(_ROUNDS):
        for key, (within, by_hand) in pairs.items():
            ours[key].append(_rate(conninfo, within, noop, n))
            limit[key].append(_rate(conninfo, by_hand, noop, n))
    return (
        {key: statistics.median(rates) for key, rates in ours.items()},
        {key: statistics.median(rates) for key, rates in limit.items()},
    )
