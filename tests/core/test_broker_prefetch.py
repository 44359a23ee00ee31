"""Prefetch mode's hot path against PostgreSQL: ``finish_start_and_claim`` writes outcomes, starts
the claims handed to children, fills other child slots straight from PENDING and claims more with a
lease, all in one transaction; and gives back what a failed call may have left behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from db_rows import row, sql
from horsies.broker import ClaimRequest, EnqueueRequest, PostgresBroker, QueueClaimSpec, prefetch
from horsies.broker.finish import TaskOutcome
from horsies.codec import task_result_to_json
from horsies.results import TaskResult

W1, W2 = "worker-one", "worker-two"
OK_JSON = task_result_to_json(TaskResult(ok=1))
LEASE_MS = 60_000


def req(budget: int, queues: list[QueueClaimSpec] | None = None, **kw: Any) -> ClaimRequest:
    params: dict[str, Any] = {"max_claim_batch": 0, "soft_cap": True, "claim_lease_ms": LEASE_MS}
    params.update(kw)
    return ClaimRequest(queues=queues or [QueueClaimSpec("default")], local_budget=budget, **params)


async def enqueue_ordered(broker: PostgresBroker, ids: list[str], queue: str = "default") -> None:
    base = datetime.now(UTC) - timedelta(minutes=1)
    await broker.enqueue_many_async(
        [
            EnqueueRequest("t", task_id=t, queue_name=queue, sent_at=base + timedelta(seconds=i))
            for i, t in enumerate(ids)
        ]
    )


def statuses(conninfo: str) -> dict[str, str]:
    return {r["id"]: r["status"] for r in sql(conninfo, "SELECT id, status FROM horsies_tasks")}


async def test_one_call_finishes_starts_fills_free_slots_and_claims_with_a_lease(
    broker: PostgresBroker, clean_db: str
) -> None:
    await enqueue_ordered(broker, ["a", "b", "c", "d", "e", "f", "g"])
    first = await broker.prefetch_exchange_async(W1, "host", request=req(2))
    assert [t.key for t in first.claimed] == [("a", 1), ("b", 1)]
    claimed = row(clean_db, "a")
    assert claimed["status"] == "CLAIMED"
    assert claimed["claim_expires_at"] is not None

    # a, b were handed to children; two more free slots and a budget of 5 in total.
    second = await broker.prefetch_exchange_async(
        W1, "host", starts=[("a", 1, 11), ("b", 1, 12)], direct_pids=[11, 12], request=req(5)
    )
    assert second.started == {("a", 1), ("b", 1)}
    assert [(s.task.id, s.pid) for s in second.direct] == [("c", 11), ("d", 12)]
    assert [s.task.attempt for s in second.direct] == [1, 1]
    assert [t.id for t in second.claimed] == ["e", "f", "g"]  # the budget left after the slots
    a, c = row(clean_db, "a"), row(clean_db, "c")
    assert (a["status"], a["worker_pid"], a["claim_expires_at"]) == ("RUNNING", 11, None)
    assert (c["status"], c["worker_pid"], c["claimed_by_worker_id"]) == ("RUNNING", 11, W1)

    third = await broker.prefetch_exchange_async(
        W1,
        "host",
        outcomes=[
            TaskOutcome("a", OK_JSON, True, attempt=1),
            TaskOutcome("b", OK_JSON, True, attempt=2),  # not b's attempt: changes nothing
        ],
    )
    assert third.finished == {"a"}
    assert statuses(clean_db) == {
        "a": "COMPLETED", "b": "RUNNING", "c": "RUNNING", "d": "RUNNING",
        "e": "CLAIMED", "f": "CLAIMED", "g": "CLAIMED",
    }  # fmt: skip


async def test_a_claim_taken_by_another_worker_is_not_started(
    broker: PostgresBroker, clean_db: str
) -> None:
    await enqueue_ordered(broker, ["mine", "lost"])
    await broker.prefetch_exchange_async(W1, "h", request=req(2))
    # The lease on "lost" expired and another worker claimed it.
    sql(
        clean_db,
        "UPDATE horsies_tasks SET claim_expires_at = now() - interval '1 s' WHERE id = 'lost'",
    )
    taken = await broker.prefetch_exchange_async(W2, "h", request=req(1))
    assert [t.id for t in taken.claimed] == ["lost"]
    assert [t.key for t in taken.claimed] == [("lost", 2)]
    # The old claim of "lost" does not start, not even for its new owner.
    stale = await broker.prefetch_exchange_async(W2, "h", starts=[("lost", 1, 3)])
    assert stale.started == set()
    assert row(clean_db, "lost")["status"] == "CLAIMED"
    exchange = await broker.prefetch_exchange_async(
        W1, "h", starts=[("mine", 1, 1), ("lost", 1, 2)]
    )
    assert exchange.started == {("mine", 1)}
    assert row(clean_db, "lost")["claimed_by_worker_id"] == W2


async def test_after_a_failed_call_its_tasks_are_given_back(
    broker: PostgresBroker, clean_db: str
) -> None:
    await enqueue_ordered(broker, ["kept", "started", "claimed"])
    await broker.prefetch_exchange_async(W1, "h", request=req(3))
    # A call whose reply was lost started "started" and "kept"; the worker only kept "kept".
    await broker.prefetch_exchange_async(W1, "h", starts=[("kept", 1, 1), ("started", 1, 2)])
    # Giving back a claim in another attempt than the row's (1) changes nothing.
    await broker.prefetch_exchange_async(W1, "h", release=[("claimed", 2)])
    assert statuses(clean_db)["claimed"] == "CLAIMED"
    exchange = await broker.prefetch_exchange_async(
        W1, "h", release=[("started", 1), ("claimed", 1)], keep_running=[("kept", 1)]
    )
    assert exchange == type(exchange)()
    assert statuses(clean_db) == {"kept": "RUNNING", "started": "PENDING", "claimed": "PENDING"}
    released = row(clean_db, "claimed")
    assert (released["claimed_by_worker_id"], released["claim_expires_at"]) == (None, None)


async def test_several_queues_share_the_budget_most_urgent_first(
    broker: PostgresBroker, clean_db: str
) -> None:
    await enqueue_ordered(broker, ["u1", "u2"], queue="urgent")
    await enqueue_ordered(broker, ["l1", "l2", "l3"], queue="later")
    queues = [QueueClaimSpec("urgent", priority=1), QueueClaimSpec("later", priority=2)]
    request = req(4, queues)
    assert prefetch.prefetch_exchange_needs_transaction(request, 0)
    assert not prefetch.prefetch_exchange_needs_transaction(req(4), 2)
    exchange = await broker.prefetch_exchange_async(W1, "h", direct_pids=[5], request=request)
    assert [s.task.id for s in exchange.direct] == ["u1"]
    assert sorted(t.id for t in exchange.claimed) == ["l1", "l2", "u2"]


async def test_cluster_caps_are_refused(broker: PostgresBroker) -> None:
    with pytest.raises(ValueError, match="cluster-wide"):
        await broker.prefetch_exchange_async(
            W1, "h", request=req(1, [QueueClaimSpec("q", max_concurrency=2)])
        )


async def test_requeue_running_names_its_rows(broker: PostgresBroker, clean_db: str) -> None:
    await enqueue_ordered(broker, ["queued", "running", "theirs", "claimed"])
    await broker.prefetch_exchange_async(W1, "h", direct_pids=[1, 2], request=req(2))
    await broker.prefetch_exchange_async(W2, "h", direct_pids=[3], request=req(1))
    await broker.prefetch_exchange_async(W1, "h", request=req(1))
    assert statuses(clean_db) == {
        "queued": "RUNNING", "running": "RUNNING", "theirs": "RUNNING", "claimed": "CLAIMED",
    }  # fmt: skip
    # "running" is named in another attempt than its row's (1): not requeued.
    keys = [("queued", 1), ("running", 2), ("theirs", 1), ("claimed", 1)]
    requeued = await broker.requeue_running_async(W1, keys)
    assert requeued == ["queued"]
    assert statuses(clean_db)["running"] == "RUNNING"
    assert statuses(clean_db)["queued"] == "PENDING"
    assert row(clean_db, "queued")["started_at"] is None
    assert row(clean_db, "queued")["retry_count"] == 0
    assert await broker.requeue_running_async(W1, []) == []


async def test_a_never_started_task_whose_stop_was_requested_is_cancelled_not_requeued(
    broker: PostgresBroker, clean_db: str
) -> None:
    await enqueue_ordered(broker, ["stopped", "kept"])
    await broker.prefetch_exchange_async(W1, "h", direct_pids=[1, 2], request=req(2))
    sql(clean_db, "UPDATE horsies_tasks SET cancel_requested_at = now() WHERE id = 'stopped'")
    requeued = await broker.requeue_running_async(W1, [("stopped", 1), ("kept", 1)])
    assert sorted(requeued) == ["kept", "stopped"]
    assert statuses(clean_db) == {"stopped": "CANCELLED", "kept": "PENDING"}
