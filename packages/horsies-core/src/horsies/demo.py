"""``horsies demo``: the whole system on a throw-away embedded PostgreSQL, in about ten seconds.

It starts a PostgreSQL server in a temporary directory, starts a real ``horsies worker`` process
on the demo app (:mod:`horsies.demo_app`), sends a batch of tasks while drawing a progress bar,
shows a failing task, a retried task and a workflow (fan-out, fan-in, one failing branch), prints
what it measured, and stops everything it started, also on Ctrl+C or an error.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

if TYPE_CHECKING:
    from horsies.broker import PostgresBroker
    from horsies.tasks.function import TaskFunction

from horsies import env
from horsies.db_command import require_embedded
from horsies.embedded import start_embedded

# Read by horsies.demo_app when it builds its app, in this process and in the worker's.
_WORKER_START_TIMEOUT_S = 90.0
_WORKER_STOP_TIMEOUT_S = 30.0
_RESULT_TIMEOUT_MS = 30_000


@dataclass
class DemoFigures:
    """What the demo measured, printed as its summary."""

    tasks: int
    processes: int
    server_start_s: float
    round_trip_ms: float
    bulk_enqueue_per_s: float
    drain_s: float

    @property
    def executed_per_s(self) -> float:
        return self.tasks / self.drain_s if self.drain_s > 0 else float("inf")


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise click.ClickException(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.05)


def _median_round_trip_ms(task: TaskFunction[[int], int], rounds: int) -> float:
    """Median wall time of ``send()`` followed by ``get()`` on an idle worker."""
    samples: list[float] = []
    for n in range(rounds):
        started = time.perf_counter()
        task.send(n).get(timeout_ms=_RESULT_TIMEOUT_MS)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _finished_counts(broker: PostgresBroker) -> tuple[int, int]:
    """(completed, failed) task counts of the demo's queue."""
    for row in broker.get_queue_stats_sync():
        if row["queue_name"] == "default":
            return int(row["completed"]), int(row["failed"])
    return 0, 0


def _progress_line(done: int, total: int, failed: int, elapsed_s: float, width: int = 32) -> str:
    filled = width * done // total if total else width
    bar = "█" * filled + "·" * (width - filled)
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    extra = f", {failed} failed" if failed else ""
    return f"\r  [{bar}] {done}/{total} done{extra}  {rate:,.0f} tasks/s "


@contextmanager
def worker_subprocess(
    locator: str, processes: int, env: Mapping[str, str], log: TextIO, cwd: Path | None = None
) -> Generator[subprocess.Popen[bytes]]:
    """A ``horsies worker`` subprocess logging to ``log``; SIGTERM then SIGKILL when the block ends.

    Used by the demo and the benchmark suite, which both drive a real worker process.
    """
    command = [sys.executable, "-m", "horsies", "worker", locator]
    command += ["--processes", str(processes), "--loglevel", "WARNING"]
    worker = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=_WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)


