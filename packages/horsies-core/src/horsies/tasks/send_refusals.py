"""What a send refuses before writing anything, and the error handles of failed sends.

A refused call is the caller's mistake (arguments that do not fit, values the codec cannot encode,
a reserved keyword, a bad delay): its handle says ``SEND_REFUSED`` and a warning is logged. A
database failure says ``BROKER_ERROR``; anything else is a defect (``UNHANDLED_EXCEPTION``).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, cast

from horsies.broker.enqueue import delay_problem
from horsies.broker.errors import BrokerError
from horsies.codec import SerializationError
from horsies.codec.tags import CTX_KEY, META_KEY
from horsies.errors import HorsiesError
from horsies.failures import failure
from horsies.logs import get_logger
from horsies.results import LibraryErrorCode
from horsies.tasks.execution import exception_text
from horsies.tasks.handle import ERROR_TASK_ID, TaskHandle

__all__ = [
    "ArgumentsRefused",
    "check_delay",
    "error_handle",
    "refuse_reserved",
    "split_call",
]

_logger = get_logger("tasks")


class ArgumentsRefused(TypeError):
    """A call's arguments do not fit the task function's parameters (raised before any write)."""


# What the caller got wrong (refused before anything is written), told apart from the database
# failing the call and from a defect that fits neither.
_REFUSALS: tuple[type[Exception], ...] = (
    ArgumentsRefused, SerializationError, HorsiesError, ValueError,
)  # fmt: skip


def _send_error_code(exc: BaseException) -> LibraryErrorCode:
    if isinstance(exc, BrokerError):
        return LibraryErrorCode.BROKER_ERROR
    if isinstance(exc, _REFUSALS):
        return LibraryErrorCode.SEND_REFUSED
    return LibraryErrorCode.UNHANDLED_EXCEPTION


def error_handle(task_name: str, prefix: str, exc: BaseException) -> TaskHandle[Any]:
    """`"<error>"` handle for a send that failed before (or while) writing its row."""
    code = _send_error_code(exc)
    message = f"{prefix}: {exception_text(exc)}"
    if code is not LibraryErrorCode.BROKER_ERROR:
        # A refused send is a bug in the caller that an ignored handle would hide; the broker
        # reports its own connection trouble (rate-limited) where it sees it.
        _logger.warning("%s (%s)", message, code)
    error = failure(
        code,
        message,
        {"task_name": task_name, "exception_type": type(exc).__name__},
        exception=exc,
    )
    return TaskHandle(ERROR_TASK_ID, result=error)


def split_call(call: object) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if type(call) is dict:
        return (), typing.cast("dict[str, Any]", call)
    if type(call) is tuple:
        return typing.cast("tuple[Any, ...]", call), {}
    if isinstance(call, Mapping):
        return (), dict(typing.cast("Mapping[str, Any]", call))
    if isinstance(call, tuple):
        return typing.cast("tuple[Any, ...]", call), {}
    raise ArgumentsRefused(
        "send_many takes one mapping of keyword arguments or one tuple of positional arguments "
        f"per call, got {type(call).__name__}"
    )


def refuse_reserved(kwargs: Mapping[str, Any]) -> None:
    """Raise for keyword arguments named like the workflow engine's transport keys: the worker
    would take them for workflow context and drop (or misread) them."""
    name = CTX_KEY if CTX_KEY in kwargs else META_KEY
    raise ValueError(
        f"keyword argument name {name!r} is reserved by horsies (workflow context transport)"
    )


def check_delay(delay_seconds: object) -> float:
    # The broker's rule, reported under the name the caller used.
    problem = delay_problem("delay_seconds", delay_seconds)
    if problem is not None:
        raise ValueError(problem)
    return float(cast("float", delay_seconds))
