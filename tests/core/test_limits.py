"""Rate and concurrency limits without a worker: the option is checked when the task is defined,
every send path stores the limit's name and key, a key function that fails refuses the send, the
limited claim honours the counts under concurrent claimers, and a worker with cluster-wide caps
refuses limits at start-up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
import pytest
from horsies import Horsies, Limit, Unique
from horsies.broker.claim_plan import ClaimRequest, QueueClaimSpec
from horsies.broker.limits import LimitNumbers
from horsies.config import AppConfig, PostgresConfig
from horsies.errors import (
    ErrorCode,
    TaskDefinitionError,
    WorkflowValidationError,
)
from horsies.results import TaskError, TaskResult
from horsies.tasks.context import TaskContext
from horsies.workflows.nodes import TaskNode
from thread_harness import race

pytestmark = pytest.mark.timeout(60)

PER_ACCOUNT = Limit("per-account", concurrency=2, on=["account"])
BY_FUNCTION = Limit("by-region", rate=3, per_s=1, key=lambda args: str(args["region"]).upper())


def make_app(database_url: str) -> Horsies:
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url, max_overflow=20)))

    @app.task("lim.account", limit=PER_ACCOUNT)
    def account(account: str, n: int = 0) -> TaskResult[int, TaskError]:
        return TaskResult(ok=n)

    @app.task("lim.region", limit=BY_FUNCTION)
    def region(region: object) -> TaskResult[None, TaskError]:
        return TaskResult(ok=None)

    @app.task("lim.unique", limit=PER_ACCOUNT, unique=Unique(on=["account"]))
    def unique(account: str) -> TaskResult[None, TaskError]:
        return TaskResult(ok=None)

    @app.task("lim.plain")
    def plain() -> TaskResult[None, TaskError]:
        return TaskResult(ok=None)

    return app


@pytest.fixture(scope="module")
def app(database_url: str) -> Iterator[Horsies]:
    producer = make_app(database_url)
    producer.get_broker().ensure_schema_initialized_sync()
    yield producer
    producer.get_broker().close()


@pytest.fixture
def db(app: Horsies, clean_db: str) -> str:
    return clean_db


def tags(conninfo: str) -> dict[str, tuple[str | None, str | None]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute("SELECT id, limit_name, limit_key FROM horsies_tasks").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


# -- the option -----------------------------------------------------------------------------------


async def _async_key(arguments: Mapping[str, Any]) -> str:
    return str(arguments)


@pytest.mark.parametrize(
    ("kwargs", "note"),
    [
        ({}, "give concurrency, rate or both"),
        ({"concurrency": 0}, "concurrency: a whole number >= 1"),
        ({"rate": -1}, "rate: a whole number >= 1"),
        ({"rate": 1, "per_s": 0}, "per_s: between"),
        ({"rate": 1, "per_s": float("inf")}, "per_s: a number of seconds"),
        ({"concurrency": 1, "on": "tenant"}, "on: a sequence of argument names"),
        ({"concurrency": 1, "on": ["a"], "key": lambda a: a}, "either key or on"),
        ({"concurrency": 1, "key": "tenant"}, "key: a function of the arguments"),
        ({"concurrency": 1, "key": lambda: "x"}, "called with one argument"),
        ({"concurrency": 1, "key": _async_key}, "a plain function"),
    ],
)
def test_a_bad_limit_is_refused_when_made(kwargs: dict[str, Any], note: str) -> None:
    with pytest.raises(TaskDefinitionError) as raised:
        Limit("x", **kwargs)
    assert raised.value.code is ErrorCode.TASK_INVALID_OPTIONS
    assert note in str(raised.value)


def test_a_limit_on_an_unknown_argument_is_refused_at_definition(database_url: str) -> None:
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))
    with pytest.raises(TaskDefinitionError, match="'tenant' is not a parameter"):

        @app.task("bad.on", limit=Limit("l", concurrency=1, on=["tenant"]))
        def bad(account: str) -> TaskResult[None, TaskError]:  # pyright: ignore[reportUnusedFunction]
            return TaskResult(ok=None)


def test_a_limit_on_an_argument_the_worker_fills_in_is_refused(database_url: str) -> None:
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))
    with pytest.raises(TaskDefinitionError, match="'task_ctx' is filled in by the worker"):

        @app.task("bad.injected", limit=Limit("l", concurrency=1, on=["account", "task_ctx"]))
        def bad(account: str, task_ctx: TaskContext | None = None) -> TaskResult[None, TaskError]:  # pyright: ignore[reportUnusedFunction]
            return TaskResult(ok=None)


def test_one_limit_name_with_two_sets_of_numbers_is_refused(database_url: str) -> None:
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))

    @app.task("two.a", limit=Limit("shared", concurrency=1))
    def a() -> TaskResult[None, TaskError]:  # pyright: ignore[reportUnusedFunction]
        return TaskResult(ok=None)

    with pytest.raises(TaskDefinitionError, match="'shared' is given other numbers"):

        @app.task("two.b", limit=Limit("shared", concurrency=2))
        def b() -> TaskResult[None, TaskError]:  # pyright: ignore[reportUnusedFunction]
            return TaskResult(ok=None)


def test_limit_key_is_only_for_a_task_with_a_limit(app: Horsies) -> None:
    with pytest.raises(TaskDefinitionError, match="has no limit"):
        app.tasks["lim.plain"].with_options(limit_key="x")
    with pytest.raises(TaskDefinitionError, match="non-empty string"):
        app.tasks["lim.account"].with_options(limit_key="")


# -- sends ---------------------------------------------------------------------------------------


def test_every_send_path_stores_the_limit_and_its_key(app: Horsies, db: str) -> None:
    account = app.tasks["lim.account"]
    one = account.send("acme")
    later = account.schedule(30, "acme", n=1)
    many = account.send_many([{"account": "globex"}, ("initech", 2)])
    chosen = account.with_options(limit_key="vip").send("acme")
    by_function = app.tasks["lim.region"].send("eu")
    unique = app.tasks["lim.unique"].send("umbrella")
    plain = app.tasks["lim.plain"].send()

    async def from_a_loop() -> list[str]:
        handle = await account.send_async("hooli")
        batch = await account.send_many_async([{"account": "pied"}])
        return [handle.task_id, batch[0].task_id]

    async_ids = asyncio.run(from_a_loop())
    with psycopg.connect(db, autocommit=True) as conn, conn.transaction():
        within = account.within(conn).send("wayne")
    stored = tags(db)
    assert stored[one.task_id] == ("per-account", "acme")
    assert stored[later.task_id] == ("per-account", "acme")
    assert [stored[h.task_id] for h in many] == [
        ("per-account", "globex"),
        ("per-account", "initech"),
    ]
    assert stored[chosen.task_id] == ("per-account", "vip")
    assert stored[by_function.task_id] == ("by-region", "EU")
    assert stored[unique.task_id] == ("per-account", "umbrella")
    assert stored[plain.task_id] == (None, None)
    assert [stored[i] for i in async_ids] == [("per-account", "hooli"), ("per-account", "pied")]
    assert stored[within.task_id] == ("per-account", "wayne")
    with psycopg.connect(db, autocommit=True) as conn:
        delay = conn.execute(
            "SELECT sent_at - created_at FROM horsies_tasks WHERE id = %s", (later.task_id,)
        ).fetchone()
    assert delay is not None
    assert delay[0].total_seconds() >= 29


def test_a_key_function_that_fails_refuses_the_send(app: Horsies, db: str) -> None:
    handle = app.tasks["lim.region"].send(None)  # str(None).upper() works: "NONE"
    assert handle.sent

    def explode(args: Mapping[str, Any]) -> str:
        raise KeyError("region")

    local = Horsies(AppConfig(broker=app.config.broker))

    @local.task("lim.explodes", limit=Limit("boom", concurrency=1, key=explode))
    def explodes(region: str) -> TaskResult[None, TaskError]:
        return TaskResult(ok=None)

    refused = explodes.send("eu")
    assert not refused.sent
    error = refused.get().unwrap_err()
    assert error.error_code == "SEND_REFUSED"
    assert "key function of limit 'boom' raised KeyError" in str(error.message)
    assert tags(db) == {handle.task_id: ("by-region", "NONE")}
    local.get_broker().close()


# -- the limited claim ---------------------------------------------------------------------------


def _claim(app: Horsies, worker: str, pids: list[int], limits: list[str]) -> list[str]:
    request = ClaimRequest(
        queues=[QueueClaimSpec("default")],
        local_budget=len(pids),
        max_claim_batch=0,
        limits={"default": limits},
    )

    async def exchange() -> list[str]:
        done = await app.get_broker().exchange_async(worker, "h", request=request, pids=pids)
        return [s.task.id for s in done.started]

    return asyncio.run(exchange())


def test_concurrent_claimers_never_start_more_than_a_key_allows(app: Horsies, db: str) -> None:
    asyncio.run(app.get_broker().register_limits_async([PER_ACCOUNT.numbers]))
    account = app.tasks["lim.account"]
    assert all(h.sent for h in account.send_many([{"account": f"a{i % 5}"} for i in range(100)]))
    started: list[str] = []
    lock = threading.Lock()

    def claimer(index: int) -> None:
        for _ in range(5):
            ids = _claim(
                app, f"w{index}", list(range(index * 100, index * 100 + 8)), ["per-account"]
            )
            with lock:
                started.extend(ids)

    race(8, claimer, timeout_s=30)
    with psycopg.connect(db, autocommit=True) as conn:
        running = conn.execute(
            "SELECT limit_key, count(*) FROM horsies_tasks WHERE status = 'RUNNING' GROUP BY 1"
        ).fetchall()
    # Nothing finished, so each of the five accounts has exactly its two.
    assert sorted(running) == [(f"a{i}", 2) for i in range(5)]
    assert len(started) == len(set(started)) == 10


def test_unregistered_limits_are_not_claimed(app: Horsies, db: str) -> None:
    assert app.tasks["lim.account"].send("solo").sent
    assert _claim(app, "w", [1, 2], ["per-account"]) == []  # no numbers written yet
    asyncio.run(app.get_broker().register_limits_async([PER_ACCOUNT.numbers]))
    assert len(_claim(app, "w", [1, 2], ["per-account"])) == 1


def test_registering_other_numbers_reports_the_old_ones(app: Horsies, db: str) -> None:
    broker = app.get_broker()
    assert asyncio.run(broker.register_limits_async([PER_ACCOUNT.numbers])) == []
    changed = LimitNumbers("per-account", concurrency=5)
    assert asyncio.run(broker.register_limits_async([changed])) == [PER_ACCOUNT.numbers]
    assert asyncio.run(broker.register_limits_async([changed])) == []


def test_a_limited_task_is_refused_as_a_workflow_node(app: Horsies) -> None:
    with pytest.raises(WorkflowValidationError) as raised:
        app.workflow("with-limit", [TaskNode(fn=app.tasks["lim.account"], args=("acme",))])
    assert raised.value.code is ErrorCode.WORKFLOW_NODE_UNDER_LIMIT
    assert "limited by 'per-account'" in str(raised.value)
