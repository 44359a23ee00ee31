# type: ignore
"""Peer: the reference ``horsies==0.1.0a2`` (requires Python >= 3.13), run by ``bench/run.py`` from
its own virtualenv (``bench/.venvs/horsies-ref``).

``python horsies_ref_peer.py measure URL SIZES_JSON`` prints one JSON line with its figures.
Settings: its defaults, ``horsies worker --processes 2`` (hard-cap mode, ``--max-claim-batch 2``).
W1 is ``send()`` one at a time, W1c 64 ``send_async`` in flight, W3 ``send().get()``. It has no
bulk send (W1b not measured); its workflows take tens of seconds per fan-out run, so W4 is left
out to keep the suite within minutes.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PEERS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(PEERS_DIR.parent))

import harness  # noqa: E402
import psycopg  # noqa: E402

URL_ENV = "HORSIES_BENCH_DATABASE_URL"


_FINISHED = (
    "SELECT count(*), EXTRACT(EPOCH FROM min(completed_at))::float8,"
    " EXTRACT(EPOCH FROM max(completed_at))::float8"
    " FROM horsies_tasks WHERE status = 'COMPLETED'"
)
"""Finished jobs: count, first and last finish (for harness.measure_drain)."""


def measure(url: str, sizes: dict[str, int]) -> dict[str, Any]:
    os.environ[URL_ENV] = url.replace("postgresql://", "postgresql+psycopg://", 1)
    sys.path.insert(0, str(PEERS_DIR))
    import horsies_ref_app

    noop = horsies_ref_app.noop
    figures: dict[str, float] = {}
    sync = psycopg.connect(url, autocommit=True)

    def reset() -> None:
        sync.execute("TRUNCATE horsies_tasks CASCADE")

    def check(handle: Any) -> None:
        if getattr(handle, "task_id", None) in (None, "<error>", "<suppressed>"):
            raise harness.BenchError(f"send failed: {handle.get(timeout_ms=1)}")

    for _ in range(20):
        check(noop.send())
    n = sizes["sends"]
    started = time.perf_counter()
    for _ in range(n):
        check(noop.send())
    figures["w1_rate"] = n / (time.perf_counter() - started)
    reset()

    async def concurrent(count: int) -> None:
        sem = asyncio.Semaphore(64)

        async def one() -> None:
            async with sem:
                check(await noop.send_async())

        await asyncio.gather(*(one() for _ in range(count)))

    async def w1c() -> float:
        await concurrent(200)
        n = sizes["concurrent"]
        started = time.perf_counter()
        await concurrent(n)
        rate = n / (time.perf_counter() - started)
        reset()
        # W2's queue, filled the fastest way it has (no bulk send).
        await concurrent(sizes["drain"])
        return rate

    figures["w1c_rate"] = asyncio.run(w1c())

    n = sizes["drain"]
    log_path = Path(os.environ.get("BENCH_PEER_LOG", "/dev/null"))
    cli = Path(sys.executable).parent / "horsies"
    locator = f"{PEERS_DIR / 'horsies_ref_app.py'}:app"
    command = [str(cli), "worker", locator, "--processes", "2", "--loglevel", "WARNING"]
    with log_path.open("a") as log:
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
            samples: list[float] = []
            for i in range(sizes["latency"] + 10):
                started = time.perf_counter()
                result = noop.send().get(timeout_ms=30_000)
                if not result.is_ok():
                    raise harness.BenchError(f"reference task failed: {result}")
                if i >= 10:
                    samples.append((time.perf_counter() - started) * 1000)
            figures.update(harness.latency_figures(samples))
    sync.close()
    return {
        "version": importlib.metadata.version("horsies"),
        "figures": figures,
        "settings": "defaults: worker --processes 2, hard cap, --max-claim-batch 2",
    }


def main() -> None:
    harness.exit_on_sigterm()
    result = measure(sys.argv[2], json.loads(sys.argv[3]))
    print(json.dumps(result), flush=True)
    os._exit(0)  # its broker's background loop thread may linger


if __name__ == "__main__":
    main()
