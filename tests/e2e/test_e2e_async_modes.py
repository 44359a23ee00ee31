"""``async def`` tasks share a child in the two claim modes beside the default one: under
cluster-wide caps (claimed mode), where the caps still bound them, and in prefetch mode.

Each test stops its worker before the next starts (the worker factory is shared by the module), so
every task of a test ran on that test's one child.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from apps import caps, prefetch
from e2e_harness import StartWorker, producer_app
from horsies.app import Horsies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GET_MS = 60_000

caps_app = producer_app(caps.create_app, "caps_app")
prefetch_app = producer_app(prefetch.create_app, "prefetch_app")


def max_overlap(spans: Sequence[Sequence[float]]) -> int:
    """Largest number of [start, end) spans open at the same moment."""
    events = sorted([(s[0], 1) for s in spans] + [(s[1], -1) for s in spans])
    current = best = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def test_async_tasks_share_one_child_up_to_the_cluster_cap(
    start_worker: StartWorker, caps_app: Horsies
) -> None:
    """One child, default --async-concurrency 10, cluster_wide_cap 3: the child runs several
    async tasks at once, and never more than the cap."""
    worker = start_worker("caps", "--processes", "1")
    try:
        naps = caps_app.tasks["caps.wide_nap"].send_many([(1.0,) for _ in range(6)])
        spans = [h.get(timeout_ms=GET_MS).unwrap() for h in naps]
    finally:
        worker.reap()
    assert len({span[2] for span in spans}) == 1
    assert max_overlap(spans) == caps.CLUSTER_CAP


def test_async_tasks_run_side_by_side_in_a_prefetching_child(
    start_worker: StartWorker, prefetch_app: Horsies
) -> None:
    """Prefetch mode, one child: ten async tasks that each sleep 1 s all run at once in it (the
    claims waiting locally and the tasks started straight from PENDING both fill its slots)."""
    worker = start_worker("prefetch", "--processes", "1")
    try:
        naps = prefetch_app.tasks["pf.nap"].send_many([(1.0,) for _ in range(10)])
        spans = [h.get(timeout_ms=GET_MS).unwrap() for h in naps]
    finally:
        worker.reap()
    assert len({span[2] for span in spans}) == 1
    assert max_overlap(spans) == 10
