"""W5's three drains in many alternating rounds, optionally against a second source tree (a bench
case, by hand): the figures of the W5 paragraph in docs/benchmarks.md.

    uv run python bench/w5_rounds.py [--rounds 12] [-n 2000]
    git worktree add /tmp/w5-before <revision>
    uv run python bench/w5_rounds.py --rounds 12 --compare /tmp/w5-before

One durable embedded PostgreSQL, one database per tree. Each drain is W5's (``run.py``): N no-ops
queued, then a fresh ``horsies worker --processes 2`` of the drain's app, the rate after the first
finished. It runs in a process of its own with its tree's packages first on ``PYTHONPATH``, so the
producer, the worker and its children all run that tree's code. A round runs every (tree, drain)
once; every other round reverses the order, so all of them see the same machine noise, and every
ratio is taken within a round. A shared machine moves single figures by tens of percent: read the
medians of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import (  # noqa: E402
    DATABASE_URL_ENV,
    DURABLE_SETTINGS,
    create_database,
    finished_probe,
    measure_drain,
    start_horsies_worker,
)

DRAINS = {"a": ("noop", "app"), "b": ("keyed_noop", "keys_app"), "c": ("rated_noop", "rate_app")}
"""W5's drains: the task of ``bench_app`` and the app its worker serves."""
_FINISHED = """
SELECT count(*) FILTER (WHERE status = 'COMPLETED'),
       EXTRACT(EPOCH FROM min(completed_at))::float8,
       EXTRACT(EPOCH FROM max(completed_at))::float8
FROM horsies_tasks
"""
_PACKAGES = ("horsies-core", "horsies-worker")


def drain_once(url: str, drain: str, n: int, scratch: Path) -> float:
    """One W5 drain on the database of ``url`` with the horsies first on ``sys.path``; returns the
    rate after the first finished."""
    os.environ[DATABASE_URL_ENV] = url
    import bench_app

    task_name, app_name = DRAINS[drain]
    task: Any = getattr(bench_app, task_name)
    calls = bench_app.keyed_calls(n) if drain == "b" else None
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn, ExitStack() as stack:
        getattr(bench_app, app_name).get_broker().ensure_schema_initialized_sync()
        conn.execute("TRUNCATE horsies_tasks, horsies_limit_starts")
        handles = task.send_many([{}] * n if calls is None else calls)
        if not all(h.sent for h in handles):
            raise SystemExit("a send failed")
        conn.execute("VACUUM ANALYZE horsies_tasks")
        started = time.time()
        worker = start_horsies_worker(
            stack,
            f"{BENCH_DIR / 'bench_app.py'}:{app_name}",
            2,
            log_path=scratch / f"worker-{drain}.log",
        )
        figures = measure_drain(worker, started, n, finished_probe(conn, _FINISHED))
    return figures["w2_rate_after_first"]


def _run_drain(tree: Path | None, url: str, drain: str, n: int, scratch: Path) -> float:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(str(tree / "packages" / p / "src") for p in _PACKAGES)
    out = subprocess.run(
        [sys.executable, __file__, "--drain-once", url, drain, str(n), str(scratch)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"drain {drain} failed:\n{out.stdout}{out.stderr}")
    return float(json.loads(out.stdout.splitlines()[-1])["rate"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="W5's drains in many alternating rounds.")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("-n", type=int, default=2_000, help="tasks per drain")
    parser.add_argument("--drains", default="abc", help="which of W5's drains (default abc)")
    parser.add_argument("--compare", type=Path, help="a second source tree: before ÷ after too")
    parser.add_argument("--drain-once", nargs=4, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.drain_once:
        url, drain, n, scratch = options.drain_once
        print(json.dumps({"rate": drain_once(url, drain, int(n), Path(scratch))}))
        return 0
    from horsies.embedded import start_embedded

    trees: dict[str, Path | None] = {"this": None}
    if options.compare:
        trees["compare"] = options.compare.resolve()
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="horsies-w5-")))
        server = start_embedded(scratch / "pg", persistent=False, extra_settings=DURABLE_SETTINGS)
        stack.callback(server.stop)
        for name in trees:
            create_database(server, f"w5_{name}")
        order = [(tree, drain) for drain in options.drains for tree in trees]
        rates: dict[tuple[str, str], list[float]] = {key: [] for key in order}
        for number in range(options.rounds):
            print(f"round {number + 1}, load average {os.getloadavg()[0]:.1f}", flush=True)
            for tree, drain in order if number % 2 == 0 else order[::-1]:
                url = server.url_for(f"w5_{tree}")
                rate = _run_drain(trees[tree], url, drain, options.n, scratch)
                rates[tree, drain].append(rate)
                print(f"  {tree:8} {drain} {rate:8,.0f}/s", flush=True)
    print("\nmedian rate after the first, and medians of the per-round ratios:")
    for (tree, drain), taken in rates.items():
        print(f"  {tree:8} {drain} {statistics.median(taken):8,.0f}/s")

    def ratio(top: tuple[str, str], bottom: tuple[str, str]) -> str:
        per_round = [x / y for x, y in zip(rates[top], rates[bottom], strict=True)]
        listed = " ".join(f"{r:.2f}" for r in per_round)
        return f"{statistics.median(per_round):.3f} (rounds: {listed})"

    for tree in trees:
        for drain in options.drains.replace("a", ""):
            if "a" in options.drains:
                print(f"  {tree:8} {drain} ÷ a: {ratio((tree, drain), (tree, 'a'))}")
    if options.compare:
        for drain in options.drains:
            print(f"  this ÷ compare, {drain}: {ratio(('this', drain), ('compare', drain))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
