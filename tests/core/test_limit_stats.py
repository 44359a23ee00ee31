"""Seeing limits: the broker's ``get_limit_stats`` (what waits on each limit, and why), the
limits a worker's snapshots say it enforces, what ``horsies check``'s worker validations refuse,
and the plans of the questions about PENDING tasks now that the claim index leaves limited tasks
out (they must still be answered from indexes)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, LiteralString

import psycopg
import pytest
from horsies import Horsies, Limit
from horsies.broker.claim_plan import ClaimRequest, QueueClaimSpec
from horsies.broker.heartbeats import WorkerStateRow
from horsies.broker.sql import monitoring as mon_sql
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult

pytestmark = pytest.mark.timeout(60)

PER_ACCOUNT = Limit("per-account", concurrency=2, on=["account"])
RATED = Limit("rated", rate=2, per_s=60)
GHOST = Limit("ghost", concurrency=1, on=["account"])
"""No worker registers it: its tasks wait until one does."""
ROOMY = Limit("roomy", concurrency=5)
IDLE = Limit("idle", concurrency=3)


def make_app(database_url: str) -> Horsies:
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))
    for name, limit in (
        ("see.account", PER_ACCOUNT),
        ("see.rated", RATED),
        ("see.ghost", GHOST),
        ("see.roomy", ROOMY),
        ("see.idle", IDLE),
    ):

        def run(account: str = "") -> TaskResult[None, TaskError]:
            return TaskResult(ok=None)

        app.task(name, limit=limit)(run)
    return app


@pytest.fixture(scope="module")
def app(database_url: str) -> Iterator[Horsies]:
    producer = make_app(database_url)
    yield producer
    producer.get_broker().close()


def _claim(app: Horsies, pids: list[int], limits: list[str]) -> list[str]:
    request = ClaimRequest(
        queues=[QueueClaimSpec("default")],
        local_budget=len(pids),
        max_claim_batch=0,
        limits={"default": limits},
    )

    async def exchange() -> list[str]:
        done = await app.get_broker().exchange_async("w", "h", request=request, pids=pids)
        return [s.task.id for s in done.started]

    return asyncio.run(exchange())


@pytest.fixture
def seeded(app: Horsies, clean_db: str) -> str:
    """acme: 2 running (its concurrency) and 3 held; globex: 1 running; the rated limit: 2
    starts in its minute and 1 held; ghost: 2 waiting, no worker knows it; roomy: 1 waiting for a
    worker (its key has room); idle: registered, nothing under it."""
    broker = app.get_broker()
    numbers = [limit.numbers for limit in (PER_ACCOUNT, RATED, ROOMY, IDLE)]
    asyncio.run(broker.register_limits_async(numbers))
    tasks = app.tasks
    sent = [
        *tasks["see.account"].send_many([("acme",)] * 5 + [("globex",)]),
        *tasks["see.rated"].send_many([()] * 3),
        *tasks["see.ghost"].send_many([("x",)] * 2),
        tasks["see.roomy"].send(),
    ]
    assert all(handle.sent for handle in sent)
    assert len(_claim(app, [1, 2, 3, 4, 5, 6], ["per-account", "rated"])) == 5
    return clean_db


def _by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in rows}


def test_limit_stats_say_what_waits_on_each_limit_and_why(app: Horsies, seeded: str) -> None:
    stats = _by_name(asyncio.run(app.get_broker().get_limit_stats()))
    assert list(stats) == ["ghost", "idle", "per-account", "rated", "roomy"]

    account = stats["per-account"]
    assert {k: account[k] for k in ("concurrency", "rate", "per_ms", "registered")} == {
        "concurrency": 2,
        "rate": None,
        "per_ms": None,
        "registered": True,
    }
    assert (account["waiting"], account["held"], account["in_flight"]) == (3, 3, 3)
    assert (account["starts_in_window"], account["keys_waiting"]) == (0, 1)
    assert account["busiest_keys"] == [
        {"key": "acme", "waiting": 3, "in_flight": 2, "starts_in_window": 0, "held": True},
        {"key": "globex", "waiting": 0, "in_flight": 1, "starts_in_window": 0, "held": False},
    ]

    rated = stats["rated"]
    assert (rated["rate"], rated["per_ms"], rated["concurrency"]) == (2, 60_000, None)
    assert (rated["waiting"], rated["held"], rated["in_flight"]) == (1, 1, 2)
    assert rated["starts_in_window"] == 2
    assert rated["busiest_keys"] == [
        {"key": "", "waiting": 1, "in_flight": 2, "starts_in_window": 2, "held": True}
    ]

    ghost = stats["ghost"]
    assert ghost["registered"] is False
    assert (ghost["concurrency"], ghost["rate"], ghost["updated_at"]) == (None, None, None)
    assert (ghost["waiting"], ghost["held"], ghost["keys_waiting"]) == (2, 2, 1)

    roomy = stats["roomy"]
    assert (roomy["waiting"], roomy["held"], roomy["in_flight"]) == (1, 0, 0)  # a worker's turn

    idle = stats["idle"]
    assert (idle["waiting"], idle["in_flight"], idle["keys_waiting"]) == (0, 0, 0)
    assert idle["busiest_keys"] == []
    assert isinstance(idle["updated_at"], datetime)


def test_limit_stats_bound_the_keys_and_have_a_sync_twin(app: Horsies, seeded: str) -> None:
    broker = app.get_broker()
    top = _by_name(broker.get_limit_stats_sync(top_keys=1))
    assert [k["key"] for k in top["per-account"]["busiest_keys"]] == ["acme"]
    assert top["per-account"]["keys_waiting"] == 1
    assert broker.get_limit_stats_sync() == asyncio.run(broker.get_limit_stats())


def test_a_finished_task_leaves_the_counts(app: Horsies, seeded: str) -> None:
    with psycopg.connect(seeded, autocommit=True) as conn:
        conn.execute(
            "UPDATE horsies_tasks SET status = 'COMPLETED', completed_at = now() "
            "WHERE limit_key = 'globex'"
        )
    account = _by_name(app.get_broker().get_limit_stats_sync())["per-account"]
    assert account["in_flight"] == 2
    assert [k["key"] for k in account["busiest_keys"]] == ["acme"]


# -- plans -----------------------------------------------------------------------------------------


def _plan(conninfo: str, statement: LiteralString, params: dict[str, Any]) -> str:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # a tiny table would be scanned otherwise
        rows = conn.execute("EXPLAIN " + statement, params).fetchall()
    return "\n".join(str(row[0]) for row in rows)


def test_limit_stats_read_live_tasks_through_their_partial_indexes(seeded: str) -> None:
    plan = _plan(seeded, mon_sql.MONITOR_LIMIT_STATS, {"top_keys": 10})
    assert "Seq Scan on horsies_tasks" not in plan, plan
    assert "ix_horsies_tasks_limit_pending" in plan, plan
    assert "ix_horsies_tasks_limit_in_flight" in plan, plan
    assert "Seq Scan on horsies_limit_starts" not in plan, plan


def test_monitoring_questions_about_pending_tasks_keep_an_index(clean_db: str) -> None:
    """The claim index's second column became ``limit_name IS NULL``; its predicate did not
    change, so every PENDING question still has an index to read."""
    plan = _plan(clean_db, mon_sql.MONITOR_EXPIRED_TASKS, {})
    assert "Seq Scan on horsies_tasks" not in plan, plan


# -- snapshots and start-up validation -------------------------------------------------------------


async def test_snapshots_carry_the_limits_a_worker_enforces(app: Horsies, clean_db: str) -> None:
    started = datetime.now(UTC)

    def state(worker: str, limits: dict[str, list[str]] | None) -> WorkerStateRow:
        return WorkerStateRow(
            worker_id=worker, hostname="h", pid=1, processes=2, max_claim_batch=2,
            max_claim_per_worker=2, queues=["default"], tasks_running=0, tasks_claimed=0,
            worker_started_at=started, limits=limits,
        )  # fmt: skip

    broker = app.get_broker()
    await broker.insert_worker_state_async(state("w-limits", {"default": ["per-account"]}))
    await broker.insert_worker_state_async(state("w-none", {}))
    await broker.insert_worker_state_async(state("w-old", None))
    states = {s["worker_id"]: s["limits"] for s in await broker.get_worker_states()}
    assert states == {"w-limits": {"default": ["per-account"]}, "w-none": {}, "w-old": None}
