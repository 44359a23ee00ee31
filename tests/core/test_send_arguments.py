"""A send whose arguments cannot bind to the task is refused at the send, and nothing is stored.

Before, ``task.send("only-one-arg")`` for a two-argument task was stored and failed on the
worker with ``TypeError`` (reported as ``UNHANDLED_EXCEPTION``). Now every way of sending checks
the call against the function's parameters first and returns an ``"<error>"`` handle with
``SEND_REFUSED``; a database that fails the call is ``BROKER_ERROR``. Neither is
``UNHANDLED_EXCEPTION``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from db_rows import Db
from horsies import Horsies, TaskResult
from horsies.config import AppConfig, PostgresConfig
from horsies.env import SUPPRESS_SENDS
from horsies.results import LibraryErrorCode
from horsies.tasks.arguments import ArgumentCheck
from horsies.tasks.handle import ERROR_TASK_ID, TaskHandle


@pytest.fixture
def producer(app: Horsies) -> Horsies:
    return app


def count_tasks(database_url: str, task_name: str) -> int:
    rows = Db(database_url).query(
        "SELECT count(*) AS n FROM horsies_tasks WHERE task_name = %s", (task_name,)
    )
    return int(rows[0]["n"])


def _pair(app: Horsies) -> Any:
    @app.task("args.pair")
    def pair(text: str, lang: str, *, upper: bool = False) -> TaskResult[str, Any]:
        return TaskResult(ok=f"{text}:{lang}:{upper}")

    return pair


def _refused(handle: TaskHandle[Any], *fragments: str) -> None:
    assert handle.task_id == ERROR_TASK_ID
    error = handle.get().unwrap_err()
    assert error.error_code == LibraryErrorCode.SEND_REFUSED, error
    for fragment in fragments:
        assert fragment in (error.message or ""), error.message


@pytest.mark.parametrize(
    ("args", "kwargs", "reason"),
    [
        (("only-one-arg",), {}, "missing required argument: 'lang'"),
        (("a", "b", "c"), {}, "too many positional arguments"),
        ((), {"text": "a", "lang": "b", "language": "c"}, "unexpected keyword argument 'language'"),
        (("a",), {"text": "b", "lang": "c"}, "multiple values for argument 'text'"),
        (("a", "b", True), {}, "too many positional arguments"),
    ],
)
def test_send_refuses_arguments_that_do_not_fit(
    producer: Horsies, database_url: str, args: tuple[Any, ...], kwargs: dict[str, Any], reason: str
) -> None:
    pair = _pair(producer)
    before = count_tasks(database_url, "args.pair")
    _refused(pair.send(*args, **kwargs), "pair(text, lang, *, upper=False)", reason)
    assert count_tasks(database_url, "args.pair") == before


def test_fitting_calls_are_stored(producer: Horsies, database_url: str) -> None:
    pair = _pair(producer)
    before = count_tasks(database_url, "args.pair")
    handles = [
        pair.send("a", "b"),
        pair.send(text="a", lang="b"),
        pair.send("a", lang="b", upper=True),
        pair.schedule(60, "a", "b"),
    ]
    assert all(handle.task_id != ERROR_TASK_ID for handle in handles)
    assert count_tasks(database_url, "args.pair") == before + 4


def test_schedule_send_async_and_send_many_refuse_too(producer: Horsies, database_url: str) -> None:
    pair = _pair(producer)
    before = count_tasks(database_url, "args.pair")
    _refused(pair.schedule(5, "x"), "missing required argument: 'lang'")

    async def sends() -> tuple[TaskHandle[Any], list[TaskHandle[Any]]]:
        one = await pair.send_async("x")
        many = await pair.send_many_async([("a", "b"), {"text": "a"}])
        return one, many

    one, many_async = asyncio.run(sends())
    _refused(one, "missing required argument: 'lang'")
    many = pair.send_many([("a", "b"), ("a",), {"text": "a", "lang": "b"}])
    # The batch is all or nothing: one bad call refuses every handle, and says it was one call.
    for handle in [*many, *many_async]:
        _refused(handle, "(one call of the batch)", "missing required argument: 'lang'")
    assert count_tasks(database_url, "args.pair") == before


def test_a_refused_send_is_logged(producer: Horsies, caplog: pytest.LogCaptureFixture) -> None:
    pair = _pair(producer)
    with caplog.at_level(logging.WARNING, logger="horsies"):
        pair.send("x")
    messages = [record.getMessage() for record in caplog.records]
    assert any("SEND_REFUSED" in m and "Failed to enqueue task pair" in m for m in messages)


def test_other_refusals_have_the_same_code(producer: Horsies) -> None:
    pair = _pair(producer)
    _refused(pair.send(object(), "b"), "Cannot serialize value of type object")
    _refused(pair.schedule(-1, "a", "b"), "delay_seconds")


def test_what_the_worker_fills_in_is_not_required(producer: Horsies) -> None:
    @producer.task("args.meta")
    def with_meta(x: int, workflow_meta: Any) -> TaskResult[int, Any]:
        return TaskResult(ok=x)

    # The type checker sees the parameter as required (it is, in the function); a send is not
    # refused for it, because the worker always passes it.
    assert with_meta.send(1).task_id != ERROR_TASK_ID  # pyright: ignore[reportCallIssue]
    assert with_meta.send(x=1).task_id != ERROR_TASK_ID  # pyright: ignore[reportCallIssue]

    @producer.task("args.task_ctx")
    def with_context(x: int, task_ctx: Any) -> TaskResult[int, Any]:
        return TaskResult(ok=x)

    assert with_context.send(1).task_id != ERROR_TASK_ID  # pyright: ignore[reportCallIssue]


@pytest.fixture
def unreachable_app(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Horsies]:
    monkeypatch.delenv(SUPPRESS_SENDS, raising=False)
    url = urlunsplit(urlsplit(database_url)._replace(path="/no_such_database_for_sends"))
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=url, pool_timeout=30)))
    yield app
    app.get_broker().close()


def test_a_database_that_fails_the_send_is_a_broker_error(unreachable_app: Horsies) -> None:
    pair = _pair(unreachable_app)
    handle = pair.send("a", "b")
    assert handle.task_id == ERROR_TASK_ID
    error = handle.get().unwrap_err()
    assert error.error_code == LibraryErrorCode.BROKER_ERROR
    assert "the database does not exist" in error.message


def _kwargs_only(*, a: int, b: int = 0) -> None: ...


def _var(a: int, /, *rest: int, **named: int) -> None: ...


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "fits"),
    [
        (_kwargs_only, (), {"a": 1}, True),
        (_kwargs_only, (1,), {}, False),
        (_kwargs_only, (), {}, False),
        (_var, (1, 2, 3), {"x": 1}, True),
        (_var, (), {"a": 1}, False),
        (print, (1, 2), {"sep": ""}, True),
    ],
)
def test_the_check_matches_what_python_would_accept(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], fits: bool
) -> None:
    assert (ArgumentCheck(fn).problem(args, kwargs) is None) is fits


def test_parameters_given_later_count_as_given() -> None:
    def node(a: int, upstream: Any, workflow_ctx: Any) -> None: ...

    check = ArgumentCheck(node)
    assert check.problem((1,), {}) is not None
    assert check.problem((1,), {}, given_later={"upstream", "workflow_ctx"}) is None


def _f(a: int, b: int, /, c: int, *rest: int, d: int, e: int = 0, **more: Any) -> None: ...


@pytest.mark.parametrize(
    ("args", "kwargs", "missing"),
    [
        ((), {}, ["a", "b", "c", "d"]),
        ((1, 2, 3), {}, ["d"]),
        ((1, 2, 3), {"d": 4}, []),
        ((1, 2), {"c": 3, "d": 4}, []),  # positional-or-keyword may come from kwargs
        ((1, 2, 3, 4, 5), {"d": 4}, []),  # surplus positionals go to *rest
        ((1,), {"d": 1}, ["b", "c"]),
        ((), {"a": 1, "b": 2, "c": 3, "d": 4}, []),  # by name, they still count as given
    ],
)
def test_every_missing_parameter_is_named(
    args: tuple[Any, ...], kwargs: dict[str, Any], missing: list[str]
) -> None:
    check = ArgumentCheck(_f)
    assert check.missing(args, kwargs) == missing
    if len(missing) > 1:
        names = ", ".join(f"'{name}'" for name in missing)
        assert check.problem(args, kwargs) == f"missing required arguments: {names}"
