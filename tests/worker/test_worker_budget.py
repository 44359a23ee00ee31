"""Local claim budget of one worker (spec 04 §5 steps 1 and 4, §6)."""

from __future__ import annotations

import pytest
from horsies_worker.claimer import local_budget, max_claimed


@pytest.mark.parametrize(
    ("processes", "prefetch", "per_worker", "expected"),
    [
        (4, 0, 0, 4),  # hard cap, auto: processes
        (4, 3, 0, 7),  # soft cap, auto: processes + prefetch_buffer
        (4, 0, 2, 2),  # explicit value wins
        (4, 3, 10, 10),
    ],
)
def test_max_claimed_auto_and_explicit(
    processes: int, prefetch: int, per_worker: int, expected: int
) -> None:
    assert max_claimed(processes, prefetch, per_worker) == expected


@pytest.mark.parametrize(
    ("processes", "running", "claimed", "expected"),
    [
        (4, 0, 0, 4),
        (4, 1, 0, 3),
        (4, 1, 1, 2),
        (4, 4, 0, 0),
        (4, 3, 2, 0),  # over-committed: floor at 0
        (1, 0, 0, 1),
    ],
)
def test_hard_cap_budget_is_processes_minus_running_and_claimed(
    processes: int, running: int, claimed: int, expected: int
) -> None:
    assert (
        local_budget(
            processes=processes,
            prefetch_buffer=0,
            max_claim_per_worker=0,
            running=running,
            claimed=claimed,
        )
        == expected
    )


def test_soft_cap_budget_allows_prefetch_beyond_processes() -> None:
    # processes + prefetch_buffer - running: 2 + 3 - 2 = 3 more tasks may be held.
    assert (
        local_budget(processes=2, prefetch_buffer=3, max_claim_per_worker=0, running=2, claimed=0)
        == 3
    )


def test_soft_cap_budget_counts_tasks_already_held() -> None:
    # A worker never holds more than processes + prefetch_buffer tasks in total.
    assert (
        local_budget(processes=2, prefetch_buffer=3, max_claim_per_worker=0, running=2, claimed=2)
        == 1
    )
    assert (
        local_budget(processes=2, prefetch_buffer=3, max_claim_per_worker=0, running=2, claimed=3)
        == 0
    )


def test_claimed_guard_stops_claiming_at_max_claim_per_worker() -> None:
    # Explicit max_claim_per_worker=2 with 2 tasks already claimed: nothing more this pass.
    assert (
        local_budget(processes=8, prefetch_buffer=4, max_claim_per_worker=2, running=0, claimed=2)
        == 0
    )


def test_claimed_guard_limits_one_pass() -> None:
    # 12 free slots, but only 3 more claimed-not-running tasks are allowed.
    assert (
        local_budget(processes=8, prefetch_buffer=4, max_claim_per_worker=3, running=0, claimed=0)
        == 3
    )
    assert (
        local_budget(processes=8, prefetch_buffer=0, max_claim_per_worker=3, running=1, claimed=1)
        == 2
    )


def test_budget_never_negative() -> None:
    assert (
        local_budget(processes=1, prefetch_buffer=0, max_claim_per_worker=0, running=5, claimed=5)
        == 0
    )
