"""What every claim mode is: one pass of the worker's claim loop over the worker's state."""

from __future__ import annotations

from typing import ClassVar

from horsies_worker.state import WorkerState

__all__ = ["ClaimMode"]


class ClaimMode:
    """One pass of a worker's claim loop."""

    writes_outcomes: ClassVar[bool]
    """True when the passes write the completer's outcomes themselves (in their round trips);
    False when the completer's own writer must run."""

    def __init__(self, state: WorkerState) -> None:
        self._state = state

    async def run_pass(self) -> None:
        """Write what is due, claim and start what fits; raise to be retried after a back-off."""
        raise NotImplementedError
