"""The horsies benchmark: one command, one table, one JSON file.

Run ``uv run python bench/run.py`` (a few minutes) or ``uv run python bench/run.py --quick`` (under
a minute once the peers' virtualenvs exist). It starts a throw-away embedded PostgreSQL and, on it,
measures in one run (see ``docs/benchmarks.md`` for what each workload means):

* horsies: W1 single sends, W1b ``send_many``, W1c 64 concurrent ``send_async``, W1t sends within
  the caller's transaction (``bench/transactional.py``, with their own limit), W2 drain of N
  queued no-op tasks by ``horsies worker --processes 2``, W3 send → result round trips, W4
  workflows (fan-out 1 → 50 → 1, chain of 200), W5 the W2 drain without a limit, under a per-key
  concurrency limit and under a rate limit (neither ever reached), in alternating rounds;
* L, the physical limit (``bench/limits.py``): the bare SQL of each workload from psycopg;
* the peers (``bench/peers/*_peer.py``), each in its own virtualenv under ``bench/.venvs``
  created with uv: pgqueuer, procrastinate, the reference horsies 0.1.0a2 (when a Python
  >= 3.13 is available) and Celery on a Redis the bench starts (``bench/redis_server.py``, when
  ``redis-server`` is installed). A peer that cannot be installed or run is reported as skipped.

It prints one table with the ratios (us ÷ best peer, us ÷ limit), writes
``bench/results/latest.json`` and stops everything it started, also on Ctrl+C or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import (  # noqa: E402
    ASYNC_CONCURRENCY,
    DATABASE_URL_ENV,
    DURABLE_SETTINGS,
    BenchError,
    create_database,
    latency_figures,
    measure_drain,
    start_horsies_worker,
    wait_registered,
)
from limits import measure_limits  # noqa: E402
from peer_runner import PEERS, Peer, run_peer  # noqa: E402
from redis_server import APPENDFSYNC_CHOICES  # noqa: E402
from transactional import measure_w1t  # noqa: E402

ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
APP_FILE = BENCH_DIR / "bench_app.py"
PREFETCH_ENV = "HORSIES_BENCH_PREFETCH"  # read by bench_app's worker (kept equal to its constant)
PREFETCH = 32
"""W2p: the worker's prefetch_buffer (soft-cap mode), the fastest honest setting for no-ops."""

IO_WAIT_ENV = "HORSIES_BENCH_IO_WAIT_MS"  # read by bench_app (kept equal to its constant)
IO_WAIT_MS = 50
"""W2io: how long each I/O-bound task awaits."""
DATABASE_NAME = "horsies_bench"

_RESULT_TIMEOUT_MS = 30_000
_CONCURRENCY = 64
_LATENCY_ROUNDS = 4


@dataclass(frozen=True)
class Sizes:
    """How much work each workload does (N per workload)."""

    sends: int  # W1
    bulk: int  # W1b
    concurrent: int  # W1c
    drain: int  # W2
    latency: int  # W3 samples
    workflow_runs: int  # W4 runs of each workflow
    w5_rounds: int  # W5 rounds of its three drains


