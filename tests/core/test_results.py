"""TaskResult, TaskError and LibraryErrorCode."""

from __future__ import annotations

import copy
import pickle
from enum import Enum
from typing import Any, get_args, get_origin

import pytest
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from pydantic import ValidationError

WORKFLOW_OUTCOME_CODES = [
    "WORKFLOW_STOPPED",
    "WORKFLOW_PAUSED",
    "WORKFLOW_CANCELLED",
    "WORKFLOW_FAILED",
    "SUBWORKFLOW_FAILED",
    "SUBWORKFLOW_LOAD_FAILED",
]
"""The codes of a workflow's own outcome (its ``get()`` and its sub-workflow nodes)."""

ALL_CODES = [
    "UNHANDLED_EXCEPTION",
    "TASK_EXCEPTION",
    "WORKER_CRASHED",
    "TASK_TIMEOUT",
    "WAIT_TIMEOUT",
    "TASK_NOT_FOUND",
    "TASK_CANCELLED",
    "RESULT_NOT_AVAILABLE",
    "RESULT_NOT_READY",
    "BROKER_ERROR",
    "WORKER_RESOLUTION_ERROR",
    "WORKER_SERIALIZATION_ERROR",
    "RETURN_TYPE_MISMATCH",
    "PYDANTIC_HYDRATION_ERROR",
    "SEND_SUPPRESSED",
    "SEND_REFUSED",
    "UPSTREAM_SKIPPED",
    "WORKFLOW_CTX_MISSING_ID",
    "WORKFLOW_SUCCESS_CASE_NOT_MET",
    *WORKFLOW_OUTCOME_CODES,
]

# --------------------------------------------------------------------------------------------
# LibraryErrorCode
# --------------------------------------------------------------------------------------------


def test_library_error_code_has_the_documented_members() -> None:
    assert [member.name for member in LibraryErrorCode] == ALL_CODES


def test_library_error_code_value_equals_name_and_is_a_str_enum() -> None:
    for member in LibraryErrorCode:
        assert member.value == member.name
        assert isinstance(member, str)
        assert isinstance(member, Enum)
        assert member == member.name  # a plain string read back from the database still matches
    assert LibraryErrorCode("WAIT_TIMEOUT") is LibraryErrorCode.WAIT_TIMEOUT


def test_library_error_code_renders_as_the_bare_code() -> None:
    code = LibraryErrorCode.TASK_NOT_FOUND
    assert str(code) == "TASK_NOT_FOUND"
    assert f"{code}" == "TASK_NOT_FOUND"


# --------------------------------------------------------------------------------------------
# TaskError
# --------------------------------------------------------------------------------------------


def test_task_error_fields_default_to_none() -> None:
    error = TaskError()
    assert (error.error_code, error.message, error.data, error.exception) == (None,) * 4


def test_task_error_keeps_enum_codes_and_plain_string_codes() -> None:
    library = TaskError(error_code=LibraryErrorCode.BROKER_ERROR)
    assert library.error_code is LibraryErrorCode.BROKER_ERROR
    domain = TaskError(error_code="RATE_LIMITED")
    assert type(domain.error_code) is str
    read_back = TaskError(error_code="BROKER_ERROR")
    assert type(read_back.error_code) is str
    assert read_back.error_code == LibraryErrorCode.BROKER_ERROR


def test_task_error_exception_accepts_exceptions_and_dicts_only() -> None:
    exc = ValueError("bad")
    assert TaskError(exception=exc).exception is exc
    assert TaskError(exception={"type": "ValueError"}).exception == {"type": "ValueError"}
    with pytest.raises(ValidationError):
        TaskError(exception="ValueError")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        TaskError(error_code=5)  # type: ignore[arg-type]


def test_task_error_data_accepts_any_value() -> None:
    assert TaskError(data={"a": [1, 2]}).data == {"a": [1, 2]}
    assert TaskError(data=3).data == 3


def test_task_error_equality_is_by_value() -> None:
    assert TaskError(error_code="X", message="m", data={"a": 1}) == TaskError(
        error_code="X", message="m", data={"a": 1}
    )
    assert TaskError(error_code="X") != TaskError(error_code="Y")
    assert TaskError(error_code=LibraryErrorCode.WAIT_TIMEOUT) == TaskError(
        error_code="WAIT_TIMEOUT"
    )
    # Live exceptions compare by type and arguments, not identity.
    assert TaskError(exception=ValueError("a")) == TaskError(exception=ValueError("a"))
    assert TaskError(exception=ValueError("a")) != TaskError(exception=ValueError("b"))
    assert TaskError(exception=ValueError("a")) != TaskError(exception=KeyError("a"))
    assert TaskError(error_code="X") != "X"


def test_task_error_subclass_is_not_equal_to_base_instance() -> None:
    class Special(TaskError):
        pass

    assert Special(error_code="X") != TaskError(error_code="X")


def test_task_error_is_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(TaskError())


def test_task_error_repr_shows_only_set_fields() -> None:
    error = TaskError(
        error_code=LibraryErrorCode.UNHANDLED_EXCEPTION, message="boom", exception=ValueError("x")
    )
    assert repr(error) == (
        "TaskError(error_code=LibraryErrorCode.UNHANDLED_EXCEPTION, message='boom', "
        "exception=ValueError('x'))"
    )
    assert repr(TaskError(error_code="MINE", data={"k": 1})) == (
        "TaskError(error_code='MINE', data={'k': 1})"
    )
    assert repr(TaskError()) == "TaskError()"


