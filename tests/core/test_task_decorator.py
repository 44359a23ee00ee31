"""`@app.task` and task functions.

Definition checks (default names, unknown options, return annotations), direct calls, sends
(`schedule` takes seconds) and `send_many`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, LiteralString

import pytest
from db_rows import sql
from horsies.app import Horsies
from horsies.broker.enqueue import EnqueueRequest
from horsies.codec import task_result_to_json
from horsies.config import AppConfig, CustomQueueConfig, PostgresConfig, QueueMode
from horsies.env import SUPPRESS_SENDS as SUPPRESS_SENDS_ENV
from horsies.errors import (
    ConfigurationError,
    DuplicateTaskNameError,
    ErrorCode,
    TaskDefinitionError,
)
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.retry import RetryPolicy
from horsies.tasks import function as function_module
from horsies.tasks.definition import default_task_name
from horsies.tasks.execution import run_task_function
from horsies.tasks.function import AsyncTaskFunction, TaskFunction
from pydantic import BaseModel, ValidationError

UNREACHABLE_URL = "postgresql://user:secret@localhost:1/nowhere"


class Point(BaseModel):
    x: int
    y: int


def default_app(url: str = UNREACHABLE_URL) -> Horsies:
    return Horsies(AppConfig(broker=PostgresConfig(database_url=url)))


def custom_app(url: str = UNREACHABLE_URL) -> Horsies:
    return Horsies(
        AppConfig(
            queue_mode=QueueMode.CUSTOM,
            custom_queues=[
                CustomQueueConfig(name="fast", priority=3),
                CustomQueueConfig(name="slow", priority=50),
            ],
            broker=PostgresConfig(database_url=url),
        )
    )


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Horsies:
    monkeypatch.delenv(SUPPRESS_SENDS_ENV, raising=False)
    return default_app()


# -- call forms, with and without a name -----------------------------------------------------------


def test_decorator_with_name_and_options(app: Horsies) -> None:
    @app.task("add", retry_policy=RetryPolicy.fixed([5, 10]), auto_retry_for=["TIMEOUT"])
    def add(a: int, b: int) -> TaskResult[int, TaskError]:
        """Add two numbers."""
        return TaskResult(ok=a + b)

    assert isinstance(add, TaskFunction)
    assert add.task_name == "add"
    assert app.tasks["add"] is add
    assert add(2, 3) == TaskResult(ok=5)
    assert add.__name__ == "add"
    assert add.__doc__ == "Add two numbers."
    assert add.__annotations__["return"] == "TaskResult[int, TaskError]"
    assert add._original_fn(1, 1) == TaskResult(ok=2)
    assert add.task_queue_name is None
    assert add.task_max_retries == 2


def test_bare_decorator_uses_module_and_qualname(app: Horsies) -> None:
    @app.task
    def bare() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    assert bare.task_name == f"{__name__}.{bare.__qualname__}"
    assert "<locals>" in bare.task_name
    assert app.list_tasks() == [bare.task_name]


def test_empty_parentheses_use_the_default_name(app: Horsies) -> None:
    @app.task()
    def parens() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    assert parens.task_name == default_task_name(parens._original_fn)


def test_options_without_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SUPPRESS_SENDS_ENV, raising=False)
    app = custom_app()

    @app.task(queue_name="fast")
    def routed() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    assert routed.task_queue_name == "fast"
    assert routed.task_name.endswith("routed")


def test_direct_registration_form(app: Horsies) -> None:
    def plain(x: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=x * 2)

    task = app.task("double", plain)
    assert task.task_name == "double"
    assert task(4) == TaskResult(ok=8)
    assert app.task(plain) is not task  # a second name for the same function is allowed


def test_name_and_function_by_keyword(app: Horsies) -> None:
    def keyword(x: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=x)

    task = app.task(task_name="by_keyword", func=keyword)
    assert task.task_name == "by_keyword"

    @app.task(task_name="decorated_by_keyword")
    def decorated() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    assert decorated.task_name == "decorated_by_keyword"


def test_function_defined_in_main_needs_a_name(app: Horsies) -> None:
    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "TaskResult": TaskResult,
        "TaskError": TaskError,
    }
    exec("def job() -> TaskResult[int, TaskError]:\n    return TaskResult(ok=1)\n", namespace)
    with pytest.raises(TaskDefinitionError) as info:
        app.task(namespace["job"])
    assert info.value.code is ErrorCode.TASK_INVALID_OPTIONS
    assert info.value.help_text is not None
    assert '@app.task("job")' in info.value.help_text
    assert app.task("job", namespace["job"]).task_name == "job"


# -- definition checks, in order -------------------------------------------------------------------


def test_unknown_option_is_refused(app: Horsies) -> None:
    with pytest.raises(TaskDefinitionError) as info:

        @app.task("x", queue="fast")  # pyright: ignore[reportCallIssue]
        def job() -> TaskResult[int, TaskError]:
            return TaskResult(ok=1)

    assert info.value.code is ErrorCode.TASK_INVALID_OPTIONS
    assert "'queue'" in info.value.message
    assert "x" not in app.tasks


@pytest.mark.parametrize(
    "options",
    [
        {"retry_policy": 5},
        {"auto_retry_for": "TIMEOUT"},
        {"auto_retry_for": [1, 2]},
        {"good_until": "tomorrow please"},
        {"good_until": datetime(2031, 1, 1)},  # naive: which time zone?
        {"queue_name": 7},
    ],
)
def test_invalid_option_values(app: Horsies, options: dict[str, Any]) -> None:
    def job() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    with pytest.raises(TaskDefinitionError) as info:
        app.task("job", job, **options)
    assert info.value.code is ErrorCode.TASK_INVALID_OPTIONS
    assert info.value.message == "invalid task options"
    assert info.value.notes


def test_auto_retry_for_accepts_library_codes_and_tuples(app: Horsies) -> None:
    @app.task(
        "codes",
        auto_retry_for=(LibraryErrorCode.WORKER_CRASHED, "ConnectionError"),
        retry_policy=RetryPolicy.exponential(2, max_retries=4),
    )
    def codes() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    options = json.loads(codes.task_options_json)
    assert options["auto_retry_for"] == ["WORKER_CRASHED", "ConnectionError"]
    assert options["retry_policy"]["max_retries"] == 4
    assert codes.task_max_retries == 4


def test_options_json_shape(app: Horsies) -> None:
    deadline = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)

    @app.task("shaped", good_until=deadline)
    def shaped() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    options = json.loads(shaped.task_options_json)
    assert options == {
        "auto_retry_for": None,
        "retry_policy": None,
        "good_until": deadline.isoformat(),
    }
    assert shaped.task_options.good_until == deadline
    assert shaped.task_max_retries == 0


def test_queue_name_in_default_mode(app: Horsies) -> None:
    with pytest.raises(ConfigurationError) as info:

        @app.task("q", queue_name="fast")
        def job() -> TaskResult[int, TaskError]:
            return TaskResult(ok=1)

    assert info.value.code is ErrorCode.CONFIG_INVALID_QUEUE_MODE


def test_custom_mode_queue_rules() -> None:
    app = custom_app()

    def job() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    with pytest.raises(ConfigurationError) as missing:
        app.task("a", job)
    assert missing.value.code is ErrorCode.CONFIG_INVALID_QUEUE_MODE
    with pytest.raises(ConfigurationError) as unknown:
        app.task("b", job, queue_name="nope")
    assert unknown.value.code is ErrorCode.TASK_INVALID_QUEUE
    assert any("fast" in note and "slow" in note for note in unknown.value.notes)


def test_missing_return_annotation_is_e100_and_a_type_error(app: Horsies) -> None:
    def job():  # type: ignore[no-untyped-def]
        return TaskResult(ok=1)

    with pytest.raises(TypeError) as info:
        app.task("job", job)  # pyright: ignore[reportArgumentType]
    assert isinstance(info.value, TaskDefinitionError)
    assert info.value.code is ErrorCode.TASK_NO_RETURN_TYPE
    assert info.value.message == "task function must declare an explicit return type"


def test_return_annotation_must_be_parametrised_task_result(app: Horsies) -> None:
    def returns_int() -> int:
        return 1

    def returns_bare() -> TaskResult:  # type: ignore[type-arg]
        return TaskResult(ok=1)

    def returns_one_arg() -> TaskResult[int]:  # type: ignore[type-arg]  # pyright: ignore
        return TaskResult(ok=1)

    for fn in (returns_int, returns_bare, returns_one_arg):
        with pytest.raises(TaskDefinitionError) as info:
            app.task(fn.__name__, fn)  # pyright: ignore[reportArgumentType, reportCallIssue]
        assert info.value.code is ErrorCode.TASK_INVALID_RETURN_TYPE
        assert info.value.message == "task function must return TaskResult"


def test_async_functions_are_tasks_awaited_when_called(app: Horsies) -> None:
    async def job(n: int) -> TaskResult[int, TaskError]:
        await asyncio.sleep(0)
        return TaskResult(ok=n + 1)

    @app.task("async.fails")
    async def fails() -> TaskResult[int, TaskError]:
        raise ConnectionError("down")

    task = app.task("async.job", job)
    assert isinstance(task, AsyncTaskFunction)
    assert task.is_async
    assert asyncio.run(task(1)) == TaskResult(ok=2)
    error = asyncio.run(fails()).unwrap_err()
    assert error.error_code is LibraryErrorCode.UNHANDLED_EXCEPTION
    assert error.message == "Unhandled exception in task fails: ConnectionError: down"

    async def wrong() -> TaskResult[int, TaskError]:
        return 3  # type: ignore[return-value]  # pyright: ignore[reportReturnType]

    assert asyncio.run(app.task("async.wrong", wrong)()).unwrap_err().error_code == (
        LibraryErrorCode.TASK_EXCEPTION
    )


def test_checks_run_in_documented_order() -> None:
    app = custom_app()

    def no_annotation():  # type: ignore[no-untyped-def]
        return None

    # options (E102) before queue (E200) before return type (E100)
    with pytest.raises(TaskDefinitionError) as first:
        app.task("o", no_annotation, retry_policy=1)  # pyright: ignore
    assert first.value.code is ErrorCode.TASK_INVALID_OPTIONS
    with pytest.raises(ConfigurationError) as second:
        app.task("o", no_annotation)  # pyright: ignore
    assert second.value.code is ErrorCode.CONFIG_INVALID_QUEUE_MODE
    with pytest.raises(TaskDefinitionError) as third:
        app.task("o", no_annotation, queue_name="fast")  # pyright: ignore
    assert third.value.code is ErrorCode.TASK_NO_RETURN_TYPE


def test_errors_point_at_the_decorator_line(app: Horsies) -> None:
    frame = inspect.currentframe()
    assert frame is not None
    decorator_line = frame.f_lineno + 3
    with pytest.raises(TaskDefinitionError) as info:

        @app.task("located")  # pyright: ignore[reportArgumentType, reportCallIssue]
        def job() -> int:
            return 1

    location = info.value.location
    assert location is not None
    assert os.path.realpath(location.file) == os.path.realpath(__file__)
    assert location.line == decorator_line


def test_duplicate_name_from_another_location(app: Horsies) -> None:
    @app.task("dup")
    def first() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    with pytest.raises(DuplicateTaskNameError) as info:

        @app.task("dup")
        def second() -> TaskResult[int, TaskError]:
            return TaskResult(ok=2)

    assert info.value.code is ErrorCode.TASK_DUPLICATE_NAME
    assert info.value.message == "duplicate task name 'dup'"
    assert app.tasks["dup"] is first


def test_same_location_again_keeps_the_first_registration(app: Horsies) -> None:
    registered: list[TaskFunction[[], int]] = []
    for _ in range(2):

        @app.task("again")
        def job() -> TaskResult[int, TaskError]:
            return TaskResult(ok=1)

        registered.append(job)
    assert registered[0] is registered[1]
    assert app.list_tasks() == ["again"]


def test_unresolvable_return_annotation(app: Horsies) -> None:
    namespace: dict[str, Any] = {"__name__": "somewhere"}
    exec("def job() -> 'TaskResult[Missing, TaskError]':\n    pass\n", namespace)
    with pytest.raises(TaskDefinitionError) as info:
        app.task("job", namespace["job"])
    assert info.value.code is ErrorCode.TASK_INVALID_RETURN_TYPE


# -- direct call -----------------------------------------------------------------------------------


def test_exception_becomes_unhandled_exception(app: Horsies) -> None:
    @app.task("boom")
    def boom(x: int) -> TaskResult[int, TaskError]:
        raise ConnectionRefusedError(f"no route {x}")

    result = boom(3)
    assert result.is_err()
    error = result.unwrap_err()
    assert error.error_code is LibraryErrorCode.UNHANDLED_EXCEPTION
    assert error.message == "Unhandled exception in task boom: ConnectionRefusedError: no route 3"
    assert error.data == {"exception_type": "ConnectionRefusedError"}
    assert isinstance(error.exception, ConnectionRefusedError)


def test_system_exit_is_captured_keyboard_interrupt_propagates(app: Horsies) -> None:
    @app.task("exits")
    def exits(kind: str) -> TaskResult[int, TaskError]:
        if kind == "exit":
            raise SystemExit(3)
        raise KeyboardInterrupt

    assert exits("exit").unwrap_err().data == {"exception_type": "SystemExit"}
    with pytest.raises(KeyboardInterrupt):
        exits("interrupt")


def test_non_task_result_return_is_task_exception(app: Horsies) -> None:
    @app.task("liar")
    def liar() -> TaskResult[int, TaskError]:
        return {"ok": 1}  # type: ignore[return-value]  # pyright: ignore[reportReturnType]

    error = liar().unwrap_err()
    assert error.error_code is LibraryErrorCode.TASK_EXCEPTION
    assert error.data == {"task_name": "liar", "returned_type": "dict"}


def test_wrong_arguments_are_unhandled_exception(app: Horsies) -> None:
    @app.task("needs_arg")
    def needs_arg(x: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=x)

    error = run_task_function(needs_arg, (), {"y": 1}).unwrap_err()
    assert error.error_code is LibraryErrorCode.UNHANDLED_EXCEPTION
    assert error.data == {"exception_type": "TypeError"}


def return_type_error(task: Callable[[], TaskResult[Any, TaskError]]) -> TaskError:
    """The error of calling ``task``, which must be RETURN_TYPE_MISMATCH."""
    error = task().unwrap_err()
    assert error.error_code is LibraryErrorCode.RETURN_TYPE_MISMATCH
    return error


def test_return_type_mismatch(app: Horsies) -> None:
    @app.task("mismatch")
    def mismatch() -> TaskResult[int, TaskError]:
        return TaskResult(ok="not a number")  # type: ignore[arg-type]  # pyright: ignore

    error = return_type_error(mismatch)
    assert error.message == (
        "Task mismatch returned TaskResult(ok='not a number') but expected type int"
    )
    assert error.data["variant"] == "ok"
    assert error.data["expected_type"] == "int"
    assert error.data["actual_value"] == "'not a number'"
    assert error.data["validation_errors"][0]["type"] == "int_parsing"
    assert isinstance(error.exception, ValidationError)
    json.dumps(error.data)  # stored in the database: must be JSON


def test_err_side_is_validated_too(app: Horsies) -> None:
    @app.task("bad_err")
    def bad_err() -> TaskResult[int, TaskError]:
        return TaskResult(err="plain string")  # type: ignore[arg-type]  # pyright: ignore

    error = return_type_error(bad_err)
    assert error.data["variant"] == "err"


def test_lax_coercion_keeps_the_original_value(app: Horsies) -> None:
    @app.task("lax")
    def lax() -> TaskResult[int, TaskError]:
        return TaskResult(ok="5")  # type: ignore[arg-type]  # pyright: ignore

    assert lax() == TaskResult(ok="5")


def test_none_result_and_models(app: Horsies) -> None:
    @app.task("nothing")
    def nothing() -> TaskResult[None, TaskError]:
        return TaskResult(ok=None)

    @app.task("model")
    def model(as_dict: bool) -> TaskResult[Point, TaskError]:
        if as_dict:
            return TaskResult(ok={"x": 1, "y": "nope"})  # type: ignore[arg-type]  # pyright: ignore
        return TaskResult(ok=Point(x=1, y=2))

    assert nothing() == TaskResult(ok=None)
    assert model(False) == TaskResult(ok=Point(x=1, y=2))
    assert model(True).unwrap_err().error_code is LibraryErrorCode.RETURN_TYPE_MISMATCH


def test_domain_errors_pass_through(app: Horsies) -> None:
    @app.task("domain")
    def domain() -> TaskResult[int, TaskError]:
        return TaskResult(err=TaskError(error_code="RATE_LIMITED", message="slow down"))

    assert domain().unwrap_err().error_code == "RATE_LIMITED"


def test_types_pydantic_cannot_check_keep_the_result(app: Horsies) -> None:
    # The annotation resolves, but pydantic cannot resolve the inner forward reference.
    namespace: dict[str, Any] = {
        "__name__": "elsewhere",
        "TaskResult": TaskResult,
        "TaskError": TaskError,
    }
    source = 'def unresolved() -> TaskResult[list["UndefinedLater"], TaskError]:\n'
    exec(source + "    return TaskResult(ok=[1])\n", namespace)
    unresolved = app.task("unresolved", namespace["unresolved"])
    assert unresolved() == TaskResult(ok=[1])
    assert unresolved() == TaskResult(ok=[1])


def test_any_types_are_not_validated(app: Horsies) -> None:
    @app.task("anything")
    def anything() -> TaskResult[Any, Any]:
        return TaskResult(ok=object())

    assert anything().is_ok()


# -- sends without a database --------------------------------------------------------------------


def test_suppressed_send_and_schedule(app: Horsies, caplog: pytest.LogCaptureFixture) -> None:
    @app.task("quiet")
    def quiet() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    app.suppress_sends(True)
    with caplog.at_level(logging.WARNING, logger="horsies"):
        handle = quiet.send()
    assert handle.task_id == "<suppressed>"
    error = handle.get().unwrap_err()
    assert error.error_code is LibraryErrorCode.SEND_SUPPRESSED
    assert error.message == "Task send suppressed during module import/discovery"
    assert error.data == {"task_name": "quiet"}
    assert any("quiet" in record.getMessage() for record in caplog.records)

    scheduled = quiet.schedule(10).get().unwrap_err()
    assert scheduled.message == "Task schedule suppressed during module import/discovery"
    assert [h.task_id for h in quiet.send_many([(), ()])] == ["<suppressed>"] * 2
    assert app._broker is None  # nothing touched the broker


async def test_suppressed_send_async_by_env(app: Horsies, monkeypatch: pytest.MonkeyPatch) -> None:
    @app.task("quiet_async")
    def quiet_async() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    monkeypatch.setenv(SUPPRESS_SENDS_ENV, "1")
    handle = await quiet_async.send_async()
    assert handle.task_id == "<suppressed>"
    assert (await handle.get_async()).unwrap_err().error_code is LibraryErrorCode.SEND_SUPPRESSED


def test_send_revalidates_the_queue() -> None:
    app = custom_app()

    @app.task("routed", queue_name="slow")
    def routed() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    app.config = AppConfig(
        queue_mode=QueueMode.CUSTOM,
        custom_queues=[CustomQueueConfig(name="fast")],
        broker=PostgresConfig(database_url=UNREACHABLE_URL),
    )
    handle = routed.send()
    assert handle.task_id == "<error>"
    error = handle.get().unwrap_err()
    assert error.error_code is LibraryErrorCode.SEND_REFUSED
    assert error.message == (
        "Task execution error for routed: E103: invalid queue_name 'slow'; valid queues: fast"
    )
    assert error.data == {"task_name": "routed", "exception_type": "ConfigurationError"}
    assert isinstance(error.exception, ConfigurationError)


def test_broker_construction_failure_is_an_error_handle(
    app: Horsies, broker_construction_fails: str
) -> None:

    @app.task("unsendable")
    def unsendable() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    error = unsendable.send().get().unwrap_err()
    assert error.message == (
        f"Failed to enqueue task unsendable: Failed to get broker: {broker_construction_fails}"
    )
    assert error.data == {"task_name": "unsendable", "exception_type": "ValueError"}


@pytest.mark.parametrize("delay", [-1, float("nan"), float("inf"), "5", True])
def test_schedule_rejects_bad_delays(app: Horsies, delay: Any) -> None:
    @app.task("later")
    def later() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    handle = later.schedule(delay)
    assert handle.task_id == "<error>"
    message = handle.get().unwrap_err().message
    assert message is not None
    assert message.startswith("Failed to schedule task later: delay_seconds must be")


# -- sends against PostgreSQL --------------------------------------------------------------------


@pytest.fixture
def db_app(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Horsies]:
    monkeypatch.delenv(SUPPRESS_SENDS_ENV, raising=False)
    app = custom_app(database_url)
    yield app
    app.get_broker().close()


def fetch_row(url: str, task_id: str) -> dict[str, Any] | None:
    conninfo = PostgresConfig(database_url=url).conninfo
    rows = sql(conninfo, "SELECT * FROM horsies_tasks WHERE id = %s", (task_id,))
    return rows[0] if rows else None


def execute(url: str, statement: LiteralString, params: tuple[Any, ...]) -> None:
    sql(PostgresConfig(database_url=url).conninfo, statement, params)


def count_rows(url: str, task_name: str) -> int:
    conninfo = PostgresConfig(database_url=url).conninfo
    query = "SELECT count(*) AS n FROM horsies_tasks WHERE task_name = %s"
    return int(sql(conninfo, query, (task_name,))[0]["n"])


def test_send_writes_one_pending_row(db_app: Horsies, database_url: str) -> None:
    deadline = datetime.now(UTC) + timedelta(days=1)

    @db_app.task(
        "db.resize",
        queue_name="fast",
        good_until=deadline,
        retry_policy=RetryPolicy.fixed([1, 2, 3]),
        auto_retry_for=["UNHANDLED_EXCEPTION"],
    )
    def resize(url: str, width: int = 10) -> TaskResult[str, TaskError]:
        return TaskResult(ok=f"{url}@{width}")

    before = datetime.now(UTC)
    handle = resize.send("img.png", width=300)
    row = fetch_row(database_url, handle.task_id)
    assert row is not None
    assert row["task_name"] == "db.resize"
    assert row["queue_name"] == "fast"
    assert row["priority"] == 3
    assert json.loads(row["args"]) == ["img.png"]
    assert json.loads(row["kwargs"]) == {"width": 300}
    assert row["status"] == "PENDING"
    assert row["good_until"] == deadline
    assert row["max_retries"] == 3
    assert row["retry_count"] == 0
    assert json.loads(row["task_options"]) == json.loads(resize.task_options_json)
    assert row["claimed"] is False
    assert (
        before - timedelta(seconds=5) <= row["sent_at"] <= datetime.now(UTC) + timedelta(seconds=5)
    )


def test_send_without_arguments_stores_nulls(db_app: Horsies, database_url: str) -> None:
    @db_app.task("db.noargs", queue_name="slow")
    def noargs() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    row = fetch_row(database_url, noargs.send().task_id)
    assert row is not None
    assert row["args"] is None
    assert row["kwargs"] is None
    assert row["priority"] == 50


def test_schedule_delays_sent_at(db_app: Horsies, database_url: str) -> None:
    @db_app.task("db.later", queue_name="slow")
    def later() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    before = datetime.now(UTC)
    row = fetch_row(database_url, later.schedule(120).task_id)
    assert row is not None
    assert row["sent_at"] >= before + timedelta(seconds=119)


class _SlowClock(datetime):
    """This host's clock, two minutes behind the database's."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _SlowClock:
        real = datetime.now(tz) - timedelta(seconds=120)
        return cls.fromtimestamp(real.timestamp(), tz)


