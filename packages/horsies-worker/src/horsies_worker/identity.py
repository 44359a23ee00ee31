"""Who a worker is, as the rows it writes name it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """One worker run, fixed at start-up: claims, heartbeats, snapshots and crash reports all name
    the worker by these."""

    worker_id: str
    hostname: str
    pid: int
    """The main process's pid."""
    started_at: datetime
