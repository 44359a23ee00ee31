"""Deterministic seed data and Pilot helpers for the Syce tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from syce.screens.modals import ConfirmScreen
from textual.pilot import Pilot

WORKERS = {
    # worker_id: (hostname, pid, processes, running, claimed, cpu, last snapshot age)
    "w-alpha": ("alpha", 101, 4, 4, 2, 75.0, timedelta(seconds=2)),
    "w-beta": ("beta", 202, 2, 1, 0, 20.0, timedelta(seconds=3)),
    "w-gamma": ("gamma", 303, 2, 0, 0, 1.0, timedelta(minutes=10)),
}

TASKS = [
    # id, name, queue, status, worker_id, hostname, claimed_at age
    ("t-pend-1", "app.send_mail", "default", "PENDING", None, None, None),
    ("t-pend-2", "app.send_mail", "default", "PENDING", None, None, None),
    ("t-pend-3", "app.resize", "images", "PENDING", None, None, None),
    ("t-claim-1", "app.resize", "images", "CLAIMED", "w-alpha", None, timedelta(minutes=5)),
    ("t-run-1", "app.report", "default", "RUNNING", "w-alpha", "alpha", timedelta(seconds=30)),
    ("t-run-2", "app.report", "default", "RUNNING", "w-alpha", "alpha", timedelta(seconds=20)),
    ("t-done-1", "app.add", "default", "COMPLETED", "w-beta", "beta", timedelta(minutes=1)),
    ("t-done-2", "app.add", "default", "COMPLETED", "w-beta", "beta", timedelta(minutes=1)),
    ("t-fail-1", "app.explode", "default", "FAILED", "w-beta", "beta", timedelta(minutes=2)),
]

WORKFLOWS = [
    # id, name, status, node statuses
    ("wf-etl", "nightly_etl", "RUNNING", ["COMPLETED", "RUNNING", "PENDING"]),
    ("wf-report", "weekly_report", "COMPLETED", ["COMPLETED"]),
    ("wf-paused", "cleanup", "PAUSED", ["COMPLETED", "PENDING"]),
]


def seed(conninfo: str) -> None:
    """Fill an empty database with the rows above (times relative to now)."""
    now = datetime.now(UTC)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for worker_id, (host, pid, procs, running, claimed, cpu, age) in WORKERS.items():
            # one snapshot a minute over the last 20 minutes, the newest `age` old
            for minute in range(20):
                conn.execute(
                    """INSERT INTO horsies_worker_states (worker_id, snapshot_at, hostname, pid,
                       processes, max_claim_batch, max_claim_per_worker, queues, tasks_running,
                       tasks_claimed, memory_usage_mb, memory_percent, cpu_percent,
                       worker_started_at)
                       VALUES (%s, %s, %s, %s, %s, 2, 4, %s, %s, %s, 128.0, 3.5, %s, %s)""",
                    (
                        worker_id,
                        now - age - timedelta(minutes=minute),
                        host,
                        pid,
                        procs,
                        ["default", "images"],
                        running if minute == 0 else minute % (procs + 1),
                        claimed if minute == 0 else 0,
                        cpu,
                        now - timedelta(hours=2),
                    ),
                )
        for task_id, name, queue, status, worker_id, host, claimed_age in TASKS:
            claimed_at = None if claimed_age is None else now - claimed_age
            conn.execute(
                """INSERT INTO horsies_tasks (id, task_name, queue_name, priority, args, kwargs,
                   status, sent_at, claimed_at, started_at, completed_at, failed_at, claimed,
                   claimed_by_worker_id, worker_hostname, worker_pid, retry_count, max_retries,
                   result, created_at, updated_at)
                   VALUES (%s, %s, %s, 100, '[1, 2]', '{}', %s, %s, %s, %s, %s, %s, %s, %s, %s,
                   %s, 0, 0, %s, %s, %s)""",
                (
                    task_id,
                    name,
                    queue,
                    status,
                    now - timedelta(minutes=10),
                    claimed_at,
                    claimed_at if host is not None else None,
                    claimed_at if status == "COMPLETED" else None,
                    claimed_at if status == "FAILED" else None,
                    worker_id is not None,
                    worker_id,
                    host,
                    None if host is None else 4242,
                    '{"ok": 3}' if status == "COMPLETED" else None,
                    now - timedelta(minutes=10),
                    now,
                ),
            )
        for offset, (wf_id, name, status, nodes) in enumerate(WORKFLOWS):
            conn.execute(
                """INSERT INTO horsies_workflows (id, name, status, on_error, depth, created_at,
                   updated_at) VALUES (%s, %s, %s, 'fail', 0, %s, %s)""",
                (wf_id, name, status, now, now - timedelta(seconds=offset)),
            )
            for index, node_status in enumerate(nodes):
                conn.execute(
                    """INSERT INTO horsies_workflow_tasks (id, workflow_id, task_index, node_id,
                       task_name, queue_name, priority, dependencies, allow_failed_deps,
                       join_type, status, is_subworkflow, created_at)
                       VALUES (%s, %s, %s, %s, %s, 'default', 100, %s, false, 'all', %s, false,
                       %s)""",
                    (
                        f"{wf_id}-n{index}",
                        wf_id,
                        index,
                        f"step_{index}",
                        f"app.step_{index}",
                        [] if index == 0 else [index - 1],
                        node_status,
                        now,
                    ),
                )


async def wait_for(
    pilot: Pilot[Any], condition: Callable[[], object], timeout: float = 15.0, what: str = ""
) -> None:
    """Let the app run until `condition()` is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await pilot.pause(0.02)


