"""Unique tasks, the task's side: the `Unique` option, and the key each send claims.

A key is the task's name and either a text given with the option, or the values of the chosen
arguments (all of them by default) as canonical JSON: the same call gives the same key in every
process. The database decides who holds a key (``broker/unique.py``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from horsies.broker.unique import UniqueClaim, UniqueScope
from horsies.codec import to_jsonable
from horsies.errors import ErrorCode, TaskDefinitionError
from horsies.tasks.arguments import INJECTED_ALWAYS, bound_arguments, signature_naming

__all__ = ["TaskAlreadyExists", "Unique", "UniqueKeys"]

_MAX_KEY_CHARS: Final = 400
"""Longer keys are stored as the task name and a SHA-256 of the text: index entries stay small."""


def _invalid(note: str) -> TaskDefinitionError:
    return TaskDefinitionError(
        "invalid unique option", code=ErrorCode.TASK_INVALID_OPTIONS
    ).with_note(note)


@dataclass(frozen=True, slots=True)
class Unique:
    """Sends of a task that are the same call while an earlier one is in scope create no task:
    they answer with the existing one (`handle.created` is False), or raise `TaskAlreadyExists`
    with ``if_exists="raise"`` (`send_many` never raises: it reports per call).

    Args:
        scope: how long a task holds its key: ``"pending"`` until it starts (again while a retry
            waits), ``"active"`` until it ends (COMPLETED, FAILED or CANCELLED), or a number of
            seconds after it was sent, whatever its status.
        on: the names of the arguments that make the key (None: every argument); ``()`` makes
            one key for the whole task.
        key: a key of your own instead (usually per send:
            ``task.with_options(unique=Unique(key=f"user-{uid}")).send(uid)``).
        if_exists: ``"return"`` the existing task, or ``"raise"``.
    """

    scope: Literal["pending", "active"] | float = "active"
    on: Sequence[str] | None = None
    key: str | None = None
    if_exists: Literal["return", "raise"] = "return"

    def __post_init__(self) -> None:
        # Checked as any values: the option is built by callers the type checker may not see.
        scope: Any = self.scope
        if isinstance(scope, bool) or not (
            scope in ("pending", "active")
            or (isinstance(scope, int | float) and math.isfinite(scope) and scope > 0)
        ):
            raise _invalid(
                f"scope: 'pending', 'active' or a positive number of seconds, got {scope!r}"
            )
        names: Any = self.on
        if names is not None:
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise _invalid(f"on: a sequence of argument names, got {names!r}")
            object.__setattr__(self, "on", tuple(names))
        key: Any = self.key
        if key is not None and (not isinstance(key, str) or not key):
            raise _invalid(f"key: a non-empty string, got {key!r}")
        if key is not None and names is not None:
            raise _invalid("give either key or on, not both")
        if self.if_exists not in ("return", "raise"):
            raise _invalid(f"if_exists: 'return' or 'raise', got {self.if_exists!r}")


class TaskAlreadyExists(Exception):
    """A send with ``Unique(if_exists="raise")`` found its key held by a task in scope."""

    def __init__(self, task_name: str, key: str, task_id: str) -> None:
        super().__init__(f"task {task_name} with unique key {key!r} already exists: {task_id}")
        self.task_name = task_name
        self.key = key
        self.task_id = task_id
        """The task that holds the key."""


class UniqueKeys:
    """The keys of one task's sends under one `Unique` option."""

    __slots__ = ("_names", "_prefix", "_scope", "_signature", "_window_s", "unique")

    def __init__(self, task_name: str, fn: Callable[..., Any], unique: Unique) -> None:
        """Raises `TaskDefinitionError` (E102) when ``unique.on`` names no parameter of ``fn``."""
        self.unique = unique
        self._prefix = f"{task_name}:"
        window = unique.scope
        self._scope: UniqueScope = "window"
        self._window_s: float | None = None
        if isinstance(window, int | float):
            self._window_s = float(window)
        else:
            self._scope = window
        self._signature = signature_naming(fn, unique.on, _invalid)
        self._names: tuple[str, ...] | None = (
            tuple(unique.on)
            if unique.on is not None
            else None
            if self._signature is None
            else tuple(name for name in self._signature.parameters if name not in INJECTED_ALWAYS)
        )

    def claim(self, args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> UniqueClaim:
        """The key of the call ``fn(*args, **kwargs)`` (already checked to bind)."""
        text = self.unique.key
        if text is None:
            text = self._arguments_text(args, kwargs or {})
        key = self._prefix + text
        if len(key) > _MAX_KEY_CHARS:
            key = self._prefix + "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        return UniqueClaim(key, self._scope, self._window_s)

    def _arguments_text(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        signature, names = self._signature, self._names
        if signature is None or names is None:
            values: object = {"args": list(args), "kwargs": dict(kwargs)}
        else:
            bound = bound_arguments(signature, args, kwargs)
            values = {name: bound.get(name) for name in names}
        return orjson.dumps(to_jsonable(values), option=orjson.OPT_SORT_KEYS).decode()
