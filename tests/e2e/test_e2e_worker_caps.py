"""Two concurrent workers never exceed a queue's max_concurrency or the cluster_wide_cap.

Caps are cluster-wide, enforced inside the claim transaction. Each task records its
own start and end time; the measured intervals lie inside the rows' RUNNING windows, so their
maximum overlap can never exceed a cap the database enforces.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from apps.caps import CLUSTER_CAP, LIMITED_MAX, create_app
from e2e_harness import StartWorker, producer_app
from horsies.app import Horsies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def max_overlap(spans: Sequence[Sequence[float]]) -> int:
    """Largest number of [start, end) intervals that are open at the same moment."""
    events = sorted([(s[0], 1) for s in spans] + [(s[1], -1) for s in spans])
    current = best = 0
    for _, delta in events:  # at equal times, -1 sorts before +1: touching spans do not overlap
        current += delta
        best = max(best, current)
    return best


app = producer_app(create_app)


def test_two_workers_respect_queue_and_cluster_caps(
    start_worker: StartWorker, app: Horsies
) -> None:
    first = start_worker("caps", "--processes", "3")
    second = start_worker("caps", "--processes", "3")
    limited = app.tasks["caps.limited_span"].send_many([(0.25,) for _ in range(8)])
    wide = app.tasks["caps.wide_span"].send_many([(0.25,) for _ in range(8)])

    limited_spans = [h.get(timeout_ms=60_000).unwrap() for h in limited]
    wide_spans = [h.get(timeout_ms=60_000).unwrap() for h in wide]

    # 6 child processes in total, yet never more than 2 "limited" and 3 tasks overall at once.
    assert max_overlap(limited_spans) <= LIMITED_MAX
    assert max_overlap(limited_spans + wide_spans) <= CLUSTER_CAP
    # The caps were actually reached (the test would be vacuous otherwise): the "limited" queue
    # is the most urgent, so the first claim pass fills it up to its cap.
    assert max_overlap(limited_spans) == LIMITED_MAX
    assert max_overlap(limited_spans + wide_spans) >= 2
    assert first.alive
    assert second.alive


def test_max_overlap_helper() -> None:
    assert max_overlap([[0, 1], [1, 2]]) == 1
    assert max_overlap([[0, 2], [1, 3], [1.5, 4]]) == 3
