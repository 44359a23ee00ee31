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

from horsies_worker.modes.base import ClaimMode
from horsies_worker.modes.claimed import ClaimedMode
from horsies_worker.modes.direct import DirectStartMode
from horsies_worker.modes.prefetch import PrefetchMode
from horsies_worker.state import WorkerState

__all__ = ["ClaimMode", "ClaimedMode", "DirectStartMode", "PrefetchMode", "choose_mode"]


def choose_mode(state: WorkerState) -> ClaimMode:
    """The mode of a worker's configuration."""
    config = state.config
    if config.cluster_capped:
        return ClaimedMode(state)
    if config.soft_cap:
        return PrefetchMode(state)
    return DirectStartMode(state)