def test_task_error_str_is_code_and_message() -> None:
    assert str(TaskError(error_code=LibraryErrorCode.WAIT_TIMEOUT, message="late")) == (
        "WAIT_TIMEOUT: late"
    )
    assert str(TaskError(error_code="X")) == "X"
    assert str(TaskError(message="only message")) == "only message"


# --------------------------------------------------------------------------------------------
# TaskResult
# --------------------------------------------------------------------------------------------


def test_ok_result_accessors() -> None:
    result: TaskResult[int, TaskError] = TaskResult(ok=5)
    assert result.is_ok()
    assert not result.is_err()
    assert result.ok == 5
    assert result.err is None
    assert result.ok_value == 5
    assert result.unwrap() == 5


def test_err_result_accessors() -> None:
    error = TaskError(error_code="X")
    result: TaskResult[int, TaskError] = TaskResult(err=error)
    assert result.is_err()
    assert not result.is_ok()
    assert result.ok is None
    assert result.err is error
    assert result.err_value is error
    assert result.unwrap_err() is error


def test_ok_none_is_a_valid_success() -> None:
    result: TaskResult[None, TaskError] = TaskResult(ok=None)
    assert result.is_ok()
    assert result.unwrap() is None


def test_both_ok_and_err_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^TaskResult cannot have both ok and err$"):
        TaskResult(ok=1, err=TaskError())
    with pytest.raises(ValueError, match=r"^TaskResult cannot have both ok and err$"):
        TaskResult(ok=None, err=TaskError())


def test_neither_ok_nor_err_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^TaskResult must have exactly one of ok / err$"):
        TaskResult()


def test_err_none_counts_as_not_given() -> None:
    with pytest.raises(ValueError, match=r"^TaskResult must have exactly one of ok / err$"):
        TaskResult(err=None)
    assert TaskResult(ok=1, err=None).unwrap() == 1


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        TaskResult(5)  # type: ignore[misc]


def test_unwrap_on_wrong_variant_raises_documented_messages() -> None:
    ok: TaskResult[int, TaskError] = TaskResult(ok=1)
    err: TaskResult[int, TaskError] = TaskResult(err=TaskError())
    with pytest.raises(ValueError, match=r"^Result is not ok - check is_ok\(\) first$"):
        err.unwrap()
    with pytest.raises(ValueError, match=r"^Result is not ok - check is_ok\(\) first$"):
        _ = err.ok_value
    with pytest.raises(ValueError, match=r"^Result is not error - check is_err\(\) first$"):
        ok.unwrap_err()
    with pytest.raises(ValueError, match=r"^Result is not error - check is_err\(\) first$"):
        _ = ok.err_value


def test_runtime_subscription_works() -> None:
    alias = TaskResult[int, TaskError]
    assert get_origin(alias) is TaskResult
    assert get_args(alias) == (int, TaskError)
    instance = alias(ok=3)
    assert isinstance(instance, TaskResult)
    assert instance.unwrap() == 3


def test_results_compare_by_variant_and_value() -> None:
    assert TaskResult(ok=[1, 2]) == TaskResult(ok=[1, 2])
    assert TaskResult(ok=1) != TaskResult(ok=2)
    assert TaskResult(ok=None) != TaskResult(err=TaskError())
    assert TaskResult(err=TaskError(error_code="X")) == TaskResult(err=TaskError(error_code="X"))
    assert TaskResult(ok=1) != 1


def test_results_hash_like_a_tuple() -> None:
    assert hash(TaskResult(ok=1)) == hash(TaskResult(ok=1))
    assert len({TaskResult(ok="a"), TaskResult(ok="a"), TaskResult(ok="b")}) == 2
    with pytest.raises(TypeError):
        hash(TaskResult(ok=[1]))


def test_result_repr() -> None:
    assert repr(TaskResult(ok=5)) == "TaskResult(ok=5)"
    assert repr(TaskResult(ok="x")) == "TaskResult(ok='x')"
    assert repr(TaskResult(err=TaskError(error_code="E"))) == (
        "TaskResult(err=TaskError(error_code='E'))"
    )


def test_results_are_immutable_slots() -> None:
    result: TaskResult[Any, Any] = TaskResult(ok=1)
    with pytest.raises(AttributeError):
        result.ok = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        result.extra = 1  # type: ignore[attr-defined]


def test_results_and_errors_survive_pickling_and_copying() -> None:
    # Results and errors cross process boundaries (worker children, multiprocessing).
    result: TaskResult[Any, TaskError] = TaskResult(
        err=TaskError(error_code=LibraryErrorCode.WAIT_TIMEOUT, exception=ValueError("x"))
    )
    assert pickle.loads(pickle.dumps(result)) == result
    restored_ok = pickle.loads(pickle.dumps(TaskResult(ok=None)))
    assert restored_ok.is_ok()
    assert restored_ok.ok_value is None
    assert copy.deepcopy(result) == result


@pytest.mark.parametrize("name", WORKFLOW_OUTCOME_CODES)
def test_workflow_library_error_codes(name: str) -> None:
    assert LibraryErrorCode[name].value == name
