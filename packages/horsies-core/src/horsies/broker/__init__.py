"""The PostgreSQL broker: storage, messaging (LISTEN/NOTIFY), locking and coordination of horsies.

`PostgresBroker` is the only class most code needs (``app.broker``); the value types exported here
are what the worker exchanges with it. Every other module of the package is named by what it
holds: one module per operation (``enqueue``, ``claims``, ``exchange``, ``finish``, ...), the step
protocol they share (``steps``), and the I/O that runs them.

`PostgresBroker` is imported on first access, so that importing the sans-IO parts of this package
does not load the database driver: ``import horsies`` stays light for code that only defines tasks
and workflows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from horsies.broker.claim_plan import ClaimRequest, InFlight, QueueClaimSpec
from horsies.broker.claims import ClaimedTask
from horsies.broker.enqueue import EnqueueRequest
from horsies.broker.errors import BrokerError
from horsies.broker.exchange import StartedTask, TaskExchange
from horsies.broker.finish import TaskOutcome
from horsies.broker.heartbeats import WorkerStateRow
from horsies.broker.recovery import ReapReport

if TYPE_CHECKING:
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
        # Loads the database driver, which code that only defines tasks does not need.
        from horsies.broker.postgres import PostgresBroker

        return PostgresBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
