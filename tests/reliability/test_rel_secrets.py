"""Scenario 8e: a database password never shows.

Not in logs (worker and scheduler start-up and run logs at DEBUG, connection failures), not in
exceptions (``str``/``repr``/traceback of every error in the chain, from ``send``, ``send_many``,
``get``, their async twins, the low-level ``enqueue`` and ``check(live=True)`` against an
unreachable server), not in config reprs or ``log_config()``, not in the output of
``horsies check``, ``horsies worker``, ``horsies scheduler`` or ``horsies demo`` (real CLI
processes, all started at once so the module stays fast). The password is given in the URL's
user-info and, for the in-process checks, as a ``?password=`` parameter too.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import traceback
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from horsies.app import Horsies
from horsies.broker import PostgresBroker
from horsies.config import AppConfig, PostgresConfig
from horsies.errors import HorsiesError
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.tasks.handle import TaskHandle
from log_capture import captured_logs
from process_harness import LoggedProcess, child_env, wait_until

from tests.reliability.ledger import compare, create_ledger

pytestmark = pytest.mark.timeout(180)

PASSWORD = "hunter2-Zq9xW7v"
UNREACHABLE = f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:1/db"
UNREACHABLE_QUERY = f"postgresql+psycopg://app@127.0.0.1:1/db?password={PASSWORD}"
MASKED = "postgresql+psycopg://app:***@127.0.0.1:1/db"
LOCATOR = "tests.reliability.apps.masked_app:app"
DEBUG = ("--loglevel", "DEBUG")


def leaks(text: str) -> bool:
    """True if ``text`` shows the password or any 5-character piece of it (an elided or cut
    rendering can leave part of it visible)."""
    return any(PASSWORD[i : i + 5] in text for i in range(len(PASSWORD) - 4))


def with_password(url: str) -> str:
    """The test server's URL with the password added (trust authentication ignores it)."""
    scheme, _, rest = url.partition("://")
    user, _, location = rest.partition("@")
    return f"{scheme}://{user}:{PASSWORD}@{location}"


# -- CLI processes, all started together ----------------------------------------------------------


class Cli(LoggedProcess):
    kind = "horsies command"


@pytest.fixture(scope="module")
def clis(
    database_url: str, database_conninfo: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Cli]]:
    """Every CLI run of the module, started at once: against the unreachable server, against the
    module's (reachable) database with a password in the URL, and the demo."""
    create_ledger(database_conninfo)
    log_dir: Path = tmp_path_factory.mktemp("secrets")
    reachable = with_password(database_url)
    runs: dict[str, tuple[list[str], str, dict[str, str]]] = {
        "check-live": (["check", LOCATOR, "--live"], UNREACHABLE, {}),
        "worker-unreachable": (["worker", LOCATOR, "--processes", "1", *DEBUG], UNREACHABLE, {}),
        "scheduler-unreachable": (["scheduler", LOCATOR, *DEBUG], UNREACHABLE, {}),
        "worker": (["worker", LOCATOR, "--processes", "1", *DEBUG], reachable, {}),
        "scheduler": (["scheduler", LOCATOR, *DEBUG], reachable, {}),
        "demo": (
            ["demo", "--tasks", "5", "--processes", "1"],
            UNREACHABLE,
            {"DATABASE_URL": UNREACHABLE, "HORSIES_DEMO_DATABASE_URL": UNREACHABLE},
        ),
    }
    started: dict[str, Cli] = {}
    try:
        for name, (args, url, extra) in runs.items():
            env = child_env({"MASKED_APP_URL": url, "NO_COLOR": "1", **extra})
            for noisy in ("HORSIES_FORCE_COLOR", "HORSIES_VERBOSE"):
                if noisy not in extra:
                    env.pop(noisy, None)
            started[name] = Cli(
                [sys.executable, "-m", "horsies", *args], env, log_dir / f"{name}.log"
            )
        yield started
    finally:
        for process in started.values():
            process.reap()


def _finished(process: Cli, timeout: float = 120) -> tuple[int, str]:
    code = process.wait_exit(timeout)
    return code, process.output()


def test_cli_against_an_unreachable_server_never_shows_the_password(clis: dict[str, Cli]) -> None:
    """``check --live``, ``worker`` and ``scheduler`` at DEBUG against an unreachable server:
    clear failures, masked URL, no password, no traceback."""
    outputs: dict[str, str] = {}
    for name in ("check-live", "worker-unreachable", "scheduler-unreachable"):
        code, output = _finished(clis[name])
        assert code == 1, (name, output)
        outputs[name] = output
    assert "error[E209]: broker connectivity check failed" in outputs["check-live"]
    assert f"database: {MASKED}" in outputs["check-live"], outputs["check-live"]
    for name in ("worker-unreachable", "scheduler-unreachable"):
        assert MASKED in outputs[name], outputs[name]  # the banner
        assert "database unreachable" in outputs[name], outputs[name]
        assert "Traceback" not in outputs[name], outputs[name]
    for name, output in outputs.items():
        assert not leaks(output), (name, output)
    print(f"\n[secrets] unreachable-server CLI runs: {sorted(outputs)}; password shown 0 times")


