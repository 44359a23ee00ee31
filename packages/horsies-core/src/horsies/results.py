"""Task outcomes: `TaskResult`, `TaskError` and the library's error codes.

Every task returns a `TaskResult` holding exactly one of a success value (`ok`) or an error
(`err`). Errors are `TaskError` objects; the ones produced by horsies itself carry a
`LibraryErrorCode`, while domain errors returned by task code use any string code.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import Any, Generic, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict

__all__ = ["LibraryErrorCode", "TaskError", "TaskResult"]

T_co = TypeVar("T_co", covariant=True)
E_co = TypeVar("E_co", covariant=True)


class LibraryErrorCode(StrEnum):
    """Error codes produced by horsies itself (value == name).

    Members compare equal to their plain string value, so an error code read back from the database
    (a plain `str`) still matches: `err.error_code == LibraryErrorCode.WAIT_TIMEOUT`.
    `str()` and f-strings render the bare code.
    """

    # execution
    UNHANDLED_EXCEPTION = "UNHANDLED_EXCEPTION"
    """The task function raised (or a send failed in a way no other code describes)."""
    TASK_EXCEPTION = "TASK_EXCEPTION"
    """Something failed around the task function in the worker, or it returned a non-TaskResult."""
    WORKER_CRASHED = "WORKER_CRASHED"
    """The process running the task died or stopped sending heartbeats."""
    TASK_TIMEOUT = "TASK_TIMEOUT"
    """The task ran longer than its time limit (``time_limit_s``) and was stopped."""
    # retrieval
    WAIT_TIMEOUT = "WAIT_TIMEOUT"
    """`get()` gave up waiting; the task may still finish."""
    TASK_NOT_FOUND = "TASK_NOT_FOUND"
    """No task row with this id."""
    TASK_CANCELLED = "TASK_CANCELLED"
    """The task row was cancelled before it completed."""
    RESULT_NOT_AVAILABLE = "RESULT_NOT_AVAILABLE"
    """The handle has no result and no way to fetch one."""
    RESULT_NOT_READY = "RESULT_NOT_READY"
    """A workflow node has no result yet."""
    # broker
    BROKER_ERROR = "BROKER_ERROR"
    """The database failed the call (unreachable, connection lost, statement error) while a
    result was read or a task sent; a send that ends so wrote nothing."""
    # worker
    WORKER_RESOLUTION_ERROR = "WORKER_RESOLUTION_ERROR"
    """The task name is not registered in the worker."""
    WORKER_SERIALIZATION_ERROR = "WORKER_SERIALIZATION_ERROR"
    """Arguments could not be decoded, or the result could not be encoded, in the worker."""
    # validation
    RETURN_TYPE_MISMATCH = "RETURN_TYPE_MISMATCH"
    """The returned ok/err value does not match the declared `TaskResult[T, E]`."""
    PYDANTIC_HYDRATION_ERROR = "PYDANTIC_HYDRATION_ERROR"
    """A stored ok value could not be rebuilt (class missing, validation failure)."""
    # lifecycle
    SEND_SUPPRESSED = "SEND_SUPPRESSED"
    """A send happened while sends were suppressed (module import / discovery)."""
    SEND_REFUSED = "SEND_REFUSED"
    """A send was refused before anything was written: its arguments do not fit the task's
    parameters or cannot be serialized, its queue is unknown, or an option is invalid."""
    # workflow
    UPSTREAM_SKIPPED = "UPSTREAM_SKIPPED"
    """Injected in place of the result of a skipped workflow dependency."""
    WORKFLOW_CTX_MISSING_ID = "WORKFLOW_CTX_MISSING_ID"
    """The task raised `WorkflowContextMissingIdError`."""
    WORKFLOW_SUCCESS_CASE_NOT_MET = "WORKFLOW_SUCCESS_CASE_NOT_MET"
    """The workflow's success policy was not satisfied."""
    WORKFLOW_STOPPED = "WORKFLOW_STOPPED"
    """The task's workflow was paused or cancelled before the task started."""
    WORKFLOW_PAUSED = "WORKFLOW_PAUSED"
    """`WorkflowHandle.get()` on a paused workflow."""
    WORKFLOW_CANCELLED = "WORKFLOW_CANCELLED"
    """The workflow was cancelled (and stored no error of its own)."""
    WORKFLOW_FAILED = "WORKFLOW_FAILED"
    """The workflow failed (and stored no error of its own)."""
    SUBWORKFLOW_FAILED = "SUBWORKFLOW_FAILED"
    """A child workflow did not complete; the error is a `SubWorkflowError`."""
    SUBWORKFLOW_LOAD_FAILED = "SUBWORKFLOW_LOAD_FAILED"
    """A child workflow's definition could not be found or built."""


