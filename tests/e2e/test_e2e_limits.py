"""Rate and concurrency limits on real workers, several at once: per-key concurrency is never
exceeded (from the rows' own start and end times), a rate limit's sliding window holds and is
filled when saturated, a busy key does not starve another, and a retry frees its key's slot."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apps.limits import RATED, create_app
from e2e_harness import Db, StartWorker, WorkerProcess, producer_app, wait_until
from horsies.app import Horsies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

app = producer_app(create_app)

StartOwn = Callable[..., WorkerProcess]


@pytest.fixture
def workers(start_worker: StartWorker) -> Iterator[StartOwn]:
    """``start_worker`` whose workers stop when the test ends (the module's fixture keeps them
    for the module): each test sees only its own workers' modes and caps."""
    started: list[WorkerProcess] = []

    def start(app_module: str, *args: str) -> WorkerProcess:
        worker = start_worker(app_module, *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.reap()


def _rows(db: Db, task_name: str) -> list[dict[str, Any]]:
    return db.query(
        "SELECT id, status, args, limit_key, sent_at, started_at, completed_at, retry_count "
        "FROM horsies_tasks WHERE task_name = %s ORDER BY started_at",
        (task_name,),
    )


def _all_completed(db: Db, task_name: str, count: int) -> bool:
    rows = _rows(db, task_name)
    return len(rows) == count and all(r["status"] == "COMPLETED" for r in rows)


def _overlaps(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Pairs of tasks of one key whose runs overlap (start of the next before end of the last)."""
    found: list[tuple[str, str]] = []
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault(row["limit_key"], []).append(row)
    for runs in by_key.values():
        runs.sort(key=lambda r: r["started_at"])
        for before, after in itertools.pairwise(runs):
            if after["started_at"] < before["completed_at"]:
                found.append((before["id"], after["id"]))
    return found


def test_one_task_per_tenant_at_a_time_across_two_workers(
    workers: StartOwn, app: Horsies, db: Db
) -> None:
    for _ in range(2):
        workers("limits", "--processes", "3")
    calls = [{"tenant": f"t{i % 4}", "seconds": 0.1} for i in range(24)]
    handles = app.tasks["lim.per_tenant"].send_many(calls)
    free = app.tasks["lim.free"].send_many([{"seconds": 0.05}] * 12)
    assert all(h.sent for h in [*handles, *free])
    peak: dict[str, int] = {}

    def sampled_done() -> bool:
        for row in db.query(
            "SELECT limit_key, count(*) AS n FROM horsies_tasks "
            "WHERE task_name = 'lim.per_tenant' AND status = 'RUNNING' GROUP BY limit_key"
        ):
            peak[row["limit_key"]] = max(peak.get(row["limit_key"], 0), row["n"])
        return _all_completed(db, "lim.per_tenant", 24)

    wait_until(sampled_done, 90, "every limited task to finish", interval=0.02)
    rows = _rows(db, "lim.per_tenant")
    assert {r["limit_key"] for r in rows} == {"t0", "t1", "t2", "t3"}
    assert _overlaps(rows) == []
    assert max(peak.values()) == 1
    # The tenants ran side by side: the whole took well under the 2.4 s of one at a time.
    span = max(r["completed_at"] for r in rows) - min(r["started_at"] for r in rows)
    assert span < timedelta(seconds=2.0), span
    assert all(h.get(timeout_ms=30_000).is_ok() for h in free)


def test_a_rate_limit_holds_its_sliding_window_and_fills_it(
    workers: StartOwn, app: Horsies, db: Db
) -> None:
    for _ in range(2):
        workers("limits", "--processes", "2")
    assert RATED.rate is not None
    count, window = 21 * RATED.rate, timedelta(seconds=RATED.per_s)  # 21 windows
    assert all(h.sent for h in app.tasks["lim.rated"].send_many([{"n": i} for i in range(count)]))
    wait_until(lambda: _all_completed(db, "lim.rated", count), 90, "the rated tasks to finish")
    starts: list[datetime] = sorted(r["started_at"] for r in _rows(db, "lim.rated"))
    # Never more than `rate` starts within any window of `per_s`.
    crowded = [(a, b) for a, b in zip(starts, starts[RATED.rate :], strict=False) if b - a < window]
    assert crowded == []
    # Saturated, the windows are used: the achieved rate is within 10 % of the limit.
    achieved = (count - RATED.rate) / (starts[-1] - starts[0]).total_seconds()
    assert achieved >= 0.9 * RATED.rate / RATED.per_s, achieved


def test_a_busy_key_does_not_starve_another(workers: StartOwn, app: Horsies, db: Db) -> None:
    workers("limits", "--processes", "2")
    wide = app.tasks["lim.wide"]
    assert all(h.sent for h in wide.send_many([{"tenant": "a", "seconds": 0.01}] * 1500))

    def a_done() -> bool:
        rows = db.query(
            "SELECT count(*) AS n FROM horsies_tasks "
            "WHERE task_name = 'lim.wide' AND status = 'COMPLETED'"
        )
        return rows[0]["n"] >= 30

    wait_until(a_done, 60, "key a's tasks to be running")
    b = wide.send("b", 0.0)
    assert b.get(timeout_ms=30_000).is_ok()
    b_row = db.task(b.task_id)
    a_started_meanwhile = db.query(
        "SELECT count(*) AS n FROM horsies_tasks WHERE task_name = 'lim.wide' "
        "AND limit_key = 'a' AND started_at > %s AND started_at < %s",
        (b_row["sent_at"], b_row["started_at"]),
    )[0]["n"]
    # Two children: B goes at the first claim that sees it, beside at most one more task of a.
    assert a_started_meanwhile <= 4, a_started_meanwhile
    pending_a = db.query(
        "SELECT count(*) AS n FROM horsies_tasks WHERE limit_key = 'a' AND status = 'PENDING'"
    )[0]["n"]
    assert pending_a > 0  # a was still busy when b went


def test_a_retry_frees_its_keys_slot_and_keeps_it_exact(
    workers: StartOwn, app: Horsies, db: Db, tmp_path: Path
) -> None:
    workers("limits", "--processes", "3", "--async-concurrency", "5")
    flaky = app.tasks["lim.flaky"].send("r", str(tmp_path / "flaky-marker"))
    others = app.tasks["lim.per_tenant"].send_many([{"tenant": "r", "seconds": 0.2}] * 3)
    mixed = app.tasks["lim.per_tenant_async"].send_many([{"tenant": "r", "seconds": 0.2}] * 3)
    assert flaky.get(timeout_ms=60_000).is_ok()
    assert all(h.get(timeout_ms=60_000).is_ok() for h in [*others, *mixed])
    rows = db.query(
        "SELECT id, limit_key, started_at, completed_at FROM horsies_tasks "
        "WHERE limit_name = 'per-tenant' AND limit_key = 'r'"
    )
    assert len(rows) == 7
    assert _overlaps(rows) == []  # sync and async tasks of one key share its one slot
    assert db.task(flaky.task_id)["retry_count"] == 1


def test_prefetch_mode_never_prefetches_a_limited_task_and_keeps_the_limit(
    workers: StartOwn, app: Horsies, db: Db
) -> None:
    workers("limits_prefetch", "--processes", "3")
    limited = app.tasks["lim.per_tenant"].send_many(
        [{"tenant": f"p{i % 2}", "seconds": 0.05} for i in range(12)]
    )
    free = app.tasks["lim.free"].send_many([{"seconds": 0.01}] * 40)
    assert all(h.get(timeout_ms=60_000).is_ok() for h in [*limited, *free])
    rows = db.query(
        "SELECT id, limit_key, started_at, completed_at FROM horsies_tasks WHERE id = ANY(%s)",
        ([h.task_id for h in limited],),
    )
    assert len(rows) == 12
    assert _overlaps(rows) == []


def test_with_a_cluster_wide_cap_both_the_cap_and_the_limit_hold(
    workers: StartOwn, app: Horsies, db: Db
) -> None:
    for _ in range(2):
        workers("limits_capped", "--processes", "3")
    limited = app.tasks["lim.per_tenant"].send_many(
        [{"tenant": f"c{i % 3}", "seconds": 0.1} for i in range(12)]
    )
    free = app.tasks["lim.free"].send_many([{"seconds": 0.1}] * 12)
    peak_in_flight = 0

    def sampled_done() -> bool:
        nonlocal peak_in_flight
        row = db.query(
            "SELECT count(*) FILTER (WHERE status IN ('CLAIMED', 'RUNNING')) AS busy,"
            " count(*) FILTER (WHERE status = 'COMPLETED') AS done FROM horsies_tasks"
            " WHERE id = ANY(%s)",
            ([h.task_id for h in [*limited, *free]],),
        )[0]
        peak_in_flight = max(peak_in_flight, row["busy"])
        return row["done"] == 24

    wait_until(sampled_done, 90, "every task to finish", interval=0.02)
    rows = db.query(
        "SELECT id, limit_key, started_at, completed_at FROM horsies_tasks WHERE id = ANY(%s)",
        ([h.task_id for h in limited],),
    )
    assert _overlaps(rows) == []
    assert peak_in_flight <= 4  # the cluster-wide cap of limits_capped.py


def test_a_running_worker_shows_its_limits_and_what_waits_on_them(
    workers: StartOwn, app: Horsies, db: Db
) -> None:
    """Its snapshot lists the limits it enforces; the broker tells the tasks one tenant's slot
    holds back from the ones that only wait for a worker."""
    workers("limits", "--processes", "2")
    held = app.tasks["lim.per_tenant"].send_many([{"tenant": "busy", "seconds": 2.0}] * 4)
    assert all(h.sent for h in held)

    def snapshot_limits() -> object:
        rows = db.query(
            "SELECT limits FROM horsies_worker_states WHERE stopped_at IS NULL "
            "ORDER BY snapshot_at DESC LIMIT 1"
        )
        return rows[0]["limits"] if rows else None

    wait_until(lambda: snapshot_limits() is not None, 30, "a snapshot")
    assert snapshot_limits() == {"default": ["per-tenant", "rated", "wide"]}
    broker = app.get_broker()

    def per_tenant() -> dict[str, Any]:
        return next(s for s in broker.get_limit_stats_sync() if s["name"] == "per-tenant")

    seen: list[dict[str, Any]] = []

    def first_started() -> bool:
        seen.append(per_tenant())
        return seen[-1]["in_flight"] == 1

    wait_until(first_started, 30, "busy's first task to start")
    stats = seen[-1]  # read while the first of the 2-second tasks runs
    assert (stats["registered"], stats["concurrency"]) == (True, 1)
    assert (stats["waiting"], stats["held"], stats["keys_waiting"]) == (3, 3, 1)
    assert stats["busiest_keys"] == [
        {"key": "busy", "waiting": 3, "in_flight": 1, "starts_in_window": 0, "held": True}
    ]
    assert all(h.get(timeout_ms=60_000).is_ok() for h in held)
    done = per_tenant()
    assert (done["waiting"], done["in_flight"], done["busiest_keys"]) == (0, 0, [])
