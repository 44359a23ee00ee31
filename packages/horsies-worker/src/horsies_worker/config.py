"""Worker configuration: CLI options plus what the worker derives from the app."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict, Unpack

from horsies.config import QueueMode, RecoveryConfig

if TYPE_CHECKING:
    from horsies.app import Horsies

LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""Accepted ``--loglevel`` values (case-insensitive on the command line)."""

STARTUP_TIMEOUT_S = 30.0
"""Upper bound for ``Worker.start()`` (children ready, listener subscribed): past it, start-up
fails (``RuntimeError``; the CLI exits with status 1) instead of hanging."""

DEFAULT_ASYNC_CONCURRENCY = 10
"""How many ``async def`` tasks one child runs at once unless ``--async-concurrency`` says."""

SNAPSHOT_INTERVAL_S = 5.0
"""Period of worker-state snapshots (``horsies_worker_states`` rows)."""

DEFAULT_METRICS_HOST = "127.0.0.1"
"""The address ``--metrics-port`` binds unless ``--metrics-host`` says: this host only, as the
metrics are served without authentication."""


def default_processes() -> int:
    """Return the default child-process count: the machine's CPU count, at least 1."""
    return os.cpu_count() or 1


class WorkerTuning(TypedDict, total=False):
    """How a worker claims, polls and stops: the options of :func:`~horsies_worker.run_worker` and
    :meth:`WorkerConfig.from_app` besides ``processes`` and ``loglevel``. Their defaults are
    :class:`WorkerConfig`'s."""

    max_claim_batch: int
    max_claim_per_worker: int
    async_concurrency: int
    shutdown_timeout_s: float
    poll_interval_s: float
    startup_timeout_s: float
    metrics_port: int | None
    metrics_host: str


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One queue served by the worker, as the claimer needs it.

    ``max_concurrency`` is the cluster-wide cap of a CUSTOM queue; ``None`` in DEFAULT mode.
    """

    name: str
    priority: int
    max_concurrency: int | None


@dataclass(slots=True)
class WorkerConfig:
    """Everything a worker run needs, fixed at start-up.

    Build it with :meth:`from_app` (which reads queues, caps and recovery settings from the app)
    rather than by hand; the CLI and :func:`horsies_worker.run_worker` both do.
    """

    locator: str
    """Canonical app locator (``<module>:<var>`` or ``<real file path>:<var>``) for the children."""
    processes: int = field(default_factory=default_processes)
    loglevel: str = "INFO"
    max_claim_batch: int = 2
    max_claim_per_worker: int = 0
    async_concurrency: int = DEFAULT_ASYNC_CONCURRENCY
    """How many ``async def`` tasks one child runs at once (see docs/async-tasks.md)."""
    shutdown_timeout_s: float = 30.0
    poll_interval_s: float = 1.0
    startup_timeout_s: float = STARTUP_TIMEOUT_S
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port (0: one the system picks, logged); None: no metrics
    (see docs/production.md, "Metrics"; needs the ``metrics`` extra)."""
    metrics_host: str = DEFAULT_METRICS_HOST
    """The address the metrics server binds."""
    queue_mode: QueueMode = QueueMode.DEFAULT
    queues: list[QueueSpec] = field(default_factory=lambda: [QueueSpec("default", 100, None)])
    cluster_wide_cap: int | None = None
    prefetch_buffer: int = 0
    claim_lease_ms: int | None = None
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    task_modules: list[str] = field(default_factory=lambda: [])
    sys_path_roots: list[str] = field(default_factory=lambda: [])

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1 (got {self.processes})")
        if self.max_claim_batch < 1:
            raise ValueError(f"max_claim_batch must be >= 1 (got {self.max_claim_batch})")
        if self.async_concurrency < 1:
            raise ValueError(f"async_concurrency must be >= 1 (got {self.async_concurrency})")
        if self.max_claim_per_worker < 0:
            raise ValueError(f"max_claim_per_worker must be >= 0 (got {self.max_claim_per_worker})")
        if self.shutdown_timeout_s < 0:
            raise ValueError(f"shutdown_timeout_s must be >= 0 (got {self.shutdown_timeout_s})")
        if self.poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0 (got {self.poll_interval_s})")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be in 0..65535 (got {self.metrics_port})")
        level = self.loglevel.upper()
        if level not in LOG_LEVELS:
            raise ValueError(
                f"loglevel must be one of {', '.join(LOG_LEVELS)} (got {self.loglevel!r})"
            )
        self.loglevel = level

    @property
    def soft_cap(self) -> bool:
        """True in soft-cap (prefetch) mode: ``prefetch_buffer > 0`` (see docs/worker.md)."""
        return self.prefetch_buffer > 0

    @property
    def cluster_capped(self) -> bool:
        """True when a cluster-wide cap applies (``cluster_wide_cap`` or a queue's
        ``max_concurrency``): claims then need the cluster claim lock, and finished rows free
        capacity other workers may wait for."""
        return self.cluster_wide_cap is not None or any(
            q.max_concurrency is not None for q in self.queues
        )

    @property
    def queue_names(self) -> list[str]:
        """Served queue names in claim order (ascending priority, ties keep config order)."""
        return [q.name for q in self.queues]

    @property
    def effective_max_claim_per_worker(self) -> int:
        """The value reported in worker-state snapshots: ``processes`` when the option is 0."""
        return self.max_claim_per_worker if self.max_claim_per_worker > 0 else self.processes

    @classmethod
    def from_app(
        cls,
        app: Horsies,
        *,
        locator: str,
        sys_path_roots: list[str] | None = None,
        processes: int | None = None,
        loglevel: str = "INFO",
        **tuning: Unpack[WorkerTuning],
    ) -> WorkerConfig:
        """Derive the worker configuration from ``app`` plus the CLI / ``run_worker`` options
        (``processes`` None: the CPU count)."""
        cfg = app.config
        queues: list[QueueSpec]
        if cfg.queue_mode == QueueMode.CUSTOM:
            custom = list(cfg.custom_queues or [])
            # sorted() is stable, so equal priorities keep their configuration order.
            queues = [
                QueueSpec(q.name, q.priority, q.max_concurrency)
                for q in sorted(custom, key=lambda q: q.priority)
            ]
        else:
            queues = [QueueSpec("default", 100, None)]
        modules: list[str] = []
        for module in app.get_discovered_task_modules():
            if module not in modules:
                modules.append(module)
        roots = list(sys_path_roots or [])
        for module in modules:
            if module.endswith(".py") or os.sep in module or "/" in module:
                directory = os.path.dirname(os.path.realpath(module))
                if directory not in roots:
                    roots.append(directory)
        return cls(
            locator=locator,
            processes=processes if processes is not None else default_processes(),
            loglevel=loglevel,
            queue_mode=cfg.queue_mode,
            queues=queues,
            cluster_wide_cap=cfg.cluster_wide_cap,
            prefetch_buffer=cfg.prefetch_buffer,
            claim_lease_ms=cfg.claim_lease_ms,
            recovery=cfg.recovery,
            task_modules=modules,
            sys_path_roots=roots,
            **tuning,
        )
