"""Task ids: time-ordered UUID strings (version 7, RFC 9562), made without a ``UUID`` object.

A version 7 UUID starts with the Unix time in milliseconds and fills the rest with random bits
(74 of them), so ids stay unguessable while new tasks land at the right edge of the task table's
primary key. With the random version 4 ids used before, every new task (and every status change
that writes a new index entry) touched a different leaf page of that index: on a table holding
months of history those pages are rarely in memory, and each first touch after a checkpoint
writes a full page image to the WAL. The strings keep the 36-character form ``str(uuid)`` gives.
"""

from __future__ import annotations

import os
import time
from typing import Final

__all__ = ["new_task_id", "new_task_ids"]

_VARIANT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""A random hex digit -> the RFC 9562 variant digit with the same two low bits."""


def _from(stamp: str, h: str) -> str:
    """The id of the 12 hex digits of a millisecond ``stamp`` and 19 random hex digits ``h``."""
    return f"{stamp[:8]}-{stamp[8:]}-7{h[:3]}-{_VARIANT[h[3]]}{h[4:7]}-{h[7:19]}"


def new_task_id() -> str:
    """A new time-ordered UUID string (see the module's docstring)."""
    return _from(f"{time.time_ns() // 1_000_000:012x}", os.urandom(10).hex())


def new_task_ids(count: int) -> list[str]:
    """``count`` new time-ordered UUID strings of this millisecond, without building a ``UUID``
    object per id (the bulk send's largest per-task cost after argument encoding)."""
    stamp = f"{time.time_ns() // 1_000_000:012x}"
    digits = os.urandom(10 * count).hex()
    return [_from(stamp, digits[start : start + 20]) for start in range(0, 20 * count, 20)]
