"""Worker-facing broker methods against PostgreSQL: claim (order, SKIP LOCKED, caps, eligibility),
start/finish/retry/release guards, heartbeats, worker snapshots and the reaper (a crashed
task is retried when it asks for it; max_claim_batch holds in both queue modes)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from db_rows import row, sql
from horsies.broker import (
    ClaimedTask,
    ClaimRequest,
    EnqueueRequest,
    PostgresBroker,
    QueueClaimSpec,
    ReapReport,
    TaskOutcome,
    WorkerStateRow,
)
from horsies.codec import task_result_from_json, task_result_to_json
from horsies.config import PostgresConfig, RecoveryConfig
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.retry import RetryPolicy, TaskOptions

W1, W2 = "worker-one", "worker-two"
DEFAULT_Q = [QueueClaimSpec("default")]
OK_JSON = task_result_to_json(TaskResult(ok=1))
ERR_JSON = task_result_to_json(TaskResult(err=TaskError(error_code="BOOM", message="x")))


def claim_req(budget: int, queues: list[QueueClaimSpec] = DEFAULT_Q, **kw: Any) -> ClaimRequest:
    params: dict[str, Any] = {"max_claim_batch": 0}
    params.update(kw)
    return ClaimRequest(queues=queues, local_budget=budget, **params)


async def claim_and_start(
    broker: PostgresBroker, n: int = 1, worker: str = W1
) -> list[ClaimedTask]:
    claimed = await broker.claim_async(worker, claim_req(n))
    started = await broker.start_async(
        worker, "host-a", [(t.id, t.attempt, 4000 + i) for i, t in enumerate(claimed)]
    )
    assert started == {t.key for t in claimed}
    return claimed


# -- claiming ------------------------------------------------------------------------------------


async def test_claim_order_is_priority_then_fifo(broker: PostgresBroker, clean_db: str) -> None:
    base = datetime.now(UTC) - timedelta(minutes=5)
    spec = [("a", 5, 0), ("b", 1, 1), ("c", 5, 2), ("d", 1, 3), ("e", 3, 4)]
    for name, priority, second in spec:
        await broker.enqueue_async(
            "t", task_id=name, priority=priority, sent_at=base + timedelta(seconds=second)
        )
    one_by_one = [t.id for _ in spec for t in await broker.claim_async(W1, claim_req(1))]
    assert one_by_one == ["b", "d", "e", "a", "c"]


async def test_claim_returns_rows_in_order_and_marks_them(
    broker: PostgresBroker, clean_db: str
) -> None:
    base = datetime.now(UTC) - timedelta(minutes=1)
    for i, priority in enumerate([9, 2, 9, 2]):
        await broker.enqueue_async(
            "mod.t", (i,), {"k": i}, task_id=f"t{i}", priority=priority,
            sent_at=base + timedelta(seconds=i), max_retries=2, task_options="{}",
        )  # fmt: skip
    claimed = await broker.claim_async(W1, claim_req(10))
    assert [t.id for t in claimed] == ["t1", "t3", "t0", "t2"]
    first = claimed[0]
    assert (first.task_name, first.queue_name, first.priority, first.args, first.kwargs) == (
        "mod.t", "default", 2, "[1]", '{"k":1}',
    )  # fmt: skip
    assert (first.retry_count, first.max_retries, first.task_options) == (0, 2, "{}")
    assert (first.attempt, first.key) == (1, ("t1", 1))  # the first claim of the row
    r = row(clean_db, "t1")
    assert r["attempt"] == 1
    assert (r["status"], r["claimed"], r["claimed_by_worker_id"]) == ("CLAIMED", True, W1)
    assert r["claimed_at"] is not None
    assert r["claim_expires_at"] is None  # hard-cap mode: no lease


async def test_claim_skips_rows_locked_by_another_transaction(
    broker: PostgresBroker, clean_db: str
) -> None:
    base = datetime.now(UTC) - timedelta(minutes=1)
    await broker.enqueue_async("t", task_id="first", sent_at=base)
    await broker.enqueue_async("t", task_id="second", sent_at=base + timedelta(seconds=1))
    with psycopg.connect(clean_db) as other:
        other.execute("SELECT id FROM horsies_tasks WHERE id = 'first' FOR UPDATE")
        claimed = await asyncio.wait_for(broker.claim_async(W1, claim_req(2)), 5)
        other.rollback()
    assert [t.id for t in claimed] == ["second"]


async def test_two_concurrent_claimers_never_share_a_task(
    broker: PostgresBroker, clean_db: str, database_url: str
) -> None:
    await broker.enqueue_many_async([EnqueueRequest("t", (i,)) for i in range(120)])
    other = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=1))
    try:

        async def drain(b: PostgresBroker, worker: str) -> list[str]:
            got: list[str] = []
            while batch := await b.claim_async(worker, claim_req(7)):
                got += [t.id for t in batch]
            return got

        # Both pools hold a connection before the race starts: otherwise the first claimer may
        # drain all 120 while the second is still connecting.
        await asyncio.gather(broker.ensure_schema_initialized(), other.ensure_schema_initialized())
        mine, theirs = await asyncio.gather(drain(broker, W1), drain(other, W2))
    finally:
        await other.close_async()
    assert not set(mine) & set(theirs)
    assert len(mine) + len(theirs) == 120
    owners = sql(
        clean_db, "SELECT claimed_by_worker_id AS w, count(*) AS n FROM horsies_tasks GROUP BY 1"
    )
    claimed = {W1: len(mine), W2: len(theirs)}
    assert {o["w"]: o["n"] for o in owners} == {w: n for w, n in claimed.items() if n}


async def test_only_due_unexpired_tasks_are_claimable(
    broker: PostgresBroker, clean_db: str
) -> None:
    now = datetime.now(UTC)
    await broker.enqueue_async("t", task_id="due")
    await broker.enqueue_async("t", task_id="future", sent_at=now + timedelta(minutes=5))
    await broker.enqueue_async("t", task_id="expired", good_until=now - timedelta(seconds=1))
    await broker.enqueue_async("t", task_id="retry-later")
    sql(clean_db, "UPDATE horsies_tasks SET next_retry_at = now() + interval '1 hour' "
        "WHERE id = 'retry-later'")  # fmt: skip
    await broker.enqueue_async("t", task_id="other-queue", queue_name="elsewhere")
    claimed = await broker.claim_async(W1, claim_req(10))
    assert [t.id for t in claimed] == ["due"]
    expired = await broker.get_expired_tasks()
    assert [e["id"] for e in expired] == ["expired"]
    assert set(expired[0]) >= {"id", "task_name", "queue_name", "priority", "sent_at", "good_until",
                               "expired_for"}  # fmt: skip


async def test_soft_cap_claims_carry_a_lease_and_expired_leases_are_reclaimed(
    broker: PostgresBroker, clean_db: str
) -> None:
    await broker.enqueue_async("t", task_id="leased")
    soft = {"soft_cap": True, "claim_lease_ms": 60_000}
    [first] = await broker.claim_async(W1, claim_req(1, **soft))
    lease = row(clean_db, "leased")["claim_expires_at"]
    assert lease is not None
    assert (
        timedelta(seconds=50)
        < lease - row(clean_db, "leased")["claimed_at"]
        <= timedelta(seconds=61)
    )
    assert await broker.claim_async(W2, claim_req(1, **soft)) == []  # lease still valid
    sql(clean_db, "UPDATE horsies_tasks SET claim_expires_at = now() - interval '1 second'")
    [again] = await broker.claim_async(W2, claim_req(1, **soft))
    assert again.id == first.id
    assert (first.attempt, again.attempt) == (1, 2)  # re-claiming an expired lease: a new attempt
    assert row(clean_db, "leased")["claimed_by_worker_id"] == W2
    # The first owner lost the claim: its start is refused.
    assert await broker.start_async(W1, "host", [("leased", first.attempt, 1)]) == set()
    # The new owner naming the old attempt is refused too; its own attempt starts.
    assert await broker.start_async(W2, "host", [("leased", first.attempt, 2)]) == set()
    assert row(clean_db, "leased")["status"] == "CLAIMED"
    assert await broker.start_async(W2, "host", [("leased", again.attempt, 2)]) == {again.key}


async def test_queue_max_concurrency_counts_in_flight_cluster_wide(
    broker: PostgresBroker, clean_db: str
) -> None:
    queues = [QueueClaimSpec("q", 1, max_concurrency=3)]
    await broker.enqueue_many_async([EnqueueRequest("t", queue_name="q") for _ in range(10)])
    first = await broker.claim_async(W2, claim_req(2, queues))  # another worker holds 2
    assert len(first) == 2
    mine = await broker.claim_async(W1, claim_req(10, queues))
    assert len(mine) == 1
    assert await broker.claim_async(W1, claim_req(10, queues)) == []


async def test_cluster_wide_cap_and_max_claim_batch(broker: PostgresBroker, clean_db: str) -> None:
    await broker.enqueue_many_async([EnqueueRequest("t") for _ in range(10)])
    assert len(await broker.claim_async(W1, claim_req(10, max_claim_batch=3))) == 3
    capped = claim_req(10, cluster_wide_cap=5)
    assert len(await broker.claim_async(W2, capped)) == 2  # 3 already in flight
    assert await broker.claim_async(W2, capped) == []


async def test_strict_priority_across_queues(broker: PostgresBroker, clean_db: str) -> None:
    queues = [QueueClaimSpec("slow", 50, 10), QueueClaimSpec("fast", 1, 10)]
    await broker.enqueue_many_async(
        [EnqueueRequest("t", queue_name="slow") for _ in range(5)]
        + [EnqueueRequest("t", queue_name="fast") for _ in range(2)]
    )
    claimed = await broker.claim_async(W1, claim_req(4, queues))
    assert [t.queue_name for t in claimed] == ["fast", "fast", "slow", "slow"]


# -- start / finish / retry / release ------------------------------------------------------------


async def test_start_moves_owned_claims_to_running(broker: PostgresBroker, clean_db: str) -> None:
    await broker.enqueue_async("t", task_id="s1")
    await broker.enqueue_async("t", task_id="s2")
    claimed = await broker.claim_async(W1, claim_req(2))
    assert [t.key for t in claimed] == [("s1", 1), ("s2", 1)]
    assert await broker.start_async(W2, "host-b", [("s1", 1, 11)]) == set()  # not the owner
    # The owner naming another attempt than the row's starts nothing.
    assert await broker.start_async(W1, "host-a", [("s1", 0, 11), ("s2", 2, 12)]) == set()
    assert row(clean_db, "s1")["status"] == row(clean_db, "s2")["status"] == "CLAIMED"
    started = await broker.start_async(
        W1, "host-a", [("s1", 1, 11), ("s2", 1, 12), ("nope", 1, 13)]
    )
    assert started == {("s1", 1), ("s2", 1)}
    r = row(clean_db, "s1")
    assert (r["status"], r["claimed"], r["worker_pid"], r["worker_hostname"]) == (
        "RUNNING", False, 11, "host-a",
    )  # fmt: skip
    assert r["worker_process_name"] == "worker-11"
    assert r["started_at"] is not None
    assert r["claim_expires_at"] is None
    assert await broker.start_async(W1, "host-a", [("s1", 1, 11)]) == set()  # already running


async def finish(
    broker: PostgresBroker, outcomes: list[TaskOutcome], *, worker_id: str | None
) -> set[str]:
    """The ids a finish wrote."""
    return (await broker.finish_async(outcomes, worker_id=worker_id)).ids


async def test_finish_writes_completed_and_failed(broker: PostgresBroker, clean_db: str) -> None:
    await broker.enqueue_many_async([EnqueueRequest("t", task_id=i) for i in ("ok", "bad")])
    await claim_and_start(broker, 2)
    done = await finish(
        broker,
        [TaskOutcome("ok", OK_JSON, True), TaskOutcome("bad", ERR_JSON, False)],
        worker_id=W1,
    )
    assert done == {"ok", "bad"}
    ok, bad = row(clean_db, "ok"), row(clean_db, "bad")
    assert (ok["status"], ok["result"], ok["failed_at"]) == ("COMPLETED", OK_JSON, None)
    assert ok["completed_at"] is not None
    assert (bad["status"], bad["result"], bad["completed_at"]) == ("FAILED", ERR_JSON, None)
    assert bad["failed_at"] is not None
    assert broker.get_result("ok") == TaskResult(ok=1)


async def test_finish_is_guarded_by_status_owner_and_attempt(
    broker: PostgresBroker, clean_db: str
) -> None:
    await broker.enqueue_async("t", task_id="g")
    assert await finish(broker, [TaskOutcome("g", OK_JSON, True)], worker_id=None) == set()
    [task] = await claim_and_start(broker)
    assert task.attempt == 1
    assert await finish(broker, [TaskOutcome("g", OK_JSON, True)], worker_id=W2) == set()
    # An outcome of another attempt than the row's (one before, one after) changes nothing.
    for attempt in (task.attempt - 1, task.attempt + 1):
        stale = TaskOutcome("g", OK_JSON, True, attempt=attempt)
        assert await finish(broker, [stale], worker_id=W1) == set()
    assert row(clean_db, "g")["status"] == "RUNNING"
    current = TaskOutcome("g", OK_JSON, True, attempt=task.attempt)
    assert await finish(broker, [current], worker_id=W1) == {"g"}
    # A second (duplicate) result changes nothing.
    assert await finish(broker, [TaskOutcome("g", ERR_JSON, False)], worker_id=W1) == set()
    assert row(clean_db, "g")["status"] == "COMPLETED"


async def test_retry_outcome_sends_the_task_back_to_pending(
    broker: PostgresBroker, clean_db: str
) -> None:
    await broker.enqueue_async("t", task_id="r", max_retries=3)
    await claim_and_start(broker)
    before = datetime.now(UTC)
    done = await finish(broker, [TaskOutcome("r", ERR_JSON, False, retry_delay_s=30)], worker_id=W1)
    assert done == {"r"}
    r = row(clean_db, "r")
    assert (r["status"], r["retry_count"], r["result"], r["claimed"]) == ("PENDING", 1, None, False)
    assert (r["claimed_by_worker_id"], r["claimed_at"]) == (None, None)
    assert r["next_retry_at"] == r["sent_at"]
    assert before + timedelta(seconds=25) < r["next_retry_at"] < before + timedelta(seconds=40)
    assert await broker.claim_async(W1, claim_req(1)) == []  # not due yet


async def test_finish_wakes_workers_with_a_capacity_notification(
    broker: PostgresBroker, clean_db: str
) -> None:
    await broker.enqueue_async("t", task_id="n")
    await claim_and_start(broker)
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("LISTEN task_new")
        conn.execute("LISTEN task_done")
        await finish(broker, [TaskOutcome("n", OK_JSON, True)], worker_id=W1)
        got = {(n.channel, n.payload) for n in conn.notifies(timeout=5, stop_after=2)}
    assert got == {("task_new", "capacity"), ("task_done", "n")}


async def test_release_returns_unstarted_claims(broker: PostgresBroker, clean_db: str) -> None:
    await broker.enqueue_many_async([EnqueueRequest("t", task_id=f"c{i}") for i in range(3)])
    claimed = await broker.claim_async(W1, claim_req(3))
    await broker.start_async(W1, "h", [("c0", 1, 1)])
    keys = [t.key for t in claimed]
    assert await broker.release_claimed_async(W2, keys) == 0  # not the owner
    # Claims naming another attempt than the rows' are not given back.
    assert await broker.release_claimed_async(W1, [(t.id, t.attempt + 1) for t in claimed]) == 0
    assert row(clean_db, "c1")["status"] == "CLAIMED"
    assert await broker.release_claimed_async(W1, keys) == 2  # c0 is running
    r = row(clean_db, "c1")
    assert (r["status"], r["claimed"], r["claimed_by_worker_id"], r["claimed_at"]) == (
        "PENDING", False, None, None,
    )  # fmt: skip
    assert row(clean_db, "c0")["status"] == "RUNNING"


# -- heartbeats and snapshots --------------------------------------------------------------------


async def test_heartbeats_are_one_row_per_task_and_role(
    broker: PostgresBroker, clean_db: str
) -> None:
    await broker.write_heartbeats_async(
        W1, "host-a", 100, [("c1", 1), ("c2", 3)], [("r1", 1, 201), ("r2", 2, 202)]
    )
    await broker.write_heartbeats_async(W1, "host-a", 100, [], [])  # nothing to write
    beats = sql(clean_db, "SELECT task_id, attempt, sender_id, role, hostname, pid "
                "FROM horsies_heartbeats ORDER BY task_id")  # fmt: skip
    claimer = {"sender_id": W1, "role": "claimer", "hostname": "host-a", "pid": 100}
    runner = {"role": "runner", "hostname": "host-a"}
    assert beats == [
        {"task_id": "c1", "attempt": 1, **claimer},
        {"task_id": "c2", "attempt": 3, **claimer},
        {"task_id": "r1", "attempt": 1, "sender_id": f"{W1}:201", "pid": 201, **runner},
        {"task_id": "r2", "attempt": 2, "sender_id": f"{W1}:202", "pid": 202, **runner},
    ]


async def test_worker_states_latest_snapshot_per_worker(
    broker: PostgresBroker, clean_db: str
) -> None:
    started = datetime.now(UTC)

    def state(worker: str, running: int) -> WorkerStateRow:
        return WorkerStateRow(
            worker_id=worker, hostname="h", pid=1, processes=4, max_claim_batch=2,
            max_claim_per_worker=4, queues=["default"], tasks_running=running, tasks_claimed=0,
            worker_started_at=started, recovery_config={"check_interval_ms": 30_000},
            queue_priorities={"default": 100}, cpu_percent=1.5,
        )  # fmt: skip

    await broker.insert_worker_state_async(state(W1, 1))
    await broker.insert_worker_state_async(state(W1, 3))
    await broker.insert_worker_state_async(state(W2, 2))
    sql(clean_db, "UPDATE horsies_worker_states SET snapshot_at = now() - interval '1 second' "
        "WHERE tasks_running = 1")  # fmt: skip
    states = await broker.get_worker_states()
    assert {(s["worker_id"], s["tasks_running"]) for s in states} == {(W1, 3), (W2, 2)}
    first = next(s for s in states if s["worker_id"] == W1)
    assert first["queues"] == ["default"]
    assert first["recovery_config"] == {"check_interval_ms": 30_000}
    assert first["queue_max_concurrency"] is None
    sql(clean_db, "UPDATE horsies_worker_states SET snapshot_at = now() - interval '1 hour' "
        "WHERE worker_id = %s", (W2,))  # fmt: skip
    assert [s["worker_id"] for s in broker.get_worker_states_sync(max_age_s=30)] == [W1]


# -- reaper --------------------------------------------------------------------------------------

RECOVERY = RecoveryConfig(claimed_stale_threshold_ms=60_000, running_stale_threshold_ms=60_000)


async def test_reaper_requeues_stale_claims_only(broker: PostgresBroker, clean_db: str) -> None:
    await broker.enqueue_many_async(
        [EnqueueRequest("t", task_id=i) for i in ("old", "beating", "new", "other-attempt")]
    )
    await broker.claim_async(W1, claim_req(4))
    sql(clean_db, "UPDATE horsies_tasks SET claimed_at = now() - interval '1 hour' "
        "WHERE id IN ('old', 'beating', 'other-attempt')")  # fmt: skip
    # Heartbeats of another attempt than the row's (1) do not keep a claim alive.
    await broker.write_heartbeats_async(
        W1, "h", 1, [("beating", 1), ("other-attempt", 0), ("other-attempt", 2)], []
    )
    report = await broker.reap_async(RECOVERY)
    assert (report.requeued, report.failed, report.retried, report.ran) == (2, 0, 0, True)
    statuses = {r["id"]: r["status"] for r in sql(clean_db, "SELECT id, status FROM horsies_tasks")}
    assert statuses == {
        "old": "PENDING", "beating": "CLAIMED", "new": "CLAIMED", "other-attempt": "PENDING",
    }  # fmt: skip
    assert row(clean_db, "old")["claimed_by_worker_id"] is None


async def test_reaper_fails_stale_running_tasks_with_worker_crashed(
    broker: PostgresBroker, clean_db: str
) -> None:
    await broker.enqueue_many_async([EnqueueRequest("t", task_id=i) for i in ("dead", "alive")])
    await claim_and_start(broker, 2)
    sql(clean_db, "UPDATE horsies_tasks SET started_at = now() - interval '1 hour'")
    # A runner heartbeat of another attempt than the row's (1) does not keep "dead" alive.
    await broker.write_heartbeats_async(W1, "h", 1, [], [("alive", 1, 4001), ("dead", 2, 4000)])
    stale = await broker.get_stale_tasks(stale_threshold_minutes=2)
    assert [s["id"] for s in stale] == ["dead"]
    assert set(stale[0]) >= {"id", "worker_hostname", "worker_pid", "worker_process_name",
                             "last_heartbeat", "started_at", "task_name"}  # fmt: skip
    report = await broker.reap_async(RECOVERY)
    assert (report.requeued, report.failed, report.retried) == (0, 1, 0)
    dead = row(clean_db, "dead")
    assert dead["status"] == "FAILED"
    assert dead["failed_at"] is not None
    assert dead["failed_reason"] == "Worker process crashed (no runner heartbeat for 60000ms = 60s)"
    error = task_result_from_json(dead["result"]).err_value
    assert error.error_code == LibraryErrorCode.WORKER_CRASHED
    assert error.message == dead["failed_reason"]
    assert set(error.data) == {
        "stale_threshold_ms", "stale_threshold_seconds", "worker_pid", "worker_hostname",
        "worker_id", "started_at", "last_heartbeat", "detected_at",
    }  # fmt: skip
    assert (error.data["worker_id"], error.data["worker_hostname"]) == (W1, "host-a")
    assert error.data["stale_threshold_ms"] == 60_000
    assert row(clean_db, "alive")["status"] == "RUNNING"
    # A result arriving after the reaper failed the task changes nothing.
    late = await finish(broker, [TaskOutcome("dead", OK_JSON, True, attempt=1)], worker_id=W1)
    assert late == set()
    assert row(clean_db, "dead")["status"] == "FAILED"


async def test_reaper_retries_crashed_tasks_that_ask_for_it(
    broker: PostgresBroker, clean_db: str
) -> None:
    options = TaskOptions(
        auto_retry_for=[LibraryErrorCode.WORKER_CRASHED],
        retry_policy=RetryPolicy.fixed([10], jitter=False),
    )
    await broker.enqueue_async(
        "t", task_id="retry-me", task_options=options.to_json(), max_retries=1
    )
    await claim_and_start(broker)
    sql(clean_db, "UPDATE horsies_tasks SET started_at = now() - interval '1 hour'")
    report = await broker.reap_async(RECOVERY)
    assert (report.failed, report.retried) == (0, 1)
    r = row(clean_db, "retry-me")
    assert (r["status"], r["retry_count"], r["claimed_by_worker_id"]) == ("PENDING", 1, None)
    assert r["next_retry_at"] is not None
    assert "Worker process crashed" in r["failed_reason"]
    # The late result of the crashed attempt cannot finish the task.
    late = TaskOutcome("retry-me", OK_JSON, True, attempt=1)
    assert await finish(broker, [late], worker_id=None) == set()
    # Once retries are exhausted the next crash fails the task.
    sql(clean_db, "UPDATE horsies_tasks SET next_retry_at = now(), sent_at = now()")
    [retry] = await claim_and_start(broker)
    assert retry.attempt == 2
    # Nor can it finish the retry running now, even from the same worker.
    assert await finish(broker, [late], worker_id=W1) == set()
    assert row(clean_db, "retry-me")["status"] == "RUNNING"
    sql(clean_db, "UPDATE horsies_tasks SET started_at = now() - interval '1 hour'")
    report = await broker.reap_async(RECOVERY)
    assert (report.failed, report.retried) == (1, 0)


async def test_reaper_steps_follow_the_recovery_flags(
    broker: PostgresBroker, clean_db: str
) -> None:
    await broker.enqueue_many_async([EnqueueRequest("t", task_id=i) for i in ("c", "r")])
    await broker.claim_async(W1, claim_req(2))
    await broker.start_async(W1, "h", [("r", 1, 1)])
    sql(
        clean_db,
        "UPDATE horsies_tasks SET claimed_at = now() - interval '1 hour', "
        "started_at = CASE WHEN id = 'r' THEN now() - interval '1 hour' END",
    )
    off = RecoveryConfig(auto_requeue_stale_claimed=False, auto_fail_stale_running=False)
    assert await broker.reap_async(off) == ReapReport(0, 0, 0)
    assert {r["status"] for r in sql(clean_db, "SELECT status FROM horsies_tasks")} == {
        "CLAIMED", "RUNNING",
    }  # fmt: skip


async def test_only_one_reaper_runs_at_a_time(broker: PostgresBroker, clean_db: str) -> None:
    from horsies.broker.locks import REAPER_LOCK_KEY

    await broker.enqueue_async("t", task_id="x")
    await broker.claim_async(W1, claim_req(1))
    sql(clean_db, "UPDATE horsies_tasks SET claimed_at = now() - interval '1 hour'")
    with psycopg.connect(clean_db) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (REAPER_LOCK_KEY,))
        report = await asyncio.wait_for(broker.reap_async(RECOVERY), 5)
        other.rollback()
    assert not report.ran
    assert row(clean_db, "x")["status"] == "CLAIMED"
    assert broker.reap(RECOVERY).requeued == 1


# -- monitoring twins ----------------------------------------------------------------------------


async def test_monitoring_methods(broker: PostgresBroker, clean_db: str) -> None:
    await broker.enqueue_many_async(
        [EnqueueRequest("t", task_id=f"m{i}") for i in range(4)]
        + [EnqueueRequest("t", task_id="other", queue_name="other")]
    )
    await claim_and_start(broker, 2)
    await broker.claim_async(W1, claim_req(1))
    stats = {s["queue_name"]: s for s in await broker.get_queue_stats()}
    assert {k: stats["default"][k] for k in ("pending", "claimed", "running", "completed")} == {
        "pending": 1, "claimed": 1, "running": 2, "completed": 0,
    }  # fmt: skip
    assert stats["other"]["pending"] == 1
    assert stats["other"]["oldest_pending_at"] is not None
    assert broker.get_queue_stats_sync() == list(stats.values())
    workers = await broker.get_worker_stats()
    assert [(w["worker_hostname"], w["active_tasks"]) for w in workers] == [
        ("host-a", 1), ("host-a", 1),
    ]  # fmt: skip
    assert set(workers[0]) >= {"worker_hostname", "worker_pid", "worker_process_name",
                               "active_tasks", "oldest_task_start", "latest_heartbeat"}  # fmt: skip
    task = await broker.get_task("m0")
    assert task is not None
    assert task["id"] == "m0"
    assert broker.get_task_sync("missing") is None
    sql(clean_db, "UPDATE horsies_tasks SET started_at = now() - interval '1 hour', "
        "claimed_at = now() - interval '1 hour'")  # fmt: skip
    assert broker.get_stale_tasks_sync(1) != []
    assert await broker.mark_stale_tasks_as_failed(stale_threshold_ms=60_000) == 2
    assert broker.mark_stale_tasks_as_failed_sync(60_000) == 0
    assert await broker.requeue_stale_claimed(stale_threshold_ms=60_000) == 1
    assert broker.requeue_stale_claimed_sync(60_000) == 0
    failed = task_result_from_json(row(clean_db, "m0")["result"])
    assert failed.err_value.error_code == LibraryErrorCode.WORKER_CRASHED
    assert orjson.loads(row(clean_db, "m0")["result"])["err"]["error_code"] == "WORKER_CRASHED"


async def test_cluster_gauges_count_due_pending_tasks_and_live_workers(
    broker: PostgresBroker, clean_db: str
) -> None:
    now = datetime.now(UTC)
    await broker.enqueue_many_async(
        [
            EnqueueRequest("t", task_id="due-old", sent_at=now - timedelta(minutes=2)),
            EnqueueRequest("t", task_id="due-new", sent_at=now - timedelta(seconds=1)),
            EnqueueRequest("t", task_id="delayed", sent_at=now + timedelta(hours=1)),
            EnqueueRequest("t", task_id="expired", good_until=now - timedelta(seconds=1)),
            EnqueueRequest("t", task_id="running", sent_at=now - timedelta(hours=1)),
            EnqueueRequest("t", task_id="elsewhere", queue_name="other"),
        ]
    )
    sql(clean_db, "UPDATE horsies_tasks SET status = 'RUNNING', started_at = now() "
        "WHERE id = 'running'")  # fmt: skip
    started = datetime.now(UTC)
    for worker, stopped in ((W1, False), (W2, True)):
        state = WorkerStateRow(
            worker_id=worker, hostname="h", pid=1, processes=1, max_claim_batch=1,
            max_claim_per_worker=1, queues=["default"], tasks_running=0, tasks_claimed=0,
            worker_started_at=started, stopped=stopped,
        )  # fmt: skip
        await broker.insert_worker_state_async(state)
    gauges = await broker.cluster_gauges_async(["default", "idle"])
    default, idle = gauges.queues
    assert (default.queue, default.depth) == ("default", 2)  # not delayed, expired or running
    assert default.oldest_pending_s is not None
    assert 110 < default.oldest_pending_s < 300
    assert (idle.queue, idle.depth, idle.oldest_pending_s) == ("idle", 0, None)
    assert gauges.workers_alive == 1  # W2's last snapshot says it stopped
    assert broker.cluster_gauges(["other"]).queues[0].depth == 1


async def test_empty_batches_do_not_touch_the_database(database_url: str) -> None:
    broken = PostgresBroker(
        PostgresConfig(database_url=database_url.replace("/horsies_t", "/missing_"), pool_timeout=1)
    )
    try:
        assert await broken.claim_async(W1, claim_req(0)) == []
        assert await broken.start_async(W1, "h", []) == set()
        assert (await broken.finish_async([], worker_id=W1)).ids == set()
        assert await broken.release_claimed_async(W1, []) == 0
        await broken.write_heartbeats_async(W1, "h", 1, [], [])
    finally:
        await broken.close_async()


@pytest.mark.parametrize("payload", ["retry:abc", ""])
def test_notify_helper(broker: PostgresBroker, clean_db: str, payload: str) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("LISTEN task_queue_default")
        broker.notify("task_queue_default", payload)
        got = [(n.channel, n.payload) for n in conn.notifies(timeout=5, stop_after=1)]
    assert got == [("task_queue_default", payload)]
