"""W6: the queue with a big history, and retention working through it (a bench case, by hand).

    uv run python bench/history_scale.py [--finished 10000000] [--pending 100000] [--quick]

On a throw-away durable embedded PostgreSQL it fills one database with ``--finished`` ended tasks
(half of them past the 30-day retention, oldest first, each with a time-ordered id of its time as
horsies makes them, by the server's own INSERT ... SELECT, the fastest way) and ``--pending``
tasks waiting in a queue no worker serves; measures W1 (single sends), W2 (drain, default worker)
and W3 (send -> result) on it and on an empty database of the same server, in turn (``--rounds``
each, medians); times Syce's refreshes at that size; then prunes the backlog with
``broker.prune`` while W3 round trips run beside it. ``--quick``: 1,000,000 rows and smaller
samples.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import (  # noqa: E402
    DATABASE_URL_ENV,
    DURABLE_SETTINGS,
    BenchError,
    create_database,
    finished_probe,
    latency_figures,
    measure_drain,
    start_horsies_worker,
    wait_registered,
)
from horsies.config import PostgresConfig, RetentionConfig  # noqa: E402
from run import (  # noqa: E402
    APP_FILE,
    latency_samples,
    measure_single_sends,
)
from syce.source import SyceSource  # noqa: E402
from syce_scale import measure as measure_syce  # noqa: E402

_FILL_ENDED = """
INSERT INTO horsies_tasks (id, task_name, queue_name, priority, status, sent_at, claimed_at,
    started_at, completed_at, claimed, claimed_by_worker_id, worker_hostname, worker_pid,
    retry_count, max_retries, result, created_at, updated_at, attempt)
SELECT uuidv7(t - now())::text, 'bench.history', 'default', 100, 'COMPLETED', t, t, t, t,
       false, 'w-' || (g %% 10), 'host', 1000 + g %% 10, 0, 0, '{"ok": null}', t, t, 1
FROM generate_series(1, %(n)s) AS g,
     LATERAL (SELECT now() - (g::float8 / %(n)s * 60) * interval '1 day' AS t) AS times
ORDER BY g DESC
"""
_FILL_PENDING = """
INSERT INTO horsies_tasks (id, task_name, queue_name, priority, status, sent_at, claimed,
    retry_count, max_retries, created_at, updated_at)
SELECT uuidv7()::text, 'bench.noop', 'unserved', 100, 'PENDING', now(), false, 0, 0, now(), now()
FROM generate_series(1, %(n)s) AS g
"""
# The drain's tasks, through the index of ended tasks: a probe that read the whole history (10 M
# rows, 3.5 GB) on every poll took a core from the drain it was timing.
_FINISHED = """
SELECT count(*) FILTER (WHERE status = 'COMPLETED'),
       EXTRACT(EPOCH FROM min(completed_at))::float8,
       EXTRACT(EPOCH FROM max(completed_at))::float8
FROM horsies_tasks
WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED') AND workflow_id IS NULL
  AND updated_at >= %(since)s AND task_name = 'bench.noop'
"""
# What the server did for the drain: scans and blocks of the index the claims read, horsies_ready's
# (their ratio does not depend on when the worker's backend last flushed its statistics),
# autovacuum runs of the task table and of horsies_ready, the WAL written (bytes and full-page
# images: the server's, the drain is all that writes) and checkpoints started.
_SERVER_COUNTERS = """
SELECT (SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'pk_horsies_ready'),
       (SELECT idx_blks_hit + idx_blks_read FROM pg_statio_user_indexes
        WHERE indexrelname = 'pk_horsies_ready'),
       (SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'horsies_tasks'),
       (SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'horsies_ready'),
       (SELECT wal_bytes FROM pg_stat_wal),
       (SELECT wal_fpi FROM pg_stat_wal),
       (SELECT num_timed + num_requested FROM pg_stat_checkpointer)
"""
_NOT_HISTORY = (
    "DELETE FROM horsies_tasks WHERE queue_name = 'default' AND task_name <> 'bench.history'"
)


class _ServerWatch:
    """Counters of the server over a span: blocks per scan of the index the claims read, the
    tables' autovacuum runs, and the CPU the server's autovacuum workers took, whichever database
    they vacuumed (live ones from their own counters, ended ones from the postmaster's count of its
    reaped children)."""

    def __init__(self, conn: psycopg.Connection[Any], postmaster_pid: int) -> None:
        self._conn = conn
        self._postmaster = psutil.Process(postmaster_pid)
        self._start = self._read()

    def _autovacuum_cpu(self) -> dict[int, float]:
        seen: dict[int, float] = {}
        for child in self._postmaster.children():
            try:
                if "autovacuum worker" in " ".join(child.cmdline()):
                    times = child.cpu_times()
                    seen[child.pid] = times.user + times.system
            except psutil.Error:
                continue
        return seen

    def _read(self) -> tuple[tuple[Any, ...], float, dict[int, float]]:
        row = self._conn.execute(_SERVER_COUNTERS).fetchone()
        times = self._postmaster.cpu_times()
        return tuple(row or ()), times.children_user + times.children_system, self._autovacuum_cpu()

    def figures(self, tasks: int) -> dict[str, float]:
        """The span's figures; WAL per task of ``tasks``."""
        start, reaped0, live0 = self._start
        end, reaped1, live1 = self._read()
        scans, blocks, runs, ready_runs, wal_bytes, fpi, checkpoints = (
            float(b or 0) - float(a or 0) for a, b in zip(start, end, strict=True)
        )
        live = sum(cpu - live0.get(pid, 0.0) for pid, cpu in live1.items())
        return {
            "claim_index_blocks_per_scan": blocks / scans if scans else float("nan"),
            "autovacuum_runs": runs,
            "ready_autovacuum_runs": ready_runs,
            "autovacuum_cpu_s": reaped1 - reaped0 + live,
            "wal_bytes_per_task": wal_bytes / tasks,
            "wal_fpi_per_task": fpi / tasks,
            "checkpoints": checkpoints,
        }


