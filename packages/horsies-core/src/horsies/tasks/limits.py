"""Rate and concurrency limits, the task's side: the `Limit` option, and the key each send is
counted under. The workers enforce the limits when they claim (``broker/limits.py``)."""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from horsies.broker.limits import LimitNumbers, LimitTag
from horsies.codec import to_jsonable
from horsies.errors import ErrorCode, TaskDefinitionError
from horsies.tasks.arguments import INJECTED_ALWAYS, bound_arguments, signature_naming

__all__ = [
    "Limit",
    "LimitKeys",
    "check_shared_limit",
    "checked_limit_key",
    "describe_limits",
    "limits_by_queue",
]

_MAX_KEY_CHARS: Final = 200
"""Longer keys are stored as a SHA-256 of the text: index entries stay small."""
_MAX_NAME_CHARS: Final = 100


def _invalid(note: str) -> TaskDefinitionError:
    return TaskDefinitionError(
        "invalid limit option", code=ErrorCode.TASK_INVALID_OPTIONS
    ).with_note(note)


def _positive_int(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise _invalid(f"{name}: a whole number >= 1 or None, got {value!r}")


@dataclass(frozen=True, slots=True)
class Limit:
    """How many tasks may start: at most ``concurrency`` running at once, and at most ``rate``
    starts per ``per_s`` seconds, per key, across every worker. Tasks over the limit wait
    PENDING until it allows them. Several tasks given limits of one ``name`` share its counts.

    Args:
        name: the limit's name, shared by every task that names it (their numbers must agree).
        concurrency: tasks of one key RUNNING at once (1: one at a time per key).
        rate: starts of one key per ``per_s`` seconds (a sliding window on the database's clock).
        per_s: the window of ``rate``, in seconds (default 1).
        on: the names of the arguments whose values make the key (say ``["tenant_id"]``); None
            (and no ``key``) counts every task of the limit under one key.
        key: a function of the call's arguments (a mapping of name to value, defaults applied)
            that returns the key, instead of ``on``. Per send, ``task.with_options(limit_key=...)``
            gives a key of your own.
    """

    name: str
    concurrency: int | None = None
    rate: int | None = None
    per_s: float = 1.0
    on: Sequence[str] | None = None
    key: Callable[[Mapping[str, Any]], object] | None = None

    def __post_init__(self) -> None:
        # Checked as any values: the option is built by callers the type checker may not see.
        name: Any = self.name
        if not isinstance(name, str) or not name or len(name) > _MAX_NAME_CHARS:
            raise _invalid(f"name: a non-empty string of at most {_MAX_NAME_CHARS} characters")
        _positive_int("concurrency", self.concurrency)
        _positive_int("rate", self.rate)
        if self.concurrency is None and self.rate is None:
            raise _invalid("give concurrency, rate or both")
        per: Any = self.per_s
        if isinstance(per, bool) or not isinstance(per, int | float) or not math.isfinite(per):
            raise _invalid(f"per_s: a number of seconds, got {per!r}")
        if not 0.001 <= per <= 86_400 * 31:
            raise _invalid(f"per_s: between 0.001 and 2678400 seconds (31 days), got {per!r}")
        names: Any = self.on
        if names is not None:
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise _invalid(f"on: a sequence of argument names, got {names!r}")
            object.__setattr__(self, "on", tuple(names))
        key: Any = self.key
        if key is not None:
            if names is not None:
                raise _invalid("give either key or on, not both")
            if not callable(key):
                raise _invalid(f"key: a function of the arguments, got {key!r}")
            if inspect.iscoroutinefunction(key):
                # Keys are computed in send(), which may be synchronous: it cannot await one.
                raise _invalid("key: a plain function; an async def cannot give a key at send")
            try:
                inspect.signature(key).bind({})
            except TypeError:
                raise _invalid(
                    "key: a function called with one argument (the call's arguments by name)"
                ) from None
            except ValueError:
                pass  # a builtin without a signature: trusted

    @property
    def numbers(self) -> LimitNumbers:
        """What the limit allows, as the workers register it."""
        per_ms = None if self.rate is None else max(1, round(self.per_s * 1000))
        return LimitNumbers(self.name, self.concurrency, self.rate, per_ms)


class LimitKeys:
    """The keys of one task's sends under one `Limit`."""

    __slots__ = ("_names", "_signature", "limit")

    def __init__(self, fn: Callable[..., Any], limit: Limit) -> None:
        """Raises `TaskDefinitionError` (E102) when ``limit.on`` names no parameter of ``fn``."""
        self.limit = limit
        self._signature = signature_naming(fn, limit.on, _invalid)
        if limit.on is not None and self._signature is not None:
            injected = [name for name in limit.on if name in INJECTED_ALWAYS]
            if injected:
                # The worker fills them in after the key was made: every send would get one key.
                raise _invalid(
                    f"on: {', '.join(map(repr, injected))} is filled in by the worker, not by the"
                    " caller, so it cannot make the key"
                )
        self._names = tuple(limit.on) if limit.on is not None else ()

    def tag(
        self, args: Sequence[Any], kwargs: Mapping[str, Any] | None, given: str | None = None
    ) -> LimitTag:
        """The limit and key of the call ``fn(*args, **kwargs)`` (already checked to bind);
        ``given`` is a key chosen at send.

        Raises:
            ValueError: the limit's key function failed or gave no usable key.
        """
        limit = self.limit
        if given is not None:
            text = given
        elif limit.key is not None:
            text = self._from_function(args, kwargs or {})
        elif self._names:
            bound = self._bound(args, kwargs or {})
            values = [bound.get(name) for name in self._names]
            single = values[0] if len(values) == 1 else None
            if len(values) == 1 and isinstance(single, str | int) and not isinstance(single, bool):
                text = str(single)
            else:
                text = orjson.dumps(to_jsonable(values), option=orjson.OPT_SORT_KEYS).decode()
        else:
            text = ""
        if len(text) > _MAX_KEY_CHARS:
            text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        return LimitTag(limit.name, text)

    def _bound(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if self._signature is None:
            return dict(kwargs)
        bound = bound_arguments(self._signature, args, kwargs)
        return {k: v for k, v in bound.items() if k not in INJECTED_ALWAYS}

    def _from_function(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        key_function = self.limit.key
        assert key_function is not None
        try:
            value = key_function(self._bound(args, kwargs))
        except Exception as exc:
            raise ValueError(
                f"the key function of limit {self.limit.name!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(
                f"the key function of limit {self.limit.name!r} must return a str or an int, "
                f"got {type(value).__name__}"
            )
        return str(value)


def checked_limit_key(task_name: str, keys: LimitKeys | None, key: object) -> str:
    """A key chosen at send (``with_options(limit_key=...)``) for a task with a limit.

    Raises:
        TaskDefinitionError: E102 when the task has no limit or the key is not a non-empty str.
    """
    if keys is None:
        raise _invalid(f"limit_key: task {task_name} has no limit (give it limit=Limit(...))")
    if not isinstance(key, str) or not key:
        raise _invalid(f"limit_key: a non-empty string, got {key!r}")
    return key


def check_shared_limit(limit: Limit | None, others: Iterable[Limit | None]) -> None:
    """Refuse a limit whose name another task's limit has with other numbers: one name is one
    set of counts, so its numbers must agree (E102)."""
    if limit is None:
        return
    for other in others:
        if other is not None and other.name == limit.name and other.numbers != limit.numbers:
            raise _invalid(
                f"limit {limit.name!r} is given other numbers by another task "
                f"({other.numbers} vs {limit.numbers})"
            ).with_help("share one Limit object between the tasks, or give each its own name")


class _LimitedTask(Protocol):
    task_name: str
    task_queue_name: str | None

    @property
    def task_limit(self) -> Limit | None: ...


def limits_by_queue(
    tasks: Iterable[_LimitedTask], resolve_queue: Callable[[str | None], str]
) -> dict[str, list[Limit]]:
    """The limits of ``tasks``, by the queue (``resolve_queue`` of the task's queue name) their
    runs are claimed from; each limit once per queue, by name."""
    found: dict[str, dict[str, Limit]] = {}
    for task in tasks:
        limit = task.task_limit
        if limit is not None:
            found.setdefault(resolve_queue(task.task_queue_name), {})[limit.name] = limit
    return {queue: list(limits.values()) for queue, limits in found.items()}


def _numbers_text(limit: Limit) -> str:
    parts: list[str] = []
    if limit.concurrency is not None:
        parts.append(f"concurrency {limit.concurrency}")
    if limit.rate is not None:
        parts.append(f"{limit.rate} starts per {limit.per_s:g} s")
    if limit.key is not None:
        name = getattr(limit.key, "__qualname__", type(limit.key).__name__)
        parts.append(f"per key from {name}()")
    elif limit.on:
        parts.append(f"per key of {', '.join(limit.on)}")
    else:
        parts.append("one key")
    return ", ".join(parts)


def describe_limits(
    tasks: Iterable[_LimitedTask], resolve_queue: Callable[[str | None], str]
) -> list[str]:
    """One line per limit of ``tasks``, by name: its numbers, its key, and the tasks under it with
    their queue (``resolve_queue`` of the task's queue name), as ``horsies check`` reports them."""
    limits: dict[str, Limit] = {}
    users: dict[str, dict[str, list[str]]] = {}
    for task in tasks:
        limit = task.task_limit
        if limit is None:
            continue
        limits.setdefault(limit.name, limit)
        queue = resolve_queue(task.task_queue_name)
        users.setdefault(limit.name, {}).setdefault(queue, []).append(task.task_name)
    lines: list[str] = []
    for name in sorted(limits):
        where = "; ".join(
            f"{', '.join(names)} (queue {queue})" for queue, names in users[name].items()
        )
        lines.append(f"{name}: {_numbers_text(limits[name])}; tasks {where}")
    return lines
