"""Peer: procrastinate, run by ``bench/run.py`` from its own virtualenv
(``bench/.venvs/procrastinate``).

``python procrastinate_peer.py measure URL SIZES_JSON`` prints one JSON line with its figures;
``python procrastinate_peer.py worker URL`` is the worker it starts.

Settings (procrastinate's documented defaults, matched to concurrency 2): ``PsycopgConnector``
(psycopg 3 pool of 10), one worker process ``run_worker_async(concurrency=2)`` with LISTEN/NOTIFY
(the default), jobs kept after they finish (``delete_jobs="never"``, the default). W1 is
``defer_async`` one at a time, W1b ``batch_defer_async`` of the whole list (one statement), W1c
64 ``defer_async`` in flight. procrastinate has no result API: W3 polls the job's status every
0.5 ms on a separate connection (the poll adds at most ~0.5 ms). No workflows: W4 not measured.
"""
# pyright: reportMissingImports=false, reportUnknownMemberType=false, reportUnknownVariableType=false, reportUnknownArgumentType=false, reportAttributeAccessIssue=false, reportUntypedFunctionDecorator=false

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH_DIR))

import harness  # noqa: E402
import procrastinate  # noqa: E402
import psycopg  # noqa: E402


def make_app(url: str) -> Any:
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=10)
    )

    @app.task(name="noop")
    async def noop() -> None:
        return None

    return app


async def worker(url: str) -> None:
    app = make_app(url)
    async with app.open_async():
        await app.run_worker_async(concurrency=2, listen_notify=True, install_signal_handlers=True)


_FINISHED = (
    "SELECT count(*), EXTRACT(EPOCH FROM min(at))::float8,"
    " EXTRACT(EPOCH FROM max(at))::float8"
    " FROM procrastinate_events WHERE type = 'succeeded'"
)
"""Finished jobs: count, first and last finish (for harness.measure_drain)."""


async def measure(url: str, sizes: dict[str, int]) -> dict[str, Any]:
    figures: dict[str, float] = {}
    app = make_app(url)
    sync = psycopg.connect(url, autocommit=True)

    def reset() -> None:
        sync.execute("TRUNCATE procrastinate_jobs CASCADE")

    async with app.open_async():
        exists = sync.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
        if not exists or exists[0] is None:
            await app.schema_manager.apply_schema_async()
        noop = app.tasks["noop"]

        n = sizes["sends"]
        for _ in range(20):
            await noop.defer_async()
        started = time.perf_counter()
        for _ in range(n):
            await noop.defer_async()
        figures["w1_rate"] = n / (time.perf_counter() - started)
        reset()

        n = sizes["bulk"]
        rates: list[float] = []
        for _ in range(3):
            started = time.perf_counter()
            await noop.batch_defer_async(*([{}] * n))
            rates.append(n / (time.perf_counter() - started))
            reset()
        figures["w1b_rate"] = sorted(rates)[1]

        n = sizes["concurrent"]
        sem = asyncio.Semaphore(64)

        async def one() -> None:
            async with sem:
                await noop.defer_async()

        await asyncio.gather(*(one() for _ in range(200)))
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        figures["w1c_rate"] = n / (time.perf_counter() - started)
        reset()

        n = sizes["drain"]
        await noop.batch_defer_async(*([{}] * n))
        log_path = Path(os.environ.get("BENCH_PEER_LOG", "/dev/null"))
        with log_path.open("a") as log:
            started_epoch = time.time()
            command = [sys.executable, __file__, "worker", url]
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
                samples: list[float] = []
                for i in range(sizes["latency"] + 10):
                    started = time.perf_counter()
                    job_id = await noop.defer_async()
                    while True:
                        row = sync.execute(
                            "SELECT status::text FROM procrastinate_jobs WHERE id = %s",
                            (job_id,),
                            prepare=True,
                        ).fetchone()
                        if row and row[0] not in ("todo", "doing"):
                            break
                        time.sleep(0.0005)
                    if row[0] != "succeeded":
                        raise harness.BenchError(f"procrastinate job ended {row[0]}")
                    if i >= 10:
                        samples.append((time.perf_counter() - started) * 1000)
                figures.update(harness.latency_figures(samples))
    sync.close()
    return {
        "version": importlib.metadata.version("procrastinate"),
        "figures": figures,
        "settings": "PsycopgConnector pool 10; 1 worker process, concurrency=2, listen_notify",
    }


def main() -> None:
    if sys.argv[1] == "worker":
        asyncio.run(worker(sys.argv[2]))
        return
    harness.exit_on_sigterm()
    result = asyncio.run(measure(sys.argv[2], json.loads(sys.argv[3])))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
