"""Short recovery thresholds for tests that kill, stall or restart workers.

Stale claims and stale runs are noticed after ``stale_ms`` (2 s unless a test needs more), with
heartbeats and reaper checks every second, so a dead worker's tasks are recovered within a few
seconds. Worker apps import this module as ``tests.recovery_timing`` (they run with the repository
root on ``sys.path``); in-process tests import it as ``recovery_timing``.
"""

from __future__ import annotations

from horsies.config import RecoveryConfig

HEARTBEAT_MS = 1_000
"""Heartbeat interval of claimers and runners, and the reaper's check interval."""


def fast_recovery(stale_ms: int = 2_000) -> RecoveryConfig:
    """Claims and runs are stale after ``stale_ms``; heartbeats and checks every second."""
    return RecoveryConfig(
        claimed_stale_threshold_ms=stale_ms,
        claimer_heartbeat_interval_ms=HEARTBEAT_MS,
        running_stale_threshold_ms=stale_ms,
        runner_heartbeat_interval_ms=HEARTBEAT_MS,
        check_interval_ms=HEARTBEAT_MS,
    )
