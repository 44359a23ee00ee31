"""Measurement helpers shared by the horsies run and every peer script (``bench/peers/*.py``).

It needs only the standard library and ``psutil`` when imported (the database helpers import
``psycopg`` when called), so the peer scripts can import it from their own virtualenvs, Celery's
without psycopg (they put ``bench/`` on ``sys.path``). Every system is measured with the
same code: the same drain timer, the same process-tree sampler, the same percentiles.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

POLL_S = 0.1
"""How often the drain is polled (its timing comes from the rows, not from this poll)."""

DEFAULT_TIMEOUT_S = 300.0

DATABASE_URL_ENV = "HORSIES_BENCH_DATABASE_URL"
"""Where bench_app (in the bench's process, its workers and their children) reads its database URL
(kept equal to bench_app's constant, which must not import this module)."""
DURABLE_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
"""By default the embedded server is durable (every commit waits for its WAL flush), so a send is
durable when it returns, as in production; ``--fast-server`` keeps the tests' throw-away settings
(``fsync=off``, ``synchronous_commit=off``)."""
ASYNC_CONCURRENCY = 100
"""W2a, W2io, W3a (and every horsies worker the bench starts): async tasks per child
(``--async-concurrency``)."""


def horsies_worker_command(app: str, processes: int, *extra: str) -> list[str]:
    """``horsies worker APP --processes N`` by this interpreter, logging warnings and errors only,
    with ``--async-concurrency`` at :data:`ASYNC_CONCURRENCY` and ``extra`` options."""
    command = [sys.executable, "-m", "horsies", "worker", app, "--processes", str(processes)]
    command += ["--loglevel", "WARNING", "--async-concurrency", str(ASYNC_CONCURRENCY)]
    return [*command, *extra]


def start_horsies_worker(
    stack: contextlib.ExitStack,
    app: str,
    processes: int,
    *extra: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start :func:`horsies_worker_command` of ``app`` in the repository's root, with this
    process's environment plus ``env`` (never suppressing sends), logging to ``log_path``;
    :func:`worker_process` stops it when ``stack`` closes."""
    from horsies.env import SUPPRESS_SENDS  # horsies runs only: a peer's virtualenv lacks it

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop(SUPPRESS_SENDS, None)
    log = stack.enter_context(log_path.open("w"))
    command = horsies_worker_command(app, processes, *extra)
    return stack.enter_context(
        worker_process(command, env=full_env, log=log, cwd=Path(__file__).resolve().parent.parent)
    )


class BenchError(RuntimeError):
    """A measurement could not be completed (the message says why)."""


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the ``finally`` blocks stop the worker a script started
    (``run.py`` sends SIGTERM to a peer script that times out)."""

    def _exit(signum: int, frame: object) -> None:
        del frame
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between closest ranks."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_figures(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 of round-trip samples in milliseconds."""
    return {
        "w3_p50_ms": percentile(samples_ms, 0.50),
        "w3_p95_ms": percentile(samples_ms, 0.95),
        "w3_p99_ms": percentile(samples_ms, 0.99),
    }


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of ``pid``: its private pages plus its share of each page it shares
    with other processes (a page mapped by three processes counts a third in each). Read from
    ``/proc/<pid>/smaps_rollup`` (Linux 4.14+); None where that is missing or unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


@dataclass
class TreeSampler:
    """Peak RSS and peak PSS (sums over the whole process tree) and CPU seconds of a process and
    its children.

    RSS counts every resident page of each process, so pages the processes share (the interpreter,
    shared libraries, pages a fork inherited) count once per process; PSS splits each shared page
    between the processes mapping it, so the tree's PSS sum is what it adds to the machine's memory.
    ``peak_pss`` stays None where PSS cannot be read. CPU time of a child is remembered per pid, so
    children that exit before the end still count.
    """

    root_pid: int
    peak_rss: int = 0
    peak_pss: int | None = None
    cpu_by_pid: dict[int, float] = field(default_factory=lambda: {})

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0
        pss: int | None = None
        for proc in procs:
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                    cpu = times.user + times.system + times.children_user + times.children_system
            except psutil.Error:
                continue
            self.cpu_by_pid[proc.pid] = max(cpu, self.cpu_by_pid.get(proc.pid, 0.0))
            proc_pss = pss_bytes(proc.pid)
            if proc_pss is not None:
                pss = (pss or 0) + proc_pss
        self.peak_rss = max(self.peak_rss, rss)
        if pss is not None:
            self.peak_pss = max(self.peak_pss or 0, pss)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_pid.values())


@contextlib.contextmanager
def worker_process(
    command: Sequence[str], *, env: Mapping[str, str], log: TextIO, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker subprocess in its own session; SIGTERM (then SIGKILL) to its group on exit."""
    proc = subprocess.Popen(
        list(command),
        env=dict(env),
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


FinishedProbe = Callable[[], tuple[int, float | None, float | None]]
"""Returns (finished count, epoch of the first finish, epoch of the last finish)."""


def finished_probe(conn: Any, query: str, params: dict[str, Any] | None = None) -> FinishedProbe:
    """A `FinishedProbe` running ``query`` with ``params`` (one row: count, first and last finish
    as epochs) on ``conn``, a psycopg connection."""

    def probe() -> tuple[int, float | None, float | None]:
        row = conn.execute(query, params).fetchone()
        assert row is not None
        return int(row[0]), row[1], row[2]

    return probe


def measure_drain(
    proc: subprocess.Popen[bytes],
    started_epoch: float,
    n: int,
    finished: FinishedProbe,
    *,
    log_path: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, float]:
    """Wait until ``n`` queued tasks are finished by the worker ``proc`` (started at
    ``started_epoch``, wall clock) and return the W2 figures."""
    sampler = TreeSampler(proc.pid)
    deadline = time.monotonic() + timeout_s
    while True:
        sampler.sample()
        if proc.poll() is not None:
            tail = log_path.read_text()[-2000:] if log_path else ""
            raise BenchError(f"the worker exited with {proc.returncode} during the drain:\n{tail}")
        count, first, last = finished()
        if count >= n and first is not None and last is not None:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"drain timed out: {count}/{n} finished")
        time.sleep(POLL_S)
    sampler.sample()
    total_s = last - started_epoch
    after_first_s = last - first
    figures = {
        "w2_rate": n / total_s if total_s > 0 else float("nan"),
        "w2_rate_after_first": (n - 1) / after_first_s if after_first_s > 0 else float("nan"),
        "w2_first_finish_s": first - started_epoch,
        "w2_peak_rss_mb": sampler.peak_rss / (1024 * 1024),
        "w2_cpu_s": sampler.cpu_seconds,
        "w2_processes": float(len(sampler.cpu_by_pid)),
    }
    if sampler.peak_pss is not None:
        figures["w2_peak_pss_mb"] = sampler.peak_pss / (1024 * 1024)
    return figures


def timed_rate(n: int, action: Callable[[], Any]) -> float:
    """Run ``action`` once and return ``n`` divided by the seconds it took."""
    started = time.perf_counter()
    action()
    return n / (time.perf_counter() - started)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.02)


WORKER_START_TIMEOUT_S = 90.0
"""How long a benchmark waits for a worker it started to serve."""


def create_database(server: Any, name: str) -> str:
    """Create the database ``name`` on the embedded ``server``; returns its conninfo."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server.conninfo_for("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return str(server.conninfo_for(name))


def wait_registered(conn: Any, pid: int) -> None:
    """Wait until the horsies worker of ``pid`` has written its first snapshot (it is serving);
    ``conn``: a psycopg connection to its database."""

    def registered() -> bool:
        row = conn.execute(
            "SELECT count(*) FROM horsies_worker_states WHERE pid = %s", (pid,)
        ).fetchone()
        return bool(row and row[0])

    wait_until(registered, WORKER_START_TIMEOUT_S, "the worker to register")
