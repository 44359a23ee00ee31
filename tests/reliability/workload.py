"""Load, observation and timing helpers shared by the worker-fault and cap scenarios.

- :func:`send_load` sends ``(key, seconds)`` calls of one ledger task in one statement and returns
  ``key -> task_id``; :func:`send_mixed` sends calls of several tasks in a given order;
- :func:`stop_workers` stops several workers at once;
- :func:`worker_id` reads a ledger worker's instance id (``claimed_by_worker_id``) from its log;
- :func:`held_by` / :func:`task_states` read the task table;
- :func:`wait_terminal` and :func:`wait_released` are bounded waits on it;
- :func:`intervals` and :func:`max_overlap` turn ledger rows into execution intervals (the ledger's
  own proof of concurrency);
- :class:`InFlightSampler` polls the RUNNING / CLAIMED counts per queue in a thread.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import pytest
from horsies.app import Horsies
from process_harness import wait_until

from tests.reliability.harness import LedgerWorker
from tests.reliability.ledger import TERMINAL, LedgerRow, compare

__all__ = [
    "SOAK",
    "SOAK_ONLY",
    "InFlightSampler",
    "Interval",
    "TaskState",
    "held_by",
    "intervals",
    "max_overlap",
    "send_load",
    "send_mixed",
    "stop_workers",
    "task_states",
    "wait_released",
    "wait_terminal",
    "worker_id",
]

SOAK = os.environ.get("HORSIES_SOAK") == "1"
"""``HORSIES_SOAK=1``: also run the bigger variants (skipped in the CI run)."""
SOAK_ONLY = pytest.mark.skipif(not SOAK, reason="bigger variant: set HORSIES_SOAK=1")

_READY = re.compile(r"Worker (\S+) ready: pid=(\d+)")


def send_load(app: Horsies, task_name: str, calls: Sequence[tuple[str, float]]) -> dict[str, str]:
    """Send ``calls`` (``(key, seconds)``) of ``task_name`` in one statement: ``key -> task_id``."""
    handles = app.tasks[task_name].send_many(list(calls))
    ids = {key: handle.task_id for (key, _), handle in zip(calls, handles, strict=True)}
    bad = [task_id for task_id in ids.values() if task_id.startswith("<")]
    assert not bad, f"send_many failed: {handles[0].get(timeout_ms=0)}"
    return ids


def send_mixed(app: Horsies, calls: Sequence[tuple[str, str, float]]) -> dict[str, str]:
    """Send ``(task_name, key, seconds)`` calls in their order (one statement per run of the same
    task): ``key -> task_id``."""
    ids: dict[str, str] = {}
    for task_name, group in itertools.groupby(calls, key=lambda call: call[0]):
        ids |= send_load(app, task_name, [(key, seconds) for _, key, seconds in group])
    return ids


def worker_id(worker: LedgerWorker) -> str:
    """The worker instance id (``claimed_by_worker_id`` of its rows), from its ready line."""
    worker.wait_ready()
    match = _READY.search(worker.output())
    assert match is not None, worker.output()
    assert int(match.group(2)) == worker.pid
    return match.group(1)


def stop_workers(workers: Iterable[LedgerWorker], timeout: float = 30.0) -> None:
    """SIGTERM every live worker at once, then wait for each (a faster teardown than one by one)."""
    alive = [worker for worker in workers if worker.alive]
    for worker in alive:
        worker.send_signal(signal.SIGTERM)
    for worker in alive:
        worker.wait_exit(timeout)


@dataclass(frozen=True)
class TaskState:
    """The columns of one task row the scenarios check."""

    status: str
    retry_count: int
    worker_id: str | None
    failed_reason: str | None
    result: str | None


def task_states(conninfo: str, task_ids: Iterable[str]) -> dict[str, TaskState]:
    """``task_id -> TaskState`` for the given tasks."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, status, retry_count, claimed_by_worker_id, failed_reason, result"
            " FROM horsies_tasks WHERE id = ANY(%s)",
            (list(task_ids),),
        ).fetchall()
    return {row[0]: TaskState(*row[1:]) for row in rows}