def test_worker_and_scheduler_debug_logs_never_show_the_password(
    clis: dict[str, Cli], database_url: str, database_conninfo: str
) -> None:
    """A worker and a scheduler at DEBUG on a reachable database whose URL carries a password:
    start-up, banner, schedule runs, task execution and shutdown logs never show it; the tasks
    all run (ledger: none lost, none twice)."""
    worker, scheduler = clis["worker"], clis["scheduler"]
    worker.wait_output(" ready: ", 90)
    scheduler.wait_output("Scheduler ready", 90)
    producer = Horsies(AppConfig(broker=PostgresConfig(database_url=with_password(database_url))))
    try:
        producer.task("masked.ping")(_ping)
        keys = [uuid.uuid4().hex for _ in range(5)]
        handles = {key: producer.tasks["masked.ping"].send(key) for key in keys}
        for handle in handles.values():
            assert handle.get(timeout_ms=60_000).unwrap() == "pong"
    finally:
        producer.get_broker().close()
    wait_until(
        lambda: scheduler.output().count("schedule_run: 'masked-ping' enqueued") >= 2,
        60,
        "two scheduled runs",
    )
    wait_until(lambda: worker.output().count("(masked.ping) ok") >= 7, 60, "scheduled runs done")
    for process in (worker, scheduler):
        process.send_signal(signal.SIGTERM)
    outputs = {name: _finished(clis[name], 60) for name in ("worker", "scheduler")}
    report = compare(database_conninfo, {key: handle.task_id for key, handle in handles.items()})
    assert (report.lost, report.duplicated) == (0, 0), report.summary()
    assert report.statuses == {"COMPLETED": len(keys)}, report.summary()
    for name, (code, output) in outputs.items():
        assert code == 0, (name, output)
        assert ":***@" in output, (name, output)  # the banner shows the masked URL
        assert not leaks(output), (name, output)
    print(
        f"\n[secrets] reachable worker+scheduler at DEBUG: tasks={len(keys)} "
        f"lost={report.lost} duplicated={report.duplicated}; password shown 0 times"
    )


def _ping(key: str) -> TaskResult[str, TaskError]:  # the producer's twin of masked.ping
    return TaskResult(ok=key)


def test_demo_output_never_shows_the_password(clis: dict[str, Cli]) -> None:
    """``horsies demo`` with ``DATABASE_URL`` / ``HORSIES_DEMO_DATABASE_URL`` holding a password:
    it runs on its own embedded server and prints nothing of them."""
    code, output = _finished(clis["demo"], 150)
    assert code == 0, output
    assert "everything stopped" in output
    assert not leaks(output), output


# -- in process: exceptions, results, reprs, logs -------------------------------------------------


def probe(value: int) -> TaskResult[int, TaskError]:
    return TaskResult(ok=value)


def exception_texts(exc: BaseException) -> list[str]:
    """The formatted traceback, and ``str``/``repr``/args/notes of every exception in the chain."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        texts += [str(note) for note in getattr(current, "__notes__", [])]
        if isinstance(current, HorsiesError):
            texts += [current.format_rust_style(use_colors=True), *current.notes]
        pending += [link for link in (current.__cause__, current.__context__) if link is not None]
    return texts


def result_texts(result: TaskResult[Any, TaskError]) -> list[str]:
    error = result.unwrap_err()
    texts = [repr(result), str(error), repr(error), str(error.message), repr(error.data)]
    if isinstance(error.exception, BaseException):
        texts += exception_texts(error.exception)
    else:
        texts.append(repr(error.exception))
    return texts


@pytest.mark.parametrize("url", [UNREACHABLE, UNREACHABLE_QUERY], ids=["userinfo", "query"])
async def test_errors_results_reprs_and_logs_never_show_the_password(url: str) -> None:
    """Everything a program can print while the server is unreachable: send/get (sync and
    async) error results and their exception chains, the low-level enqueue's exception,
    ``check(live=True)``'s errors, config reprs and ``log_config()``, and every log record."""
    texts: list[str] = []
    with captured_logs("", "horsies", "psycopg", "psycopg.pool") as lines:
        app = Horsies(AppConfig(broker=PostgresConfig(database_url=url, pool_timeout=1)))
        task = app.task("masked.probe")(probe)
        broker = app.get_broker()
        try:

            def enqueue_error() -> BaseException:
                with pytest.raises(Exception) as info:
                    broker.enqueue("masked.probe", (1,))
                return info.value

            with ThreadPoolExecutor(max_workers=5) as pool:
                sent = pool.submit(task.send, 1)
                many = pool.submit(task.send_many, [(1,), (2,)])
                fetched = pool.submit(TaskHandle[int](str(uuid.uuid4()), broker=broker).get, 1_000)
                raised = pool.submit(enqueue_error)
                checked = pool.submit(app.check, live=True)
                sent_async, fetched_async = await asyncio.gather(
                    task.send_async(2),
                    TaskHandle[int](str(uuid.uuid4()), broker=broker).get_async(1_000),
                )
            for result in (
                sent.result().get(),
                *(handle.get() for handle in many.result()),
                fetched.result(),
                sent_async.get(),
                fetched_async,
            ):
                assert result.is_err()
                assert result.unwrap_err().error_code in (
                    LibraryErrorCode.UNHANDLED_EXCEPTION,
                    LibraryErrorCode.BROKER_ERROR,
                )
                texts += result_texts(result)
            texts += exception_texts(raised.result())
            errors = checked.result()
            assert [error.code for error in errors] == ["E209"], errors
            for error in errors:
                texts += exception_texts(error)
            config = app.config
            texts += [repr(config), str(config), config.describe(), repr(config.broker)]
            texts += [str(config.broker), repr(app), repr(broker), repr(broker.config)]
            config.log_config(logging.getLogger("horsies.masking"))
            assert "***" in config.describe(), "the masked URL is shown"
        finally:
            broker.close()
    assert isinstance(broker, PostgresBroker)
    assert lines, "the connection failures were logged"
    for text in [*texts, *lines]:
        assert not leaks(text), text
    print(f"\n[secrets] {len(texts)} texts, {len(lines)} log records: password shown 0 times")