def _workloads(
    target: _Target, scratch: Path, sizes: dict[str, int], postmaster_pid: int
) -> dict[str, float]:
    """W1, W2 (after first finished) and W3 p50/p99 on the database as it is, and what the server
    did beside the drain (:class:`_ServerWatch`)."""
    conn, noop, url = target.conn, target.noop, target.url
    conn.execute(_NOT_HISTORY)
    figures = {"w1_rate": measure_single_sends(noop, sizes["sends"])}
    conn.execute(_NOT_HISTORY)
    row = conn.execute("SELECT now()").fetchone()
    probe = finished_probe(conn, _FINISHED, {"since": row[0] if row else None})
    noop.send_many([{}] * sizes["drain"])
    with ExitStack() as stack:
        worker = _start_worker(stack, url, scratch)
        watch = _ServerWatch(conn, postmaster_pid)
        drained = measure_drain(worker, time.time(), sizes["drain"], probe)
        figures["w2_rate_after_first"] = drained["w2_rate_after_first"]
        figures.update({f"drain_{k}": v for k, v in watch.figures(sizes["drain"]).items()})
        wait_registered(conn, worker.pid)
        samples = latency_samples(noop, sizes["latency"])
        measured = latency_figures(samples)
        figures["w3_p50_ms"], figures["w3_p99_ms"] = measured["w3_p50_ms"], measured["w3_p99_ms"]
    return figures


def _start_worker(stack: ExitStack, url: str, scratch: Path) -> Any:
    log_path = scratch / f"worker-{time.monotonic_ns()}.log"
    return start_horsies_worker(
        stack, f"{APP_FILE}:app", 2, log_path=log_path, env={DATABASE_URL_ENV: url}
    )


def _prune_beside_latency(
    conn: psycopg.Connection[Any], noop: Any, url: str, scratch: Path, rounds: int, *, batch: int
) -> dict[str, float]:
    """Prune the backlog in batches of ``batch`` rows while W3 round trips run beside it (on an
    idle worker)."""
    broker = noop.app.get_broker()
    retention = RetentionConfig(batch_size=batch)
    samples: list[float] = []
    done = threading.Event()

    def round_trips() -> None:
        while not done.is_set() and len(samples) < rounds:
            samples.extend(latency_samples(noop, 20))

    with ExitStack() as stack:
        worker = _start_worker(stack, url, scratch)
        wait_registered(conn, worker.pid)
        beside = threading.Thread(target=round_trips, daemon=True)
        beside.start()
        backlog = broker.prune(retention, dry_run=True).tasks
        started = time.perf_counter()
        # The worker beside it prunes too once it has run a minute (its maintenance loop): the
        # two share the cluster's prune lock, and the backlog is worked through when a prune of
        # this process finds nothing left.
        while not (report := broker.prune(retention)).finished:
            if time.perf_counter() - started > 900:
                raise BenchError("the backlog was not pruned within 900 s")
            if report.busy:
                time.sleep(0.05)
        elapsed = time.perf_counter() - started
        pruned = backlog - broker.prune(retention, dry_run=True).tasks
        done.set()
        beside.join(timeout=120)
        if beside.is_alive():
            raise BenchError("the round trips beside the prune did not stop within 120 s")
    measured = latency_figures(samples) if samples else {"w3_p50_ms": 0.0, "w3_p99_ms": 0.0}
    return {
        "pruned_rows": float(pruned),
        "prune_s": elapsed,
        "prune_rows_per_s": pruned / elapsed if elapsed else float("nan"),
        "w3_p50_ms_during_prune": measured["w3_p50_ms"],
        "w3_p99_ms_during_prune": measured["w3_p99_ms"],
        "w3_samples_during_prune": float(len(samples)),
    }


@dataclass
class _Target:
    """One database of the server and the bench app bound to it."""

    url: str
    conn: psycopg.Connection[Any]
    noop: Any


