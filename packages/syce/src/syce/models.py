"""Immutable snapshots of what the dashboard shows; built by `syce.source`, rendered by screens."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from horsies.broker.attempts import TaskAttempt

TASK_STATUSES: Final = ("PENDING", "CLAIMED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")
"""Every status horsies writes to a task (in the Tasks tab's filter-key order p, c, u, o, f, x);
``REQUEUED`` is allowed by the schema but never written."""

WORKFLOW_STATUSES: Final = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "PAUSED", "CANCELLED")
"""Statuses the Workflows tab filters on."""

CHART_WINDOWS: Final = (
    ("5m", timedelta(minutes=5)),
    ("30m", timedelta(minutes=30)),
    ("1h", timedelta(hours=1)),
    ("6h", timedelta(hours=6)),
    ("24h", timedelta(hours=24)),
)
"""Chart windows of the Workers tab, cycled with ``[`` and ``]``."""


@dataclass(frozen=True, slots=True)
class TaskRef:
    """How the dashboard names a task."""

    task_id: str
    task_name: str
    queue_name: str


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """The latest snapshot of one worker."""

    worker_id: str
    hostname: str
    pid: int
    processes: int
    tasks_running: int
    tasks_claimed: int
    cpu_percent: float | None
    memory_mb: float | None
    memory_percent: float | None
    started_at: datetime
    snapshot_at: datetime
    age: timedelta
    queues: tuple[str, ...]
    stopped_at: datetime | None = None
    """Set on the last snapshot of a worker that stopped cleanly."""
    async_concurrency: int | None = None
    """How many async tasks one of its children runs at once (None: a worker before that)."""
    limits: dict[str, tuple[str, ...]] | None = None
    """Per served queue, the rate and concurrency limits it enforces (None: a worker before
    that)."""

    def enforces(self, limit_name: str) -> bool:
        """Whether this worker enforces the limit ``limit_name`` in some queue."""
        return any(limit_name in names for names in (self.limits or {}).values())

    @property
    def utilisation(self) -> float:
        return self.tasks_running / self.processes if self.processes else 0.0


@dataclass(frozen=True, slots=True)
class StaleClaim(TaskRef):
    worker_id: str | None
    age: timedelta


@dataclass(frozen=True, slots=True)
class DashboardData:
    """Everything on the Dashboard tab."""

    workers: tuple[WorkerInfo, ...]
    task_counts: dict[str, int]
    queue_counts: tuple[tuple[str, str, int], ...]
    workflow_counts: dict[str, int]
    trend: tuple[float, ...]
    stale_claims: tuple[StaleClaim, ...]

    @property
    def capacity(self) -> int:
        return sum(w.processes for w in self.workers)

    @property
    def running(self) -> int:
        return sum(w.tasks_running for w in self.workers)

    @property
    def utilisation(self) -> float:
        return self.running / self.capacity if self.capacity else 0.0

    @property
    def overloaded(self) -> tuple[WorkerInfo, ...]:
        """Workers running at full capacity with more tasks claimed and waiting."""
        return tuple(
            w
            for w in self.workers
            if w.processes and w.tasks_running >= w.processes and w.tasks_claimed > 0
        )


@dataclass(frozen=True, slots=True)
class WorkerSample:
    at: datetime
    running: float
    claimed: float
    cpu: float | None
    memory: float | None


@dataclass(frozen=True, slots=True)
class WorkersData:
    workers: tuple[WorkerInfo, ...]
    selected: str | None
    window: str
    history: tuple[WorkerSample, ...]


@dataclass(frozen=True, slots=True)
class TaskGroup:
    """Task counts per status for one worker (``worker_id`` None: not claimed by any worker)."""

    worker_id: str | None
    hostname: str | None
    counts: dict[str, int]

    @property
    def key(self) -> str:
        """Row key: the worker id, or ``""`` for tasks no worker has claimed."""
        return self.worker_id or ""

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def per_text(per_ms: int) -> str:
    """A rate's window: ``1s``, ``0.25s``, ``90s``, ``1m``, ``2h``, ``31d``."""
    seconds = per_ms / 1000
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class TaskWait:
    """Why a PENDING task has not started yet (built from ``queries.TASK_WAITS``)."""

    not_due: bool
    sent_at: datetime | None
    retry_later: bool
    next_retry_at: datetime | None
    expired: bool
    limit_name: str | None
    limit_key: str | None
    registered: bool
    concurrency: int | None
    rate: int | None
    per_ms: int | None
    in_flight: int
    starts_in_window: int
    held: bool
    """Its key is at its concurrency or rate, or no worker registered its limit."""

    @property
    def limit_text(self) -> str:
        """``limit tenant-api key acme`` (``limit rated`` for a limit with one key)."""
        if self.limit_name is None:
            return ""
        key = f" key {self.limit_key}" if self.limit_key else ""
        return f"limit {self.limit_name}{key}"

    @property
    def counts_text(self) -> str:
        """Where the key stands: ``2/2 running, 3/10 starts in 1s``."""
        parts: list[str] = []
        if self.concurrency is not None:
            parts.append(f"{self.in_flight}/{self.concurrency} running")
        if self.rate is not None and self.per_ms is not None:
            parts.append(f"{self.starts_in_window}/{self.rate} starts in {per_text(self.per_ms)}")
        return ", ".join(parts)

    def short(self) -> str:
        """A few words for a task list: why it waits, when it is not simply a worker's turn."""
        if self.expired:
            return "expired"
        if self.not_due:
            return "scheduled"
        if self.retry_later:
            return "retry later"
        if self.held:
            return f"waiting: {self.limit_text}"
        return self.limit_text

    def describe(self) -> str:
        """One sentence for the task's detail."""
        if self.expired:
            return "expired: past its good_until, it will never start"
        if self.not_due and self.sent_at is not None:
            return f"scheduled: due at {self.sent_at:%Y-%m-%d %H:%M:%S %Z}"
        if self.retry_later and self.next_retry_at is not None:
            return f"retry waits until {self.next_retry_at:%Y-%m-%d %H:%M:%S %Z}"
        if self.limit_name is not None and not self.registered:
            return (
                f"waiting: {self.limit_text}; no worker has registered this limit, so its tasks"
                " wait until a worker whose app defines it starts"
            )
        if self.held:
            return f"waiting: {self.limit_text} ({self.counts_text})"
        if self.limit_name is not None:
            return f"waiting for a free worker ({self.limit_text} has room: {self.counts_text})"
        return "waiting for a free worker"


@dataclass(frozen=True, slots=True)
class TaskSummary(TaskRef):
    status: str
    sent_at: datetime | None
    retry_count: int
    wait: TaskWait | None = None
    """Why it has not started, for a PENDING task."""


@dataclass(frozen=True, slots=True)
class TaskDetail:
    """One task's row, while it is PENDING why it waits, and every attempt of its code so far
    (oldest first, as ``TaskHandle.attempts()`` lists them)."""

    row: dict[str, Any]
    wait: TaskWait | None = None
    attempts: tuple[TaskAttempt, ...] = ()


@dataclass(frozen=True, slots=True)
class TasksData:
    groups: tuple[TaskGroup, ...]
    expanded: str | None
    expanded_tasks: tuple[TaskSummary, ...]
    count_cap: int
    """Where the groups' finished counts stopped (shown as "cap+")."""


@dataclass(frozen=True, slots=True)
class NodeCounts:
    """How far a workflow's nodes got: progress is the share of COMPLETED nodes only (a failed or
    skipped node, such as those of a cancelled workflow, is not progress)."""

    total: int
    completed: int
    failed: int
    skipped: int

    @property
    def progress(self) -> float:
        return self.completed / self.total if self.total else 0.0

    def describe(self) -> str:
        """``3/6 completed · 1 failed · 2 skipped`` (zero counts left out)."""
        parts = [f"{self.completed}/{self.total} completed"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        return " · ".join(parts)


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    workflow_id: str
    name: str
    status: str
    nodes: NodeCounts
    updated_at: datetime

    @property
    def progress(self) -> float:
        return self.nodes.progress


@dataclass(frozen=True, slots=True)
class WorkflowNode:
    index: int
    node_id: str | None
    task_name: str
    status: str
    task_id: str | None
    queue_name: str
    dependencies: tuple[int, ...]
    is_subworkflow: bool


@dataclass(frozen=True, slots=True)
class WorkflowDetail:
    row: dict[str, Any]
    nodes: tuple[WorkflowNode, ...] = field(default_factory=tuple)

    @property
    def status(self) -> str:
        return str(self.row.get("status"))

    @property
    def counts(self) -> NodeCounts:
        statuses = [node.status for node in self.nodes]
        return NodeCounts(
            total=len(statuses),
            completed=statuses.count("COMPLETED"),
            failed=statuses.count("FAILED"),
            skipped=statuses.count("SKIPPED"),
        )


@dataclass(frozen=True, slots=True)
class SnapshotAge:
    worker_id: str
    hostname: str
    pid: int
    snapshot_at: datetime
    age_s: float


@dataclass(frozen=True, slots=True)
class MaintenanceData:
    ages: tuple[SnapshotAge, ...]
    """Workers seen in the maintenance window that did not stop (running, or dead)."""
    stopped: tuple[SnapshotAge, ...]
    """Workers whose last snapshot says they stopped cleanly (``snapshot_at``: when)."""
    dead_after_s: float

    @property
    def dead(self) -> tuple[SnapshotAge, ...]:
        """Workers silent for longer than ``dead_after_s`` without having stopped: they died."""
        return tuple(a for a in self.ages if a.age_s > self.dead_after_s)


@dataclass(frozen=True, slots=True)
class LimitInfo:
    """One rate or concurrency limit: its numbers (None when no worker registered it) and the
    counts of its live tasks."""

    name: str
    concurrency: int | None
    rate: int | None
    per_ms: int | None
    registered: bool
    waiting: int
    held: int
    """Waiting tasks whose key is at its concurrency or rate (or whose limit nobody
    registered): they wait on the limit; the others wait for a free worker."""
    in_flight: int
    starts_in_window: int
    keys_waiting: int
    workers: int = 0
    """Live workers whose latest snapshot says they enforce it."""

    @property
    def numbers(self) -> str:
        """``2 at once · 10 per 1s`` (per key), ``-`` when not registered."""
        parts: list[str] = []
        if self.concurrency is not None:
            parts.append(f"{self.concurrency} at once")
        if self.rate is not None and self.per_ms is not None:
            parts.append(f"{self.rate} per {per_text(self.per_ms)}")
        return " · ".join(parts) or "-"


@dataclass(frozen=True, slots=True)
class LimitKey:
    """One key of a limit and its live counts."""

    key: str
    waiting: int
    in_flight: int
    starts_in_window: int
    held: bool


@dataclass(frozen=True, slots=True)
class LimitsData:
    """The Limits tab: every limit, and the busiest keys of the selected one."""

    limits: tuple[LimitInfo, ...]
    selected: str | None
    keys: tuple[LimitKey, ...]
