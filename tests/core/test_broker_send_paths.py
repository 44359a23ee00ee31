"""The producer's fast send paths (issue 6): what they must keep of the plain ones.

- a single send runs TASK_INSERT as a libpq prepared statement: same rows, same errors, falls back
  to a psycopg cursor for what it cannot send as is (NUL, datetime subclasses, big ints, another
  client encoding, echo), prepares again after ``DEALLOCATE ALL``, and a connection killed
  mid-statement is still retried without storing the task twice;
- the pools hand out the most recently used idle connection first;
- ``send_many`` streams one binary COPY built by horsies: same rows, call order kept, all or
  nothing, exactly once after a lost connection;
- concurrent ``send_async`` calls are coalesced into shared inserts: all land, each is stored when
  its await returns, a bad call fails alone, cancelled waiters send nothing, a lone send is not
  delayed, and a lost connection never stores a task twice or loses one.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from db_rows import row, sql
from horsies.app import Horsies
from horsies.broker import BrokerError, EnqueueRequest, PostgresBroker, prepared, steps
from horsies.broker.programs import Run
from horsies.codec import PayloadTooLargeError
from horsies.config import AppConfig, PostgresConfig
from horsies.env import SUPPRESS_SENDS as SUPPRESS_SENDS_ENV
from horsies.results import TaskError, TaskResult
from horsies.retry import RetryPolicy
from lost_connection import lose_next_call


def _with_param(url: str, param: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{param}"


def _steps(monkeypatch: pytest.MonkeyPatch, broker: PostgresBroker) -> list[Any]:
    """Record the op or step of every statement run of ``broker``'s async driver."""
    seen: list[Any] = []
    driver = broker._async  # pyright: ignore[reportPrivateUsage]
    real = driver.run

    async def run_async(effect: Run[Any], **kw: Any) -> Any:
        if not kw.get("bootstrap"):  # the migrations are not a call of the broker's API
            seen.append(effect.op)
        return await real(effect, **kw)

    monkeypatch.setattr(driver, "run", run_async)
    return seen


def _terminate(conninfo: str, application_name: str = "horsies") -> int:
    found = sql(
        conninfo,
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND application_name = %s",
        (application_name,),
    )
    return int(found[0]["n"])


def _count(conninfo: str, task_name: str) -> int:
    return int(
        sql(conninfo, "SELECT count(*) AS n FROM horsies_tasks WHERE task_name = %s", (task_name,))[
            0
        ]["n"]
    )


# -- single send: the libpq prepared statement ---------------------------------------------------


def test_prepared_send_writes_the_same_row_as_before(broker: PostgresBroker, clean_db: str) -> None:
    good_until = datetime.now(UTC) + timedelta(hours=2)
    sent_at = datetime.now(UTC) + timedelta(minutes=5)
    task_id = broker.enqueue(
        "mod.t",
        (1, "é", None),
        {"k": [1.5, True]},
        "default",
        priority=7,
        sent_at=sent_at,
        good_until=good_until,
        task_options='{"x":1}',
        max_retries=3,
        task_id="explicit-id",
    )
    assert task_id == "explicit-id"
    stored = row(clean_db, task_id)
    assert stored["args"] == '[1,"é",null]'
    assert orjson.loads(stored["kwargs"]) == {"k": [1.5, True]}
    assert (stored["priority"], stored["max_retries"], stored["task_options"]) == (7, 3, '{"x":1}')
    assert stored["sent_at"] == sent_at
    assert stored["good_until"] == good_until
    assert stored["status"] == "PENDING"


