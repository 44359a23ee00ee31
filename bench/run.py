"""The horsies benchmark: one command, a printed table, a JSON file.

Run ``uv run python bench/run.py`` (about a minute) or ``uv run python bench/run.py --quick``
(under a minute). It starts a throw-away embedded PostgreSQL, measures

* single send rate: sequential ``task.send()`` calls from one thread, no worker running;
* bulk enqueue rate: ``task.send_many()`` of a whole batch in one call;
* drain rate: a real ``horsies worker --processes 2`` subprocess working off a batch of no-op tasks,
  from the first task's ``started_at`` to the last task's ``completed_at`` (read from the rows);
* send → result latency p50/p99: ``task.send().get()`` one after another on an idle worker;
* the worker main process's RSS and CPU time per task (children excluded),

prints a table, writes ``bench/results/latest.json`` and stops everything it started, also on
Ctrl+C or an error. See ``bench/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import json
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
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import psycopg
from psycopg import sql

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
APP_LOCATOR = f"{BENCH_DIR / 'bench_app.py'}:app"
DATABASE_URL_ENV = "HORSIES_BENCH_DATABASE_URL"  # read by bench_app (kept equal to its constant)
DATABASE_NAME = "horsies_bench"

_WORKER_START_TIMEOUT_S = 90.0
_RESULT_TIMEOUT_MS = 30_000
_POLL_S = 0.05
# The drain is timed from the rows, not by this poll: poll gently, it competes with the worker.
_DRAIN_POLL_S = 0.25


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    sends: int
    latency_samples: int
    drain_tasks: int
    drain_rounds: int
    workflow_runs: int


QUICK = Sizes(sends=300, latency_samples=100, drain_tasks=3_000, drain_rounds=2, workflow_runs=3)
FULL = Sizes(sends=2_000, latency_samples=500, drain_tasks=10_000, drain_rounds=3, workflow_runs=7)


@dataclass
class Figure:
    """One measured figure: the reported value and the samples it was derived from."""

    label: str
    value: float
    unit: str
    better: str  # "higher" or "lower"
    samples: list[float] = field(default_factory=lambda: [])
    note: str = ""


_FIGURE_ORDER = (
    "send_rate",
    "bulk_enqueue_rate",
    "drain_rate",
    "latency_p50",
    "latency_p99",
    "workflow_fan_out_ms",
    "workflow_fan_out_per_node",
    "workflow_chain_ms",
    "workflow_chain_per_node",
    "worker_main_cpu_per_task",
    "worker_children_cpu_per_task",
    "worker_main_rss",
    "worker_child_rss",
)
"""Keys of the figures, in the order of the printed table."""


class BenchError(RuntimeError):
    """A measurement could not be completed (the message says why)."""


# -- helpers ---------------------------------------------------------------------------------------


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(_POLL_S)


def _percentile(samples: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between closest ranks."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


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
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


# -- processes -------------------------------------------------------------------------------------


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    del frame
    # Turn SIGTERM into an exception so the ExitStack stops the worker and the server.
    raise KeyboardInterrupt(f"signal {signum}")


# -- measurements ----------------------------------------------------------------------------------


def measure_single_sends(noop: Any, n: int) -> Figure:
    """Sequential ``send()`` calls: one INSERT round trip each, no worker competing for CPU."""
    for _ in range(min(20, n)):  # warm the pool and prepared statements
        noop.send()
    started = time.perf_counter()
    for _ in range(n):
        handle = noop.send()
        if handle.task_id in ("<error>", "<suppressed>"):
            raise BenchError(f"send failed: {handle.get(timeout_ms=1)}")
    elapsed = time.perf_counter() - started
    return Figure("single send (sync, sequential)", n / elapsed, "tasks/s", "higher", [n / elapsed])


def measure_latency(noop: Any, n: int) -> tuple[Figure, Figure]:
    """``send().get()`` one after another on an idle worker: enqueue → claim → run → finish →
    task_done notification → result read."""
    for _ in range(min(10, n)):
        noop.send().get(timeout_ms=_RESULT_TIMEOUT_MS)
    samples: list[float] = []
    for _ in range(n):
        started = time.perf_counter()
        result = noop.send().get(timeout_ms=_RESULT_TIMEOUT_MS)
        samples.append((time.perf_counter() - started) * 1000)
        if not result.is_ok():
            raise BenchError(f"latency task failed: {result}")
    note = f"{n} sequential round trips"
    return (
        Figure("send -> result p50", _percentile(samples, 0.5), "ms", "lower", samples, note),
        Figure("send -> result p99", _percentile(samples, 0.99), "ms", "lower", [], note),
    )


def measure_workflow(spec: Any, nodes: int, repeats: int, label: str) -> tuple[Figure, Figure]:
    """``start()`` then ``get()`` of a workflow of no-op nodes on an idle worker, ``repeats``
    times: the whole run, and the run divided by its node count (the engine's per-node cost,
    task execution included)."""
    spec.start().get(timeout_ms=_RESULT_TIMEOUT_MS)  # warm-up
    samples: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = spec.start().get(timeout_ms=_RESULT_TIMEOUT_MS)
        samples.append((time.perf_counter() - started) * 1000)
        if not result.is_ok():
            raise BenchError(f"workflow {spec.name} failed: {result}")
    median = statistics.median(samples)
    note = f"median of {repeats} runs, {nodes} nodes"
    return (
        Figure(f"workflow {label}: start -> get", median, "ms", "lower", samples, note),
        Figure(f"workflow {label}: per node", median / nodes, "ms", "lower", [], note),
    )


@dataclass
class DrainRound:
    """One batch: how long its bulk insert took and how fast the worker worked it off."""

    tasks: int
    bulk_s: float
    drain_s: float
    main_cpu_s: float
    children_cpu_s: float


_DRAIN_STATUS = """
SELECT count(*) FILTER (WHERE status = 'COMPLETED'),
       count(*) FILTER (WHERE status = 'FAILED'),
       EXTRACT(EPOCH FROM max(completed_at) - min(started_at))::float8
