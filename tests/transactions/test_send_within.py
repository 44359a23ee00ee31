"""Sends and workflow starts made within the caller's transaction, for every kind of connection:
the task exists (and workers hear of it) only once the caller commits; a rollback leaves nothing;
a refused send writes nothing and leaves the transaction usable; the schema is never installed
inside the caller's transaction."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from horsies import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.errors import ConfigurationError, ErrorCode
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from process_harness import wait_until
from psycopg import sql
from sides import ASYNC_KINDS, SYNC_KINDS, AsyncSide, Side, flow, make_app

pytestmark = pytest.mark.timeout(60)

_TABLES = ("horsies_tasks", "horsies_workflows", "horsies_workflow_tasks")


def counts(conninfo: str) -> dict[str, int]:
    """Rows per horsies table and of ``orders``, read by another connection."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            for table in (*_TABLES, "orders")
        }


class NewTaskListener:
    """A connection that listens on ``task_new`` (the channel the insert trigger notifies)."""

    def __init__(self, conninfo: str) -> None:
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute("LISTEN task_new")

    def heard(self, timeout: float) -> int:
        """Notifications that arrive within ``timeout`` seconds of silence."""
        return sum(1 for _ in self.conn.notifies(timeout=timeout))

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def listener(clean: str) -> Any:
    heard = NewTaskListener(clean)
    yield heard
    heard.close()


@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_a_commit_stores_the_tasks_and_wakes_workers_only_then(
    kind: str,
    app: Horsies,
    clean: str,
    open_side: Callable[[str], Side],
    listener: NewTaskListener,
) -> None:
    add = app.tasks["tx.add"]
    side = open_side(kind)
    side.add_order("first")
    one = add.within(side.within).send(1, 2)
    many = add.within(side.within).send_many([(3, 4), (5, 6)])
    later = add.within(side.within).schedule(60, 7, 8)
    assert all(h.task_id != "<error>" for h in [one, *many, later])
    # Not committed: invisible to others, nobody notified, and get() says why.
    assert counts(clean)["horsies_tasks"] == 0
    assert listener.heard(0.3) == 0
    before = one.get(timeout_ms=100)
    assert before.unwrap_err().error_code == LibraryErrorCode.TASK_NOT_FOUND
    assert "not committed" in (before.unwrap_err().message or "")
    side.commit()
    assert counts(clean) == {
        "horsies_tasks": 4,
        "horsies_workflows": 0,
        "horsies_workflow_tasks": 0,
        "orders": 1,
    }
    assert wait_until(lambda: listener.heard(0.2) or None, 10, "the task_new notifications")
    # The handle was not spoiled by its early get(): the task is there now (not run: no worker).
    assert one.get(timeout_ms=200).unwrap_err().error_code == LibraryErrorCode.WAIT_TIMEOUT


@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_a_rollback_leaves_nothing_and_notifies_nobody(
    kind: str,
    app: Horsies,
    clean: str,
    open_side: Callable[[str], Side],
    listener: NewTaskListener,
) -> None:
    add = app.tasks["tx.add"]
    side = open_side(kind)
    side.add_order("gone")
    add.within(side.within).send(1, 2)
    add.within(side.within).send_many([(3, 4)] * 50)
    flow(app, 1).within(side.within).start()
    side.rollback()
    assert counts(clean) == dict.fromkeys((*_TABLES, "orders"), 0)
    assert listener.heard(0.3) == 0


@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_a_refused_send_writes_nothing_and_leaves_the_transaction_usable(
    kind: str, app: Horsies, clean: str, open_side: Callable[[str], Side]
) -> None:
    add = app.tasks["tx.add"]
    side = open_side(kind)
    refused = add.within(side.within).send(1)  # a missing argument
    too_many = add.within(side.within).send_many([(1, 2), (1, 2, 3)])
    assert refused.get().unwrap_err().error_code == LibraryErrorCode.SEND_REFUSED
    assert {h.get().unwrap_err().error_code for h in too_many} == {LibraryErrorCode.SEND_REFUSED}
    side.add_order("still fine")
    add.within(side.within).send(1, 2)
    side.commit()
    assert counts(clean)["orders"] == 1
    assert counts(clean)["horsies_tasks"] == 1


@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_a_workflow_starts_with_the_commit(
    kind: str, app: Horsies, clean: str, open_side: Callable[[str], Side]
) -> None:
    side = open_side(kind)
    handle = flow(app, 1).within(side.within).start()
    assert counts(clean)["horsies_workflows"] == 0
    side.commit()
    rows = counts(clean)
    assert (rows["horsies_workflows"], rows["horsies_workflow_tasks"]) == (1, 2)
    assert rows["horsies_tasks"] == 1  # the root; the second node waits for it
    assert handle.status().value == "RUNNING"


