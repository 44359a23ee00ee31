"""Scenario 8b: task and queue names (and string arguments) full of SQL, quotes, unicode, control
characters and 10 KB strings.

A task name is either refused when the task is defined (``TaskDefinitionError`` E102: empty,
longer than 255 characters, NUL, lone surrogates) or stored verbatim and resolved by a real worker
by its exact name. A queue name outside ``[A-Za-z0-9_][A-Za-z0-9_.-]*`` (at most 52 characters) is
refused (E200 in the queue config or in DEFAULT mode, E103 for an unknown queue in CUSTOM mode).
Nothing is ever executed as SQL: every table is intact afterwards.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from horsies.app import Horsies
from horsies.config import (
    QUEUE_NAME_MAX_LENGTH,
    AppConfig,
    CustomQueueConfig,
    PostgresConfig,
    QueueMode,
)
from horsies.errors import (
    ConfigurationError,
    DuplicateTaskNameError,
    ErrorCode,
    TaskDefinitionError,
)
from horsies.results import TaskError, TaskResult
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reliability.apps.hostile_tasks import HOSTILE_TASK_NAMES
from tests.reliability.harness import LedgerWorker
from tests.reliability.hostile import RELAXED, SQL_STRINGS, TEXT, examples, module_worker_fixture
from tests.reliability.ledger import compare

pytestmark = pytest.mark.timeout(180)

RESULT_TIMEOUT_MS = 60_000
TABLES = (
    "horsies_tasks",
    "horsies_heartbeats",
    "horsies_worker_states",
    "horsies_workflows",
    "horsies_workflow_tasks",
    "reliability_ledger",
)
SQL_NAMES = (
    *SQL_STRINGS,
    "'; DROP TABLE reliability_ledger; --",
    "x'); DELETE FROM horsies_tasks; --",
    "\"default\"; NOTIFY task_new, 'x'",
)
HUGE = st.builds(
    lambda seed, size: (seed * size)[:size],
    st.text(min_size=1, max_size=3),
    st.integers(10_000, 10_240),
)
NAMES = (
    TEXT
    | st.sampled_from(SQL_NAMES)
    | HUGE
    | st.text(min_size=250, max_size=260)
    | st.sampled_from(["", " ", "\t\n", "a" * 255, "é" * 255, "🐎" * 255, "a" * 256])
)


def name_problem(name: str) -> str | None:
    """Why a task name must be refused at definition time (None: it must be accepted)."""
    if not name.strip():
        return "non-empty"
    if len(name) > 255:
        return "at most 255 characters"
    if "\x00" in name:
        return "NUL"
    if any(0xD800 <= ord(char) <= 0xDFFF for char in name):
        return "UTF-8"
    return None


def hostile_fn(value: int) -> TaskResult[int, TaskError]:
    return TaskResult(ok=value)


worker = module_worker_fixture("--processes", "1")


def _stored_name(conninfo: str, task_id: str) -> str:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT task_name FROM horsies_tasks WHERE id = %s", [task_id]
        ).fetchone()
    assert row is not None, task_id
    return str(row[0])


def _assert_tables_intact(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table in TABLES:
            row = conn.execute("SELECT to_regclass(%s)", [table]).fetchone()
            assert row is not None, table
            assert row[0] is not None, f"table {table} is gone"


@settings(max_examples=examples(150, 3_000), suppress_health_check=RELAXED)
@given(name=NAMES)
def test_any_task_name_is_refused_at_definition_or_stored_verbatim(
    producer: Horsies, database_conninfo: str, name: str
) -> None:
    """Random names (SQL, quotes, unicode, controls, 10 KB): refused with E102 and a note saying
    why, or accepted, sent (scheduled an hour ahead, so no worker picks it) and stored verbatim.
    (A name the ledger app already uses for another function is E301.)"""
    problem = name_problem(name)
    existing = producer.tasks.get(name)
    if problem is None and existing is not None and existing.__wrapped__ is not hostile_fn:
        with pytest.raises(DuplicateTaskNameError):
            producer.task(name)(hostile_fn)
        return
    if problem is not None:
        with pytest.raises(TaskDefinitionError) as info:
            producer.task(name)(hostile_fn)
        error = info.value
        assert error.code is ErrorCode.TASK_INVALID_OPTIONS
        assert error.message == "invalid task name"
        assert any(problem in note for note in error.notes), error.notes
        return
    task = producer.task(name)(hostile_fn)
    assert task.task_name == name
    handle = task.schedule(3_600, 1)
    assert handle.task_id != "<error>", handle.get().err
    assert _stored_name(database_conninfo, handle.task_id) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "non-empty"),
        ("a\x00b", "NUL"),
        ("\x00", "NUL"),
        ("a\ud800", "UTF-8"),
        ("x" * 256, "255"),
    ],
)
def test_unstorable_task_names_are_refused_at_definition(name: str, why: str) -> None:
    """Names PostgreSQL cannot store (NUL, lone surrogates) or the column cannot hold are
    refused when the task is defined, not at every send."""
    app = Horsies(AppConfig(broker=PostgresConfig(database_url="postgresql+psycopg://u@h/db")))
    with pytest.raises(TaskDefinitionError) as info:
        app.task(name)(hostile_fn)
    assert info.value.code is ErrorCode.TASK_INVALID_OPTIONS
    assert any(why in note for note in info.value.notes), info.value.notes


def test_hostile_task_names_and_sql_arguments_run_on_a_real_worker(
    worker: LedgerWorker, producer: Horsies, database_conninfo: str
) -> None:
    """Valid hostile names are stored verbatim and the worker resolves and runs each by its exact
    name, with SQL-laden string arguments (positional and keyword) echoed back unchanged; no
    table was touched by any of it."""
    sent: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    for index, name in enumerate(HOSTILE_TASK_NAMES):
        task = producer.tasks[name]
        for position, text in enumerate(SQL_NAMES):
            key = uuid.uuid4().hex
            if (index + position) % 2:
                sent[key] = task.send(key, text, text)
                expected[key] = [[text, text], {}]
            else:
                sent[key] = task.send(key, **{text if text else "empty": text})
                expected[key] = [[], {text if text else "empty": text}]
    for key, handle in sent.items():
        assert handle.task_id != "<error>", handle.get().err
        result = handle.get(timeout_ms=RESULT_TIMEOUT_MS)
        assert result.is_ok(), result.err
        assert result.unwrap() == expected[key]
    with psycopg.connect(database_conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT task_name, count(*) FROM horsies_tasks WHERE id = ANY(%s) GROUP BY task_name",
            [[handle.task_id for handle in sent.values()]],
        ).fetchall()
    assert dict(rows) == dict.fromkeys(HOSTILE_TASK_NAMES, len(SQL_NAMES))
    ids = {key: handle.task_id for key, handle in sent.items()}
    report = compare(database_conninfo, ids)
    report.assert_nothing_lost_or_duplicated()
    assert report.statuses == {"COMPLETED": len(ids)}, report.summary()
    _assert_tables_intact(database_conninfo)
    assert worker.alive, worker.output()
    # The names quoted in the worker's output (its banner, its log lines) are escaped: the name
    # with a newline and a carriage return starts no line of its own.
    lines = worker.output().splitlines()
    assert not [line for line in lines if line.startswith(("new line", "\ttab"))], lines
    print(
        f"\n[hostile-names] names={len(HOSTILE_TASK_NAMES)} sql_strings={len(SQL_NAMES)} "
        f"tasks={len(ids)} completed={report.statuses['COMPLETED']} lost={report.lost} "
        f"duplicated={report.duplicated} tables intact"
    )


QUEUE_PATTERN_CHARS = st.text(st.sampled_from("abcXYZ019_.-'\";$ é🐎\x00"), min_size=0, max_size=60)


@settings(max_examples=examples(100, 2_000), suppress_health_check=RELAXED)
@given(name=QUEUE_PATTERN_CHARS | st.sampled_from(SQL_NAMES) | HUGE)
def test_any_queue_name_is_refused_with_e200_or_accepted_as_a_plain_identifier(name: str) -> None:
    """Queue names become NOTIFY channels: anything but ASCII letters, digits, ``_``, ``.``,
    ``-`` (not first), up to 52 characters, is refused with E200 naming the rule; a task naming
    an unknown queue is refused with E103; in DEFAULT mode any queue name is refused (E200)."""
    plain = (
        0 < len(name) <= QUEUE_NAME_MAX_LENGTH
        and name[0] not in ".-"
        and all(char.isascii() and (char.isalnum() or char in "_.-") for char in name)
    )
    broker = PostgresConfig(database_url="postgresql+psycopg://u@localhost/db")
    if plain:
        assert CustomQueueConfig(name=name).name == name
    else:
        with pytest.raises(ConfigurationError) as info:
            CustomQueueConfig(name=name)
        assert info.value.code is ErrorCode.CONFIG_INVALID_QUEUE_MODE
        assert info.value.message.startswith("invalid queue name")
        assert isinstance(info.value, ValueError)
    custom = Horsies(
        AppConfig(
            broker=broker,
            queue_mode=QueueMode.CUSTOM,
            custom_queues=[CustomQueueConfig(name="known")],
        )
    )
    if name != "known":
        with pytest.raises(ConfigurationError) as info:
            custom.task("t", queue_name=name)(hostile_fn)
        assert info.value.code is ErrorCode.TASK_INVALID_QUEUE
    default = Horsies(AppConfig(broker=broker))
    with pytest.raises(ConfigurationError) as info:
        default.task("t", queue_name=name)(hostile_fn)
    assert info.value.code is ErrorCode.CONFIG_INVALID_QUEUE_MODE


def test_no_table_was_touched(worker: LedgerWorker, database_conninfo: str) -> None:
    """After every hostile name and argument of this module: all tables exist, and the worker
    is still up."""
    _assert_tables_intact(database_conninfo)
    assert worker.alive, worker.output()
