"""The rules for task and queue names, applied wherever a name enters: `@app.task`, queue
configuration, and the broker's low-level sends.

Each rule is a function returning what is wrong with a name (None when it is fine), so every
caller raises its own kind of error with the same explanation.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "MAX_TASK_NAME_LENGTH",
    "QUEUE_NAME_MAX_LENGTH",
    "QUEUE_NAME_PATTERN",
    "queue_name_problem",
    "task_name_problem",
]

MAX_TASK_NAME_LENGTH: Final = 255
"""Task names are stored in a ``VARCHAR(255)`` column."""

QUEUE_NAME_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
"""Allowed queue names: ASCII letters, digits, ``_``, ``.``, ``-`` (not first)."""

QUEUE_NAME_MAX_LENGTH: Final = 52
"""Each queue gets the NOTIFY channel ``task_queue_<name>``, and PostgreSQL channel names hold at
most 63 bytes: 63 - len("task_queue_") = 52."""

_QUEUE_NAME_RE: Final = re.compile(QUEUE_NAME_PATTERN)


def task_name_problem(name: object) -> str | None:
    """What makes ``name`` unusable as a task name, or None."""
    if not isinstance(name, str) or not name.strip():
        return f"task names must be non-empty strings, got {name!r}"
    if len(name) > MAX_TASK_NAME_LENGTH:
        return f"task names are at most {MAX_TASK_NAME_LENGTH} characters, got {len(name)}"
    if "\x00" in name:
        # PostgreSQL text cannot hold NUL: every send would fail.
        return f"task names cannot contain NUL characters, got {name!r}"
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return f"task names must be valid UTF-8 text (no lone surrogates), got {name!r}"
    return None


def queue_name_problem(name: object) -> str | None:
    """What makes ``name`` unusable as a queue name, or None."""
    if not isinstance(name, str):
        return f"queue names must be strings, got {name!r}"
    if len(name) > QUEUE_NAME_MAX_LENGTH:
        return f"the queue name has {len(name)} characters (limit {QUEUE_NAME_MAX_LENGTH})"
    if not _QUEUE_NAME_RE.fullmatch(name):
        return f"queue names must match {QUEUE_NAME_PATTERN}, got {name!r}"
    return None