def test_schedule_delays_by_the_database_clock(
    db_app: Horsies, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer whose clock is slow still delays by exactly the delay asked: the delay is added
    to the database's clock (with the producer's, ``schedule(60)`` was claimable at once here)."""

    @db_app.task("db.skewed", queue_name="slow")
    def skewed() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    monkeypatch.setattr(function_module, "datetime", _SlowClock)
    row = fetch_row(database_url, skewed.schedule(60).task_id)
    assert row is not None
    delay = (row["sent_at"] - row["created_at"]).total_seconds()
    assert 59.9 <= delay <= 60.5, delay


def test_low_level_delays_use_the_database_clock(db_app: Horsies, database_url: str) -> None:
    broker = db_app.get_broker()
    one = broker.enqueue("t", delay_s=30)
    [many] = broker.enqueue_many([EnqueueRequest("t", delay_s=45.5)])
    for task_id, expected in ((one, 30.0), (many, 45.5)):
        row = fetch_row(database_url, task_id)
        assert row is not None
        assert expected <= (row["sent_at"] - row["created_at"]).total_seconds() <= expected + 0.5
    with pytest.raises(ValueError, match="either sent_at or delay_s"):
        broker.enqueue("t", delay_s=1, sent_at=datetime.now(UTC))
    with pytest.raises(ValueError, match="finite number of seconds"):
        broker.enqueue("t", delay_s=float("nan"))


def test_unserializable_argument_gives_error_handle_and_no_row(
    db_app: Horsies, database_url: str
) -> None:
    @db_app.task("db.sets", queue_name="fast")
    def sets(values: set[int]) -> TaskResult[int, TaskError]:
        return TaskResult(ok=len(values))

    handle = sets.send({1, 2})
    assert handle.task_id == "<error>"
    error = handle.get().unwrap_err()
    assert error.error_code is LibraryErrorCode.SEND_REFUSED
    assert error.message is not None
    assert error.message.startswith("Failed to enqueue task sets: Cannot serialize value of type")
    assert error.data["exception_type"] == "SerializationError"
    assert count_rows(database_url, "db.sets") == 0


async def test_send_async_writes_a_row(db_app: Horsies, database_url: str) -> None:
    @db_app.task("db.async", queue_name="fast")
    def async_sent(x: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=x)

    handle = await async_sent.send_async(7)
    row = fetch_row(database_url, handle.task_id)
    assert row is not None
    assert json.loads(row["args"]) == [7]
    await db_app.get_broker().close_async()


def test_send_many_inserts_every_call(db_app: Horsies, database_url: str) -> None:
    @db_app.task("db.many", queue_name="fast")
    def many(x: int, y: int = 0) -> TaskResult[int, TaskError]:
        return TaskResult(ok=x + y)

    handles = many.send_many([(1,), {"x": 2, "y": 3}, (4, 5)])
    assert len({handle.task_id for handle in handles}) == 3
    rows = [fetch_row(database_url, handle.task_id) for handle in handles]
    assert [json.loads(row["args"] or "[]") for row in rows if row] == [[1], [], [4, 5]]
    assert rows[1] is not None
    assert json.loads(rows[1]["kwargs"]) == {"x": 2, "y": 3}
    assert many.send_many([]) == []


def test_send_many_is_all_or_nothing(db_app: Horsies, database_url: str) -> None:
    @db_app.task("db.many_bad", queue_name="fast")
    def many_bad(x: Any) -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    handles = many_bad.send_many([(1,), (object(),)])
    assert [handle.task_id for handle in handles] == ["<error>", "<error>"]
    assert count_rows(database_url, "db.many_bad") == 0


def test_send_many_refuses_an_item_that_is_neither_form(db_app: Horsies, database_url: str) -> None:
    @db_app.task("db.many_shape", queue_name="fast")
    def many_shape(x: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=x)

    handles = many_shape.send_many([(1,), [2]])  # type: ignore[list-item]  # a list is not a call
    assert [handle.task_id for handle in handles] == ["<error>", "<error>"]
    message = handles[0].get().unwrap_err().message or ""
    assert "send_many takes one mapping of keyword arguments or one tuple" in message
    assert count_rows(database_url, "db.many_shape") == 0


def test_get_returns_the_stored_result(db_app: Horsies, database_url: str) -> None:
    @db_app.task("db.finished", queue_name="fast")
    def finished() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    handle = finished.send()
    execute(
        database_url,
        "UPDATE horsies_tasks SET status = 'COMPLETED', result = %s, completed_at = now() "
        "WHERE id = %s",
        (task_result_to_json(TaskResult(ok=42)), handle.task_id),
    )
    assert handle.get(timeout_ms=10_000) == TaskResult(ok=42)


@pytest.mark.parametrize("limit", [0, -1.0, float("inf"), float("nan"), "soon"])
def test_a_time_limit_must_be_a_positive_number_of_seconds(app: Horsies, limit: object) -> None:
    def job() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    with pytest.raises(TaskDefinitionError) as info:
        app.task("limited", job, time_limit_s=limit)  # pyright: ignore[reportArgumentType, reportCallIssue]
    assert info.value.code is ErrorCode.TASK_INVALID_OPTIONS
    assert any(note.startswith("time_limit_s") for note in info.value.notes)


def test_a_time_limit_is_stored_with_each_task(app: Horsies) -> None:
    @app.task("limited_ok", time_limit_s=2.5)
    def job() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    assert job.task_options.time_limit_s == 2.5
    assert json.loads(job.task_options_json)["time_limit_s"] == 2.5


def test_with_options_gives_sends_another_limit_and_leaves_the_task_as_it_is(app: Horsies) -> None:
    @app.task("limited_view", time_limit_s=2.5)
    def job() -> TaskResult[int, TaskError]:
        return TaskResult(ok=1)

    view = job.with_options(time_limit_s=60)
    assert view.task_options.time_limit_s == 60
    assert json.loads(view.task_options_json)["time_limit_s"] == 60
    assert job.task_options.time_limit_s == 2.5
    assert job.with_options(time_limit_s=None).task_options.time_limit_s is None
    with pytest.raises(TaskDefinitionError) as info:
        job.with_options(time_limit_s=-1)
    assert info.value.code is ErrorCode.TASK_INVALID_OPTIONS
