"""The schedule state store: the service's only door to the database.

Thin async wrappers that run the sans-IO operations of `horsies.broker.schedules` on the
broker's async pool (``PostgresBroker.execute_async``); the service never writes SQL. Driver
errors arrive as `horsies.broker.BrokerError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from horsies.broker.schedules import (
    DueResult,
    InitReport,
    ScheduleTarget,
    StateSnapshot,
    initialize_states_op,
    load_states_op,
    run_due_op,
)

if TYPE_CHECKING:
    from horsies.broker.postgres import PostgresBroker

__all__ = ["ScheduleStore"]


class ScheduleStore:
    """Reads and writes ``horsies_schedule_state`` rows (and the task rows of due runs)."""

    def __init__(self, broker: PostgresBroker) -> None:
        self.broker = broker

    async def load(self, names: Sequence[str]) -> StateSnapshot:
        """The database clock and the state rows of `names` (one statement)."""
        return await self.broker.execute_async(load_states_op(names), action="schedule_load")

    async def initialize(self, targets: Sequence[ScheduleTarget]) -> InitReport:
        """Create missing rows, reset rows whose config hash (pattern, timezone) changed."""
        return await self.broker.execute_async(
            initialize_states_op(targets), action="schedule_initialize"
        )

    async def run_due(self, target: ScheduleTarget) -> DueResult:
        """Run `target` if due: lock, re-read, enqueue, advance, in one transaction.

        Raises `ScheduleRaceLost` when the row changed under the lock (rolled back).
        """
        return await self.broker.execute_async(
            run_due_op(target), action="schedule_run", transaction=True
        )
