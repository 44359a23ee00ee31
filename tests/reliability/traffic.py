"""Traffic for the fault scenarios: a producer thread sending in a loop, threads blocked in
``handle.get()``, and the checks every fault scenario ends with (nothing lost, nothing finished
twice, every successful send completed, failed sends left nothing behind).

Used by the restart (``test_rel_pg_restart.py``) and connection-cut (``test_rel_conn_cut.py``)
scenarios; the fault itself is up to the scenario.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from horsies.broker import PostgresBroker
from horsies.results import TaskError, TaskResult
from horsies.tasks.function import TaskFunction
from horsies.tasks.handle import TaskHandle
from process_harness import wait_until

from tests.reliability.ledger import TERMINAL, LedgerReport, compare

__all__ = [
    "Producer",
    "Waiters",
    "assert_failed_sends_are_clear",
    "assert_nothing_lost",
    "first_finished_after",
    "new_keys",
    "status_counts",
    "wait_all_terminal",
]


CLEAR_SEND_ERRORS = ("database unreachable", "connection to the database lost")
"""What a send error caused by the database must say (``horsies.broker.errors.BrokerError``)."""


def new_keys(n: int, prefix: str = "k") -> list[str]:
    """``n`` unique ledger keys."""
    return [f"{prefix}-{uuid.uuid4().hex[:12]}" for _ in range(n)]


@dataclass
class Producer:
    """A thread that sends ``task(key, seconds)`` every ``interval_s`` until :meth:`stop`.

    ``durations`` cycles through the task durations. Successful sends land in ``ok``
    (key -> task id, with their handles in ``handles``); failed ones in ``errors`` (key -> the
    error message of the ``"<error>"`` handle), with how long the failing call took in
    ``error_call_s``.
    """

    task: TaskFunction[..., Any]
    durations: tuple[float, ...] = (0.0,)
    interval_s: float = 0.02
    ok: dict[str, str] = field(default_factory=dict[str, str])
    handles: dict[str, TaskHandle[Any]] = field(default_factory=dict[str, TaskHandle[Any]])
    errors: dict[str, str] = field(default_factory=dict[str, str])
    error_call_s: list[float] = field(default_factory=list[float])
    call_s: list[float] = field(default_factory=list[float])
    """How long each send call took (a send blocks while no connection is available)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Producer:
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            key = f"p-{uuid.uuid4().hex[:12]}"
            t0 = time.monotonic()
            handle = self.task.send(key, self.durations[i % len(self.durations)])
            took = time.monotonic() - t0
            i += 1
            with self._lock:
                self.call_s.append(took)
                if handle.task_id == "<error>":
                    result = handle.get()
                    self.errors[key] = (result.err_value.message or "?") if result.is_err() else "?"
                    self.error_call_s.append(took)
                else:
                    self.ok[key] = handle.task_id
                    self.handles[key] = handle
            self._stop.wait(self.interval_s)  # pacing, not synchronisation

    @property
    def sent(self) -> int:
        with self._lock:
            return len(self.ok)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop sending and wait for the send in progress (bounded)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "the producer is stuck in send()"


class Waiters:
    """One thread per handle, blocked in ``handle.get(timeout_ms=...)`` until it returns."""

    def blocked(self, broker: PostgresBroker) -> int:
        """How many of these waits ``broker`` has registered with LISTEN active: they are past
        their first read and blocked waiting for their task."""
        waiters = broker._waiters  # pyright: ignore[reportPrivateUsage]
        sub = waiters._subscription  # pyright: ignore[reportPrivateUsage]
        if sub is None or not sub.active:
            return 0
        ids = {h.task_id for h in self.handles.values()}
        with waiters._lock:  # pyright: ignore[reportPrivateUsage]
            registered = waiters._waiters  # pyright: ignore[reportPrivateUsage]
            return sum(len(registered.get(task_id, ())) for task_id in ids)

    def wait_blocked(self, broker: PostgresBroker, timeout: float = 30.0) -> None:
        """Wait (bounded) until every one of these waits is blocked (see :meth:`blocked`)."""
        wait_until(lambda: self.blocked(broker) >= len(self.handles), timeout, "waiters blocked")

    def __init__(self, handles: Mapping[str, TaskHandle[Any]], timeout_ms: int) -> None:
        self.handles = dict(handles)
        self.results: dict[str, TaskResult[Any, TaskError]] = {}
        self.returned_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._wait, args=(key, h, timeout_ms), daemon=True)
            for key, h in handles.items()
        ]
        for thread in self._threads:
            thread.start()

    def _wait(self, key: str, handle: TaskHandle[Any], timeout_ms: int) -> None:
        result = handle.get(timeout_ms=timeout_ms)
        with self._lock:
            self.results[key] = result
            self.returned_at[key] = time.monotonic()

    def join(self, timeout: float) -> dict[str, TaskResult[Any, TaskError]]:
        """Wait (bounded) for every waiter; return key -> result."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = sum(thread.is_alive() for thread in self._threads)
        assert not stuck, f"{stuck} get() waiters still blocked after {timeout}s"
        return dict(self.results)


def status_counts(conninfo: str) -> dict[str, int]:
    """Task rows per status."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute("SELECT status, count(*) FROM horsies_tasks GROUP BY status")
        return {str(status): int(n) for status, n in rows.fetchall()}


def first_finished_after(conninfo: str, wall_ts: float) -> float | None:
    """Seconds from ``wall_ts`` (``time.time()``) to the first task completed after it, or None."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM min(completed_at)) FROM horsies_tasks"
            " WHERE completed_at > to_timestamp(%s)",
            (wall_ts,),
        ).fetchone()
    return float(row[0]) - wall_ts if row and row[0] is not None else None


def wait_all_terminal(conninfo: str, ids: Mapping[str, str], timeout: float) -> LedgerReport:
    """Wait (bounded) until every task of ``ids`` is terminal; return the ledger comparison."""

    def done() -> LedgerReport | None:
        report = compare(conninfo, ids)
        return report if not report.not_terminal and not report.missing else None

    try:
        return wait_until(done, timeout, f"{len(ids)} tasks terminal", interval=0.2)
    except AssertionError:
        report = compare(conninfo, ids)
        raise AssertionError(f"not all tasks terminal: {report.summary()}") from None


def assert_nothing_lost(report: LedgerReport) -> None:
    """No task lost or finished twice, and every one of them COMPLETED (the faults under test
    must not fail tasks: they only delay them)."""
    report.assert_nothing_lost_or_duplicated()
    assert report.statuses["COMPLETED"] == report.sent, report.summary()
    assert sum(report.ends.values()) >= report.sent, report.summary()
    assert set(report.statuses) <= TERMINAL


def assert_failed_sends_are_clear(conninfo: str, errors: Mapping[str, str]) -> None:
    """Every failed send said why in words a user understands (the database is unreachable, or the
    connection was lost) and wrote nothing (docs/tasks.md: "nothing is inserted")."""
    unclear = [m for m in errors.values() if not any(w in m for w in CLEAR_SEND_ERRORS)]
    assert not unclear, f"unclear send errors: {unclear[:3]}"
    if not errors:
        return
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT args::jsonb ->> 0 FROM horsies_tasks WHERE args::jsonb ->> 0 = ANY(%s)",
            (list(errors),),
        ).fetchall()
    assert not rows, f"sends reported as failed were stored anyway: {[r[0] for r in rows][:5]}"
