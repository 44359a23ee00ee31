"""Peer: pgqueuer, run by ``bench/run.py`` from its own virtualenv (``bench/.venvs/pgqueuer``).

``python pgqueuer_peer.py measure URL SIZES_JSON`` prints one JSON line with its figures;
``python pgqueuer_peer.py worker URL`` is the worker it starts (one process, asyncio).

Settings (pgqueuer's documented fast path, matched to concurrency 2): the asyncpg driver, one
worker process. W2 runs ``QueueManager.run(batch_size=10)`` (the default) with no cap on tasks in
flight (``concurrency_limit=2`` or ``max_concurrent_tasks=2`` make it 10-300x slower on async
no-ops); W3 runs ``batch_size=1, max_concurrent_tasks=2`` (with batch_size=10 the status log buffer
waits up to 100 ms and p50 is ~100 ms); bulk enqueue is ``Queries.enqueue`` with lists (one
statement); W1c uses an ``AsyncpgPoolDriver`` (pool of 10 connections) with 64 ``enqueue`` calls
in flight; W3 waits with pgqueuer's ``CompletionWatcher`` (LISTEN/NOTIFY) with a 1 ms debounce.
pgqueuer has no workflows: W4 is not measured.
"""
# pyright: reportMissingImports=false, reportUnknownMemberType=false, reportUnknownVariableType=false, reportUnknownArgumentType=false, reportAttributeAccessIssue=false

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH_DIR))

import asyncpg  # noqa: E402
import harness  # noqa: E402
import pgqueuer  # noqa: E402
import psycopg  # noqa: E402
from pgqueuer import AsyncpgDriver, AsyncpgPoolDriver, Queries, QueueManager  # noqa: E402
from pgqueuer.core.completion import CompletionWatcher  # noqa: E402

ENTRYPOINT = "noop"


async def worker(url: str, batch_size: int, max_concurrent: int) -> None:
    conn = await asyncpg.connect(url)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint(ENTRYPOINT)
    async def noop(job: Any) -> None:
        del job

    await qm.run(batch_size=batch_size, max_concurrent_tasks=max_concurrent or None)


_FINISHED = (
    "SELECT count(*), EXTRACT(EPOCH FROM min(created))::float8,"
    " EXTRACT(EPOCH FROM max(created))::float8"
    " FROM pgqueuer_log WHERE status = 'successful'"
)
"""Finished jobs: count, first and last finish (for harness.measure_drain)."""


async def measure(url: str, sizes: dict[str, int]) -> dict[str, Any]:
    figures: dict[str, float] = {}
    conn = await asyncpg.connect(url)
    queries = Queries(AsyncpgDriver(conn))
    if not await queries.schema_is_installed():
        await queries.install()
    sync = psycopg.connect(url, autocommit=True)

    def reset() -> None:
        sync.execute("TRUNCATE pgqueuer, pgqueuer_log")

    # W1: one enqueue at a time (durable when it returns: autocommit INSERT).
    n = sizes["sends"]
    for _ in range(20):
        await queries.enqueue(ENTRYPOINT, None)
    started = time.perf_counter()
    for _ in range(n):
        await queries.enqueue(ENTRYPOINT, None)
    figures["w1_rate"] = n / (time.perf_counter() - started)
    reset()

    # W1b: one batch enqueue of the whole list.
    n = sizes["bulk"]
    rates: list[float] = []
    for _ in range(3):
        started = time.perf_counter()
        await queries.enqueue([ENTRYPOINT] * n, [None] * n, [0] * n)
        rates.append(n / (time.perf_counter() - started))
        reset()
    figures["w1b_rate"] = sorted(rates)[1]

    # W1c: 64 enqueues in flight from one process, on a pool.
    n = sizes["concurrent"]
    pool = await asyncpg.create_pool(url, min_size=10, max_size=10)
    pooled = Queries(AsyncpgPoolDriver(pool))
    sem = asyncio.Semaphore(64)

    async def one() -> None:
        async with sem:
            await pooled.enqueue(ENTRYPOINT, None)

    await asyncio.gather(*(one() for _ in range(200)))
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    figures["w1c_rate"] = n / (time.perf_counter() - started)
    await pool.close()
    reset()

    # W2: N queued, then the worker starts.
    n = sizes["drain"]
    await queries.enqueue([ENTRYPOINT] * n, [None] * n, [0] * n)
    log_path = Path(os.environ.get("BENCH_PEER_LOG", "/dev/null"))
    with log_path.open("a") as log:
        # W2 with the throughput settings: batch_size=10 (the default), no cap on tasks in
        # flight (the tasks are async no-ops; capping at 2 forces batch_size=1, far slower).
        command = [sys.executable, __file__, "worker", url, "10", "0"]
        started_epoch = time.time()
        with harness.worker_process(command, env=os.environ, log=log) as proc:
            figures.update(
                harness.measure_drain(
                    proc,
                    started_epoch,
                    n,
                    harness.finished_probe(sync, _FINISHED),
                    log_path=log_path,
                )
            )
        reset()
        # W3 with the latency settings: batch_size=1 and at most 2 in flight (the status log
        # buffer flushes per batch, or after 100 ms: with batch_size=10 p50 is ~100 ms).
        command = [sys.executable, __file__, "worker", url, "1", "2"]
        with harness.worker_process(command, env=os.environ, log=log):
            async with CompletionWatcher(
                AsyncpgDriver(conn), queries=queries, debounce=timedelta(milliseconds=1)
            ) as watcher:
                samples: list[float] = []
                for i in range(sizes["latency"] + 10):
                    started = time.perf_counter()
                    (job_id,) = await queries.enqueue(ENTRYPOINT, None)
                    status = await asyncio.wait_for(watcher.wait_for(job_id), 30)
                    if status != "successful":
                        raise harness.BenchError(f"pgqueuer job ended {status}")
                    if i >= 10:
                        samples.append((time.perf_counter() - started) * 1000)
            figures.update(harness.latency_figures(samples))
    sync.close()
    await conn.close()
    return {
        "version": pgqueuer.__version__,
        "figures": figures,
        "settings": "asyncpg driver, 1 worker process; W2: batch_size=10, no in-flight cap;"
        " W3: batch_size=1, max_concurrent_tasks=2; W1c: asyncpg pool of 10",
    }


def main() -> None:
    if sys.argv[1] == "worker":
        asyncio.run(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        return
    harness.exit_on_sigterm()
    result = asyncio.run(measure(sys.argv[2], json.loads(sys.argv[3])))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
