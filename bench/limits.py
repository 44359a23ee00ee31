"""L, the physical limit: the bare SQL a queue must do, from psycopg with no queue library.

Each figure is the ceiling (or floor) the matching workload can approach on this server:

* ``w1_rate``: one ``INSERT ... RETURNING`` + ``pg_notify`` per transaction, one at a time (W1);
* ``w1b_rate``: ``COPY`` of N rows in one transaction, one NOTIFY (W1b);
* ``w2_rate_after_first``: claim 50 rows with ``FOR UPDATE SKIP LOCKED`` (one transaction),
  then finish them with one ``UPDATE ... WHERE id = ANY(...)`` + NOTIFY (another), until the
  table is drained (W2);
* ``w3_p50_ms`` etc.: insert + NOTIFY on connection A → LISTEN wake on connection B → update +
  NOTIFY on B → LISTEN wake on A (W3).

The table has the columns and the partial index a queue needs (status, timestamps, a JSON
payload, an index that serves the claim without sorting). Run on its own database; ``run.py``
calls :func:`measure_limits` with the URL of a fresh one.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from harness import latency_figures

_SCHEMA = """
DROP TABLE IF EXISTS lim_tasks;
CREATE TABLE lim_tasks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_name text NOT NULL,
    queue_name text NOT NULL DEFAULT 'default',
    args jsonb NOT NULL DEFAULT '[]',
    status text NOT NULL DEFAULT 'PENDING',
    result jsonb,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz
);
CREATE INDEX lim_tasks_pending ON lim_tasks (queue_name, id) WHERE status = 'PENDING';
"""

_INSERT_NOTIFY = """
WITH ins AS (INSERT INTO lim_tasks (task_name) VALUES ('noop') RETURNING id)
SELECT pg_notify('lim_new', id::text) FROM ins
"""

_CLAIM = """
UPDATE lim_tasks t SET status = 'RUNNING', started_at = now()
FROM (SELECT id FROM lim_tasks WHERE queue_name = 'default' AND status = 'PENDING'
      ORDER BY id LIMIT 50 FOR UPDATE SKIP LOCKED) c
WHERE t.id = c.id
RETURNING t.id
"""

_FINISH = """
WITH done AS (
    UPDATE lim_tasks SET status = 'COMPLETED', completed_at = now(), result = 'null'
    WHERE id = ANY(%s) AND status = 'RUNNING' RETURNING id
)
SELECT pg_notify('lim_done', count(*)::text) FROM done
"""


def _reset(conn: psycopg.Connection[Any]) -> None:
    conn.execute(_SCHEMA)


def single_inserts(conn: psycopg.Connection[Any], n: int) -> float:
    """One INSERT + NOTIFY per transaction (autocommit: one statement, one commit)."""
    for _ in range(min(50, n)):
        conn.execute(_INSERT_NOTIFY, prepare=True)
    started = time.perf_counter()
    for _ in range(n):
        conn.execute(_INSERT_NOTIFY, prepare=True)
    return n / (time.perf_counter() - started)


def copy_insert(conn: psycopg.Connection[Any], n: int) -> float:
    """COPY of ``n`` rows in one transaction, then one NOTIFY."""
    started = time.perf_counter()
    with conn.transaction():
        with conn.cursor().copy("COPY lim_tasks (task_name, args) FROM STDIN") as copy:
            for _ in range(n):
                copy.write_row(("noop", "[]"))
        conn.execute("SELECT pg_notify('lim_new', 'batch')")
    return n / (time.perf_counter() - started)


def claim_finish(conn: psycopg.Connection[Any], n: int) -> float:
    """Claim 50 with SKIP LOCKED, finish them, repeat until ``n`` are finished."""
    conn.execute("TRUNCATE lim_tasks")
    copy_insert(conn, n)
    conn.execute("VACUUM ANALYZE lim_tasks")
    finished = 0
    started = time.perf_counter()
    while True:
        ids = [row[0] for row in conn.execute(_CLAIM, prepare=True)]
        if not ids:
            break
        conn.execute(_FINISH, (ids,), prepare=True)
        finished += len(ids)
    elapsed = time.perf_counter() - started
    if finished != n:
        raise RuntimeError(f"limit drain finished {finished} of {n}")
    return n / elapsed


def _next_notes(conn: psycopg.Connection[Any], timeout: float) -> list[psycopg.Notify]:
    """The notifications that arrive next (at least one unless ``timeout`` passes); the
    generator is exhausted before returning, so the connection is free for queries."""
    return list(conn.notifies(timeout=timeout, stop_after=1))


def round_trips(url: str, n: int) -> list[float]:
    """Insert+NOTIFY on A → wake on B → update+NOTIFY on B → wake on A; ``n`` samples in ms."""
    producer = psycopg.connect(url, autocommit=True)
    worker = psycopg.connect(url, autocommit=True)
    stop = threading.Event()
    ready = threading.Event()

    def serve() -> None:
        worker.execute("LISTEN lim_new")
        ready.set()
        while not stop.is_set():
            for note in _next_notes(worker, 0.2):
                worker.execute(
                    "WITH u AS (UPDATE lim_tasks SET status = 'COMPLETED', completed_at = now()"
                    " WHERE id = %s RETURNING id) SELECT pg_notify('lim_done', id::text) FROM u",
                    (int(note.payload),),
                    prepare=True,
                )

    thread = threading.Thread(target=serve, name="limit-worker", daemon=True)
    try:
        producer.execute("LISTEN lim_done")
        thread.start()
        ready.wait(10)
        samples: list[float] = []
        for i in range(n + 20):
            started = time.perf_counter()
            row = producer.execute(
                "WITH ins AS (INSERT INTO lim_tasks (task_name) VALUES ('noop') RETURNING id)"
                " SELECT id, pg_notify('lim_new', id::text) FROM ins",
                prepare=True,
            ).fetchone()
            assert row is not None
            want = str(row[0])
            deadline = time.monotonic() + 10
            while want not in [note.payload for note in _next_notes(producer, 1.0)]:
                if time.monotonic() > deadline:
                    raise RuntimeError("limit round trip: no notification within 10 s")
            if i >= 20:  # the first 20 warm up the prepared statements
                samples.append((time.perf_counter() - started) * 1000)
        return samples
    finally:
        stop.set()
        thread.join(5)
        producer.close()
        worker.close()


def measure_limits(
    url: str, *, sends: int, bulk: int, drain: int, latency: int
) -> dict[str, float]:
    """Every limit figure, keyed like the workload figures they bound."""
    with psycopg.connect(url, autocommit=True) as conn:
        _reset(conn)
        figures: dict[str, float] = {"w1_rate": single_inserts(conn, sends)}
        conn.execute("TRUNCATE lim_tasks")
        figures["w1b_rate"] = copy_insert(conn, bulk)
        figures["w2_rate_after_first"] = claim_finish(conn, drain)
        conn.execute("TRUNCATE lim_tasks")
    figures.update(latency_figures(round_trips(url, latency)))
    return figures


if __name__ == "__main__":  # pragma: no cover - manual use: python bench/limits.py URL
    import json
    import sys

    print(json.dumps(measure_limits(sys.argv[1], sends=2000, bulk=20000, drain=10000, latency=300)))