FROM horsies_tasks
"""


def drain_round(
    noop: Any, conn: psycopg.Connection[Any], worker: psutil.Process, n: int
) -> DrainRound:
    """Insert ``n`` no-op tasks with one ``send_many`` and wait until the worker finished them."""
    conn.execute("TRUNCATE horsies_tasks")
    children = worker.children()
    cpu_main = _cpu_seconds(worker)
    cpu_children = sum(_cpu_seconds(c) for c in children)
    started = time.perf_counter()
    handles = noop.send_many([((), {})] * n)
    bulk_s = time.perf_counter() - started
    if handles and handles[0].task_id == "<error>":
        raise BenchError(f"send_many failed: {handles[0].get(timeout_ms=1)}")
    deadline = time.monotonic() + max(120.0, n / 50)
    while True:
        row = conn.execute(_DRAIN_STATUS).fetchone()
        assert row is not None
        completed, failed, drain_s = int(row[0]), int(row[1]), row[2]
        if failed:
            raise BenchError(f"{failed} no-op task(s) failed during the drain")
        if completed >= n:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"drain timed out: {completed}/{n} completed")
        time.sleep(_DRAIN_POLL_S)
    return DrainRound(
        tasks=n,
        bulk_s=bulk_s,
        drain_s=float(drain_s),
        main_cpu_s=_cpu_seconds(worker) - cpu_main,
        children_cpu_s=sum(_cpu_seconds(c) for c in children) - cpu_children,
    )


# -- the run ---------------------------------------------------------------------------------------


def run(
    sizes: Sizes, *, processes: int, quick: bool, echo: Callable[[str], None]
) -> dict[str, Any]:
    """Run every measurement and return the JSON document (figures keyed by name)."""
    from horsies.demo import worker_subprocess
    from horsies.embedded import start_embedded

    figures: dict[str, Figure] = {}
    machine: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="horsies-bench-")))
        server = start_embedded(scratch / "postgres", persistent=False)
        stack.callback(server.stop)
        with psycopg.connect(server.conninfo_for("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
            version = admin.execute("SHOW server_version").fetchone()
        machine["postgresql"] = version[0] if version else None
        url = server.url_for(DATABASE_NAME)
        echo(f"  PostgreSQL {machine['postgresql']} ready (embedded, ephemeral)")

        # bench_app reads the URL when it is imported: set it first.
        os.environ[DATABASE_URL_ENV] = url
        sys.path.insert(0, str(BENCH_DIR))
        import bench_app

        noop: Any = bench_app.noop
        broker = bench_app.app.get_broker()
        stack.callback(broker.close)
        broker.ensure_schema_initialized_sync()
        conn = stack.enter_context(psycopg.connect(server.conninfo_for(DATABASE_NAME)))
        conn.autocommit = True

        echo(f"  single send: {sizes.sends} sequential send() calls")
        figures["send_rate"] = measure_single_sends(noop, sizes.sends)
        conn.execute("TRUNCATE horsies_tasks")

        log_path = scratch / "worker.log"
        log = stack.enter_context(log_path.open("w"))
        env = {**os.environ, DATABASE_URL_ENV: url, "PYTHONUNBUFFERED": "1"}
        env.pop("TASKLIB_SUPPRESS_SENDS", None)
        worker = stack.enter_context(worker_subprocess(APP_LOCATOR, processes, env, log, cwd=ROOT))

        def worker_ready() -> bool:
            if worker.poll() is not None:
                raise BenchError(
                    f"the worker exited with {worker.returncode}:\n{log_path.read_text()}"
                )
            row = conn.execute(
                "SELECT count(*) FROM horsies_worker_states WHERE pid = %s", (worker.pid,)
            ).fetchone()
            return bool(row and row[0])

        _wait_until(worker_ready, _WORKER_START_TIMEOUT_S, "the worker to start")
        worker_ps = psutil.Process(worker.pid)
        echo(f"  worker running (pid {worker.pid}, {processes} processes)")

        rounds: list[DrainRound] = []
        for i in range(sizes.drain_rounds):
            echo(f"  drain round {i + 1}/{sizes.drain_rounds}: {sizes.drain_tasks} no-op tasks")
            rounds.append(drain_round(noop, conn, worker_ps, sizes.drain_tasks))
            last = rounds[-1]
            echo(f"    {last.tasks / last.drain_s:,.0f} tasks/s")
        bulk = [r.tasks / r.bulk_s for r in rounds]
        drain = [r.tasks / r.drain_s for r in rounds]
        main_cpu = [r.main_cpu_s / r.tasks * 1e6 for r in rounds]
        child_cpu = [r.children_cpu_s / r.tasks * 1e6 for r in rounds]
        batch = f"median of {len(rounds)} batches of {sizes.drain_tasks}"
        figures["bulk_enqueue_rate"] = Figure(
            "bulk enqueue (send_many)", statistics.median(bulk), "tasks/s", "higher", bulk, batch
        )
        figures["drain_rate"] = Figure(
            f"drain, no-op tasks, --processes {processes}",
            statistics.median(drain),
            "tasks/s",
            "higher",
            drain,
            batch,
        )
        figures["worker_main_cpu_per_task"] = Figure(
            "worker main process CPU per task",
            statistics.median(main_cpu),
            "us",
            "lower",
            main_cpu,
            "user+system time during the drains",
        )
        figures["worker_children_cpu_per_task"] = Figure(
            "worker children CPU per task",
            statistics.median(child_cpu),
            "us",
            "lower",
            child_cpu,
            f"all {processes} children together",
        )
        # After the drains: the first get() subscribes this process to task_done for good, and
        # its listener thread would then compete with the worker for CPU during a drain.
        echo(f"  latency: {sizes.latency_samples} sequential send().get()")
        figures["latency_p50"], figures["latency_p99"] = measure_latency(
            noop, sizes.latency_samples
        )
        echo("  workflows: fan-out 1 -> 50 -> 1, chain of 200")
        fan_nodes = bench_app.FAN_OUT_WIDTH + 2
        figures["workflow_fan_out_ms"], figures["workflow_fan_out_per_node"] = measure_workflow(
            bench_app.fan_out, fan_nodes, sizes.workflow_runs, f"fan-out 1->{fan_nodes - 2}->1"
        )
        figures["workflow_chain_ms"], figures["workflow_chain_per_node"] = measure_workflow(
            bench_app.chain,
            bench_app.CHAIN_LENGTH,
            max(1, sizes.workflow_runs // 2),
            f"chain of {bench_app.CHAIN_LENGTH}",
        )
        rss = worker_ps.memory_info().rss / (1024 * 1024)
        children_rss = [c.memory_info().rss / (1024 * 1024) for c in worker_ps.children()]
        figures["worker_main_rss"] = Figure(
            "worker main process RSS", rss, "MiB", "lower", [rss], "after the drains"
        )
        figures["worker_child_rss"] = Figure(
            "worker child RSS (largest)",
            max(children_rss, default=float("nan")),
            "MiB",
            "lower",
            children_rss,
        )
    return {
        "suite": "horsies-bench",
        "mode": "quick" if quick else "full",
        "finished_at": datetime.now(UTC).isoformat(),
        "revision": _git_revision(),
        "machine": machine,
        "sizes": asdict(sizes),
        "processes": processes,
        # One entry per system measured in this run; peers are added side by side later.
        "systems": {
            "horsies": {key: asdict(figures[key]) for key in _FIGURE_ORDER if key in figures}
        },
    }


def format_table(document: dict[str, Any]) -> str:
    """The figures of every system as an aligned text table."""
    lines: list[str] = []
    for system, figures in document["systems"].items():
        lines.append(f"{system}:")
        for fig in figures.values():
            value = fig["value"]
            text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
            note = f"  ({fig['note']})" if fig["note"] else ""
            lines.append(f"  {fig['label']:<38} {text:>12} {fig['unit']:<8}{note}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller batches (under a minute)")
    parser.add_argument("--processes", type=int, default=2, help="worker child processes")
    parser.add_argument("--tasks", type=int, help="tasks per drain batch (overrides the mode)")
    parser.add_argument("--rounds", type=int, help="drain batches (overrides the mode)")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "latest.json", help="JSON output file"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.tasks is not None:
        sizes = replace(sizes, drain_tasks=args.tasks)
    if args.rounds is not None:
        sizes = replace(sizes, drain_rounds=args.rounds)

    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    print(f"horsies benchmark ({'quick' if args.quick else 'full'})", flush=True)
    started = time.perf_counter()
    try:
        document = run(
            sizes,
            processes=args.processes,
            quick=args.quick,
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