def test_prepared_send_prepares_again_after_deallocate_all(
    database_url: str, clean_db: str
) -> None:
    broker = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=1, max_overflow=0))
    try:
        first = broker.enqueue("t")
        broker.execute(steps.run_query(steps.Query("DEALLOCATE ALL", rows="none")), action="test")
        second = broker.enqueue("t")
    finally:
        broker.close()
    assert {r["id"] for r in sql(clean_db, "SELECT id FROM horsies_tasks")} == {first, second}


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_prepared_statement_that_vanishes_again_at_once_fails_the_call(
    database_url: str, clean_db: str, monkeypatch: pytest.MonkeyPatch, use_async: bool
) -> None:
    """Prepared again once after it vanished; if it is gone again at once (a pooler handing each
    statement to another server connection) the call fails with the server's error instead of
    preparing forever."""
    real_args = prepared.prepare_args

    def elsewhere(step: Any) -> tuple[bytes, bytes, list[int]]:
        name, text, oids = real_args(step)
        return b"elsewhere_" + name, text, oids  # the name executed never exists

    monkeypatch.setattr(prepared, "prepare_args", elsewhere)
    broker = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=1, max_overflow=0))
    try:

        def send() -> str:
            if use_async:
                return asyncio.run(broker.enqueue_async("t"))
            return broker.enqueue("t")

        with pytest.raises(BrokerError) as raised:
            send()
    finally:
        broker.close()
    assert "does not exist" in str(raised.value)
    assert sql(clean_db, "SELECT id FROM horsies_tasks") == []


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"task_options": "{}\x00"}, "PostgreSQL text fields cannot contain NUL", id="nul"
        ),
        pytest.param({"max_retries": 2**40}, "out of range", id="big-int"),
    ],
)
def test_values_the_libpq_path_does_not_send_get_psycopg_errors(
    broker: PostgresBroker, clean_db: str, kwargs: dict[str, Any], expected: str
) -> None:
    fields: dict[str, Any] = {"task_name": "t"} | kwargs
    with pytest.raises(BrokerError) as raised:
        broker.enqueue(**fields)
    assert expected in str(raised.value)
    assert str(raised.value).startswith("enqueue failed: ")
    assert not raised.value.connection_lost
    assert sql(clean_db, "SELECT id FROM horsies_tasks") == []


def test_echo_and_another_client_encoding_use_the_cursor_path(
    database_url: str, clean_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    echo = PostgresBroker(PostgresConfig(database_url=database_url, echo=True))
    latin1 = PostgresBroker(
        PostgresConfig(database_url=_with_param(database_url, "client_encoding=LATIN1"))
    )
    try:
        with caplog.at_level("DEBUG", logger="horsies"):
            echoed = echo.enqueue("t", ("echo",))
        assert any("INSERT INTO horsies_tasks" in r.getMessage() for r in caplog.records)
        encoded = latin1.enqueue("t", ("é",), {"k": "ü"})
        many = latin1.enqueue_calls("t", [(("ß",), None), ((), {"v": "ö"})])
    finally:
        echo.close()
        latin1.close()
    assert row(clean_db, echoed)["args"] == '["echo"]'
    assert row(clean_db, encoded)["args"] == '["é"]'
    assert row(clean_db, encoded)["kwargs"] == '{"k":"ü"}'
    assert [row(clean_db, i)["args"] for i in many] == ['["ß"]', None]
    assert row(clean_db, many[1])["kwargs"] == '{"v":"ö"}'


def test_a_prepared_send_killed_mid_statement_is_stored_exactly_once(
    database_url: str, clean_db: str
) -> None:
    """The libpq path under a real termination: the insert waits on a lock, its backend is
    terminated, the retry on a new connection stores the task once."""
    broker = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=1))
    outcome: list[Any] = []
    try:
        broker.enqueue("warm-up")  # the statement is prepared on the pooled connection
        with psycopg.connect(clean_db) as locker:
            locker.execute("LOCK TABLE horsies_tasks IN ACCESS EXCLUSIVE MODE")

            def send() -> None:
                try:
                    outcome.append(broker.enqueue("t", (1,), task_id="killed-1"))
                except BaseException as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=send, daemon=True)
            thread.start()
            deadline = time.monotonic() + 10
            while not sql(
                clean_db,
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'horsies'"
                " AND wait_event_type = 'Lock' AND datname = current_database()",
            ):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert _terminate(clean_db) >= 1
            time.sleep(0.2)
        thread.join(30)
    finally:
        broker.close()
    assert outcome == ["killed-1"]
    assert row(clean_db, "killed-1")["args"] == "[1]"
    assert _count(clean_db, "t") == 1


