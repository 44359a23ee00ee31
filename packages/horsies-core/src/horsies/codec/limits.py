"""What the stored JSON may hold: the payload size limit, integer range and finite floats.

`check_payload_size` enforces `AppConfig.max_payload_bytes` on encoded arguments and results
(`PayloadTooLargeError`). The tree checks reject values that JSON text cannot carry faithfully:
NaN and infinity (`ValueError`) and ints outside the 64-bit range (`SerializationError`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, cast

from horsies.codec.errors import PayloadTooLargeError, SerializationError

__all__ = [
    "INT_RANGE_MESSAGE",
    "check_finite",
    "check_int_range",
    "check_payload_size",
    "encoded_size",
    "reject_float",
]


def encoded_size(text: str | None) -> int:
    """Size in bytes of stored JSON text (UTF-8), 0 for None."""
    if text is None:
        return 0
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def check_payload_size(what: str, texts: Sequence[str | None], limit: int | None) -> None:
    """Raise `PayloadTooLargeError` when the JSON `texts` together exceed `limit` bytes.

    `limit` None means unlimited. Only texts that could exceed the limit are measured exactly
    (a character takes at most 4 bytes), so small payloads cost a length check.
    """
    if limit is None:
        return
    chars = 0
    for text in texts:
        if text:
            chars += len(text)
    if chars * 4 <= limit:
        return
    size = sum(encoded_size(text) for text in texts)
    if size > limit:
        raise PayloadTooLargeError(what, size, limit)


def reject_float(value: float) -> None:
    """Raise ValueError for NaN or infinity, which JSON text cannot hold."""
    raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")


def check_finite(tree: Any) -> None:
    """Reject (ValueError) a NaN or infinity anywhere in a plain JSON tree."""
    stack: list[Any] = [tree]
    isfinite = math.isfinite
    while stack:
        item = stack.pop()
        tp: type[Any] = type(item)  # pyright: ignore[reportUnknownVariableType]
        if tp is float:
            if not isfinite(item):
                reject_float(item)
        elif tp is dict:
            stack.extend(cast("dict[str, Any]", item).values())
        elif tp is list or tp is tuple:
            stack.extend(cast("Sequence[Any]", item))


INT_RANGE_MESSAGE: Final = "Cannot serialize int outside the 64-bit range (pass it as a str)"
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
"""orjson writes signed and unsigned 64-bit integers; larger ones come back as floats."""


def check_int_range(tree: Any) -> None:
    """Reject (SerializationError) ints orjson cannot write, anywhere in a plain JSON tree.

    Used on the deep-nesting fallback path, whose encoder accepts any int: orjson would read such
    an int back as a float, silently changing the value.
    """
    stack: list[Any] = [tree]
    while stack:
        item = stack.pop()
        tp: type[Any] = type(item)  # pyright: ignore[reportUnknownVariableType]
        if tp is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise SerializationError(INT_RANGE_MESSAGE)
        elif tp is dict:
            stack.extend(cast("dict[str, Any]", item).values())
        elif tp is list or tp is tuple:
            stack.extend(cast("Sequence[Any]", item))
