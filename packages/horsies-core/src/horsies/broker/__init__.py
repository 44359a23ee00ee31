"""The PostgreSQL broker: storage, messaging (LISTEN/NOTIFY), locking and coordination of horsies.

`PostgresBroker` is the only class most code needs (``app.broker``); the value types in
``horsies.broker.types`` are what the worker exchanges with it.

`PostgresBroker` and `BrokerError` are imported on first access, so that importing the sans-IO
parts of this package (``ops``, ``workflow_ops``, ``types``) does not load the database driver:
``import horsies`` stays light for code that only defines tasks and workflows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from horsies.broker.errors import BrokerError
    from horsies.broker.postgres import PostgresBroker

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


def __getattr__(name: str) -> Any:
    if name == "PostgresBroker":
        from horsies.broker.postgres import PostgresBroker

        return PostgresBroker
    if name == "BrokerError":
        from horsies.broker.errors import BrokerError

        return BrokerError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