# -- pools: most recently used first ------------------------------------------------------------


def test_sequential_calls_reuse_the_most_recently_used_connection(database_url: str) -> None:
    broker = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=3))
    pid = steps.Query("SELECT pg_backend_pid()")
    try:
        sleep = steps.Query("SELECT pg_sleep(0.3)")
        threads = [
            threading.Thread(
                target=broker.execute, args=(steps.run_query(sleep),), kwargs={"action": "sleep"}
            )
            for _ in range(3)
        ]  # three connections in use at once: the pool holds three idle ones afterwards
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        pids = {broker.execute(steps.run_query(pid), action="pid").rows[0][0] for _ in range(9)}
    finally:
        broker.close()
    assert len(pids) == 1


async def test_async_pool_also_reuses_the_most_recent_connection(database_url: str) -> None:
    broker = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=3))
    pid = steps.Query("SELECT pg_backend_pid()")
    try:
        sleep = steps.Query("SELECT pg_sleep(0.3)")
        # Three connections in use at once: the pool holds three idle ones afterwards.
        await asyncio.gather(
            *(broker.execute_async(steps.run_query(sleep), action="sleep") for _ in range(3))
        )
        pids = {
            (await broker.execute_async(steps.run_query(pid), action="pid")).rows[0][0]
            for _ in range(9)
        }
    finally:
        await broker.close_async()
    assert len(pids) == 1


# -- send_many: the COPY built by horsies ---------------------------------------------------------


def test_send_many_writes_every_row_in_call_order(app: Horsies, clean_db: str) -> None:
    good_until = datetime.now(UTC) + timedelta(days=1)

    @app.task("bulk.rows", good_until=good_until, retry_policy=RetryPolicy.fixed([1, 2]))
    def rows(x: int = 0, y: str = "") -> TaskResult[int, TaskError]:
        return TaskResult(ok=x)

    calls: list[Any] = [(i,) if i % 3 else {"x": i, "y": "é" * (i % 5)} for i in range(1300)]
    calls[7] = ()
    handles = rows.send_many(calls)
    ids = [h.task_id for h in handles]
    assert len(set(ids)) == 1300
    stored = {
        r["id"]: r
        for r in sql(
            clean_db,
            "SELECT * FROM horsies_tasks WHERE task_name = 'bulk.rows' ORDER BY sent_at, id",
        )
    }
    assert list(stored) == ids  # claimed in call order
    for index, task_id in enumerate(ids):
        r = stored[task_id]
        call = calls[index]
        if isinstance(call, dict):
            assert r["args"] is None
            assert orjson.loads(r["kwargs"]) == call
        else:
            assert r["args"] == (orjson.dumps(list(call)).decode() if call else None)
            assert r["kwargs"] is None
        assert (r["queue_name"], r["priority"], r["status"]) == ("default", 100, "PENDING")
        assert (r["max_retries"], r["retry_count"], r["claimed"]) == (2, 0, False)
        assert r["good_until"] == good_until
        assert r["task_options"] == rows.task_options_json
    first, last = stored[ids[0]], stored[ids[-1]]
    assert last["sent_at"] == last["created_at"]  # the transaction's now()
    assert last["sent_at"] - first["sent_at"] == timedelta(microseconds=1299)