def run_demo(*, tasks: int, processes: int, live_progress: bool | None = None) -> DemoFigures:
    """Run the demo end to end and return its figures; everything started is stopped on return.

    ``live_progress`` redraws a progress bar in place (default: when stdout is a terminal).
    """
    echo = click.echo
    if live_progress is None:
        live_progress = sys.stdout.isatty()
    require_embedded()
    if importlib.util.find_spec("horsies_worker") is None:
        raise click.ClickException("the demo runs a worker: pip install horsies-worker")
    echo(
        click.style("horsies demo", bold=True)
        + f": {tasks} tasks, a worker with {processes} processes"
    )
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="horsies-demo-")))
        started = time.perf_counter()
        server = start_embedded(scratch / "postgres", persistent=False)
        stack.callback(server.stop)
        server_start_s = time.perf_counter() - started
        echo(f"  PostgreSQL ready in {server_start_s:.1f}s (embedded, {server.data_dir})")

        os.environ[env.DEMO_DATABASE_URL] = server.url
        # Imported only now: the demo app reads its database URL when it is imported.
        from horsies import demo_app

        broker = demo_app.app.get_broker()
        stack.callback(broker.close)
        broker.ensure_schema_initialized_sync()

        log_path = scratch / "worker.log"
        log = stack.enter_context(log_path.open("w"))
        worker_env = {**os.environ, env.DEMO_DATABASE_URL: server.url}
        worker = stack.enter_context(
            worker_subprocess("horsies.demo_app:app", processes, worker_env, log)
        )

        def worker_is_up() -> bool:
            if worker.poll() is not None:
                raise click.ClickException(
                    f"the worker exited with status {worker.returncode}:\n{log_path.read_text()}"
                )
            return bool(broker.get_worker_states_sync())

        _wait_until(worker_is_up, _WORKER_START_TIMEOUT_S, "the worker to start")
        echo(f"  worker running (pid {worker.pid})")

        first = demo_app.square.send(7).get(timeout_ms=_RESULT_TIMEOUT_MS)
        round_trip_ms = _median_round_trip_ms(demo_app.square, rounds=20)
        echo(
            f"  square.send(7).get() → {first.ok_value};"
            f" send → result median {round_trip_ms:.1f} ms"
        )

        echo(f"  sending {tasks} tasks with send_many() …")
        before = _finished_counts(broker)
        t0 = time.perf_counter()
        handles = demo_app.square.send_many((n,) for n in range(tasks))
        bulk_enqueue_s = time.perf_counter() - t0
        if handles and handles[0].task_id == "<error>":
            raise click.ClickException(f"enqueue failed: {handles[0].get().err_value}")

        done = failed = 0
        while done + failed < tasks:
            finished = _finished_counts(broker)
            done, failed = finished[0] - before[0], finished[1] - before[1]
            if live_progress:
                click.echo(_progress_line(done, tasks, failed, time.perf_counter() - t0), nl=False)
            if time.perf_counter() - t0 > 300:
                raise click.ClickException("the batch did not finish within 5 minutes")
            time.sleep(0.1)
        drain_s = time.perf_counter() - t0
        final_line = _progress_line(done, tasks, failed, drain_s)
        click.echo(final_line if live_progress else final_line.lstrip("\r"))
        last = handles[-1].get(timeout_ms=_RESULT_TIMEOUT_MS)
        echo(f"  last result: square({tasks - 1}) = {last.ok_value}")

        echo(click.style("\n  A failing task", bold=True) + ": divide.send(1, 0)")
        error = demo_app.divide.send(1, 0).get(timeout_ms=_RESULT_TIMEOUT_MS).err_value
        echo(f"    status FAILED, error_code={error.error_code}")
        echo(f"    message: {error.message}")

        echo(
            click.style("\n  A retried task", bold=True)
            + ": flaky_fetch raises ConnectionError once"
        )
        handle = demo_app.flaky_fetch.send(str(scratch / "flaky.marker"))
        retried = handle.get(timeout_ms=_RESULT_TIMEOUT_MS)
        row = broker.get_task_sync(handle.task_id) or {}
        echo(f"    result after {row.get('retry_count', '?')} retry: {retried.ok_value!r}")
        _show_workflow(demo_app, echo)

    figures = DemoFigures(
        tasks=tasks,
        processes=processes,
        server_start_s=server_start_s,
        round_trip_ms=round_trip_ms,
        bulk_enqueue_per_s=tasks / bulk_enqueue_s if bulk_enqueue_s > 0 else float("inf"),
        drain_s=drain_s,
    )
    echo(click.style("\n  Summary", bold=True))
    echo(f"    bulk enqueue        {figures.bulk_enqueue_per_s:>10,.0f} tasks/s")
    echo(
        f"    executed            {figures.executed_per_s:>10,.0f} tasks/s ({processes} processes)"
    )
    echo(f"    send → result       {figures.round_trip_ms:>10.1f} ms (median of 20)")
    echo("  everything stopped; nothing was left running.")
    return figures


def _show_workflow(demo_app: Any, echo: Callable[[str], None]) -> None:
    """Run the demo workflow (fan-out, fan-in, one failing branch) and print its nodes."""
    echo(
        click.style("\n  A workflow", bold=True)
        + ": plan -> 4 quote fetches (one fails) -> summary (allow_failed_deps)"
    )
    started = time.perf_counter()
    handle = demo_app.QuotesWorkflow.build(demo_app.app).start()
    outcome = handle.get(timeout_ms=_RESULT_TIMEOUT_MS)
    elapsed_ms = (time.perf_counter() - started) * 1000
    for node in handle.tasks():
        detail = ""
        if node.result is not None:
            detail = (
                f"ok={node.result.ok_value!r}"
                if node.result.is_ok()
                else f"err={node.result.err_value.error_code}"
            )
        echo(f"    {node.node_id or node.name:<16} {node.status.value:<10} {detail}")
    echo(f"    workflow {handle.status().value} in {elapsed_ms:.0f} ms: {outcome.ok_value!r}")


@click.command("demo")
@click.option("--tasks", default=2000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--processes", default=2, show_default=True, type=click.IntRange(1, 64))
def demo_command(tasks: int, processes: int) -> None:
    """Run a worker and a batch of tasks on a throw-away embedded PostgreSQL."""
    run_demo(tasks=tasks, processes=processes)
