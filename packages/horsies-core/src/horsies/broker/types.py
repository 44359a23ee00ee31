"""Value types exchanged with the broker: requests, claimed rows, outcomes, reports.

Plain frozen dataclasses with no behaviour, so that the worker (and tests) can build and inspect
them without a database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "ClaimRequest",
    "ClaimedTask",
    "EnqueueRequest",
    "InFlight",
    "QueueClaimSpec",
    "ReapReport",
    "StartedTask",
    "TaskExchange",
    "TaskOutcome",
    "WorkerStateRow",
]


@dataclass(frozen=True, slots=True)
class EnqueueRequest:
    """One task to insert with `PostgresBroker.enqueue_many` (same fields as
    `PostgresBroker.enqueue`).

    ``args``/``kwargs`` are Python values, encoded with the codec at enqueue time; ``task_options``
    is the options JSON text (02 §12.5); ``task_id`` None means a fresh UUID4.
    """

    task_name: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] | None = None
    queue_name: str = "default"
    priority: int = 100
    sent_at: datetime | None = None
    good_until: datetime | None = None
    task_options: str | None = None
    max_retries: int = 0
    task_id: str | None = None


@dataclass(frozen=True, slots=True)
class QueueClaimSpec:
    """A queue served by a worker: its priority (1 = most urgent) and cluster-wide concurrency
    limit."""

    name: str
    priority: int = 100
    max_concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What one claim pass of a worker may take (04 §5-6, D31).

    ``local_budget`` is the worker's free capacity, already computed by the worker (hard cap:
    processes - running - claimed; soft cap: processes + prefetch - running). ``max_claim_batch``
    caps each queue per pass in both queue modes (0 or less: no per-queue cap). ``cluster_wide_cap``
    caps RUNNING + CLAIMED across the cluster. ``soft_cap`` selects prefetch mode, where claims
    carry a lease of ``claim_lease_ms`` and only RUNNING tasks count as in flight for the queue
    limits.
    """

    queues: Sequence[QueueClaimSpec]
    local_budget: int
    max_claim_batch: int = 2
    cluster_wide_cap: int | None = None
    soft_cap: bool = False
    claim_lease_ms: int | None = None


@dataclass(frozen=True, slots=True)
class InFlight:
    """Cluster-wide counts of one queue's tasks that occupy capacity."""

    running: int = 0
    claimed: int = 0


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task row this worker just moved to CLAIMED; ``args``/``kwargs``/``task_options`` are raw
    JSON text; ``workflow_id`` is set for a workflow node's task."""

    id: str
    task_name: str
    queue_name: str
    priority: int
    args: str | None
    kwargs: str | None
    retry_count: int
    max_retries: int
    task_options: str | None
    sent_at: datetime
    workflow_id: str | None = None


@dataclass(frozen=True, slots=True)
class StartedTask:
    """A task this worker just moved from PENDING straight to RUNNING for the child ``pid``."""

    task: ClaimedTask
    pid: int


@dataclass(frozen=True, slots=True)
class PrefetchExchange:
    """What one `PostgresBroker.finish_start_and_claim` call did (prefetch mode).

    ``finished``: ids of the outcomes written; ``started``: ids of the given claims now RUNNING
    (the others were lost: lease expired and taken, or requeued); ``direct``: tasks moved from
    PENDING straight to RUNNING for the given child pids; ``claimed``: tasks newly CLAIMED by this
    worker with a lease, most urgent first.
    """

    finished: set[str] = field(default_factory=set[str])
    started: set[str] = field(default_factory=set[str])
    direct: list[StartedTask] = field(default_factory=list[StartedTask])
    claimed: list[ClaimedTask] = field(default_factory=list[ClaimedTask])


@dataclass(frozen=True, slots=True)
class TaskExchange:
    """What one `PostgresBroker.finish_and_start_tasks` round trip did.

    ``finished``: ids of the outcomes written (the others lost a race and changed nothing);
    ``started``: tasks now RUNNING for the given child pids, most urgent first; ``requeued``: ids of
    untracked RUNNING rows of this worker sent back to PENDING (only when asked to reconcile);
    ``full``: every claim got as many rows as it asked for, so more tasks may be waiting.
    """

    finished: set[str] = field(default_factory=set[str])
    started: list[StartedTask] = field(default_factory=list[StartedTask])
    requeued: list[str] = field(default_factory=list[str])
    full: bool = False


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """The end of one execution, for `PostgresBroker.finish_tasks`.

    ``result_json`` is the encoded TaskResult; ``ok`` selects COMPLETED vs FAILED. A non-None
    ``retry_delay_s`` sends the task back to PENDING for another attempt after that delay instead
    (the result is not stored). ``retry_count``, when given, must equal the row's retry_count: it
    pins the outcome to the attempt that produced it, so a late result can never finish a later
    attempt. ``workflow_id`` (from `ClaimedTask.workflow_id`) makes the write advance that workflow
    in the same transaction.
    """

    task_id: str
    result_json: str
    ok: bool
    retry_delay_s: float | None = None
    failed_reason: str | None = None
    retry_count: int | None = None
    workflow_id: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerStateRow:
    """One worker snapshot for ``horsies_worker_states`` (06 §6.3); ``snapshot_at`` is set by the
    database."""

    worker_id: str
    hostname: str
    pid: int
    processes: int
    max_claim_batch: int
    max_claim_per_worker: int
    queues: Sequence[str]
    tasks_running: int
    tasks_claimed: int
    worker_started_at: datetime
    cluster_wide_cap: int | None = None
    queue_priorities: Mapping[str, int] | None = None
    queue_max_concurrency: Mapping[str, int | None] | None = None
    recovery_config: Mapping[str, Any] | None = None
    memory_usage_mb: float | None = None
    memory_percent: float | None = None
    cpu_percent: float | None = None


@dataclass(frozen=True, slots=True)
class ReapReport:
    """What one reaper pass did: CLAIMED rows requeued, RUNNING rows failed, RUNNING rows sent to
    retry, workflow items reconciled."""

    requeued: int = 0
    failed: int = 0
    retried: int = 0
    reconciled: int = 0
    ran: bool = field(default=True)
    """False when another process held the reaper lock, so this pass did nothing."""
