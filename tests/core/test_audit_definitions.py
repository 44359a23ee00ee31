"""Audit: `@app.task` definition checks not covered elsewhere (a task without a name gets
"<module>.<qualname>"; unknown options are refused).

Every refusal must carry its `ErrorCode`, point at the user's code, and register nothing.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import horsies
import pytest
from horsies.app import Horsies
from horsies.codec import task_result_from_json
from horsies.config import AppConfig, PostgresConfig
from horsies.env import SUPPRESS_SENDS as SUPPRESS_SENDS_ENV
from horsies.errors import ErrorCode, TaskDefinitionError
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.tasks.definition import MAX_TASK_NAME_LENGTH
from horsies_worker.execution import execute_task

URL = "postgresql://user:secret@localhost:1/nowhere"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Horsies:
    monkeypatch.delenv(SUPPRESS_SENDS_ENV, raising=False)
    return Horsies(AppConfig(broker=PostgresConfig(database_url=URL)))


def job() -> TaskResult[int, TaskError]:
    return TaskResult(ok=1)


@pytest.mark.parametrize(
    ("name", "note"),
    [
        ("", "task names must be non-empty strings, got ''"),
        ("   ", "task names must be non-empty strings, got '   '"),
        ("x" * (MAX_TASK_NAME_LENGTH + 1), "task names are at most 255 characters, got 256"),
    ],
    ids=["empty", "blank", "too-long"],
)
def test_invalid_task_names_are_e102(app: Horsies, name: str, note: str) -> None:
    with pytest.raises(TaskDefinitionError) as info:
        app.task(name, job)
    error = info.value
    assert error.code is ErrorCode.TASK_INVALID_OPTIONS
    assert error.message == "invalid task name"
    assert error.notes == [note]
    assert error.location is not None
    assert os.path.realpath(error.location.file) == os.path.realpath(__file__)
    assert isinstance(error, TypeError)  # definition errors are TypeErrors too, as the docs say
    assert app.list_tasks() == []


def test_longest_allowed_name_fits_the_task_name_column(app: Horsies) -> None:
    name = "n" * MAX_TASK_NAME_LENGTH
    assert MAX_TASK_NAME_LENGTH == 255  # horsies_tasks.task_name is VARCHAR(255)
    assert app.task(name, job).task_name == name


@pytest.mark.parametrize("name", [5, b"bytes", ["list"]])
def test_non_string_task_name_is_e102(app: Horsies, name: Any) -> None:
    with pytest.raises(TaskDefinitionError) as info:
        app.task(name)
    assert info.value.code is ErrorCode.TASK_INVALID_OPTIONS
    assert info.value.message == "invalid task name"
    assert app.list_tasks() == []


def test_two_functions_are_refused(app: Horsies) -> None:
    with pytest.raises(TaskDefinitionError) as info:
        app.task(job, job)  # pyright: ignore[reportCallIssue, reportArgumentType]
    assert info.value.code is ErrorCode.TASK_INVALID_OPTIONS
    assert app.list_tasks() == []


def test_non_callable_task_is_e102(app: Horsies) -> None:
    with pytest.raises(TaskDefinitionError) as info:
        app.task("not_a_function", 42)  # pyright: ignore[reportCallIssue, reportArgumentType]
    assert info.value.code is ErrorCode.TASK_INVALID_OPTIONS
    assert info.value.message == "a task must be a function, got int"
    assert app.list_tasks() == []


def test_several_unknown_options_are_all_named(app: Horsies) -> None:
    with pytest.raises(TaskDefinitionError) as info:
        app.task("x", job, priority=1, queue="q")  # pyright: ignore[reportCallIssue]
    assert info.value.code is ErrorCode.TASK_INVALID_OPTIONS
    assert info.value.message == "unknown task options 'priority', 'queue'"
    assert info.value.help_text is not None
    assert "queue_name, good_until, auto_retry_for, retry_policy" in info.value.help_text


def test_sql_metacharacters_in_task_names_are_plain_data(app: Horsies) -> None:
    # Names are never spliced into SQL, so nothing about them needs refusing.
    name = 'it\'s; DROP TABLE horsies_tasks; --"x"'
    assert app.task(name, job).task_name == name
    assert name in app.tasks


# -- app.tasks is a read-only mapping --------------------------------------------------------------


def test_task_registry_mapping_protocol_and_read_only(app: Horsies) -> None:
    registered = app.task("present", job)
    sentinel = object()
    assert app.tasks.get("absent", sentinel) is sentinel
    assert list(app.tasks.keys()) == ["present"]
    assert list(app.tasks.values()) == [registered]
    with pytest.raises(TypeError):
        del app.tasks["present"]  # pyright: ignore[reportIndexIssue]
    assert not hasattr(app.tasks, "pop")
    assert not hasattr(app.tasks, "update")
    assert "present" in app.tasks


# -- every documented deep import path -------------------------------------------------------------

DEEP_IMPORTS: dict[str, tuple[str, ...]] = {
    "horsies.core.models.queues": ("QueueMode", "CustomQueueConfig"),
    "horsies.core.models.recovery": ("RecoveryConfig",),
    "horsies.core.models.schedule": (
        "ScheduleConfig", "TaskSchedule", "IntervalSchedule", "HourlySchedule",
        "DailySchedule", "WeeklySchedule", "MonthlySchedule", "Weekday",
    ),
    "horsies.core.errors": (
        "HorsiesError", "ConfigurationError", "TaskDefinitionError", "RegistryError",
        "SourceLocation",
    ),
    "horsies.core.task_decorator": ("TaskHandle",),
    "horsies.core.brokers.postgres": ("PostgresBroker",),
    "horsies.core.codec.serde": (
        "to_jsonable", "rehydrate_value", "args_to_json", "kwargs_to_json", "dumps_json",
        "loads_json", "task_result_from_json", "SerializationError",
    ),
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(DEEP_IMPORTS))
def test_documented_deep_import_paths_resolve(module: str) -> None:
    imported = importlib.import_module(module)
    missing = [name for name in DEEP_IMPORTS[module] if not hasattr(imported, name)]
    assert missing == []
    # Thin re-exports: the same objects as the top-level package where it exports them.
    for name in DEEP_IMPORTS[module]:
        if name in horsies.__all__:
            assert getattr(imported, name) is getattr(horsies, name)


# -- building the error result never fails on the object it reports --------------------------------


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


class Unrepresentable:
    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")


def test_exception_whose_str_raises_is_still_unhandled_exception(app: Horsies) -> None:
    @app.task("raises_unprintable")
    def raises_unprintable() -> TaskResult[int, TaskError]:
        raise UnprintableError

    error = raises_unprintable().unwrap_err()  # a direct call never raises
    assert error.error_code is LibraryErrorCode.UNHANDLED_EXCEPTION
    assert error.message == (
        "Unhandled exception in task raises_unprintable: UnprintableError: "
        "<unprintable UnprintableError>"
    )
    assert error.data == {"exception_type": "UnprintableError"}
    # The worker stores it the same way (not as TASK_EXCEPTION).
    result_json, ok = execute_task(app, "raises_unprintable", None, None)
    stored = task_result_from_json(result_json).unwrap_err()
    assert not ok
    assert stored.error_code == LibraryErrorCode.UNHANDLED_EXCEPTION
    assert stored.data == {"exception_type": "UnprintableError"}


def test_mismatched_value_whose_repr_raises_is_return_type_mismatch(app: Horsies) -> None:
    @app.task("returns_unrepresentable")
    def returns_unrepresentable() -> TaskResult[int, TaskError]:
        return TaskResult(ok=Unrepresentable())  # type: ignore[arg-type]  # pyright: ignore

    error = returns_unrepresentable().unwrap_err()
    assert error.error_code is LibraryErrorCode.RETURN_TYPE_MISMATCH
    assert error.message == (
        "Task returns_unrepresentable returned TaskResult(ok=<unprintable Unrepresentable>) "
        "but expected type int"
    )
    assert error.data["actual_value"] == "<unprintable Unrepresentable>"
    result_json, _ = execute_task(app, "returns_unrepresentable", None, None)
    stored = task_result_from_json(result_json).unwrap_err()
    assert stored.error_code == LibraryErrorCode.RETURN_TYPE_MISMATCH