def test_send_many_is_all_or_nothing_after_any_bad_call(
    database_url: str, clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SUPPRESS_SENDS_ENV, raising=False)
    app = Horsies(
        AppConfig(broker=PostgresConfig(database_url=database_url), max_payload_bytes=1024)
    )

    @app.task("bulk.bad")
    def bad(x: Any) -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    try:
        handles = bad.send_many([(1,)] * 600 + [("x" * 2000,)] + [(2,)] * 10)
        fine = bad.send_many([(1,)] * 600)
    finally:
        app.get_broker().close()
    assert {h.task_id for h in handles} == {"<error>"}
    error = handles[0].get().unwrap_err()
    assert error.data["exception_type"] == PayloadTooLargeError.__name__
    assert _count(clean_db, "bulk.bad") == len(fine) == 600


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
async def test_send_many_lost_mid_statement_is_stored_exactly_once(
    app: Horsies, clean_db: str, committed: bool
) -> None:
    @app.task("bulk.lost")
    def lost(x: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=x)

    broker = app.get_broker()
    with pytest.MonkeyPatch.context() as patch:
        calls = lose_next_call(patch, broker, run_first=committed)
        sync_ids = [h.task_id for h in lost.send_many([(i,) for i in range(700)])]
    with pytest.MonkeyPatch.context() as patch:
        calls_async = lose_next_call(patch, broker, run_first=committed)
        async_ids = [h.task_id for h in await lost.send_many_async([(i,) for i in range(700)])]
    await broker.close_async()
    checked = ["enqueue check"] if committed else []
    assert calls == calls_async == ["enqueue_many", "enqueue_many", *checked]
    stored = sql(clean_db, "SELECT id, args FROM horsies_tasks WHERE task_name = 'bulk.lost'")
    assert sorted(r["id"] for r in stored) == sorted(sync_ids + async_ids)
    args = {r["id"]: r["args"] for r in stored}
    assert [args[i] for i in sync_ids] == [f"[{i}]" for i in range(700)]


class _Stamp(datetime):
    """A datetime subclass: not a value the COPY builder encodes itself."""


def test_enqueue_calls_falls_back_to_the_driver_for_unusual_values(
    broker: PostgresBroker, clean_db: str
) -> None:
    until = _Stamp(2031, 1, 1, tzinfo=UTC)
    ids = broker.enqueue_calls("t", [((1,), None), ((), {"a": 1})], good_until=until)
    assert [row(clean_db, i)["good_until"] for i in ids] == [until, until]
    assert broker.enqueue_calls("t", []) == []
    # A naive good_until is refused before any I/O, as by enqueue_many and enqueue.
    naive = datetime(2031, 1, 1)
    with pytest.raises(ValueError, match="good_until must be timezone-aware") as calls_error:
        broker.enqueue_calls("t", [((), None)], good_until=naive)
    with pytest.raises(ValueError) as many_error:
        broker.enqueue_many([EnqueueRequest("t", good_until=naive)])
    with pytest.raises(ValueError) as one_error:
        broker.enqueue("t", good_until=naive)
    assert str(calls_error.value) == str(many_error.value) == str(one_error.value)
    assert len(sql(clean_db, "SELECT id FROM horsies_tasks")) == 2


# -- concurrent send_async: coalesced inserts -----------------------------------------------------


