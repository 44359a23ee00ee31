"""Enqueue: the row written, bulk enqueue, NOTIFY on insert, error translation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from horsies.broker import BrokerError, EnqueueRequest, PostgresBroker
from horsies.codec import SerializationError
from horsies.config import PostgresConfig
from horsies.retry import RetryPolicy, TaskOptions
from psycopg.rows import dict_row


def _row(conninfo: str, task_id: str) -> dict[str, Any]:
    with psycopg.connect(conninfo) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM horsies_tasks WHERE id = %s", (task_id,))
        row = cur.fetchone()
    assert row is not None
    return row


@pytest.fixture
def listen_conn(database_conninfo: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_conninfo, autocommit=True) as conn:
        yield conn


def _drain(
    conn: psycopg.Connection[Any], expected: int, timeout: float = 5.0
) -> list[tuple[str, str]]:
    got = [(n.channel, n.payload) for n in conn.notifies(timeout=timeout, stop_after=expected)]
    # Anything else already delivered arrives at once; wait briefly to catch extras.
    got += [(n.channel, n.payload) for n in conn.notifies(timeout=0.2)]
    return got


def test_enqueue_writes_the_documented_row(broker: PostgresBroker, clean_db: str) -> None:
    options = TaskOptions(
        auto_retry_for=["UNHANDLED_EXCEPTION"], retry_policy=RetryPolicy.fixed([5])
    )
    good_until = datetime.now(UTC) + timedelta(hours=1)
    before = datetime.now(UTC)
    task_id = broker.enqueue(
        "mod.add",
        (1, "two"),
        {"x": [1, 2]},
        "default",
        priority=7,
        good_until=good_until,
        task_options=options.to_json(),
        max_retries=1,
    )
    row = _row(clean_db, task_id)
    assert uuid.UUID(task_id).version == 7  # time-ordered: see horsies/broker/ids.py
    assert row["task_name"] == "mod.add"
    assert row["queue_name"] == "default"
    assert row["priority"] == 7
    assert orjson.loads(row["args"]) == [1, "two"]
    assert orjson.loads(row["kwargs"]) == {"x": [1, 2]}
    assert row["status"] == "PENDING"
    assert (
        before - timedelta(seconds=5) <= row["sent_at"] <= datetime.now(UTC) + timedelta(seconds=5)
    )
    assert row["good_until"] == good_until
    assert row["max_retries"] == 1
    assert row["retry_count"] == 0
    assert TaskOptions.from_json(row["task_options"]) == options
    assert row["claimed"] is False
    assert row["created_at"] is not None
    assert row["updated_at"] is not None
    for column in (
        "claimed_at",
        "started_at",
        "completed_at",
        "failed_at",
        "result",
        "next_retry_at",
    ):
        assert row[column] is None


def test_no_arguments_are_stored_as_null(broker: PostgresBroker, clean_db: str) -> None:
    row = _row(clean_db, broker.enqueue("t"))
    assert row["args"] is None
    assert row["kwargs"] is None
    assert row["priority"] == 100


def test_future_sent_at_and_explicit_id_are_kept(broker: PostgresBroker, clean_db: str) -> None:
    later = datetime.now(UTC) + timedelta(seconds=90)
    task_id = broker.enqueue("t", sent_at=later, task_id="fixed-id-1")
    assert task_id == "fixed-id-1"
    assert _row(clean_db, task_id)["sent_at"] == later


async def test_enqueue_async_writes_the_same_row(broker: PostgresBroker, clean_db: str) -> None:
    task_id = await broker.enqueue_async("t", (3,), {"k": "v"}, "default", priority=5)
    row = _row(clean_db, task_id)
    assert (row["args"], row["kwargs"], row["priority"], row["status"]) == (
        "[3]",
        '{"k":"v"}',
        5,
        "PENDING",
    )


def test_unencodable_arguments_raise_before_any_database_access(database_url: str) -> None:
    # Points at a database that does not exist: reaching the database would fail differently.
    broken = PostgresBroker(
        PostgresConfig(database_url=database_url.replace("/horsies_t", "/missing_"), pool_timeout=1)
    )
    try:
        with pytest.raises(SerializationError):
            broken.enqueue("t", ({1, 2},))
        with pytest.raises(ValueError, match="priority"):
            broken.enqueue("t", priority=0)
    finally:
        broken.close()


@pytest.mark.parametrize(
    ("task_name", "queue_name", "problem"),
    [
        ("bad\ud800name", "default", "valid UTF-8 text (no lone surrogates)"),
        ("", "default", "non-empty strings"),
        ("t", "q" * 53, "53 characters (limit 52)"),
        ("t", "spaced name", "queue names must match"),
    ],
)
def test_names_the_database_would_refuse_are_refused_before_any_io(
    broker: PostgresBroker, clean_db: str, task_name: str, queue_name: str, problem: str
) -> None:
    """The same rules as @app.task and the queue configuration, on every low-level path (a lone
    surrogate used to surface as a raw UnicodeEncodeError, a long queue name as PostgreSQL's
    "channel name too long")."""
    sends = [
        lambda: broker.enqueue(task_name, queue_name=queue_name),
        lambda: broker.enqueue_calls(task_name, [((), None)], queue_name),
        lambda: broker.enqueue_many([EnqueueRequest(task_name, queue_name=queue_name)]),
    ]
    for send in sends:
        with pytest.raises(ValueError, match="cannot enqueue: ") as info:
            send()
        assert problem in str(info.value)
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT count(*) FROM horsies_tasks").fetchone() == (0,)


def test_database_errors_become_broker_errors_without_password(database_url: str) -> None:
    url = database_url.replace("postgres@", "postgres:s3cret-pw@").replace(
        "/horsies_t", "/missing_"
    )
    broken = PostgresBroker(PostgresConfig(database_url=url, pool_timeout=1, pool_size=1))
    try:
        with pytest.raises(BrokerError) as info:
            broken.enqueue("t")
        assert "s3cret-pw" not in str(info.value)
        assert "s3cret-pw" not in repr(broken)
    finally:
        broken.close()


def test_insert_notifies_task_new_and_the_queue_channel(
    broker: PostgresBroker, listen_conn: psycopg.Connection[Any]
) -> None:
    listen_conn.execute("LISTEN task_new")
    listen_conn.execute('LISTEN "task_queue_emails"')
    task_id = broker.enqueue("t", queue_name="emails")
    assert sorted(_drain(listen_conn, 2)) == [("task_new", task_id), ("task_queue_emails", task_id)]


def test_enqueue_many_inserts_all_rows_in_request_order(
    broker: PostgresBroker, clean_db: str
) -> None:
    requests = [EnqueueRequest("bulk", (i,), queue_name="default") for i in range(50)]
    requests.append(EnqueueRequest("bulk", (), {"late": True}, queue_name="other", priority=3))
    ids = broker.enqueue_many(requests)
    assert len(ids) == len(set(ids)) == 51
    with psycopg.connect(clean_db) as conn:
        rows = conn.execute(
            "SELECT id, args, queue_name, priority FROM horsies_tasks "
            "WHERE queue_name = 'default' ORDER BY priority, sent_at, id"
        ).fetchall()
        other = conn.execute(
            "SELECT kwargs, priority FROM horsies_tasks WHERE id = %s", (ids[-1],)
        ).fetchone()
    assert [r[0] for r in rows] == ids[:50]  # claim order (priority, sent_at, id) = request order
    assert [orjson.loads(r[1]) for r in rows] == [[i] for i in range(50)]
    assert other == ('{"late":true}', 3)
    assert broker.enqueue_many([]) == []


def test_enqueue_many_sends_one_wakeup_per_queue(
    broker: PostgresBroker, listen_conn: psycopg.Connection[Any]
) -> None:
    listen_conn.execute("LISTEN task_new")
    listen_conn.execute("LISTEN task_queue_a")
    listen_conn.execute("LISTEN task_queue_b")
    ids = broker.enqueue_many(
        [EnqueueRequest("t", queue_name="a") for _ in range(200)]
        + [EnqueueRequest("t", queue_name="b") for _ in range(100)]
    )
    got = _drain(listen_conn, 4)
    assert sorted(ch for ch, _ in got) == ["task_new", "task_new", "task_queue_a", "task_queue_b"]
    assert all(payload in ids for _, payload in got)


async def test_enqueue_many_async(broker: PostgresBroker, clean_db: str) -> None:
    ids = await broker.enqueue_many_async([EnqueueRequest("t", (i,)) for i in range(10)])
    with psycopg.connect(clean_db) as conn:
        count = conn.execute(
            "SELECT count(*) FROM horsies_tasks WHERE id = ANY(%s)", (ids,)
        ).fetchone()
    assert count == (10,)


def test_enqueue_many_is_all_or_nothing(broker: PostgresBroker, clean_db: str) -> None:
    with pytest.raises(BrokerError):
        broker.enqueue_many(
            [EnqueueRequest("t", task_id="dup"), EnqueueRequest("t", task_id="dup")]
        )
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT count(*) FROM horsies_tasks").fetchone() == (0,)