QUICK = Sizes(
    sends=300,
    bulk=5_000,
    concurrent=1_000,
    drain=2_000,
    latency=100,
    workflow_runs=2,
    w5_rounds=2,
)
FULL = Sizes(
    sends=2_000,
    bulk=20_000,
    concurrent=5_000,
    drain=10_000,
    latency=300,
    workflow_runs=5,
    w5_rounds=3,
)


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure key, its label, its unit and which way is better."""

    key: str
    label: str
    unit: str
    better: str  # "higher" or "lower"
    baseline: str = ""
    """The peers' and the limit's row this one is compared with (default: the same key)."""


ROWS = (
    Row("w1_rate", "W1 single sends", "/s", "higher"),
    Row("w1b_rate", "W1b bulk sends (send_many)", "/s", "higher"),
    Row("w1c_rate", f"W1c concurrent sends ({_CONCURRENCY} in flight)", "/s", "higher"),
    Row("w1t_batch_rate", "W1t sends within one caller transaction (psycopg)", "/s", "higher"),
    Row("w1t_rows_rate", "W1t transactions of an app row + its task", "/s", "higher"),
    Row("w2_rate", "W2 drain, from worker start", "/s", "higher"),
    Row("w2_rate_after_first", "W2 drain, after first finished", "/s", "higher"),
    Row("w2_first_finish_s", "W2 worker start -> first finished", "s", "lower"),
    Row("w2_peak_rss_mb", "W2 worker peak RSS (process tree)", "MiB", "lower"),
    Row("w2_peak_pss_mb", "W2 worker peak PSS (process tree)", "MiB", "lower"),
    Row("w2_cpu_us_per_task", "W2 worker CPU per task (tree)", "us", "lower"),
    # Compared with the peers' W2: each peer's W2 already runs its fastest settings.
    Row(
        "w2p_rate",
        f"W2p drain, prefetch {PREFETCH}, from worker start",
        "/s",
        "higher",
        "w2_rate",
    ),
    Row(
        "w2p_rate_after_first",
        f"W2p drain, prefetch {PREFETCH}, after first",
        "/s",
        "higher",
        "w2_rate_after_first",
    ),
    Row(
        "w2p_cpu_us_per_task",
        f"W2p worker CPU per task, prefetch {PREFETCH}",
        "us",
        "lower",
        "w2_cpu_us_per_task",
    ),
    Row(
        "w2a_rate",
        f"W2a drain of async no-ops, --async-concurrency {ASYNC_CONCURRENCY}, from worker start",
        "/s",
        "higher",
        "w2_rate",
    ),
    Row(
        "w2a_rate_after_first",
        f"W2a drain of async no-ops, --async-concurrency {ASYNC_CONCURRENCY}, after first",
        "/s",
        "higher",
        "w2_rate_after_first",
    ),
    Row(
        "w2io_rate_after_first",
        f"W2io drain of async tasks awaiting {IO_WAIT_MS} ms, after first",
        "/s",
        "higher",
    ),
    Row("w3_p50_ms", "W3 send -> result p50", "ms", "lower"),
    Row("w3_p95_ms", "W3 send -> result p95", "ms", "lower"),
    Row("w3_p99_ms", "W3 send -> result p99", "ms", "lower"),
    Row("w3a_p50_ms", "W3a async task send -> result p50", "ms", "lower", "w3_p50_ms"),
    Row("w3a_p99_ms", "W3a async task send -> result p99", "ms", "lower", "w3_p99_ms"),
    Row("w4_fan_out_s", "W4 workflow 1 -> 50 -> 1", "s", "lower"),
    Row("w4_chain_s", "W4 workflow chain of 200", "s", "lower"),
    Row("w5a_rate_after_first", "W5a drain, no limit (as W2), after first", "/s", "higher"),
    Row(
        "w5b_rate_after_first",
        "W5b drain, concurrency limit on 100 keys (never reached), after first",
        "/s",
        "higher",
    ),
    Row(
        "w5c_rate_after_first",
        "W5c drain, rate limit (never reached), after first",
        "/s",
        "higher",
    ),
    # Horsies against itself (no peer or limit has W5): the value is the ratio, target >= 0.85.
    Row("w5b_vs_a", "W5b ÷ W5a (median of the rounds' ratios)", "ratio", "higher"),
    Row("w5c_vs_a", "W5c ÷ W5a (median of the rounds' ratios)", "ratio", "higher"),
)


# -- helpers ---------------------------------------------------------------------------------------


def _git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    del frame
    # Turn SIGTERM into an exception so the ExitStack stops the workers and the server.
    raise KeyboardInterrupt(f"signal {signum}")


# -- horsies ---------------------------------------------------------------------------------------


def _check_handles(handles: Sequence[Any]) -> None:
    if handles and handles[0].task_id in ("<error>", "<suppressed>"):
        raise BenchError(f"send failed: {handles[0].get(timeout_ms=1)}")


def measure_single_sends(noop: Any, n: int) -> float:
    """W1: sequential ``send()`` calls, each durable when it returns; no worker running."""
    for _ in range(min(20, n)):  # warm the pool and prepared statements
        _check_handles([noop.send()])
    started = time.perf_counter()
    for _ in range(n):
        _check_handles([noop.send()])
    return n / (time.perf_counter() - started)


def measure_bulk(noop: Any, conn: psycopg.Connection[Any], n: int) -> float:
    """W1b: one ``send_many`` of ``n`` calls; median of three."""
    calls = [{}] * n
    rates: list[float] = []
    for _ in range(3):
        conn.execute("TRUNCATE horsies_tasks CASCADE")
        started = time.perf_counter()
        handles = noop.send_many(calls)
        rates.append(n / (time.perf_counter() - started))
        _check_handles(handles)
        if len(handles) != n:
            raise BenchError(f"send_many returned {len(handles)} handles for {n} calls")
    return statistics.median(rates)


def measure_concurrent(noop: Any, n: int) -> float:
    """W1c: ``n`` ``send_async`` calls with 64 in flight from one process (one event loop)."""

    async def sends(count: int) -> None:
        sem = asyncio.Semaphore(_CONCURRENCY)

        async def one() -> None:
            async with sem:
                _check_handles([await noop.send_async()])

        await asyncio.gather(*(one() for _ in range(count)))

    async def timed() -> float:
        await sends(min(200, n))  # warm-up: open the pool's connections
        started = time.perf_counter()
        await sends(n)
        return n / (time.perf_counter() - started)

    return asyncio.run(timed())


def latency_samples(task: Any, n: int) -> list[float]:
    """W3, W3a: ``send().get()`` one after another on an idle worker, in milliseconds."""
    for _ in range(min(10, n)):
        task.send().get(timeout_ms=_RESULT_TIMEOUT_MS)
    samples: list[float] = []
    for _ in range(n):
        started = time.perf_counter()
        result = task.send().get(timeout_ms=_RESULT_TIMEOUT_MS)
        samples.append((time.perf_counter() - started) * 1000)
        if not result.is_ok():
            raise BenchError(f"latency task failed: {result}")
    return samples


def measure_workflow(spec: Any, repeats: int) -> float:
    """W4: ``start()`` then ``get()`` on an idle worker; median seconds of ``repeats`` runs."""
    spec.start().get(timeout_ms=_RESULT_TIMEOUT_MS)  # warm-up
    samples: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = spec.start().get(timeout_ms=_RESULT_TIMEOUT_MS)
        samples.append(time.perf_counter() - started)
        if not result.is_ok():
            raise BenchError(f"workflow {spec.name} failed: {result}")
    return statistics.median(samples)


_FINISHED = """
SELECT count(*) FILTER (WHERE status = 'COMPLETED'),
       EXTRACT(EPOCH FROM min(completed_at))::float8,
       EXTRACT(EPOCH FROM max(completed_at))::float8,
       count(*) FILTER (WHERE status = 'FAILED')
