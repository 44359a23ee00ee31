"""Task ids: random UUID4 strings made without a ``UUID`` object per id."""

from __future__ import annotations

import os
from typing import Final

__all__ = ["new_task_id", "new_task_ids"]


def new_task_id() -> str:
    """A random UUID4 string, as ``str(uuid.uuid4())`` writes it (see :func:`new_task_ids`)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""A random hex digit -> the RFC 4122 variant digit with the same two low bits."""


def new_task_ids(count: int) -> list[str]:
    """``count`` random UUID4 strings, as ``str(uuid.uuid4())`` writes them, without building a
    ``UUID`` object per id (the bulk send's largest per-task cost after argument encoding)."""
    digits = os.urandom(16 * count).hex()
    variant = _VARIANT
    ids: list[str] = []
    append = ids.append
    for start in range(0, 32 * count, 32):
        h = digits[start : start + 32]
        # Version 4 (13th digit), RFC 4122 variant (17th digit); 122 random bits remain.
        append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:]}")
    return ids
