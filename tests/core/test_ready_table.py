"""``horsies_ready`` holds exactly the tasks an ordinary claim may take, whatever changes them.

The claims read their candidates from it (``broker/sql/ready.py``), so a claimable task without its
row would never run and a row without a claimable task would be read by every claim for nothing.
Triggers on ``horsies_tasks`` keep it: these tests change tasks in every way SQL can (one row and
many per statement, in and out of the claimable set, keys that move, deletes, truncation, COPY),
the way user SQL or a later statement of horsies might, and compare after each change.
"""

from __future__ import annotations

import random
from typing import Any, LiteralString

import psycopg
import pytest
from db_rows import ready_mismatches, sql
from horsies.broker import EnqueueRequest, PostgresBroker

_STATUSES = ("PENDING", "CLAIMED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "REQUEUED")

# Every timestamp the status checks may ask for is set, so any status is a valid row.
_INSERT: LiteralString = """
INSERT INTO horsies_tasks (id, task_name, queue_name, priority, status, sent_at, claimed_at,
    claimed_by_worker_id, started_at, completed_at, failed_at, limit_name, limit_key)
SELECT r.id, 't', r.queue_name, r.priority, r.status, r.sent_at, now(), 'w', now(), now(), now(),
       r.limit_name, r.limit_name
FROM unnest(%(ids)s::text[], %(queues)s::text[], %(priorities)s::int[], %(statuses)s::text[],
            %(sent_ats)s::timestamptz[], %(limits)s::text[])
    AS r(id, queue_name, priority, status, sent_at, limit_name)
ON CONFLICT (id) DO NOTHING
"""

_ASSIGNMENTS: dict[str, LiteralString] = {
    "status": "status = %(value)s",
    "sent_at": "sent_at = %(value)s::timestamptz",
    "priority": "priority = %(value)s::int",
    "queue_name": "queue_name = %(value)s",
    "limit_name": "limit_name = %(value)s, limit_key = %(value)s",
    "status_and_sent_at": "status = %(value)s, sent_at = sent_at + interval '1 second'",
    "nothing": "status = status, sent_at = sent_at, updated_at = now()",
}
_SET_COLUMN: dict[str, LiteralString] = {
    column: "UPDATE horsies_tasks SET " + assignment + " WHERE id = ANY(%(ids)s::text[])"
    for column, assignment in _ASSIGNMENTS.items()
}


def _value(rng: random.Random, column: str) -> Any:
    if column in ("status", "status_and_sent_at"):
        return rng.choice(_STATUSES)
    if column == "sent_at":
        return rng.choice([None, "2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "now"])
    if column == "priority":
        return rng.randint(1, 3)
    if column == "queue_name":
        return rng.choice(["a", "b"])
    if column == "limit_name":
        return rng.choice([None, "per-tenant"])
    return None


def _change(conn: psycopg.Connection[Any], rng: random.Random, ids: list[str]) -> str:
    """One random change of a few random tasks, in one statement; returns what it was."""
    chosen = rng.sample(ids, rng.randint(1, 4))
    kind = rng.choices(["insert", "update", "delete", "truncate"], [4, 8, 2, 0.2])[0]
    if kind == "insert":
        n = len(chosen)
        conn.execute(
            _INSERT,
            {
                "ids": chosen,
                "queues": [rng.choice(["a", "b"]) for _ in range(n)],
                "priorities": [rng.randint(1, 3) for _ in range(n)],
                "statuses": [rng.choice(_STATUSES) for _ in range(n)],
                "sent_ats": [_value(rng, "sent_at") for _ in range(n)],
                "limits": [_value(rng, "limit_name") for _ in range(n)],
            },
        )
    elif kind == "update":
        column = rng.choice(sorted(_SET_COLUMN))
        conn.execute(_SET_COLUMN[column], {"value": _value(rng, column), "ids": chosen})
        kind = f"update {column}"
    elif kind == "delete":
        conn.execute("DELETE FROM horsies_tasks WHERE id = ANY(%s::text[])", (chosen,))
    else:
        conn.execute("TRUNCATE horsies_tasks")
    return f"{kind} {chosen}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_change_of_a_task_keeps_the_ready_table_exact(clean_db: str, seed: int) -> None:
    rng = random.Random(seed)
    ids = [f"task-{i}" for i in range(10)]
    history: list[str] = []
    with psycopg.connect(clean_db, autocommit=True) as conn:
        for _ in range(300):
            try:
                history.append(_change(conn, rng, ids))
            except psycopg.errors.CheckViolation:
                continue  # e.g. a limit name without a key: refused, nothing changed
            assert ready_mismatches(clean_db) == [], history[-5:]
    statuses = {r["status"] for r in sql(clean_db, "SELECT status FROM horsies_tasks")}
    assert statuses  # the walk ends with tasks in the table, not after a truncation only


def test_a_task_changed_several_times_in_one_transaction_keeps_one_row(clean_db: str) -> None:
    with psycopg.connect(clean_db) as conn:
        conn.execute(
            _INSERT,
            {"ids": ["x"], "queues": ["a"], "priorities": [1], "statuses": ["PENDING"],
             "sent_ats": ["2020-01-01T00:00:00Z"], "limits": [None]},
        )  # fmt: skip
        for status in ("RUNNING", "PENDING", "CLAIMED", "PENDING"):
            conn.execute("UPDATE horsies_tasks SET status = %s WHERE id = 'x'", (status,))
        conn.execute("UPDATE horsies_tasks SET priority = 2, queue_name = 'b' WHERE id = 'x'")
    assert ready_mismatches(clean_db) == []
    assert sql(clean_db, "SELECT queue_name, priority FROM horsies_ready") == [
        {"queue_name": "b", "priority": 2}
    ]


def test_a_rolled_back_change_leaves_the_row_as_it_was(clean_db: str) -> None:
    sql(
        clean_db,
        "INSERT INTO horsies_tasks (id, task_name, queue_name, status, sent_at) "
        "VALUES ('x', 't', 'a', 'PENDING', now())",
    )
    with psycopg.connect(clean_db) as conn:
        conn.execute(
            "UPDATE horsies_tasks SET status = 'RUNNING', started_at = now() WHERE id = 'x'"
        )
        assert conn.execute("SELECT count(*) FROM horsies_ready").fetchone() == (0,)
        conn.rollback()
    assert [r["id"] for r in sql(clean_db, "SELECT id FROM horsies_ready")] == ["x"]


async def test_sends_of_every_kind_are_ready_and_limited_ones_are_not(
    broker: PostgresBroker, clean_db: str
) -> None:
    await broker.enqueue_many_async([EnqueueRequest("t", task_id=f"many-{i}") for i in range(3)])
    broker.enqueue_many([EnqueueRequest("t", task_id=f"copy-{i}") for i in range(50)])
    await broker.enqueue_async("t", queue_name="other", task_id="one")
    await broker.enqueue_async("t", task_id="late", delay_s=3600)
    sql(
        clean_db,
        "INSERT INTO horsies_tasks (id, task_name, queue_name, status, sent_at, limit_name, "
        "limit_key) VALUES ('limited', 't', 'default', 'PENDING', now(), 'l', 'k')",
    )
    ready = {r["id"] for r in sql(clean_db, "SELECT id FROM horsies_ready")}
    assert ready == {f"many-{i}" for i in range(3)} | {f"copy-{i}" for i in range(50)} | {
        "one",
        "late",
    }
    assert ready_mismatches(clean_db) == []