class TaskError(BaseModel):
    """The error side of a `TaskResult`.

    All fields are optional. `error_code` is a `LibraryErrorCode` for errors made by horsies or any
    string for domain errors; `data` is any JSON-able value; `exception` holds the exception object
    in memory, and a dict (`type`, `message`, `traceback`, `bases`) once the error has been stored.

    Equality is by value (class, code, message, data; live exceptions compare by type and args).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    error_code: LibraryErrorCode | str | None = None
    message: str | None = None
    data: Any = None
    exception: BaseException | dict[str, Any] | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskError):
            return NotImplemented
        if type(self) is not type(other):
            return False
        mine = dict(self.__dict__)
        theirs = dict(other.__dict__)
        mine["exception"] = _exception_identity(mine.get("exception"))
        theirs["exception"] = _exception_identity(theirs.get("exception"))
        return mine == theirs

    __hash__ = None  # mutable value object: unhashable, like the pydantic default

    def __repr__(self) -> str:
        parts: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, Enum):
                rendered = f"{type(value).__name__}.{value.name}"
            else:
                rendered = repr(value)
            parts.append(f"{name}={rendered}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __str__(self) -> str:
        code = "" if self.error_code is None else str(self.error_code)
        if self.message is None:
            return code or repr(self)
        return f"{code}: {self.message}" if code else self.message


def _exception_identity(value: object) -> object:
    # Exceptions have identity equality; compare them by what they say instead.
    if isinstance(value, BaseException):
        return (type(value), value.args)
    return value


class _Unset(Enum):
    UNSET = "UNSET"


_UNSET: Literal[_Unset.UNSET] = _Unset.UNSET


class TaskResult(Generic[T_co, E_co]):
    """Outcome of a task: exactly one of `ok` (any value, `None` included) or `err`.

    Build it with keyword arguments only: `TaskResult(ok=value)` or
    `TaskResult(err=TaskError(...))`.
    Check the variant with `is_ok()` / `is_err()` before `unwrap()` / `unwrap_err()` (or the
    `ok_value` / `err_value` properties), which raise `ValueError` on the wrong variant; the plain
    `ok` / `err` properties return `None` for the other variant instead.

    `err=None` counts as "no error given" (an error result always carries an error), so
    `TaskResult(ok=None)` is a success with value `None`. Results compare equal by variant and
    value, hash like a tuple of them, and print as `TaskResult(ok=...)` / `TaskResult(err=...)`.
    `TaskResult[int, TaskError]` works at runtime (for annotations).
    """

    __slots__ = ("_err", "_is_ok", "_ok")

    _ok: T_co | None
    _err: E_co | None
    _is_ok: bool

    def __init__(
        self,
        *,
        ok: T_co | Literal[_Unset.UNSET] = _UNSET,
        err: E_co | Literal[_Unset.UNSET] | None = _UNSET,
    ) -> None:
        has_ok = ok is not _UNSET
        has_err = err is not _UNSET and err is not None
        if has_ok and has_err:
            raise ValueError("TaskResult cannot have both ok and err")
        if not has_ok and not has_err:
            raise ValueError("TaskResult must have exactly one of ok / err")
        if ok is not _UNSET:
            self._ok = ok
            self._err = None
            self._is_ok = True
        else:
            self._ok = None
            self._err = None if err is _UNSET else err
            self._is_ok = False

    def is_ok(self) -> bool:
        """True for a success result."""
        return self._is_ok

    def is_err(self) -> bool:
        """True for an error result."""
        return not self._is_ok

    @property
    def ok(self) -> T_co | None:
        """The success value, or None for an error result."""
        return self._ok

    @property
    def err(self) -> E_co | None:
        """The error, or None for a success result."""
        return self._err

    @property
    def ok_value(self) -> T_co:
        """The success value; raises `ValueError` on an error result."""
        if not self._is_ok:
            raise ValueError("Result is not ok - check is_ok() first")
        return cast(T_co, self._ok)

    @property
    def err_value(self) -> E_co:
        """The error; raises `ValueError` on a success result."""
        if self._is_ok:
            raise ValueError("Result is not error - check is_err() first")
        return cast(E_co, self._err)

    def unwrap(self) -> T_co:
        """Same as `ok_value`: the success value, `ValueError` on an error result."""
        return self.ok_value

    def unwrap_err(self) -> E_co:
        """Same as `err_value`: the error, `ValueError` on a success result."""
        return self.err_value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskResult):
            return NotImplemented
        other_result = cast("TaskResult[object, object]", other)
        if self._is_ok != other_result.is_ok():
            return False
        if self._is_ok:
            return bool(self._ok == other_result.ok)
        return bool(self._err == other_result.err)

    def __hash__(self) -> int:
        return hash((self._is_ok, self._ok if self._is_ok else self._err))

    def __repr__(self) -> str:
        if self._is_ok:
            return f"TaskResult(ok={self._ok!r})"
        return f"TaskResult(err={self._err!r})"
