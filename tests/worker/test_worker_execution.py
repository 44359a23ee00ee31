"""Child-side execution of one task (decode the arguments, resolve the task, run it, encode the
outcome), run in-process."""

from __future__ import annotations

from typing import Any

import pytest
from horsies.codec import task_result_from_json
from horsies.results import LibraryErrorCode, TaskError
from horsies_worker.execution import error_result_json, execute_task
from worker_test_app import app


def run(name: str, args: str | None = "[]", kwargs: str | None = "{}") -> tuple[Any, bool]:
    result_json, ok = execute_task(app, name, args, kwargs)
    return task_result_from_json(result_json), ok


def err_of(result: Any) -> TaskError:
    assert result.is_err()
    return result.unwrap_err()


def run_failing(name: str, args: str | None = "[]", kwargs: str | None = "{}") -> TaskError:
    """Run a task that must fail: its result is flagged not ok; the error."""
    result, ok = run(name, args, kwargs)
    assert not ok
    return err_of(result)


def test_ok_result_is_encoded_and_flagged_ok() -> None:
    result, ok = run("add", "[2, 3]")
    assert ok
    assert result.unwrap() == 5


def test_null_args_and_kwargs_mean_no_arguments() -> None:
    result, ok = run("greet", None, None)
    assert ok
    assert result.unwrap() == "hello world"


def test_kwargs_are_passed() -> None:
    result, _ = run("greet", "[]", '{"name": "horsies"}')
    assert result.unwrap() == "hello horsies"


def test_unknown_task_name_is_worker_resolution_error() -> None:
    error = run_failing("no.such.task")
    assert error.error_code == LibraryErrorCode.WORKER_RESOLUTION_ERROR
    assert error.message is not None
    assert error.message.startswith("Failed to resolve no.such.task: ")
    assert error.data == {"task_name": "no.such.task"}


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ("[1, ", "{}"),  # malformed JSON (a corrupt row)
        ('{"a": 1}', "{}"),  # args not an array
        ("[]", "[1]"),  # kwargs not an object
        (
            '[{"__pydantic_model__": true, "module": "no_such_module_xyz", "qualname": "M",'
            ' "data": {}}]',
            "{}",
        ),  # model class not importable
    ],
)
def test_undecodable_arguments_are_worker_serialization_error(args: str, kwargs: str) -> None:
    assert (
        run_failing("add", args, kwargs).error_code == LibraryErrorCode.WORKER_SERIALIZATION_ERROR
    )


def test_exception_in_task_is_unhandled_exception_with_type() -> None:
    error = run_failing("boom")
    assert error.error_code == LibraryErrorCode.UNHANDLED_EXCEPTION
    assert error.data == {"exception_type": "ConnectionRefusedError"}
    assert isinstance(error.exception, dict)
    assert error.exception["type"] == "ConnectionRefusedError"


def test_unserializable_result_is_worker_serialization_error() -> None:
    error = run_failing("returns_set")
    assert error.error_code == LibraryErrorCode.WORKER_SERIALIZATION_ERROR
    assert "set" in (error.message or "")


def test_nan_result_is_task_exception() -> None:
    # Encoding the result fails with an error other than SerializationError (NaN is refused).
    assert run_failing("returns_nan").error_code == LibraryErrorCode.TASK_EXCEPTION


def test_keyboard_interrupt_from_task_is_task_exception() -> None:
    error = run_failing("interrupt")
    assert error.error_code == LibraryErrorCode.TASK_EXCEPTION
    assert error.message == "KeyboardInterrupt: stop it"


def test_domain_error_is_passed_through() -> None:
    error = run_failing("domain_error")
    assert error.error_code == "RATE_LIMITED"
    assert error.message == "slow down"


def test_error_result_json_survives_unencodable_data() -> None:
    text = error_result_json(LibraryErrorCode.WORKER_CRASHED, "gone", {"x": object()})
    result = task_result_from_json(text)
    assert result.is_err()
    assert result.unwrap_err().error_code == LibraryErrorCode.WORKER_CRASHED
    assert result.unwrap_err().message == "gone"