async def confirm(pilot: Pilot[Any], key: str, answer: str = "y") -> None:
    """Press ``key``, wait for the confirmation dialog it opens, then answer it with ``answer``."""
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), what="confirm")
    await pilot.press(answer)


LIMITED_TASKS = [
    # id, name, status, limit, key, sent minutes ago
    ("t-lim-run-1", "crm.sync", "RUNNING", "tenant-api", "acme", 9),
    ("t-lim-run-2", "crm.sync", "RUNNING", "tenant-api", "acme", 9),
    ("t-lim-acme-1", "crm.sync", "PENDING", "tenant-api", "acme", 8),
    ("t-lim-acme-2", "crm.sync", "PENDING", "tenant-api", "acme", 7),
    ("t-lim-acme-3", "crm.export", "PENDING", "tenant-api", "acme", 6),
    ("t-lim-globex", "crm.sync", "PENDING", "tenant-api", "globex", 5),
    ("t-lim-report", "report.build", "PENDING", "reports", "", 4),
    ("t-lim-ghost-1", "ghost.run", "PENDING", "ghost", "x", 3),
    ("t-lim-ghost-2", "ghost.run", "PENDING", "ghost", "x", 2),
]
"""tenant-api (2 at once, 10 per minute, per tenant): acme runs 2 and holds 3, globex waits for a
worker; reports (1 at once, one key): room; ghost: no worker registered it."""


def seed_limits(conninfo: str) -> None:
    """Add rate and concurrency limits to a database seeded by `seed`: the rows above, the
    numbers workers registered, two recent starts of acme, and w-alpha enforcing both limits."""
    now = datetime.now(UTC)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO horsies_limits (name, concurrency, rate, per_ms) VALUES "
            "('tenant-api', 2, 10, 60000), ('reports', 1, NULL, NULL)"
        )
        conn.execute(
            "INSERT INTO horsies_limit_starts (limit_name, limit_key, started_at, n) VALUES "
            "('tenant-api', 'acme', now() - interval '10 seconds', 1), "
            "('tenant-api', 'acme', now() - interval '5 seconds', 2)"
        )
        conn.execute(
            "UPDATE horsies_worker_states SET limits = %s WHERE worker_id = 'w-alpha'",
            ('{"default": ["tenant-api", "reports"]}',),
        )
        for task_id, name, status, limit, key, minutes in LIMITED_TASKS:
            running = status == "RUNNING"
            sent = now - timedelta(minutes=minutes)
            conn.execute(
                """INSERT INTO horsies_tasks (id, task_name, queue_name, priority, status, sent_at,
                   claimed_at, started_at, claimed, claimed_by_worker_id, worker_hostname,
                   worker_pid, retry_count, max_retries, limit_name, limit_key, created_at,
                   updated_at)
                   VALUES (%s, %s, 'default', 100, %s, %s, %s, %s, %s, %s, %s, %s, 0, 0, %s, %s,
                   %s, %s)""",
                (
                    task_id,
                    name,
                    status,
                    sent,
                    sent if running else None,
                    sent if running else None,
                    running,
                    "w-alpha" if running else None,
                    "alpha" if running else None,
                    4242 if running else None,
                    limit,
                    key,
                    sent,
                    now,
                ),
            )
