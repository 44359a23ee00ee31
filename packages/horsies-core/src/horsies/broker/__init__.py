"""The PostgreSQL broker: storage, messaging (LISTEN/NOTIFY), locking and coordination of horsies.

`PostgresBroker` is the only class most code needs (``app.broker``); the value types in
``horsies.broker.types`` are what the worker exchanges with it.
"""

from __future__ import annotations

from horsies.broker.errors import BrokerError
from horsies.broker.postgres import PostgresBroker
from horsies.broker.types import (
    ClaimedTask,
    ClaimRequest,
    EnqueueRequest,
    InFlight,
    QueueClaimSpec,
    ReapReport,
    StartedTask,
    TaskExchange,
    TaskOutcome,
    WorkerStateRow,
)

__all__ = [
    "BrokerError",
    "ClaimRequest",
    "ClaimedTask",
    "EnqueueRequest",
    "InFlight",
    "PostgresBroker",
    "QueueClaimSpec",
    "ReapReport",
    "StartedTask",
    "TaskExchange",
    "TaskOutcome",
    "WorkerStateRow",
]
