"""Where a drain's time goes (a bench case, by hand): the CPU each process spends per task, and the
statements the server ran, for one drain of no-ops by a default worker.

    uv run python bench/profile_drain.py [-n 20000] [--task TASK] [--prefetch 32]

On a throw-away durable embedded PostgreSQL with ``pg_stat_statements``: queue N calls of the
bench app's task, start ``horsies worker --processes 2`` (W2's; W2a's with ``--task async_noop``;
W5b's and W5c's with ``keyed_noop`` and ``rated_noop``; W2p's with ``--prefetch``), and from its
first finished task to its last count the CPU time of each process of the worker's tree and of the
server, per task. Then the statements the server ran most, with their calls, mean time, rows and
how often they were planned (with the mean planning time). The figures of "Where the time goes" in
docs/benchmarks.md come from it. Point a sampling profiler at the worker's pid (printed) for the
Python side.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, LiteralString

import psutil
import psycopg

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import (  # noqa: E402
    DATABASE_URL_ENV,
    DURABLE_SETTINGS,
    BenchError,
    create_database,
    start_horsies_worker,
    wait_until,
)

_PREFETCH_ENV = "HORSIES_BENCH_PREFETCH"  # read by bench_app (kept equal to its constant)
_DONE = "SELECT count(*) FROM horsies_tasks WHERE status = 'COMPLETED'"
# Polled during the drain: each reads a partial index, not the table (a count would cost the
# server more than the drain's own statements).
_ANY_DONE = "SELECT EXISTS (SELECT 1 FROM horsies_tasks WHERE status = 'COMPLETED')"
_ALL_DONE = (
    "SELECT NOT EXISTS (SELECT 1 FROM horsies_tasks"
    " WHERE status IN ('PENDING', 'CLAIMED', 'RUNNING'))"
)
_TOP_STATEMENTS = """
SELECT calls, total_exec_time / calls * 1000 AS mean_us, rows,
       plans, total_plan_time / greatest(plans, 1) * 1000 AS plan_us,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
FROM pg_stat_statements WHERE calls >= 50 ORDER BY total_exec_time DESC LIMIT 12
"""


# Each task the profile can drain, and the bench app that holds it (W5's limited no-ops have apps
# of their own, see bench_app).
_TASK_APPS = {
    "noop": "app",
    "async_noop": "app",
    "keyed_noop": "keys_app",
    "rated_noop": "rate_app",
}


def _cpu_seconds(processes: list[psutil.Process]) -> dict[int, tuple[str, float]]:
    """User + system CPU of each process still alive, with a short name."""
    seen: dict[int, tuple[str, float]] = {}
    for proc in processes:
        try:
            times = proc.cpu_times()
            seen[proc.pid] = (proc.name(), times.user + times.system)
        except psutil.Error:
            continue
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description="Where a drain's time goes.")
    parser.add_argument("-n", type=int, default=20_000, help="tasks queued (default 20,000)")
    parser.add_argument(
        "--task", default="noop", choices=sorted(_TASK_APPS), help="bench_app's task to drain"
    )
    parser.add_argument("--prefetch", type=int, default=0, help="soft-cap mode's prefetch_buffer")
    options = parser.parse_args()
    from horsies.embedded import start_embedded

    settings = {
        **DURABLE_SETTINGS,
        "shared_preload_libraries": "pg_stat_statements",
        "pg_stat_statements.track": "all",
        "pg_stat_statements.track_planning": "on",
    }
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="horsies-prof-")))
        server = start_embedded(scratch / "pg", persistent=False, extra_settings=settings)
        stack.callback(server.stop)
        conninfo = create_database(server, "profile")
        url = server.url_for("profile")
        os.environ[DATABASE_URL_ENV] = url
        os.environ[_PREFETCH_ENV] = str(options.prefetch)
        import bench_app  # reads the URL and the prefetch when imported

        app_name = _TASK_APPS[options.task]
        getattr(bench_app, app_name).get_broker().ensure_schema_initialized_sync()
        conn = stack.enter_context(psycopg.connect(conninfo, autocommit=True))
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        task: Any = getattr(bench_app, options.task)
        calls = (
            bench_app.keyed_calls(options.n) if options.task == "keyed_noop" else [{}] * options.n
        )
        if not all(h.sent for h in task.send_many(calls)):
            raise BenchError("a send failed")
        conn.execute("VACUUM ANALYZE horsies_tasks")
        conn.execute("SELECT pg_stat_statements_reset()")

        def read(query: LiteralString) -> Any:
            row = conn.execute(query).fetchone()
            assert row is not None
            return row[0]

        batch = ["--max-claim-batch", str(2 + options.prefetch)] if options.prefetch else []
        worker = start_horsies_worker(
            stack,
            f"{BENCH_DIR / 'bench_app.py'}:{app_name}",
            2,
            *batch,
            log_path=scratch / "worker.log",
        )
        print(f"worker pid {worker.pid}", flush=True)
        wait_until(lambda: bool(read(_ANY_DONE)), 90, "the first finished task")
        tree = psutil.Process(worker.pid)
        postmaster = psutil.Process(server.pid)
        processes = [tree, *tree.children(recursive=True), postmaster, *postmaster.children()]
        before, first, began = _cpu_seconds(processes), int(read(_DONE)), time.monotonic()
        wait_until(lambda: bool(read(_ALL_DONE)), 600, "the drain")
        elapsed, after = time.monotonic() - began, _cpu_seconds(processes)
        tasks = options.n - first
        print(f"{tasks:,} tasks after the first in {elapsed:.1f} s: {tasks / elapsed:,.0f}/s")
        print("CPU per task (processes over 1 %), µs:")
        for pid, (name, seconds) in after.items():
            spent = seconds - before.get(pid, (name, seconds))[1]
            if spent > 0.01 * elapsed:
                print(f"  {pid:>7} {name:<16} {spent / tasks * 1e6:8.0f}")
        print("statements (calls, mean µs, rows, plans, mean planning µs, text):")
        for calls, mean_us, rows, plans, plan_us, text in conn.execute(_TOP_STATEMENTS):
            print(f"  {calls:>8} {mean_us:8.0f} {rows:>8} {plans:>8} {plan_us:6.0f}  {text}")


if __name__ == "__main__":
    main()