FROM horsies_tasks
"""


def run_horsies(
    server: Any, sizes: Sizes, processes: int, scratch: Path, echo: Callable[[str], None]
) -> dict[str, Any]:
    """Every workload for the library in this workspace; returns its system entry."""
    from importlib.metadata import version

    conninfo = create_database(server, DATABASE_NAME)
    url = server.url_for(DATABASE_NAME)
    figures: dict[str, float] = {}
    w5_by_round: dict[str, list[float]] = {}
    with ExitStack() as stack:
        # bench_app reads the URL when it is imported: set it first.
        os.environ[DATABASE_URL_ENV] = url
        import bench_app

        noop: Any = bench_app.noop
        broker = bench_app.app.get_broker()
        stack.callback(broker.close)
        broker.ensure_schema_initialized_sync()
        conn = stack.enter_context(psycopg.connect(conninfo, autocommit=True))

        echo(f"  W1: {sizes.sends} sequential send()")
        figures["w1_rate"] = measure_single_sends(noop, sizes.sends)
        echo(f"  W1b: send_many of {sizes.bulk}")
        figures["w1b_rate"] = measure_bulk(noop, conn, sizes.bulk)
        conn.execute("TRUNCATE horsies_tasks CASCADE")
        echo(f"  W1c: {sizes.concurrent} send_async, {_CONCURRENCY} in flight")
        figures["w1c_rate"] = measure_concurrent(noop, sizes.concurrent)
        echo(f"  W1t: {sizes.sends} sends within one transaction; {sizes.sends} transactions")
        w1t, w1t_limit = measure_w1t(conninfo, noop, sizes.sends)
        figures.update(w1t)
        conn.execute("TRUNCATE horsies_tasks CASCADE")

        def finished() -> tuple[int, float | None, float | None]:
            row = conn.execute(_FINISHED).fetchone()
            assert row is not None
            if row[3]:
                raise BenchError(f"{row[3]} no-op task(s) failed during the drain")
            return int(row[0]), row[1], row[2]

        def start_worker(
            stack: ExitStack, prefetch: int, log_name: str, app_name: str = "app"
        ) -> subprocess.Popen[bytes]:
            """Start ``horsies worker`` of ``bench_app.<app_name>`` (prefetch > 0: soft-cap
            mode), ``--async-concurrency`` for async tasks; it stops when ``stack`` closes."""
            batch = ["--max-claim-batch", str(processes + prefetch)] if prefetch else []
            return start_horsies_worker(
                stack,
                f"{APP_FILE}:{app_name}",
                processes,
                *batch,
                log_path=scratch / f"horsies-worker-{log_name}.log",
                env={
                    DATABASE_URL_ENV: url,
                    PREFETCH_ENV: str(prefetch),
                    IO_WAIT_ENV: str(IO_WAIT_MS),
                },
            )

        def drain(
            stack: ExitStack,
            prefetch: int,
            task: Any = noop,
            count: int = sizes.drain,
            *,
            calls: Sequence[dict[str, Any]] | None = None,
            app_name: str = "app",
            log_suffix: str = "",
        ) -> tuple[subprocess.Popen[bytes], dict[str, float]]:
            """Queue ``count`` calls of ``task`` (``calls``: their arguments, default none),
            start a worker of ``bench_app.<app_name>``, wait for the drain."""
            conn.execute("TRUNCATE horsies_tasks CASCADE")
            _check_handles(task.send_many([{}] * count if calls is None else calls))
            conn.execute("VACUUM ANALYZE horsies_tasks")
            log_name = f"{task.task_name}-prefetch{prefetch}{log_suffix}"
            log_path = scratch / f"horsies-worker-{log_name}.log"
            started_epoch = time.time()
            worker = start_worker(stack, prefetch, log_name, app_name)
            drained = measure_drain(worker, started_epoch, count, finished, log_path=log_path)
            drained["w2_cpu_us_per_task"] = drained["w2_cpu_s"] / count * 1e6
            return worker, drained

        def latency_rounds() -> None:
            """W3 and W3a in alternating rounds, each on a fresh idle worker, so the two are
            measured under the same machine noise and their comparison holds."""
            samples: dict[str, list[float]] = {"w3": [], "w3a": []}
            tasks = (("w3", noop), ("w3a", bench_app.async_noop))
            per_round = max(10, sizes.latency // _LATENCY_ROUNDS)
            for round_number in range(_LATENCY_ROUNDS):
                for key, task in tasks if round_number % 2 == 0 else tasks[::-1]:
                    with ExitStack() as serving:
                        worker = start_worker(serving, 0, f"{key}-round{round_number}")
                        wait_registered(conn, worker.pid)
                        conn.execute("TRUNCATE horsies_tasks CASCADE")
                        samples[key] += latency_samples(task, per_round)
            for key, taken in samples.items():
                for name, value in latency_figures(taken).items():
                    figures[name.replace("w3_", f"{key}_")] = value

        def limit_rounds() -> None:
            """W5: the W2 drain (a) of the plain no-op, (b) of a no-op under a per-key
            concurrency limit, sent with W5_KEYS keys, (c) of a no-op under a rate limit; no
            limit is ever reached, so (b) and (c) differ from (a) only by the limited claim.
            In alternating rounds, each drain on a fresh worker, so the three see the same
            machine noise; each ratio is taken within a round."""
            for limited in (bench_app.keys_app, bench_app.rate_app):
                stack.callback(limited.get_broker().close)
            keyed = bench_app.keyed_calls(sizes.drain)
            cases: tuple[tuple[str, Any, str, list[dict[str, Any]] | None], ...] = (
                ("w5a", noop, "app", None),
                ("w5b", bench_app.keyed_noop, "keys_app", keyed),
                ("w5c", bench_app.rated_noop, "rate_app", None),
            )
            rates = w5_by_round
            rates.update({name: [] for name, *_ in cases})
            for round_number in range(sizes.w5_rounds):
                for name, task, app_name, calls in cases if round_number % 2 == 0 else cases[::-1]:
                    # Every drain starts with an empty rate log, as the first round's did.
                    conn.execute("TRUNCATE horsies_limit_starts")
                    with ExitStack() as draining:
                        _, drained = drain(
                            draining,
                            0,
                            task,
                            calls=calls,
                            app_name=app_name,
                            log_suffix=f"-round{round_number}",
                        )
                    rates[name].append(drained["w2_rate_after_first"])
            for name, taken in rates.items():
                figures[f"{name}_rate_after_first"] = statistics.median(taken)
            for name in ("w5b", "w5c"):
                by_round = [x / a for x, a in zip(rates[name], rates["w5a"], strict=True)]
                figures[f"{name}_vs_a"] = statistics.median(by_round)

        echo(f"  W2p: drain of {sizes.drain} queued tasks, prefetch {PREFETCH}")
        with ExitStack() as prefetching:
            _, drained = drain(prefetching, PREFETCH)
        for key in ("w2_rate", "w2_rate_after_first", "w2_cpu_us_per_task"):
            figures[key.replace("w2_", "w2p_")] = drained[key]
        echo(f"    {figures['w2p_rate_after_first']:,.0f} tasks/s after the first")
        async_noop: Any = bench_app.async_noop
        echo(f"  W2a: drain of {sizes.drain} async no-ops, --async-concurrency {ASYNC_CONCURRENCY}")
        with ExitStack() as draining:
            _, drained = drain(draining, 0, async_noop)
            for key in ("w2_rate", "w2_rate_after_first"):
                figures[key.replace("w2_", "w2a_")] = drained[key]
            echo(f"    {figures['w2a_rate_after_first']:,.0f} tasks/s after the first")
        io_count = sizes.drain // 2
        echo(f"  W2io: drain of {io_count} async tasks awaiting {IO_WAIT_MS} ms each")
        with ExitStack() as draining:
            _, drained = drain(draining, 0, bench_app.async_io, io_count)
            figures["w2io_rate_after_first"] = drained["w2_rate_after_first"]
            echo(f"    {figures['w2io_rate_after_first']:,.0f} tasks/s after the first")
        echo(
            f"  W3, W3a: {sizes.latency} sequential send().get() each of the no-op and the async"
            f" no-op, in {_LATENCY_ROUNDS} alternating rounds on fresh workers"
        )
        latency_rounds()
        echo(
            f"  W5: drains of {sizes.drain} no-ops without a limit, under a concurrency limit on"
            f" {bench_app.W5_KEYS} keys, under a rate limit; {sizes.w5_rounds} alternating rounds"
        )
        w5_started = time.perf_counter()
        limit_rounds()
        echo(
            f"    {figures['w5a_rate_after_first']:,.0f} / {figures['w5b_rate_after_first']:,.0f}"
            f" / {figures['w5c_rate_after_first']:,.0f} tasks/s after the first: b ÷ a"
            f" {figures['w5b_vs_a']:.2f}, c ÷ a {figures['w5c_vs_a']:.2f}"
            f" ({time.perf_counter() - w5_started:.0f} s)"
        )
        echo(f"  W2: drain of {sizes.drain} queued tasks, worker --processes {processes}")
        worker, drained = drain(stack, 0)
        figures.update(drained)
        echo(f"    {figures['w2_rate_after_first']:,.0f} tasks/s after the first")
        wait_registered(conn, worker.pid)
        conn.execute("TRUNCATE horsies_tasks CASCADE")
        echo("  W4: workflows fan-out 1 -> 50 -> 1, chain of 200")
        figures["w4_fan_out_s"] = measure_workflow(bench_app.fan_out, sizes.workflow_runs)
        figures["w4_chain_s"] = measure_workflow(bench_app.chain, max(1, sizes.workflow_runs // 2))
    return {
        "status": "ok",
        "version": version("horsies-core"),
        "settings": (
            f"worker --processes {processes}, defaults; W2p: prefetch_buffer={PREFETCH}, "
            f"claim_lease_ms=30000, --max-claim-batch {processes + PREFETCH}; W2a, W2io, W3a: "
            f"--async-concurrency {ASYNC_CONCURRENCY}; W5: W2's settings, {sizes.w5_rounds} "
            f"rounds, b: Limit(concurrency=1000000, on=[key]) over {bench_app.W5_KEYS} keys, "
            "c: Limit(rate=1000000, per_s=1)"
        ),
        "figures": figures,
        "w5_rates_by_round": w5_by_round,
        # W1t's limit is the same statements by hand on horsies' own table, measured here.
        "limit_figures": w1t_limit,
    }


# -- the run ---------------------------------------------------------------------------------------


def run(
    sizes: Sizes,
    *,
    processes: int,
    quick: bool,
    durable: bool,
    peers: Sequence[Peer],
    echo: Callable[[str], None],
    redis_appendfsync: str = "off",
) -> dict[str, Any]:
    """Run every workload for horsies, the limit and the peers; return the JSON document."""
    from horsies.embedded import start_embedded

    machine: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    systems: dict[str, Any] = {}
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="horsies-bench-")))
        server = start_embedded(
            scratch / "postgres",
            persistent=False,
            extra_settings=DURABLE_SETTINGS if durable else None,
        )
        stack.callback(server.stop)
        with psycopg.connect(server.conninfo_for("postgres"), autocommit=True) as admin:
            version = admin.execute("SHOW server_version").fetchone()
            machine["server_settings"] = {
                str(name): str(value)
                for name, value in admin.execute(
                    "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                    (["fsync", "synchronous_commit", "full_page_writes", "shared_buffers"],),
                )
            }
        machine["postgresql"] = version[0] if version else None
        mode = "durable" if durable else "fsync=off, synchronous_commit=off"
        echo(f"  PostgreSQL {machine['postgresql']} ready (embedded, ephemeral, {mode})")

        echo("horsies")
        systems["horsies"] = run_horsies(server, sizes, processes, scratch, echo)
        echo("limit (bare SQL from psycopg)")
        limit_figures = measure_limits(
            create_database(server, "bench_limits"),
            sends=sizes.sends,
            bulk=sizes.bulk,
            drain=sizes.drain,
            latency=sizes.latency,
        )
        limit_figures.update(systems["horsies"].pop("limit_figures"))
        systems["limit"] = {
            "status": "ok",
            "version": f"PostgreSQL {machine['postgresql']}",
            "figures": limit_figures,
        }
        echo("peers")
        for peer in peers:
            systems[peer.label] = run_peer(
                peer,
                lambda name: create_database(server, name),
                asdict(sizes),
                quick=quick,
                scratch=scratch,
                echo=echo,
                redis_appendfsync=redis_appendfsync,
            )
    return {
        "suite": "horsies-bench",
        "mode": "quick" if quick else "full",
        "finished_at": datetime.now(UTC).isoformat(),
        "revision": _git_revision(),
        "machine": machine,
        "sizes": asdict(sizes),
        "processes": processes,
        "durable_server": durable,
        "redis_appendfsync": redis_appendfsync,
        "systems": systems,
        "ratios": ratios(systems),
    }


def ratios(systems: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """us ÷ best peer and us ÷ limit for every figure (best: highest rate, lowest time)."""
    ours = systems["horsies"]["figures"]
    limit = systems["limit"]["figures"]
    out: dict[str, dict[str, float | None]] = {}
    for row in ROWS:
        value = ours.get(row.key)
        base = row.baseline or row.key
        peer_values = [
            system["figures"][base]
            for name, system in systems.items()
            if name not in ("horsies", "limit") and base in system["figures"]
        ]
        peer_values = [v for v in peer_values if isinstance(v, int | float) and math.isfinite(v)]
        best = (max if row.better == "higher" else min)(peer_values) if peer_values else None
        out[row.key] = {
            "best_peer": best,
            "vs_best_peer": value / best if value is not None and best else None,
            "vs_limit": value / limit[base] if value is not None and limit.get(base) else None,
        }
    return out


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_table(document: dict[str, Any]) -> str:
    """Every workload for horsies, the limit and each peer, with the ratios, as Markdown."""
    systems: dict[str, Any] = document["systems"]
    names = list(systems)
    header = ["workload", "unit", "better", *names, "us ÷ best peer", "us ÷ limit"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in ROWS:
        cells = [row.label, row.unit, row.better]
        cells += [_fmt(systems[name]["figures"].get(row.key)) for name in names]
        ratio = document["ratios"][row.key]
        cells += [_fmt(ratio["vs_best_peer"]), _fmt(ratio["vs_limit"])]
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for name, system in systems.items():
        if system["status"] != "ok":
            notes.append(f"- {name}: skipped: {system['reason']}")
        else:
            settings = f"; {system['settings']}" if system.get("settings") else ""
            notes.append(f"- {name}: {system.get('version', '')}{settings}")
    return "\n".join([*lines, "", *notes])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small N (under a minute)")
    parser.add_argument("--processes", type=int, default=2, help="horsies worker child processes")
    parser.add_argument("-n", type=int, help="N for W1, W1b, W1c, W2 and W5 (overrides the mode)")
    parser.add_argument("--sends", type=int, help="N for W1")
    parser.add_argument("--bulk", type=int, help="N for W1b")
    parser.add_argument("--concurrent", type=int, help="N for W1c")
    parser.add_argument("--drain", type=int, help="N for W2 and each W5 drain")
    parser.add_argument("--latency", type=int, help="W3 samples")
    parser.add_argument("--workflow-runs", type=int, help="W4 runs of each workflow")
    parser.add_argument("--w5-rounds", type=int, help="W5 rounds of its three drains")
    parser.add_argument(
        "--peers",
        default=",".join(p.name for p in PEERS),
        help="comma-separated peers to run ('' for none; default: %(default)s)",
    )
    parser.add_argument(
        "--fast-server",
        action="store_true",
        help="run PostgreSQL with fsync=off, synchronous_commit=off (the tests' settings)",
    )
    parser.add_argument(
        "--redis-aof",
        choices=APPENDFSYNC_CHOICES,
        default="off",
        help="the Celery peer's Redis: append-only file off (Redis's default, snapshots only),"
        " fsync'd every second, or before every reply (default: %(default)s)",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "latest.json", help="JSON output file"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.n is not None:
        sizes = replace(sizes, sends=args.n, bulk=args.n, concurrent=args.n, drain=args.n)
    for key in ("sends", "bulk", "concurrent", "drain", "latency", "workflow_runs", "w5_rounds"):
        if getattr(args, key) is not None:
            sizes = replace(sizes, **{key: getattr(args, key)})
    wanted = [name for name in args.peers.split(",") if name]
    unknown = set(wanted) - {p.name for p in PEERS}
    if unknown:
        parser.error(f"unknown peer(s): {', '.join(sorted(unknown))}")
    peers = [p for p in PEERS if p.name in wanted]

    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    print(f"horsies benchmark ({'quick' if args.quick else 'full'}): {sizes}", flush=True)
    started = time.perf_counter()
    try:
        document = run(
            sizes,
            processes=args.processes,
            quick=args.quick,
            durable=not args.fast_server,
            redis_appendfsync=args.redis_aof,
            peers=peers,
            echo=lambda line: print(line, flush=True),
        )
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    document["duration_s"] = round(time.perf_counter() - started, 1)
    print()
    print(format_table(document))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output} in {document['duration_s']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
