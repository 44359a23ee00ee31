"""The worker's hot path against PostgreSQL: ``finish_and_start_tasks`` (claim PENDING -> RUNNING in
one statement, outcomes written in the same round trip), the untracked-RUNNING reconcile, the single
finish statement for every outcome, the skipped capacity wake-up, pipelines, and the generic plans
the exchange forces."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
import pytest
from db_rows import generic_plan, row, sql
from horsies.broker import (
    ClaimRequest,
    EnqueueRequest,
    PostgresBroker,
    QueueClaimSpec,
    TaskOutcome,
    driver_async,
    driver_sync,
    exchange,
    steps,
)
from horsies.broker.driver_async import run_op as run_op_async
from horsies.broker.driver_sync import run_op as run_op_sync
from horsies.broker.sql import tasks as task_sql
from horsies.codec import task_result_to_json
from horsies.config import PostgresConfig
from horsies.results import TaskError, TaskResult

W1, W2 = "worker-one", "worker-two"
OK_JSON = task_result_to_json(TaskResult(ok=1))
ERR_JSON = task_result_to_json(TaskResult(err=TaskError(error_code="BOOM", message="x")))


def req(budget: int, queues: list[QueueClaimSpec] | None = None, **kw: Any) -> ClaimRequest:
    params: dict[str, Any] = {"max_claim_batch": 0}
    params.update(kw)
    return ClaimRequest(queues=queues or [QueueClaimSpec("default")], local_budget=budget, **params)


async def enqueue_ordered(broker: PostgresBroker, ids: list[str]) -> None:
    base = datetime.now(UTC) - timedelta(minutes=1)
    await broker.enqueue_many_async(
        [
            EnqueueRequest("t", task_id=t, sent_at=base + timedelta(seconds=i))
            for i, t in enumerate(ids)
        ]
    )


# -- claim + start -------------------------------------------------------------------------------


async def test_claim_moves_pending_tasks_straight_to_running_for_the_given_pids(
    broker: PostgresBroker, clean_db: str
) -> None:
    base = datetime.now(UTC) - timedelta(minutes=1)
    for i, (task_id, priority) in enumerate([("late", 9), ("urgent", 1), ("next", 9)]):
        await broker.enqueue_async(
            "mod.t", (i,), task_id=task_id, priority=priority, sent_at=base + timedelta(seconds=i)
        )
    exchange = await broker.exchange_async(W1, "host-a", request=req(2), pids=[4001, 4002])
    assert [(s.task.id, s.pid) for s in exchange.started] == [("urgent", 4001), ("late", 4002)]
    assert exchange.full
    assert exchange.started[0].task.args == "[1]"
    r = row(clean_db, "urgent")
    assert (r["status"], r["claimed"], r["claimed_by_worker_id"], r["claim_expires_at"]) == (
        "RUNNING", False, W1, None,
    )  # fmt: skip
    assert (r["worker_pid"], r["worker_hostname"], r["worker_process_name"]) == (
        4001, "host-a", "worker-4001",
    )  # fmt: skip
    assert r["claimed_at"] is not None
    assert r["started_at"] is not None
    assert row(clean_db, "next")["status"] == "PENDING"
    # Fewer claimable tasks than idle children: not full, the extra pid gets nothing.
    again = await broker.exchange_async(W1, "host-a", request=req(2), pids=[4003, 4004])
    assert [(s.task.id, s.pid) for s in again.started] == [("next", 4003)]
    assert not again.full


async def test_claim_honours_due_time_expiry_and_leases(
    broker: PostgresBroker, clean_db: str
) -> None:
    now = datetime.now(UTC)
    await broker.enqueue_async("t", task_id="future", sent_at=now + timedelta(minutes=5))
    await broker.enqueue_async("t", task_id="expired", good_until=now - timedelta(seconds=1))
    await broker.enqueue_async("t", task_id="leased")
    [first_claim] = await broker.claim_async(W2, req(1, soft_cap=True, claim_lease_ms=60_000))
    exchange = await broker.exchange_async(W1, "h", request=req(3), pids=[1, 2, 3])
    assert exchange.started == []  # nothing due, unexpired and unleased
    sql(clean_db, "UPDATE horsies_tasks SET claim_expires_at = now() - interval '1 second'")
    exchange = await broker.exchange_async(W1, "h", request=req(3), pids=[1, 2, 3])
    # An expired lease is claimable (a new attempt of the row).
    assert [s.task.key for s in exchange.started] == [("leased", 2)]
    assert row(clean_db, "leased")["claimed_by_worker_id"] == W1
    # The first owner lost it: its start is refused.
    assert await broker.start_async(W2, "h", [(*first_claim.key, 9)]) == set()


async def test_finish_and_start_writes_every_outcome_and_starts_the_next_tasks(
    broker: PostgresBroker, clean_db: str
) -> None:
    await enqueue_ordered(broker, ["ok", "bad", "again", "next"])
    first = await broker.exchange_async(W1, "h", request=req(3), pids=[1, 2, 3])
    assert [s.task.key for s in first.started] == [("ok", 1), ("bad", 1), ("again", 1)]
    outcomes = [
        TaskOutcome("ok", OK_JSON, True, attempt=1),
        TaskOutcome("bad", ERR_JSON, False, failed_reason="no luck", attempt=1),
        TaskOutcome("again", ERR_JSON, False, retry_delay_s=30, attempt=1),
    ]
    second = await broker.exchange_async(W1, "h", outcomes=outcomes, request=req(3), pids=[1, 2, 3])
    assert second.finished == {"ok", "bad", "again"}
    assert [s.task.id for s in second.started] == ["next"]  # the retry is not due yet
    ok, bad, again = row(clean_db, "ok"), row(clean_db, "bad"), row(clean_db, "again")
    assert (ok["status"], ok["result"], ok["failed_at"]) == ("COMPLETED", OK_JSON, None)
    assert ok["completed_at"] is not None
    assert (bad["status"], bad["result"], bad["failed_reason"]) == ("FAILED", ERR_JSON, "no luck")
    assert bad["failed_at"] is not None
    assert bad["completed_at"] is None
    assert (again["status"], again["retry_count"], again["result"]) == ("PENDING", 1, None)
    assert again["attempt"] == 1  # the next claim makes the next attempt
    assert (again["claimed_by_worker_id"], again["claimed_at"]) == (None, None)
    assert again["next_retry_at"] == again["sent_at"]
    assert again["next_retry_at"] > datetime.now(UTC) + timedelta(seconds=20)
    # A duplicate or stale result changes nothing.
    stale = await broker.exchange_async(
        W1, "h", outcomes=[TaskOutcome("ok", ERR_JSON, False, attempt=1)]
    )
    assert stale.finished == set()
    assert row(clean_db, "ok")["status"] == "COMPLETED"


async def test_outcome_texts_survive_the_json_batch_unchanged(
    broker: PostgresBroker, clean_db: str
) -> None:
    task_id = 'we"ird\\ id ✓ 🐎'
    result = task_result_to_json(TaskResult(ok={"s": 'quote " backslash \\ \u00e9 \n nul \x00'}))
    await enqueue_ordered(broker, [task_id])
    await broker.exchange_async(W1, "h", request=req(1), pids=[1])
    outcome = TaskOutcome(task_id, result, True, failed_reason="r\u00e9ason", attempt=1)
    done = await broker.exchange_async(W1, "h", outcomes=[outcome])
    assert done.finished == {task_id}
    r = row(clean_db, task_id)
    assert (r["result"], r["failed_reason"]) == (result, "r\u00e9ason")
    assert broker.get_result(task_id).unwrap() == {"s": 'quote " backslash \\ \u00e9 \n nul \x00'}


async def test_outcomes_of_another_worker_or_attempt_are_refused(
    broker: PostgresBroker, clean_db: str
) -> None:
    await enqueue_ordered(broker, ["x"])
    await broker.exchange_async(W1, "h", request=req(1), pids=[1])
    refused = await broker.exchange_async(
        W2, "h", outcomes=[TaskOutcome("x", OK_JSON, True, attempt=1)]
    )
    assert refused.finished == set()
    for attempt in (0, 2):  # the row's attempt is 1
        stale = TaskOutcome("x", OK_JSON, True, attempt=attempt)
        assert (await broker.exchange_async(W1, "h", outcomes=[stale])).finished == set()
    assert row(clean_db, "x")["status"] == "RUNNING"


async def test_two_workers_exchanging_concurrently_never_start_a_task_twice(
    broker: PostgresBroker, clean_db: str, database_url: str
) -> None:
    await broker.enqueue_many_async([EnqueueRequest("t", (i,)) for i in range(150)])
    other = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=1))
    try:

        async def drain(b: PostgresBroker, worker: str) -> list[str]:
            started: list[str] = []
            running: list[tuple[str, int]] = []
            while True:
                exchange = await b.exchange_async(
                    worker,
                    "h",
                    outcomes=[TaskOutcome(t, OK_JSON, True, attempt=a) for t, a in running],
                    request=req(3),
                    pids=[1, 2, 3],
                )
                assert exchange.finished == {t for t, _ in running}
                running = [s.task.key for s in exchange.started]
                started += [t for t, _ in running]
                if not running:
                    return started

        mine, theirs = await asyncio.gather(drain(broker, W1), drain(other, W2))
    finally:
        await other.close_async()
    assert not set(mine) & set(theirs)
    assert len(mine) == len(set(mine))
    assert len(theirs) == len(set(theirs))
    assert len(mine) + len(theirs) == 150
    owners = sql(
        clean_db,
        "SELECT claimed_by_worker_id AS w, status, count(*) AS n FROM horsies_tasks GROUP BY 1, 2",
    )
    assert {(o["w"], o["status"]): o["n"] for o in owners} == {
        (W1, "COMPLETED"): len(mine),
        (W2, "COMPLETED"): len(theirs),
    }


async def test_several_queues_are_claimed_most_urgent_first_in_one_transaction(
    broker: PostgresBroker, clean_db: str
) -> None:
    queues = [QueueClaimSpec("slow", 50), QueueClaimSpec("fast", 1)]
    await broker.enqueue_many_async(
        [EnqueueRequest("t", queue_name="slow") for _ in range(3)]
        + [EnqueueRequest("t", queue_name="fast") for _ in range(2)]
    )
    exchange = await broker.exchange_async(W1, "h", request=req(3, queues), pids=[1, 2, 3])
    assert [(s.task.queue_name, s.pid) for s in exchange.started] == [
        ("fast", 1), ("fast", 2), ("slow", 3),
    ]  # fmt: skip
    # max_claim_batch caps each queue per pass: the exchange is full while a child stays idle.
    await broker.enqueue_many_async([EnqueueRequest("t", queue_name="fast") for _ in range(2)])
    capped = await broker.exchange_async(
        W1, "h", request=req(3, queues, max_claim_batch=1), pids=[4, 5, 6]
    )
    assert [(s.task.queue_name, s.pid) for s in capped.started] == [("fast", 4), ("slow", 5)]
    assert capped.full


async def test_cluster_caps_and_soft_cap_keep_the_claimed_phase(broker: PostgresBroker) -> None:
    assert not exchange.can_start_directly(req(1, soft_cap=True, claim_lease_ms=1000))
    assert not exchange.can_start_directly(req(1, cluster_wide_cap=5))
    assert not exchange.can_start_directly(req(1, [QueueClaimSpec("q", max_concurrency=2)]))
    assert exchange.can_start_directly(req(1))
    with pytest.raises(ValueError, match="hard-cap"):
        await broker.exchange_async(W1, "h", request=req(1, cluster_wide_cap=5), pids=[1])


async def test_reconcile_sends_this_workers_untracked_running_rows_back_to_pending(
    broker: PostgresBroker, clean_db: str
) -> None:
    await enqueue_ordered(broker, ["kept", "done", "orphan", "theirs"])
    await broker.exchange_async(W1, "h", request=req(3), pids=[1, 2, 3])
    await broker.exchange_async(W2, "h", request=req(1), pids=[9])
    exchange = await broker.exchange_async(
        W1,
        "h",
        outcomes=[TaskOutcome("done", OK_JSON, True, attempt=1)],
        # "done" is kept implicitly: it has an outcome; "orphan" is named in another attempt than
        # its row's (1), so it is not kept.
        keep_running=[("kept", 1), ("orphan", 2)],
    )
    assert exchange.finished == {"done"}
    assert exchange.requeued == ["orphan"]
    statuses = {r["id"]: r["status"] for r in sql(clean_db, "SELECT id, status FROM horsies_tasks")}
    assert statuses == {
        "kept": "RUNNING", "done": "COMPLETED", "orphan": "PENDING", "theirs": "RUNNING",
    }  # fmt: skip
    orphan = row(clean_db, "orphan")
    assert (orphan["claimed_by_worker_id"], orphan["worker_pid"], orphan["started_at"]) == (
        None, None, None,
    )  # fmt: skip
    assert orphan["retry_count"] == 0  # it never ran: not an attempt
    assert await broker.requeue_untracked_async(W2, []) == ["theirs"]


async def test_reconcile_and_claim_in_one_exchange_restart_the_orphan(
    broker: PostgresBroker, clean_db: str
) -> None:
    await enqueue_ordered(broker, ["orphan"])
    await broker.exchange_async(W1, "h", request=req(1), pids=[1])  # reply "lost"
    exchange = await broker.exchange_async(W1, "h", request=req(1), pids=[2], keep_running=[])
    assert exchange.requeued == ["orphan"]
    assert [(s.task.id, s.pid) for s in exchange.started] == [("orphan", 2)]
    assert exchange.started[0].task.attempt == 2  # claimed again: a new attempt
    assert row(clean_db, "orphan")["worker_pid"] == 2


async def test_exchange_forces_generic_plans_only_inside_its_transaction(
    database_conninfo: str, clean_db: str
) -> None:
    async with await psycopg.AsyncConnection.connect(database_conninfo, autocommit=True) as conn:
        await run_op_async(
            conn,
            exchange.exchange_op(
                W1, "h", outcomes=(), request=req(1), pids=[1], notify_capacity=False,
                keep_running=None,
            ),
        )  # fmt: skip
        cur = await conn.execute("SHOW plan_cache_mode")
        assert await cur.fetchone() == ("auto",)


# The two claim statements that read horsies_ready, with parameters for the plan tests.
_CLAIMS: list[tuple[LiteralString, dict[str, Any]]] = [
    (
        task_sql.TASK_CLAIM_AND_START_AVAILABLE,
        {"queue_name": "default", "pids": [1, 2], "worker_id": "w", "hostname": "h"},
    ),
    (
        task_sql.TASK_CLAIM_AVAILABLE,
        {"queue_name": "default", "limit": 2, "worker_id": "w", "lease_ms": 1000},
    ),
]


@pytest.mark.timeout(90)
def test_generic_plans_of_the_exchange_statements_stay_on_their_indexes(
    database_conninfo: str, clean_db: str
) -> None:
    # The exchange runs these statements with force_generic_plan: with many rows none of them may
    # fall back to a scan of the whole table.
    sql(
        clean_db,
        "INSERT INTO horsies_tasks (id, task_name, queue_name, status, sent_at, started_at, "
        "claimed_at, claimed_by_worker_id) "
        "SELECT 'id' || i, 't', CASE WHEN i % 3 = 0 THEN 'other' ELSE 'default' END, "
        "CASE WHEN i % 10 = 0 THEN 'RUNNING' ELSE 'PENDING' END, now() - interval '1 hour', "
        "now(), now(), 'w' || (i % 20) FROM generate_series(1, 30000) i",
    )
    sql(clean_db, "ANALYZE horsies_tasks, horsies_ready")
    statements: list[tuple[str, dict[str, Any]]] = [
        *_CLAIMS,
        (
            task_sql.TASK_FINISH_IF_RUNNING_MANY,
            {"outcomes": '[{"id": "id10", "ok": true}]', "ids": ["id10"], "worker_id": "w10"},
        ),
        (
            task_sql.TASK_REQUEUE_UNTRACKED_RUNNING,
            {"worker_id": "w10", "keep_ids": ["id10"], "keep_attempts": [0]},
        ),
        (
            task_sql.TASK_START_IF_CLAIMED_MANY,
            {
                "ids": ["id1"],
                "attempts": [0],
                "pids": [1],
                "hostname": "h",
                "worker_id": "w1",
                "resume": False,
            },
        ),
        (
            task_sql.TASK_RELEASE_CLAIMED_MANY,
            {"ids": ["id1"], "attempts": [0], "worker_id": "w1"},
        ),
    ]
    for query, params in statements:
        plan = generic_plan(database_conninfo, query, params)
        assert "Seq Scan on horsies_tasks" not in plan, plan
        assert "Seq Scan on horsies_ready" not in plan, plan
        if "horsies_ready" in query:  # the claims: candidates in the ready table's order
            assert "Scan using pk_horsies_ready" in plan, plan
            assert "Sort Key: r." not in plan, plan


@pytest.mark.timeout(120)
def test_the_claims_walk_the_ready_table_in_order_beside_a_big_history(
    database_conninfo: str, clean_db: str
) -> None:
    # With a history far bigger than the queue and a backlog in a queue nobody serves, the generic
    # plan of a join hashed every pending task with the ready table and sorted them on each claim.
    sql(
        clean_db,
        "INSERT INTO horsies_tasks (id, task_name, queue_name, status, sent_at, completed_at) "
        "SELECT 'done' || i, 't', 'default', 'COMPLETED', now() - interval '1 day', now() "
        "FROM generate_series(1, 300000) i",
    )
    sql(
        clean_db,
        "INSERT INTO horsies_tasks (id, task_name, queue_name, status, sent_at) "
        "SELECT 'q' || i, 't', CASE WHEN i <= 100 THEN 'default' ELSE 'unserved' END, 'PENDING',"
        " now() - interval '1 hour' FROM generate_series(1, 100000) i",
    )
    sql(clean_db, "ANALYZE horsies_tasks, horsies_ready")
    for query, params in _CLAIMS:
        # Random reads priced as on a table far bigger than memory, as at 10 M rows.
        plan = generic_plan(database_conninfo, query, params, costs={"random_page_cost": 40})
        candidates = plan.split("CTE candidates", 1)[1].split("\n  CTE ", 1)[0]
        assert "Scan using pk_horsies_ready" in candidates, plan
        assert "Hash" not in candidates, plan
        assert "Sort" not in candidates, plan
        assert "ix_horsies_tasks_claim" not in candidates, plan


@pytest.mark.timeout(60)
@pytest.mark.parametrize("claim", ["exchange", "claim pass"])
async def test_a_claim_planned_while_the_ready_table_was_nearly_empty_locks_only_what_it_takes(
    broker: PostgresBroker, clean_db: str, claim: str
) -> None:
    # Planned on statistics of one pending task, the claim read the whole ready table and sorted it
    # above its locking sub-select, locking every task of the queue on each claim; the claims'
    # settings leave it the index, in order, only. A lock leaves the row's xmax set after commit.
    sql(
        clean_db,
        "INSERT INTO horsies_tasks (id, task_name, queue_name, status, sent_at) "
        "VALUES ('one', 't', 'default', 'PENDING', now())",
    )
    sql(clean_db, "ANALYZE horsies_tasks, horsies_ready")
    sql(
        clean_db,
        "INSERT INTO horsies_tasks (id, task_name, queue_name, status, sent_at) "
        "SELECT 'q' || i, 't', 'default', 'PENDING', now() - interval '1 hour' "
        "FROM generate_series(1, 10000) i",
    )
    if claim == "exchange":
        done = await broker.exchange_async(W1, "h", request=req(2), pids=[1, 2])
        assert len(done.started) == 2
    else:
        assert len(await broker.claim_async(W1, req(2))) == 2
    left_locked = sql(
        clean_db,
        "SELECT count(*) AS n FROM horsies_tasks WHERE status = 'PENDING' AND xmax::text <> '0'",
    )
    assert left_locked == [{"n": 0}]


# -- finish ----------------------------------------------------------------------------------------


async def test_finish_can_skip_the_capacity_wake_up(broker: PostgresBroker, clean_db: str) -> None:
    await enqueue_ordered(broker, ["quiet", "loud"])
    await broker.exchange_async(W1, "h", request=req(2), pids=[1, 2])
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("LISTEN task_new")
        conn.execute("LISTEN task_done")
        done = await broker.finish_async(
            [TaskOutcome("quiet", OK_JSON, True)], worker_id=W1, notify_capacity=False
        )
        assert done.ids == {"quiet"}
        got = [(n.channel, n.payload) for n in conn.notifies(timeout=1)]
        assert got == [("task_done", "quiet")]
        await broker.finish_async([TaskOutcome("loud", OK_JSON, True)], worker_id=W1)
        got = [(n.channel, n.payload) for n in conn.notifies(timeout=5, stop_after=2)]
        assert sorted(got) == [("task_done", "loud"), ("task_new", "capacity")]


@pytest.mark.parametrize("pipeline_mode", [True, False], ids=["pipeline", "libpq-13-fallback"])
def test_a_pipeline_is_all_or_nothing(
    clean_db: str, monkeypatch: pytest.MonkeyPatch, pipeline_mode: bool
) -> None:
    monkeypatch.setattr(driver_sync, "_PIPELINE_SUPPORTED", pipeline_mode)
    insert: LiteralString = (
        "INSERT INTO horsies_tasks (id, task_name, queue_name) VALUES (%(id)s, 't', 'q')"
    )

    def op(first: str, second: str) -> steps.Op[tuple[steps.QueryResult, ...]]:
        res = yield steps.Pipeline(
            (
                steps.Query(insert, {"id": first}, rows="none"),
                steps.Query(insert, {"id": second}, rows="none"),
                steps.Query("SELECT count(*) FROM horsies_tasks"),
            )
        )
        return res.parts

    with psycopg.connect(clean_db, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            run_op_sync(conn, op("a", "a"))
        assert conn.execute("SELECT count(*) FROM horsies_tasks").fetchone() == (0,)
        parts = run_op_sync(conn, op("a", "b"))
        assert [p.rows for p in parts] == [[], [], [(2,)]]


async def test_the_exchange_works_without_pipeline_mode(
    broker: PostgresBroker, clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver_async, "_PIPELINE_SUPPORTED", False)
    await enqueue_ordered(broker, ["a", "b"])
    first = await broker.exchange_async(W1, "h", request=req(1), pids=[1])
    second = await broker.exchange_async(
        W1, "h", outcomes=[TaskOutcome("a", OK_JSON, True, attempt=1)], request=req(1), pids=[2]
    )
    assert [s.task.id for s in first.started] == ["a"]
    assert (second.finished, [s.task.id for s in second.started]) == ({"a"}, ["b"])