def ran_in_child(conninfo: str, task_ids: Iterable[str], pid: int) -> set[str]:
    """The tasks of ``task_ids`` that had an attempt in the child process ``pid``: the worker wrote
    them to its pipe (the attempt history records the child of every attempt that ended)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT DISTINCT task_id FROM horsies_task_attempts"
            " WHERE task_id = ANY(%s) AND pid = %s",
            (list(task_ids), pid),
        ).fetchall()
    return {row[0] for row in rows}


def held_by(conninfo: str, worker: str) -> dict[str, list[str]]:
    """Task ids the worker instance ``worker`` holds, by status (CLAIMED, RUNNING)."""
    held: dict[str, list[str]] = {"CLAIMED": [], "RUNNING": []}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for task_id, status in conn.execute(
            "SELECT id, status FROM horsies_tasks"
            " WHERE claimed_by_worker_id = %s AND status IN ('CLAIMED', 'RUNNING')",
            (worker,),
        ).fetchall():
            held[status].append(task_id)
    return held


def wait_released(conninfo: str, worker: str, timeout: float) -> float:
    """Wait until the (dead) worker ``worker`` holds nothing any more; returns the seconds it took.

    Polls every 20 ms, so the figure is the recovery time within that resolution.
    """
    begin = time.monotonic()
    with psycopg.connect(conninfo, autocommit=True) as conn:

        def released() -> bool:
            row = conn.execute(
                "SELECT count(*) FROM horsies_tasks"
                " WHERE claimed_by_worker_id = %s AND status IN ('CLAIMED', 'RUNNING')",
                (worker,),
            ).fetchone()
            return row is not None and row[0] == 0

        wait_until(released, timeout, f"worker {worker}'s tasks recovered", interval=0.02)
    return time.monotonic() - begin


def wait_terminal(conninfo: str, task_ids: Mapping[str, str], timeout: float) -> None:
    """Wait until every task of ``task_ids`` (``key -> id``) is in a terminal status."""
    ids = list(task_ids.values())
    terminal = list(TERMINAL)

    def done() -> bool:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM horsies_tasks WHERE id = ANY(%s) AND status = ANY(%s)",
                (ids, terminal),
            ).fetchone()
        return row is not None and row[0] == len(ids)

    try:
        wait_until(done, timeout, f"{len(ids)} tasks terminal", interval=0.1)
    except AssertionError:
        print(compare(conninfo, task_ids).summary())
        raise


@dataclass(frozen=True)
class Interval:
    """One execution seen by the ledger: ``key`` ran in ``child_pid`` from ``start`` to ``end``."""

    key: str
    worker_pid: int
    child_pid: int
    start: datetime
    end: datetime


def intervals(rows: Iterable[LedgerRow], keys: Iterable[str] | None = None) -> list[Interval]:
    """Pair each ``start`` row with the ``end`` row of the same key in the same child.

    Runs that never ended (their child was killed) have no interval. ``keys`` limits the result.
    """
    wanted = set(keys) if keys is not None else None
    open_runs: dict[tuple[str, int], LedgerRow] = {}
    found: list[Interval] = []
    for row in rows:
        if wanted is not None and row.key not in wanted:
            continue
        slot = (row.key, row.child_pid)
        if row.phase == "start":
            open_runs[slot] = row
        elif (begin := open_runs.pop(slot, None)) is not None:
            found.append(Interval(row.key, row.worker_pid, row.child_pid, begin.at, row.at))
    return found


def max_overlap(runs: Iterable[Interval]) -> int:
    """The largest number of intervals open at one instant (an end sorts before a start at the
    same instant: touching intervals do not overlap)."""
    events = sorted(
        [(run.start, 1) for run in runs] + [(run.end, -1) for run in runs],
        key=lambda event: (event[0], event[1]),
    )
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


@dataclass
class InFlightSampler:
    """A thread that polls ``count(*)`` of RUNNING and CLAIMED rows per queue every few ms.

    Each sample is one statement, so its counts come from one snapshot. ``peaks`` keeps the
    largest value seen for each key: ``(queue, status)``, ``(queue, "IN_FLIGHT")`` (RUNNING +
    CLAIMED), and the same with queue ``"*"`` for all queues together.
    """

    conninfo: str
    interval_s: float = 0.003
    samples: int = 0
    peaks: Counter[tuple[str, str]] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def __enter__(self) -> InFlightSampler:
        self._thread = threading.Thread(target=self._run, name="in-flight-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._error is not None:
            raise AssertionError(f"sampler failed: {self._error!r}") from self._error

    def peak(self, queue: str, status: str) -> int:
        """Largest sampled count for ``queue`` (``"*"``: all) and ``status`` (RUNNING, CLAIMED,
        IN_FLIGHT)."""
        return self.peaks[(queue, status)]

    def _run(self) -> None:
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                while not self._stop.is_set():
                    rows = conn.execute(
                        "SELECT queue_name, status, count(*) FROM horsies_tasks"
                        " WHERE status IN ('RUNNING', 'CLAIMED') GROUP BY 1, 2"
                    ).fetchall()
                    self._record(rows)
                    self._stop.wait(self.interval_s)
        except BaseException as exc:  # reported by __exit__
            self._error = exc

    def _record(self, rows: Sequence[tuple[Any, ...]]) -> None:
        sample: Counter[tuple[str, str]] = Counter()
        for queue, status, count in rows:
            for name in (queue, "*"):
                sample[(name, status)] += count
                sample[(name, "IN_FLIGHT")] += count
        for slot, count in sample.items():
            if count > self.peaks[slot]:
                self.peaks[slot] = count
        self.samples += 1