async def test_concurrent_sends_all_land_with_shared_inserts(
    broker: PostgresBroker, clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _steps(monkeypatch, broker)
    ids = await asyncio.gather(*(broker.enqueue_async("c", (i,)) for i in range(300)))
    await broker.close_async()
    assert len(set(ids)) == 300
    stored = {
        r["id"]: r["args"]
        for r in sql(clean_db, "SELECT id, args FROM horsies_tasks WHERE task_name = 'c'")
    }
    assert [stored[task_id] for task_id in ids] == [f"[{i}]" for i in range(300)]
    inserts = [s for s in seen if isinstance(s, steps.Prepared | steps.Query)]
    assert len(inserts) < 30, len(inserts)  # a lone insert, then batches of what waited
    assert any(isinstance(s, steps.Query) for s in inserts)


async def test_a_batch_keeps_call_order_within_it(broker: PostgresBroker, clean_db: str) -> None:
    ids = await asyncio.gather(*(broker.enqueue_async("o", (i,)) for i in range(50)))
    await broker.close_async()
    by_order = [
        r["id"]
        for r in sql(
            clean_db, "SELECT id FROM horsies_tasks WHERE task_name = 'o' ORDER BY sent_at"
        )
    ]
    # The first call goes alone (its row may land anywhere: both inserts run at once); the other
    # 49 waited together and keep their order.
    waited = set(ids[1:])
    assert [task_id for task_id in by_order if task_id in waited] == ids[1:]


async def test_each_send_is_stored_when_its_await_returns(
    broker: PostgresBroker, clean_db: str
) -> None:
    checker = await psycopg.AsyncConnection.connect(clean_db, autocommit=True)
    missing: list[str] = []

    async def send_then_look(i: int) -> None:
        task_id = await broker.enqueue_async("d", (i,))
        cur = await checker.execute("SELECT 1 FROM horsies_tasks WHERE id = %s", (task_id,))
        if await cur.fetchone() is None:
            missing.append(task_id)

    try:
        for _ in range(3):
            await asyncio.gather(*(send_then_look(i) for i in range(100)))
    finally:
        await checker.close()
        await broker.close_async()
    assert missing == []


async def test_a_bad_send_among_concurrent_sends_fails_alone(
    broker: PostgresBroker, clean_db: str
) -> None:
    await broker.enqueue_async("other", task_id="taken")

    async def send(i: int) -> str | BaseException:
        try:
            return await broker.enqueue_async("b", (i,), task_id="taken" if i == 37 else None)
        except BrokerError as exc:
            return exc

    results = await asyncio.gather(*(send(i) for i in range(80)))
    await broker.close_async()
    errors = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
    assert list(errors) == [37]
    error = errors[37]
    assert isinstance(error, BrokerError)
    assert error.sqlstate == "23505"
    assert str(error).startswith("enqueue failed: UniqueViolation")
    assert _count(clean_db, "b") == 79
    assert row(clean_db, "taken")["task_name"] == "other"


async def test_two_concurrent_sends_of_one_id_store_it_once(
    broker: PostgresBroker, clean_db: str
) -> None:
    async def send(i: int, task_id: str | None) -> str | BaseException:
        try:
            return await broker.enqueue_async("twice", (i,), task_id=task_id)
        except BrokerError as exc:
            return exc

    results = await asyncio.gather(
        send(0, None), *(send(i, "dup" if i in (3, 9) else None) for i in range(1, 20))
    )
    await broker.close_async()
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [9]
    assert row(clean_db, "dup")["args"] == "[3]"
    assert _count(clean_db, "twice") == 19


async def test_a_lone_send_is_not_delayed(
    broker: PostgresBroker, clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _steps(monkeypatch, broker)
    for i in range(5):
        await broker.enqueue_async("lone", (i,))
    await broker.close_async()
    assert [type(s) for s in seen] == [steps.Prepared] * 5
    assert _count(clean_db, "lone") == 5


async def test_a_cancelled_waiting_send_sends_nothing(
    broker: PostgresBroker, clean_db: str
) -> None:
    await broker.ensure_schema_initialized()
    first = asyncio.create_task(broker.enqueue_async("x", task_id="first"))
    await asyncio.sleep(0)  # `first` is in flight: the next ones wait for a shared insert
    waiting = [
        asyncio.create_task(broker.enqueue_async("x", task_id=name)) for name in ("a", "b", "c")
    ]
    await asyncio.sleep(0)  # each queued its row; the flusher has not run yet
    waiting[1].cancel()
    results = await asyncio.gather(first, *waiting, return_exceptions=True)
    await broker.close_async()
    assert results[0] == "first"
    assert results[1] == "a"
    assert isinstance(results[2], asyncio.CancelledError)
    assert results[3] == "c"
    assert {r["id"] for r in sql(clean_db, "SELECT id FROM horsies_tasks")} == {"first", "a", "c"}


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
async def test_a_batch_lost_mid_statement_stores_each_task_once(
    broker: PostgresBroker, clean_db: str, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    await broker.ensure_schema_initialized()
    calls = lose_next_call(
        monkeypatch, broker, run_first=committed, only=lambda op: isinstance(op, steps.Query)
    )
    ids = await asyncio.gather(*(broker.enqueue_async("lost", (i,)) for i in range(40)))
    await broker.close_async()
    assert "enqueue check" in calls if committed else "enqueue check" not in calls
    stored = sql(clean_db, "SELECT id, args FROM horsies_tasks WHERE task_name = 'lost'")
    assert sorted(r["id"] for r in stored) == sorted(ids)
    args = {r["id"]: r["args"] for r in stored}
    assert [args[i] for i in ids] == [f"[{i}]" for i in range(40)]


async def test_connections_killed_under_concurrent_sends_lose_and_duplicate_nothing(
    database_url: str, clean_db: str
) -> None:
    broker = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=2, pool_timeout=10))
    stop = threading.Event()
    kills = [0]

    def killer() -> None:
        while not stop.wait(0.05):
            kills[0] += _terminate(clean_db)

    returned: list[str] = []
    failed: list[BrokerError] = []

    async def send(key: int) -> None:
        try:
            returned.append(await broker.enqueue_async("storm", (key,)))
        except BrokerError as exc:
            failed.append(exc)

    thread = threading.Thread(target=killer, daemon=True)
    await broker.ensure_schema_initialized()
    thread.start()
    try:
        for round_ in range(20):
            await asyncio.gather(*(send(round_ * 100 + i) for i in range(100)))
    finally:
        stop.set()
        thread.join(5)
        await broker.close_async()
    assert kills[0] > 0
    stored = sql(clean_db, "SELECT id, args FROM horsies_tasks WHERE task_name = 'storm'")
    stored_ids = [r["id"] for r in stored]
    assert len(stored_ids) == len(set(stored_ids))  # ids are unique per call: no task twice
    assert set(returned) <= set(stored_ids)  # every returned send is stored
    args = [r["args"] for r in stored]
    assert len(args) == len(set(args))  # no call stored under two ids
    for exc in failed:  # a failed call says why: its connection, never a data error
        assert exc.sqlstate is None or exc.connection_lost, exc
    # A call that failed stored nothing, unless its error says it may have been stored.
    unsure = sum("may have been stored" in str(exc) for exc in failed)
    assert len(stored_ids) - len(returned) <= unsure


async def test_send_async_of_a_task_function_is_coalesced(app: Horsies, clean_db: str) -> None:
    @app.task("co.task")
    def co(x: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=x)

    sem = asyncio.Semaphore(64)

    async def one(i: int) -> str:
        async with sem:
            return (await co.send_async(i)).task_id

    ids = await asyncio.gather(*(one(i) for i in range(500)))
    await app.get_broker().close_async()
    assert "<error>" not in ids
    assert len(set(ids)) == 500
    assert _count(clean_db, "co.task") == 500


def test_coalescers_do_not_keep_finished_event_loops(database_url: str, clean_db: str) -> None:
    broker = PostgresBroker(PostgresConfig(database_url=database_url))

    async def burst() -> None:
        # The loop's pool closes itself when asyncio.run shuts the loop down.
        await asyncio.gather(*(broker.enqueue_async("loops", (i,)) for i in range(20)))

    try:
        for _ in range(3):
            asyncio.run(burst())
        gc.collect()
        assert len(broker._coalescers) == 0  # pyright: ignore[reportPrivateUsage]
    finally:
        broker.close()
    assert _count(clean_db, "loops") == 60


async def test_a_batch_that_gets_no_connection_fails_at_once(database_url: str) -> None:
    """Pool exhausted: the waiting sends fail together after one pool timeout, not one per row."""
    broker = PostgresBroker(
        PostgresConfig(database_url=database_url, pool_size=1, max_overflow=0, pool_timeout=1)
    )
    try:
        await broker.ensure_schema_initialized()
        busy = asyncio.create_task(
            broker.execute_async(steps.run_query(steps.Query("SELECT pg_sleep(4)")), action="busy")
        )
        await asyncio.sleep(0.2)  # let it take the pool's only connection
        started = time.monotonic()
        results = await asyncio.gather(
            *(broker.enqueue_async("busy", (i,)) for i in range(8)), return_exceptions=True
        )
        took = time.monotonic() - started
        await busy
    finally:
        await broker.close_async()
    assert all(isinstance(r, BrokerError) for r in results)
    assert all("all 1 connections of the pool are in use" in str(r) for r in results)
    assert took < 4, took  # split row by row, it would take a timeout per row