@pytest.mark.parametrize("kind", ASYNC_KINDS)
async def test_async_connections_commit_and_roll_back(
    kind: str,
    app: Horsies,
    clean: str,
    open_async_side: Callable[[str], Any],
    listener: NewTaskListener,
) -> None:
    add = app.tasks["tx.add"]
    kept: AsyncSide = await open_async_side(kind)
    await kept.add_order("kept")
    one = await add.within(kept.within).send_async(1, 2)
    many = await add.within(kept.within).send_many_async([(3, 4), (5, 6)])
    started = await flow(app, 1).within(kept.within).start_async()
    assert all(h.task_id != "<error>" for h in [one, *many])
    assert counts(clean)["horsies_tasks"] == 0
    assert (await one.get_async(timeout_ms=100)).unwrap_err().error_code == (
        LibraryErrorCode.TASK_NOT_FOUND
    )
    await kept.commit()
    assert counts(clean) == {
        "horsies_tasks": 4,
        "horsies_workflows": 1,
        "horsies_workflow_tasks": 2,
        "orders": 1,
    }
    assert wait_until(lambda: listener.heard(0.2) or None, 10, "the task_new notifications")
    assert started.workflow_id

    dropped: AsyncSide = await open_async_side(kind)
    await dropped.add_order("dropped")
    await add.within(dropped.within).send_async(1, 2)
    await add.within(dropped.within).send_many_async([(3, 4)])
    await flow(app, 2).within(dropped.within).start_async()
    refused = await add.within(dropped.within).send_async(1)
    assert refused.get().unwrap_err().error_code == LibraryErrorCode.SEND_REFUSED
    await dropped.rollback()
    after = counts(clean)
    assert (after["horsies_tasks"], after["horsies_workflows"], after["orders"]) == (4, 1, 1)
    assert listener.heard(0.3) == 0


def test_an_object_horsies_cannot_write_through_is_refused_at_once(app: Horsies) -> None:
    with pytest.raises(ConfigurationError) as caught:
        app.tasks["tx.add"].within(object())
    assert caught.value.code == ErrorCode.CONNECTION_UNSUPPORTED


async def test_a_connection_of_the_other_flavour_refuses_the_send(app: Horsies, clean: str) -> None:
    add = app.tasks["tx.add"]
    async with await psycopg.AsyncConnection.connect(clean) as aconn:
        refused = add.within(aconn).send(1, 2)  # a blocking send on an asyncio connection
    error = refused.get().unwrap_err()
    assert error.error_code == LibraryErrorCode.SEND_REFUSED
    assert "E211" in (error.message or "") or "asyncio" in (error.message or "")
    with psycopg.connect(clean) as conn:
        refused = await add.within(conn).send_async(1, 2)
    assert refused.get().unwrap_err().error_code == LibraryErrorCode.SEND_REFUSED
    assert counts(clean)["horsies_tasks"] == 0


def test_a_database_without_the_schema_refuses_and_installs_nothing(
    pg_cluster: Any,
) -> None:
    """The schema is never created inside the caller's transaction: the send is refused (E212)
    and the transaction goes on."""
    name = f"horsies_noschema_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.admin_conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        app = make_app(pg_cluster.url_for(name))
        with psycopg.connect(pg_cluster.conninfo_for(name)) as conn:
            refused = app.tasks["tx.add"].within(conn).send(1, 2)
            error = refused.get().unwrap_err()
            assert error.error_code == LibraryErrorCode.SEND_REFUSED
            assert "E212" in (error.message or "")
            conn.execute("CREATE TABLE mine (x int)")  # the transaction is still usable
            conn.commit()
            exists = conn.execute("SELECT to_regclass('horsies_tasks') IS NOT NULL").fetchone()
            assert exists == (False,)
        app.get_broker().close()
    finally:
        with psycopg.connect(pg_cluster.admin_conninfo, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_concurrent_transactions_never_lose_or_duplicate_a_task(app: Horsies, clean: str) -> None:
    """Eight threads, each with its own connection, send in transactions that commit or roll
    back at random, 20 rounds: the stored tasks are exactly the committed ones."""
    add = app.tasks["tx.add"]
    rng = random.Random(16)
    expected: set[str] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def one_round(seed: int) -> None:
        local = random.Random(seed)
        try:
            with psycopg.connect(clean) as conn:
                ids = [add.within(conn).send(i, 1).task_id for i in range(3)]
                ids += [h.task_id for h in add.within(conn).send_many([(0, 0)] * 5)]
                assert "<error>" not in ids
                if local.random() < 0.5:
                    conn.commit()
                    with lock:
                        expected.update(ids)
                else:
                    conn.rollback()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    for _ in range(20):
        threads = [threading.Thread(target=one_round, args=(rng.random(),)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive()
    assert not errors, errors
    with psycopg.connect(clean, autocommit=True) as conn:
        stored = [row[0] for row in conn.execute("SELECT id FROM horsies_tasks")]
    assert len(stored) == len(set(stored))
    assert set(stored) == expected


def test_a_payload_over_the_limit_is_refused_and_the_transaction_goes_on(
    database_url: str, clean: str
) -> None:
    config = AppConfig(broker=PostgresConfig(database_url=database_url), max_payload_bytes=4096)
    app = Horsies(config)

    @app.task("tx.big")
    def big(blob: str) -> TaskResult[int, TaskError]:
        return TaskResult(ok=len(blob))

    with psycopg.connect(clean) as conn:
        conn.execute("INSERT INTO orders (note) VALUES ('kept')")
        refused = big.within(conn).send("x" * 8192)
        assert refused.get().unwrap_err().error_code == LibraryErrorCode.SEND_REFUSED
        assert big.within(conn).send("small").sent
        conn.commit()
    app.get_broker().close()
    assert counts(clean)["orders"] == 1
    assert counts(clean)["horsies_tasks"] == 1
