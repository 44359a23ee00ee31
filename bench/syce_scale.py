"""Scale check for Syce's refresh queries (a bench case: run it by hand, it is not a test).

    uv run python bench/syce_scale.py [--url postgresql://...] [--finished 1000000]

Seeds a fresh database (on the given server, else on a throw-away embedded PostgreSQL) with
``--finished`` completed tasks, 10,000 pending tasks, ``--limited`` tasks waiting under two rate
and concurrency limits (1,000 keys, 500 more of them running, 10,000 recent starts), 24 hours of
5-second snapshots of 10 workers and 20,000 five-node workflows, then times every refresh of every
tab (first run and best of three), and the broker's ``get_limit_stats``, and prints the slowest.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from horsies.broker import PostgresBroker
from horsies.config import PostgresConfig
from psycopg import sql
from syce.models import TASK_STATUSES, WORKFLOW_STATUSES
from syce.source import SyceSource

SEED = [
    """INSERT INTO horsies_tasks (id, task_name, queue_name, priority, status, sent_at, claimed_at,
       started_at, completed_at, claimed, claimed_by_worker_id, worker_hostname, worker_pid,
       retry_count, max_retries, result, created_at, updated_at)
       SELECT 'done-' || g, 'app.task_' || (g %% 20), 'q' || (g %% 5), 100, 'COMPLETED',
              now() - (g || ' seconds')::interval, now(), now(), now(), true, 'w-' || (g %% 10),
              'host' || (g %% 10), 1000 + g %% 10, 0, 0, '{"ok": 1}', now(), now()
       FROM generate_series(1, %(finished)s) g""",
    """INSERT INTO horsies_tasks (id, task_name, queue_name, priority, status, sent_at, claimed,
       retry_count, max_retries, created_at, updated_at)
       SELECT 'pend-' || g, 'app.task_' || (g %% 20), 'q' || (g %% 5), 100, 'PENDING', now(), false,
              0, 0, now(), now()
       FROM generate_series(1, 10000) g""",
    """INSERT INTO horsies_limits (name, concurrency, rate, per_ms)
       VALUES ('tenant-api', 2, 10, 1000), ('exports', 1, NULL, NULL)""",
    """INSERT INTO horsies_tasks (id, task_name, queue_name, priority, status, sent_at, claimed,
       retry_count, max_retries, created_at, updated_at, limit_name, limit_key)
       SELECT 'lim-' || g, 'app.sync', 'q' || (g %% 5), 100, 'PENDING', now(), false, 0, 0, now(),
              now(), CASE WHEN g %% 2 = 0 THEN 'tenant-api' ELSE 'exports' END,
              'tenant-' || (g %% 1000)
       FROM generate_series(1, %(limited)s) g""",
    """INSERT INTO horsies_tasks (id, task_name, queue_name, priority, status, sent_at, claimed_at,
       started_at, claimed, claimed_by_worker_id, worker_hostname, worker_pid, retry_count,
       max_retries, created_at, updated_at, limit_name, limit_key)
       SELECT 'limrun-' || g, 'app.sync', 'q' || (g %% 5), 100, 'RUNNING', now(), now(), now(),
              true, 'w-' || (g %% 10), 'host' || (g %% 10), 1000 + g %% 10, 0, 0, now(), now(),
              CASE WHEN g %% 2 = 0 THEN 'tenant-api' ELSE 'exports' END, 'tenant-' || (g %% 1000)
       FROM generate_series(1, 500) g""",
    """INSERT INTO horsies_limit_starts (limit_name, limit_key, started_at, n)
       SELECT 'tenant-api', 'tenant-' || (g %% 1000), now() - (g %% 900) * interval '1 millisecond',
              row_number() OVER (PARTITION BY g %% 1000 ORDER BY g %% 900 DESC)
       FROM generate_series(1, 10000) g""",
    """INSERT INTO horsies_worker_states (worker_id, snapshot_at, hostname, pid, processes,
       max_claim_batch, max_claim_per_worker, queues, tasks_running, tasks_claimed, cpu_percent,
       memory_usage_mb, memory_percent, worker_started_at)
       SELECT 'w-' || w, now() - (s * 5 || ' seconds')::interval, 'host' || w, 1000 + w, 8, 2, 16,
              ARRAY['q0', 'q1'], s %% 9, s %% 3, 50.0, 100.0, 2.0, now() - interval '2 days'
       FROM generate_series(0, 9) w, generate_series(0, 17279) s""",
    """INSERT INTO horsies_workflows (id, name, status, on_error, depth, created_at, updated_at)
       SELECT 'wf-' || g, 'flow_' || (g %% 7),
              CASE WHEN g %% 10 = 0 THEN 'RUNNING' ELSE 'COMPLETED' END, 'fail', 0, now(),
              now() - (g || ' seconds')::interval
       FROM generate_series(1, 20000) g""",
    """INSERT INTO horsies_workflow_tasks (id, workflow_id, task_index, task_name, status,
       created_at)
       SELECT 'wf-' || g || '-' || i, 'wf-' || g, i, 'app.step', 'COMPLETED', now()
       FROM generate_series(1, 20000) g, generate_series(0, 4) i""",
]


def measure(source: SyceSource, broker: PostgresBroker) -> dict[str, tuple[float, float]]:
    """Per refresh: (first run ms, best of three ms)."""
    cases: dict[str, Callable[[], Any]] = {
        "Dashboard": source.dashboard,
        "Workers (24h chart)": lambda: source.workers("w-1", 4),
        "Tasks (all statuses)": lambda: source.task_groups(TASK_STATUSES),
        "Tasks (worker expanded)": lambda: source.tasks_of("w-1", TASK_STATUSES),
        "Tasks (unclaimed expanded)": lambda: source.tasks_of("", TASK_STATUSES),
        "Tasks (search)": lambda: source.task_groups(TASK_STATUSES, "task_3"),
        "Workflows": lambda: source.workflows(WORKFLOW_STATUSES),
        "Workflow detail": lambda: source.workflow("wf-5"),
        "Maintenance": source.maintenance,
        "Limits": lambda: source.limits(None),
        "Limits (a limit selected)": lambda: source.limits("tenant-api"),
        "Task detail (under a limit)": lambda: source.task_detail("lim-2"),
        "get_limit_stats (broker)": broker.get_limit_stats_sync,
    }
    results: dict[str, tuple[float, float]] = {}
    for name, run in cases.items():
        times: list[float] = []
        for _ in range(4):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        results[name] = (times[0] * 1000, min(times[1:]) * 1000)
    return results


def run(server_url: str, finished: int, limited: int) -> dict[str, tuple[float, float]]:
    admin = PostgresConfig(database_url=server_url).conninfo
    name = f"syce_scale_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(server_url)
    url = urlunsplit(parts._replace(path="/" + name))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        config = PostgresConfig(database_url=url)
        broker = PostgresBroker(config)
        try:
            broker.ensure_schema_initialized_sync()
            conninfo = config.conninfo
            with psycopg.connect(conninfo, autocommit=True) as conn:
                for statement in SEED:
                    conn.execute(statement, {"finished": finished, "limited": limited})  # type: ignore[arg-type]
                conn.execute("VACUUM ANALYZE")
            source = SyceSource(PostgresConfig(database_url=url))
            try:
                return measure(source, broker)
            finally:
                source.close()
        finally:
            broker.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def main() -> None:
    parser = argparse.ArgumentParser(description="Scale check for the Syce refresh queries")
    parser.add_argument("--url", help="server URL (default: a throw-away embedded PostgreSQL)")
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--limited", type=int, default=100_000)
    args = parser.parse_args()
    server = None
    url: str = args.url
    if not url:
        from horsies.embedded import start_embedded

        server = start_embedded(persistent=False, timeout_s=60)
        url = server.url
    try:
        results = run(url, args.finished, args.limited)
    finally:
        if server is not None:
            server.stop()
    print(f"{'refresh':32s} {'first':>10s} {'best of 3':>10s}")
    for name, (first, best) in results.items():
        print(f"{name:32s} {first:8.1f}ms {best:8.1f}ms")
    slowest = max(results.items(), key=lambda item: item[1][0])
    print(f"slowest refresh: {slowest[0]} {slowest[1][0]:.1f} ms (first run)")


if __name__ == "__main__":
    main()