def _target(stack: ExitStack, server: Any, name: str) -> _Target:
    """A new database ``name`` with horsies' schema and a copy of the bench app bound to it (the
    app reads its URL when its module is loaded)."""
    conninfo = create_database(server, name)
    url = server.url_for(name)
    os.environ[DATABASE_URL_ENV] = url
    spec = importlib.util.spec_from_file_location(f"bench_app_{name}", BENCH_DIR / "bench_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    broker = module.app.get_broker()
    stack.callback(broker.close)
    broker.ensure_schema_initialized_sync()
    conn = stack.enter_context(psycopg.connect(conninfo, autocommit=True))
    return _Target(url, conn, module.noop)


def main() -> None:
    parser = argparse.ArgumentParser(description="W6: the queue with a big history.")
    parser.add_argument("--finished", type=int, default=None, help="default 10,000,000")
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2, help="W1-W3 rounds per database")
    parser.add_argument(
        "--batch", type=int, default=RetentionConfig().batch_size, help="rows per prune batch"
    )
    parser.add_argument("--quick", action="store_true", help="1,000,000 rows, smaller samples")
    args = parser.parse_args()
    finished = args.finished or (1_000_000 if args.quick else 10_000_000)
    sizes = {"sends": 300, "drain": 2_000, "latency": 200} if args.quick else {
        "sends": 2_000, "drain": 10_000, "latency": 500}  # fmt: skip
    from horsies.embedded import start_embedded

    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="horsies-w6-")))
        server = start_embedded(
            scratch / "postgres", persistent=False, extra_settings=DURABLE_SETTINGS
        )
        stack.callback(server.stop)
        # The empty database is a second one on the same server, measured in turn with the full
        # one after the fill: measured before the fill, minutes apart, the machine's drift
        # between the two moved the ratios more than the history did.
        full = _target(stack, server, "w6")
        empty = _target(stack, server, "w6_empty")
        print(f"filling {finished:,} ended tasks and {args.pending:,} pending", flush=True)
        started = time.perf_counter()
        full.conn.execute(_FILL_ENDED, {"n": finished})
        full.conn.execute(_FILL_PENDING, {"n": args.pending})
        full.conn.execute("VACUUM ANALYZE horsies_tasks")
        fill_s = time.perf_counter() - started
        # Measured right after the fill, W1-W3 would pay for writing its 3.5 GB out (checkpoints
        # and their WAL flushes), not for the size of the table: settle that first.
        full.conn.execute("CHECKPOINT")
        size = full.conn.execute("SELECT pg_database_size(current_database())").fetchone()
        size_gb = (size[0] if size else 0) / 1e9
        print(f"  {fill_s:.0f} s, database {size_gb:.2f} GB", flush=True)
        rounds: dict[str, list[dict[str, float]]] = {"empty": [], "full": []}
        for i in range(args.rounds):
            order = [("empty", empty), ("full", full)]
            for label, target in order if i % 2 == 0 else order[::-1]:
                print(f"round {i + 1}, {label} database: W1, W2, W3", flush=True)
                figures = _workloads(target, scratch, sizes, server.pid)
                rounds[label].append(figures)
                print(f"  {figures}", flush=True)
        medians = {
            label: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            for label, runs in rounds.items()
        }
        print("Syce refreshes", flush=True)
        source = SyceSource(PostgresConfig(database_url=full.url))
        try:
            syce = measure_syce(source, full.noop.app.get_broker())
        finally:
            source.close()
        print("prune beside W3", flush=True)
        prune = _prune_beside_latency(
            full.conn, full.noop, full.url, scratch, sizes["latency"], batch=args.batch
        )
        print(f"  {prune}", flush=True)
    empty_figures, full_figures = medians["empty"], medians["full"]
    empty_p99 = empty_figures["w3_p99_ms"]
    print("\n| figure | empty | full | full / empty |\n|---|---|---|---|")
    for key in empty_figures:
        ratio = full_figures[key] / empty_figures[key] if empty_figures[key] else float("nan")
        print(f"| {key} | {empty_figures[key]:,.2f} | {full_figures[key]:,.2f} | {ratio:.2f} |")
    print(f"\nrows: {finished:,} ended + {args.pending:,} pending; fill {fill_s:.0f} s; "
          f"database {size_gb:.2f} GB")  # fmt: skip
    print(
        f"prune: {prune['pruned_rows']:,.0f} rows in {prune['prune_s']:.1f} s = "
        f"{prune['prune_rows_per_s']:,.0f} rows/s; W3 beside it p50 "
        f"{prune['w3_p50_ms_during_prune']:.2f} / p99 {prune['w3_p99_ms_during_prune']:.2f} ms "
        f"({prune['w3_samples_during_prune']:.0f} samples; empty p99 {empty_p99:.2f} ms, "
        f"ratio {prune['w3_p99_ms_during_prune'] / empty_p99:.2f})"
    )
    print("\nSyce refreshes at that size (first run ms, best of three ms), slowest first:")
    for name, (first, best) in sorted(syce.items(), key=lambda kv: -kv[1][1])[:8]:
        print(f"  {name}: {first:.1f} / {best:.1f}")


if __name__ == "__main__":
    main()
