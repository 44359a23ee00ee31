"""Unique tasks against a real PostgreSQL: a send whose key a task in scope holds creates nothing
and answers with that task; concurrent producers of one key make exactly one task; scopes end when
they say; batches report per call; the option is checked when the task is defined."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from horsies import Horsies, RetryPolicy, TaskAlreadyExists, Unique
from horsies.config import AppConfig, PostgresConfig
from horsies.errors import ErrorCode, TaskDefinitionError
from horsies.results import TaskError, TaskResult
from horsies.testing import run_pending
from process_harness import wait_until

pytestmark = pytest.mark.timeout(60)


def make_app(database_url: str) -> Horsies:
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url, max_overflow=40)))

    @app.task("uq.mail", unique=Unique(on=["user_id"]))
    def mail(user_id: int, text: str = "hi") -> TaskResult[str, TaskError]:
        return TaskResult(ok=f"{user_id}:{text}")

    @app.task("uq.pending", unique=Unique(scope="pending"))
    def pending(n: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=n)

    @app.task("uq.window", unique=Unique(scope=1.0, on=()))
    def window() -> TaskResult[None, TaskError]:
        return TaskResult(ok=None)

    @app.task("uq.strict", unique=Unique(if_exists="raise"))
    def strict(n: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=n)

    @app.task(
        "uq.flaky",
        unique=Unique(),
        retry_policy=RetryPolicy.fixed([60]),
        auto_retry_for=["ValueError"],
    )
    def flaky(n: int) -> TaskResult[int, TaskError]:
        raise ValueError("not yet")

    @app.task("uq.plain")
    def plain(n: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=n)

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


def rows(conninfo: str, task_name: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute(
            "SELECT id, status, unique_key FROM horsies_tasks"
            " WHERE task_name = %s ORDER BY sent_at",
            (task_name,),
        ).fetchall()


def test_the_same_call_while_the_first_is_pending_answers_with_it(app: Horsies, db: str) -> None:
    mail = app.tasks["uq.mail"]
    first = mail.send(7)
    again = mail.send(user_id=7, text="other text")  # same key: only user_id counts
    other = mail.send(8)
    assert first.created
    assert not again.created
    assert again.task_id == first.task_id
    assert other.created
    assert len(rows(db, "uq.mail")) == 2
    assert rows(db, "uq.mail")[0][2] == 'uq.mail:{"user_id":7}'


def test_a_key_is_free_again_once_its_task_has_ended(app: Horsies, db: str) -> None:
    mail = app.tasks["uq.mail"]
    first = mail.send(1)
    assert [ran.task_id for ran in run_pending(app)] == [first.task_id]
    assert first.get(timeout_ms=1000).unwrap() == "1:hi"
    second = mail.send(1)
    assert second.created
    assert second.task_id != first.task_id
    cancelled = mail.send(2)
    assert cancelled.cancel()
    assert mail.send(2).created


def test_a_retry_waiting_to_run_still_holds_an_active_key(app: Horsies, db: str) -> None:
    flaky = app.tasks["uq.flaky"]
    first = flaky.send(1)
    run_pending(app)  # fails, retry in 60 s: PENDING again
    assert rows(db, "uq.flaky")[0][1] == "PENDING"
    again = flaky.send(1)
    assert not again.created
    assert again.task_id == first.task_id


def test_a_window_scope_ends_with_its_time(app: Horsies, db: str) -> None:
    window = app.tasks["uq.window"]
    first = window.send()
    run_pending(app)  # ended: a window scope ignores the status
    assert not window.send().created
    fresh = wait_until(
        lambda: (h := window.send()).created and h, 10, "the window to pass", interval=0.1
    )
    assert fresh.task_id != first.task_id


def test_if_exists_raise_raises_with_the_holder(app: Horsies, db: str) -> None:
    strict = app.tasks["uq.strict"]
    first = strict.send(3)
    with pytest.raises(TaskAlreadyExists) as raised:
        strict.send(3)
    assert raised.value.task_id == first.task_id
    # A batch reports per call instead of raising.
    batch = strict.send_many([(3,), (4,)])
    assert [h.created for h in batch] == [False, True]


def test_send_many_reports_which_calls_were_new(app: Horsies, db: str) -> None:
    mail = app.tasks["uq.mail"]
    held = mail.send(1)
    batch = mail.send_many([(1,), (2,), {"user_id": 2, "text": "x"}, (3,)])
    assert [h.created for h in batch] == [False, True, False, True]
    assert batch[0].task_id == held.task_id
    assert batch[2].task_id == batch[1].task_id
    assert len(rows(db, "uq.mail")) == 3


def test_a_key_of_your_own_per_send_and_none_to_switch_it_off(app: Horsies, db: str) -> None:
    plain = app.tasks["uq.plain"]
    keyed = plain.with_options(unique=Unique(key="nightly"))
    first = keyed.send(1)
    assert not keyed.send(2).created  # different arguments, same key
    assert rows(db, "uq.plain")[0][2] == "uq.plain:nightly"
    mail = app.tasks["uq.mail"].with_options(unique=None)
    assert mail.send(5).created
    assert mail.send(5).created
    assert first.created


def test_thirty_two_concurrent_producers_make_exactly_one_task(app: Horsies, db: str) -> None:
    """32 threads send the same key at once, each in its own transaction on its own connection
    (the first to insert holds the others until it commits)."""
    mail = app.tasks["uq.mail"]
    barrier = threading.Barrier(32)
    outcomes: list[tuple[str, bool]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def produce() -> None:
        try:
            with psycopg.connect(db) as conn:
                barrier.wait(timeout=20)
                handle = mail.within(conn).send(42)
                conn.commit()
            with lock:
                outcomes.append((handle.task_id, handle.created))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=produce) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert len(outcomes) == 32
    assert sum(created for _, created in outcomes) == 1
    assert len({task_id for task_id, _ in outcomes}) == 1
    assert len(rows(db, "uq.mail")) == 1


def test_a_rolled_back_holder_lets_the_next_send_through(app: Horsies, db: str) -> None:
    mail = app.tasks["uq.mail"]
    with psycopg.connect(db) as first:
        mail.within(first).send(9)
        first.rollback()
    assert mail.send(9).created


async def test_async_sends_are_unique_too(app: Horsies, db: str) -> None:
    mail = app.tasks["uq.mail"]
    handles = await asyncio.gather(*(mail.send_async(11) for _ in range(10)))
    assert sum(h.created for h in handles) == 1
    assert len({h.task_id for h in handles}) == 1
    batch = await mail.send_many_async([(11,), (12,)])
    assert [h.created for h in batch] == [False, True]


def test_a_scheduled_send_is_unique(app: Horsies, db: str) -> None:
    pending = app.tasks["uq.pending"]
    later = pending.schedule(30, 1)
    assert not pending.send(1).created
    assert pending.send(2).created
    assert later.created


@pytest.mark.parametrize(
    ("options", "note"),
    [
        ({"unique": Unique(on=["nope"])}, "'nope' is not a parameter"),
        ({"unique": "user_id"}, "unique: a horsies.Unique"),
    ],
)
def test_a_bad_option_is_refused_at_definition(
    app: Horsies, options: dict[str, Any], note: str
) -> None:
    with pytest.raises(TaskDefinitionError) as raised:

        @app.task("uq.bad", **options)
        def bad(user_id: int) -> TaskResult[int, TaskError]:
            return TaskResult(ok=user_id)

    assert raised.value.code == ErrorCode.TASK_INVALID_OPTIONS
    assert note in str(raised.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"scope": 0}, {"scope": "later"}, {"on": "user_id"}, {"key": ""}, {"key": "k", "on": ()}],
)
def test_a_bad_unique_is_refused_when_made(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TaskDefinitionError) as raised:
        Unique(**kwargs)
    assert raised.value.code == ErrorCode.TASK_INVALID_OPTIONS


def test_long_keys_are_stored_hashed(app: Horsies, db: str) -> None:
    mail = app.tasks["uq.mail"].with_options(unique=Unique(on=["user_id", "text"]))
    long_text = "x" * 1000
    assert mail.send(1, long_text).created
    assert not mail.send(1, long_text).created
    key = rows(db, "uq.mail")[0][2]
    assert key.startswith("uq.mail:sha256:")
    assert len(key) < 100
