"""The ledger: what really ran, written by the test tasks themselves, compared with the task table.

Every ledger task (``tests.reliability.apps.ledger_app``) takes a ``key`` (a unique string the test
chooses) and appends a row ``(key, phase, worker_pid, child_pid, at)`` with phase ``start`` when it
begins and ``end`` just before it returns its result. The test keeps ``key -> task_id`` from the
handles it got back, so after the run it can compare what ran with what ``horsies_tasks`` says.

The ledger lives in the test's own database (table ``reliability_ledger``); a task child keeps one
autocommit connection for all the tasks it runs.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psutil
import psycopg

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS reliability_ledger (
    seq bigserial PRIMARY KEY,
    key text NOT NULL,
    phase text NOT NULL CHECK (phase IN ('start', 'end')),
    worker_pid integer NOT NULL,
    child_pid integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    token text UNIQUE
);
CREATE INDEX IF NOT EXISTS ix_reliability_ledger_key ON reliability_ledger (key, phase);
"""
_INSERT = (
    "INSERT INTO reliability_ledger (key, phase, worker_pid, child_pid, token)"
    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (token) DO NOTHING"
)
_RECORD_RETRY_S = 60.0
"""How long ``record`` keeps retrying while the database is unreachable (a restart scenario)."""

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "EXPIRED"})

_conn: psycopg.Connection[Any] | None = None


def create_ledger(conninfo: str) -> None:
    """Create (or empty) the ledger table in the database at ``conninfo``."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(LEDGER_DDL)
        conn.execute("TRUNCATE reliability_ledger")


def _worker_pid() -> int:
    """The worker main process of this task child: the parent of the fork server that forked it."""
    return psutil.Process(os.getppid()).ppid()


def record(conninfo: str, key: str, phase: str) -> None:
    """Append one ledger row from inside a task (called in the worker's child process).

    Survives connection cuts and server restarts: a failed write is retried on a new connection
    (for up to a minute) with the same ``token``, so a write whose commit was acknowledged on a
    connection that died is never recorded twice.
    """
    global _conn
    token = uuid.uuid4().hex
    deadline = time.monotonic() + _RECORD_RETRY_S
    while True:
        try:
            if _conn is None or _conn.closed:
                _conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
            _conn.execute(_INSERT, (key, phase, _worker_pid(), os.getpid(), token))
            return
        except psycopg.OperationalError:
            # The connection was cut or the server is restarting (a fault test did it).
            if _conn is not None:
                _conn.close()
            _conn = None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # retry pacing while the server is down


@dataclass(frozen=True)
class LedgerRow:
    """One ledger row: ``phase`` of ``key`` in child ``child_pid`` of worker ``worker_pid``."""

    key: str
    phase: str
    worker_pid: int
    child_pid: int
    at: datetime


def ledger_rows(conninfo: str) -> list[LedgerRow]:
    """Every ledger row, in insertion order (for timing and overlap checks)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT key, phase, worker_pid, child_pid, at FROM reliability_ledger ORDER BY seq"
        ).fetchall()
    return [LedgerRow(*row) for row in rows]


@dataclass
class LedgerReport:
    """What the ledger and the task table say about a set of sent tasks."""

    sent: int
    statuses: Counter[str] = field(default_factory=Counter)
    error_codes: Counter[str] = field(default_factory=Counter)
    starts: Counter[str] = field(default_factory=Counter)
    ends: Counter[str] = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)
    """Keys whose task row does not exist (lost at send or deleted)."""
    not_terminal: list[str] = field(default_factory=list)
    """Keys whose task is not in a terminal status."""
    completed_without_end: list[str] = field(default_factory=list)
    """COMPLETED tasks the ledger never saw finish (a result nobody produced)."""
    ran_more_than_attempts: list[str] = field(default_factory=list)
    """Keys that *ended* more often than their task had attempts (a task finished twice)."""
    failed_never_started: list[str] = field(default_factory=list)
    """FAILED tasks whose code the ledger never saw start (failed as crashed without running)."""
    ready_mismatches: list[tuple[str, str]] = field(default_factory=list)
    """Where ``horsies_ready`` disagrees with the task table (any task of the database): a
    claimable task missing there would never be claimed."""

    @property
    def lost(self) -> int:
        return len(self.missing) + len(self.not_terminal) + len(self.completed_without_end)

    @property
    def duplicated(self) -> int:
        return len(self.ran_more_than_attempts)

    def assert_nothing_lost_or_duplicated(self) -> None:
        """Every sent task has a row, ended and was finished by a run the ledger saw; none ended
        more often than it had attempts."""
        assert self.lost == 0, self.summary()
        assert self.duplicated == 0, self.summary()
        assert self.ready_mismatches == [], self.summary()

    def summary(self) -> str:
        return (
            f"sent={self.sent} statuses={dict(self.statuses)} codes={dict(self.error_codes)} "
            f"lost={self.lost} duplicated={self.duplicated} "
            f"missing={self.missing[:5]} not_terminal={self.not_terminal[:5]} "
            f"completed_without_end={self.completed_without_end[:5]} "
            f"ran_more_than_attempts={self.ran_more_than_attempts[:5]} "
            f"ready_mismatches={self.ready_mismatches[:5]}"
        )


def compare(conninfo: str, task_ids: Mapping[str, str]) -> LedgerReport:
    """Compare the ledger with ``horsies_tasks`` for ``task_ids`` (``key -> task_id``).

    A task may *start* more than once (a crash after it started re-runs it when it is requeued or
    retried), but it may *end* at most once per attempt the task table records
    (``retry_count + 1``), and a COMPLETED task must have ended at least once.
    """
    report = LedgerReport(sent=len(task_ids))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, status, retry_count, result FROM horsies_tasks WHERE id = ANY(%s)",
            (list(task_ids.values()),),
        ).fetchall()
        for key, phase, n in conn.execute(
            "SELECT key, phase, count(*) FROM reliability_ledger GROUP BY key, phase"
        ).fetchall():
            (report.starts if phase == "start" else report.ends)[key] = n
    # Here, not at the top: the apps' worker children import this module for record(), and the
    # test helpers' directory is on the path of the pytest process only.
    from db_rows import ready_mismatches

    report.ready_mismatches = ready_mismatches(conninfo)
    by_id = {row[0]: row for row in rows}
    for key, task_id in task_ids.items():
        row = by_id.get(task_id)
        if row is None:
            report.missing.append(key)
            continue
        _, status, retry_count, result = row
        report.statuses[status] += 1
        if status == "FAILED" and isinstance(result, str) and '"error_code"' in result:
            report.error_codes[_error_code(result)] += 1
        if status not in TERMINAL:
            report.not_terminal.append(key)
        if status == "COMPLETED" and report.ends[key] == 0:
            report.completed_without_end.append(key)
        if status == "FAILED" and report.starts[key] == 0:
            report.failed_never_started.append(key)
        if report.ends[key] > retry_count + 1:
            report.ran_more_than_attempts.append(key)
    return report


def _error_code(result_json: str) -> str:
    import orjson

    def find(value: Any) -> str | None:
        if isinstance(value, dict):
            code = value.get("error_code")  # pyright: ignore[reportUnknownMemberType]
            if isinstance(code, str):
                return code
            for item in value.values():  # pyright: ignore[reportUnknownVariableType]
                found = find(item)
                if found:
                    return found
        if isinstance(value, list):
            for item in value:  # pyright: ignore[reportUnknownVariableType]
                found = find(item)
                if found:
                    return found
        return None

    return find(orjson.loads(result_json)) or "?"
