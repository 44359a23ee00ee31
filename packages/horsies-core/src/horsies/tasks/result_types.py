"""The declared result types of a task: how error messages name them, and the pydantic adapters
that check returned values against them.

Definition reads `TaskResult[T, E]` off the function's annotation; a `TaskFunction` builds the
adapters for `T` and `E` only when it first validates a result, so defining a task never pays for
pydantic schema building.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, TypeAdapter
from pydantic.errors import PydanticUserError

from horsies.logs import get_logger

__all__ = ["NO_ADAPTER", "build_adapter", "type_name"]

_logger = get_logger("tasks")

NO_ADAPTER: Any = object()
"""Stands for "this type is not checked": it accepts anything, or pydantic cannot adapt it."""


def type_name(tp: Any) -> str:
    """A type as messages print it: builtins by name, other classes with their module."""
    if isinstance(tp, type):
        return (
            tp.__qualname__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
        )
    return repr(tp).replace("typing.", "")


def build_adapter(tp: Any) -> Any:
    """A TypeAdapter for `tp`, or `NO_ADAPTER` for types that accept anything or cannot adapt."""
    if tp is Any or tp is object:
        return NO_ADAPTER
    try:
        return TypeAdapter(tp, config=ConfigDict(arbitrary_types_allowed=True))
    except PydanticUserError:
        # Models, dataclasses and TypedDicts carry their own config and refuse an extra one.
        pass
    except Exception as exc:
        _logger.debug("no runtime return validation for %s: %s", type_name(tp), exc)
        return NO_ADAPTER
    try:
        return TypeAdapter(tp)
    except Exception as exc:
        _logger.debug("no runtime return validation for %s: %s", type_name(tp), exc)
        return NO_ADAPTER
