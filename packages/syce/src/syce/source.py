"""The data source: runs the read-only queries of `syce.queries` (and horsies-core's own read of a
task's attempts, so the history has one home), returns `syce.models` snapshots.

No Textual here. The app calls these methods from Textual thread workers, so they block. One
connection is shared (guarded by a lock) and opened lazily; a broken connection is dropped and
`SourceUnavailable` raised, and the next call connects again, so reconnecting is automatic.
Sessions are read-only (``default_transaction_read_only``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, LiteralString, TypeVar, cast

import psycopg
from horsies.broker.attempts import attempts_op
from horsies.broker.driver_sync import run_op
from horsies.broker.steps import Op
from horsies.config import PostgresConfig
from horsies.redact import mask_database_url
from psycopg.conninfo import make_conninfo

from syce import queries
from syce.models import (
    CHART_WINDOWS,
    DashboardData,
    LimitInfo,
    LimitKey,
    LimitsData,
    MaintenanceData,
    NodeCounts,
    SnapshotAge,
    StaleClaim,
    TaskDetail,
    TaskGroup,
    TaskSummary,
    TaskWait,
    WorkerInfo,
    WorkerSample,
    WorkersData,
    WorkflowDetail,
    WorkflowNode,
    WorkflowSummary,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["SourceUnavailable", "SyceSource", "newest_once", "row_to_json"]

DEAD_AFTER_S: Final = 30.0
"""A worker whose latest snapshot is older than this is reported dead (snapshots come every 5 s)."""
LIVE_WINDOW: Final = timedelta(seconds=DEAD_AFTER_S)
"""A worker is live while it is not dead: its latest snapshot is younger than this and does not
say that it stopped. (One window for both, so no worker is ever counted as both.)"""
STALE_CLAIM_AFTER: Final = timedelta(minutes=2)
MAINTENANCE_WINDOW: Final = timedelta(hours=24)
TREND_WINDOW: Final = timedelta(hours=1)
TREND_BUCKET: Final = timedelta(minutes=1)
CONNECT_TIMEOUT_S: Final = 5


class SourceUnavailable(Exception):
    """The database cannot be reached; the message is safe to show (passwords masked)."""


Row = dict[str, Any]
M = TypeVar("M", bound="DataclassInstance")
T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]


def _model(model: type[M], row: Row, **named_otherwise: Any) -> M:
    """A ``model`` snapshot of ``row``: each field is the column of its name, but for the fields
    given here (their column is named otherwise, or its value needs converting)."""
    values = {f.name: row[f.name] for f in fields(model) if f.name not in named_otherwise}
    return model(**values, **named_otherwise)


def _search_params(search: str) -> dict[str, str]:
    text = search.strip()
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return {"search": text, "pattern": f"%{escaped}%", "prefix": f"{escaped}%"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def row_to_json(row: Mapping[str, Any]) -> str:
    """Pretty JSON of a table row (JSON text columns are expanded, datetimes in ISO form)."""
    return json.dumps({key: _jsonable(value) for key, value in row.items()}, indent=2, default=str)


class SyceSource:
    """Read-only access to a horsies database for the dashboard."""

    def __init__(self, config: PostgresConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._conn: Conn | None = None
        self._closed = False

    @property
    def masked_url(self) -> str:
        return self._config.masked_url

    def close(self) -> None:
        """Close the connection for good: a read still queued in a thread worker when the app
        exits must not open a new one."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- plumbing ---------------------------------------------------------------------------------

    def _connection(self) -> Conn:
        if self._closed:
            raise SourceUnavailable("the dashboard is shutting down")
        conn = self._conn
        if conn is None or conn.closed:
            conninfo = make_conninfo(
                self._config.conninfo,
                connect_timeout=CONNECT_TIMEOUT_S,
                options="-c default_transaction_read_only=on -c statement_timeout=10000",
                application_name="syce",
            )
            conn = psycopg.Connection.connect(conninfo, autocommit=True)
            self._conn = conn
        return conn

    def _use(self, read: Callable[[Conn], T]) -> T:
        """``read(connection)`` under the lock; a broken connection is dropped and reported."""
        with self._lock:
            try:
                return read(self._connection())
            except psycopg.OperationalError as exc:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                raise SourceUnavailable(mask_database_url(str(exc).strip())) from exc

    def _fetch(self, sql: LiteralString, params: Mapping[str, Any] | None = None) -> list[Row]:
        def read(conn: Conn) -> list[Row]:
            cursor = conn.execute(sql, params or {})
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return self._use(read)

    def _run(self, op: Op[T]) -> T:
        """A read of horsies-core (an operation of its broker) on this connection."""
        return self._use(lambda conn: run_op(conn, op))

    def ping(self) -> None:
        """Connect if needed and run ``SELECT 1`` (raises `SourceUnavailable`)."""
        self._fetch("SELECT 1 AS one")

    # -- tabs -------------------------------------------------------------------------------------

    def live_workers(
        self, since: timedelta = LIVE_WINDOW, *, with_stopped: bool = False
    ) -> tuple[WorkerInfo, ...]:
        """The latest snapshot of each worker seen since ``since``; a worker that stopped is
        left out, unless ``with_stopped``."""
        rows = self._fetch(
            queries.LATEST_WORKER_SNAPSHOTS, {"since": since, "with_stopped": with_stopped}
        )
        workers = [
            _model(
                WorkerInfo,
                r,
                memory_mb=r["memory_usage_mb"],
                started_at=r["worker_started_at"],
                queues=tuple(r["queues"] or ()),
                limits=_worker_limits(r["limits"]),
            )
            for r in rows
        ]
        workers.sort(key=lambda w: (w.hostname, w.pid, w.worker_id))
        return tuple(workers)

    def dashboard(self) -> DashboardData:
        queue_counts = tuple(
            (r["queue_name"], r["status"], r["n"]) for r in self._fetch(queries.ACTIVE_QUEUE_COUNTS)
        )
        # The live totals are the queues' sums: counting the pending tasks once more for them
        # doubled the dashboard's cost with a big backlog.
        task_counts = {"PENDING": 0}
        for _, status, n in queue_counts:
            task_counts[status] = task_counts.get(status, 0) + n
        task_counts.update(
            {
                r["status"]: r["n"]
                for r in self._fetch(
                    queries.FINISHED_STATUS_COUNTS, {"cap": queries.STATUS_COUNT_CAP}
                )
                if r["n"]
            }
        )
        workflow_counts = {r["status"]: r["n"] for r in self._fetch(queries.WORKFLOW_STATUS_COUNTS)}
        trend = tuple(
            float(r["utilisation"] or 0.0)
            for r in self._fetch(
                queries.CLUSTER_UTILISATION_TREND,
                {"bucket": TREND_BUCKET, "window": TREND_WINDOW},
            )
        )
        stale = tuple(
            _model(StaleClaim, r, task_id=r["id"], worker_id=r["claimed_by_worker_id"])
            for r in self._fetch(queries.STALE_CLAIMS, {"threshold": STALE_CLAIM_AFTER})
        )
        return DashboardData(
            workers=self.live_workers(),
            task_counts=task_counts,
            queue_counts=queue_counts,
            workflow_counts=workflow_counts,
            trend=trend,
            stale_claims=stale,
        )

    def workers(self, selected: str | None, window_index: int, search: str = "") -> WorkersData:
        needle = search.strip().lower()
        workers = tuple(
            w
            for w in self.live_workers()
            if not needle or needle in w.hostname.lower() or needle in w.worker_id.lower()
        )
        if workers and selected not in {w.worker_id for w in workers}:
            selected = workers[0].worker_id
        label, window = CHART_WINDOWS[window_index % len(CHART_WINDOWS)]
        history: tuple[WorkerSample, ...] = ()
        if selected is not None and workers:
            rows = self._fetch(
                queries.WORKER_HISTORY,
                {"worker_id": selected, "window": window, "bucket": window / 60},
            )
            history = tuple(_model(WorkerSample, r, at=r["bucket"]) for r in rows)
        return WorkersData(
            workers=workers,
            selected=selected if workers else None,
            window=label,
            history=history,
        )

    def task_groups(self, statuses: Sequence[str], search: str = "") -> tuple[TaskGroup, ...]:
        wanted = list(statuses)
        params = {
            "statuses": wanted,
            "cap": queries.finished_count_cap(search),
            **_search_params(search),
        }
        rows: list[Row] = []
        if "PENDING" in wanted:
            rows += self._fetch(queries.TASK_GROUPS_PENDING, params)
        if {"CLAIMED", "RUNNING"} & set(wanted):
            rows += self._fetch(queries.TASK_GROUPS_IN_FLIGHT, params)
        finished = (
            queries.TASK_GROUPS_FINISHED_SEARCH
            if params["search"]
            else queries.TASK_GROUPS_FINISHED
        )
        for status in queries.FINISHED_STATUSES:
            if status in wanted:
                rows += [r for r in self._fetch(finished[status], params) if r["n"]]
        groups: dict[str | None, tuple[str | None, dict[str, int]]] = {}
        for r in rows:
            hostname, counts = groups.get(r["worker_id"], (None, {}))
            counts[r["status"]] = counts.get(r["status"], 0) + r["n"]
            groups[r["worker_id"]] = (hostname or r["hostname"], counts)
        result = [TaskGroup(key, host, counts) for key, (host, counts) in groups.items()]
        result.sort(key=lambda g: (g.worker_id is not None, g.hostname or "", g.key))
        return tuple(result[: queries.ROW_LIMIT])

    def tasks_of(
        self, worker_key: str, statuses: Sequence[str], search: str = ""
    ) -> tuple[TaskSummary, ...]:
        """The newest 100 tasks of one group (``""``: tasks no worker claimed)."""
        wanted = list(statuses)
        params = {"worker_id": worker_key or None, "statuses": wanted, **_search_params(search)}
        rows: list[Row] = []
        if "PENDING" in wanted:
            rows += self._fetch(queries.TASKS_OF_WORKER_PENDING, params)
        if worker_key and {"CLAIMED", "RUNNING"} & set(wanted):
            rows += self._fetch(queries.TASKS_OF_WORKER_IN_FLIGHT, params)
        finished = (
            queries.TASKS_OF_WORKER_FINISHED if worker_key else queries.UNCLAIMED_TASKS_FINISHED
        )
        for status in queries.FINISHED_STATUSES:
            if status in wanted:
                rows += self._fetch(finished[status], params)
        newest = newest_once(rows)[:100]
        waits = self._waits([r["id"] for r in newest if r["status"] == "PENDING"])
        return tuple(
            _model(TaskSummary, r, task_id=r["id"], wait=waits.get(r["id"])) for r in newest
        )

    def _waits(self, task_ids: Sequence[str]) -> dict[str, TaskWait]:
        """Why each of these tasks waits (the ones still PENDING)."""
        if not task_ids:
            return {}
        rows = self._fetch(queries.TASK_WAITS, {"ids": list(task_ids)})
        return {r["id"]: _model(TaskWait, r) for r in rows}

    def task(self, task_id: str) -> Row | None:
        rows = self._fetch(queries.TASK_BY_ID, {"id": task_id})
        return rows[0] if rows else None

    def task_detail(self, task_id: str) -> TaskDetail | None:
        """A task's row, while it is PENDING why it waits, and its attempts (None: no such
        task)."""
        row = self.task(task_id)
        if row is None:
            return None
        wait = self._waits([task_id]).get(task_id) if row["status"] == "PENDING" else None
        attempts = tuple(self._run(attempts_op(task_id)))
        return TaskDetail(row=row, wait=wait, attempts=attempts)

    def limits(self, selected: str | None, search: str = "") -> LimitsData:
        """Every limit (its name containing ``search``), how many live workers enforce it, and
        the busiest keys of ``selected`` (the first limit when that one is not listed)."""
        needle = search.strip().lower()
        workers = self.live_workers()
        limits = tuple(
            _model(LimitInfo, r, workers=sum(1 for w in workers if w.enforces(str(r["name"]))))
            for r in self._fetch(queries.LIMITS)
            if needle in str(r["name"]).lower()
        )
        names = [limit.name for limit in limits]
        if selected not in names:
            selected = names[0] if names else None
        keys: tuple[LimitKey, ...] = ()
        if selected is not None:
            keys = tuple(
                _model(LimitKey, r) for r in self._fetch(queries.LIMIT_KEYS, {"name": selected})
            )
        return LimitsData(limits=limits, selected=selected, keys=keys)

    def workflows(self, statuses: Sequence[str], search: str = "") -> tuple[WorkflowSummary, ...]:
        if not statuses:
            return ()
        rows = self._fetch(
            queries.WORKFLOWS, {"statuses": list(statuses), **_search_params(search)}
        )
        return tuple(
            _model(
                WorkflowSummary,
                r,
                workflow_id=r["id"],
                nodes=NodeCounts(r["total"], r["completed"], r["failed"], r["skipped"]),
            )
            for r in rows
        )

    def workflow(self, workflow_id: str) -> WorkflowDetail | None:
        rows = self._fetch(queries.WORKFLOW_BY_ID, {"id": workflow_id})
        if not rows:
            return None
        nodes = tuple(
            _model(
                WorkflowNode,
                r,
                index=r["task_index"],
                dependencies=tuple(r["dependencies"] or ()),
                is_subworkflow=bool(r["is_subworkflow"]),
            )
            for r in self._fetch(queries.WORKFLOW_NODES, {"id": workflow_id})
        )
        return WorkflowDetail(row=rows[0], nodes=nodes)

    def maintenance(self) -> MaintenanceData:
        workers = self.live_workers(MAINTENANCE_WINDOW, with_stopped=True)
        ages = sorted(
            (
                SnapshotAge(w.worker_id, w.hostname, w.pid, w.snapshot_at, w.age.total_seconds())
                for w in workers
            ),
            key=lambda a: a.age_s,
        )
        stopped = {w.worker_id for w in workers if w.stopped_at is not None}
        return MaintenanceData(
            ages=tuple(a for a in ages if a.worker_id not in stopped),
            stopped=tuple(a for a in ages if a.worker_id in stopped),
            dead_after_s=DEAD_AFTER_S,
        )


def _worker_limits(value: Any) -> dict[str, tuple[str, ...]] | None:
    """A snapshot's ``limits`` column (JSON of queue -> limit names; NULL from older workers)."""
    if not isinstance(value, dict):
        return None
    found: dict[str, Any] = cast("dict[str, Any]", value)
    return {str(queue): tuple(str(n) for n in names or ()) for queue, names in found.items()}


def newest_once(rows: Sequence[Row]) -> list[Row]:
    """``rows`` newest first, each task once. The rows come from several statements, each with a
    snapshot of its own, so a task that changed status between two of them (RUNNING, then
    CANCELLED) is in both: the later statement's row is the newer one and wins."""
    latest: dict[object, Row] = {}
    for r in rows:
        latest[r["id"]] = r
    unique = list(latest.values())
    oldest = datetime.min.replace(tzinfo=UTC)
    unique.sort(key=lambda r: r["id"])
    unique.sort(key=lambda r: r["sent_at"] or oldest, reverse=True)
    return unique
