"""How a worker claims and starts tasks: one mode per class, chosen from its configuration.

- :class:`~horsies_worker.modes.direct.DirectStartMode` (hard cap, no cluster-wide cap, the
  default): one round trip writes outcomes and moves a task per idle child from PENDING straight to
  RUNNING.
- :class:`~horsies_worker.modes.prefetch.PrefetchMode` (soft cap, no cluster-wide cap): claims
  ahead with a lease, and queues short tasks on children.
- :class:`~horsies_worker.modes.claimed.ClaimedMode` (any cluster-wide cap): claims under the
  cluster claim lock, then starts what a child can take; outcomes are written by the completer.
"""

from __future__ import annotations

from typing import Protocol

from horsies_worker.modes.claimed import ClaimedMode
from horsies_worker.modes.direct import DirectStartMode
from horsies_worker.modes.prefetch import PrefetchMode
from horsies_worker.state import WorkerState

__all__ = ["ClaimMode", "ClaimedMode", "DirectStartMode", "PrefetchMode", "choose_mode"]


class ClaimMode(Protocol):
    """One pass of a worker's claim loop."""

    writes_outcomes: bool
    """True when the passes write the completer's outcomes themselves (in their round trips);
    False when the completer's own writer must run."""

    async def run_pass(self) -> None:
        """Write what is due, claim and start what fits; raise to be retried after a back-off."""
        ...


def choose_mode(state: WorkerState) -> ClaimMode:
    """The mode of a worker's configuration."""
    config = state.config
    if config.cluster_wide_cap is not None or any(
        q.max_concurrency is not None for q in config.queues
    ):
        return ClaimedMode(state)
    if config.soft_cap:
        return PrefetchMode(state)
    return DirectStartMode(state)
