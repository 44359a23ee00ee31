"""Local claim budget of one worker: how many tasks one claim pass may ask for, in hard-cap and
soft-cap (prefetch) mode, bounded by max_claim_per_worker."""

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


@pytest.mark.parametrize(
    ("processes", "prefetch", "per_worker", "running", "claimed", "expected"),
    [
        # processes + prefetch_buffer - running: 2 + 3 - 2 = 3 more tasks may be held.
        pytest.param(2, 3, 0, 2, 0, 3, id="soft-cap-allows-prefetch-beyond-processes"),
        # A worker never holds more than processes + prefetch_buffer tasks in total.
        pytest.param(2, 3, 0, 2, 2, 1, id="soft-cap-counts-tasks-already-held"),
        pytest.param(2, 3, 0, 2, 3, 0, id="soft-cap-full"),
        # Explicit max_claim_per_worker=2 with 2 tasks already claimed: nothing more this pass.
        pytest.param(8, 4, 2, 0, 2, 0, id="claimed-guard-stops-at-max-claim-per-worker"),
        # 12 free slots, but only 3 more claimed-not-running tasks are allowed.
        pytest.param(8, 4, 3, 0, 0, 3, id="claimed-guard-limits-one-pass"),
        pytest.param(8, 0, 3, 1, 1, 2, id="claimed-guard-counts-the-claimed-ones"),
        pytest.param(1, 0, 0, 5, 5, 0, id="never-negative"),
    ],
)
def test_budget_with_prefetch_and_the_claimed_guard(
    processes: int, prefetch: int, per_worker: int, running: int, claimed: int, expected: int
) -> None:
    budget = local_budget(
        processes=processes,
        prefetch_buffer=prefetch,
        max_claim_per_worker=per_worker,
        running=running,
        claimed=claimed,
    )
    assert budget == expected
