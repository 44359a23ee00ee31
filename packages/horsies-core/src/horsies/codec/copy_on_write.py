"""Copying a container only from its first changed item on.

The encoder and the decoder walk every argument and result; most containers come out unchanged,
and are returned as the same object. Once an item does change, the container is rebuilt here: the
items before it as they are, the changed one, then every later item converted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import Any

__all__ = ["dict_changed_at", "list_changed_at"]


def list_changed_at(
    items: Sequence[Any], index: int, new: Any, convert: Callable[[Any], Any]
) -> list[Any]:
    """``items`` as a list whose item ``index`` became ``new``, with the later items converted."""
    out = list(islice(items, index))
    out.append(new)
    out.extend([convert(rest) for rest in islice(items, index + 1, None)])
    return out


def dict_changed_at(
    entries: Mapping[Any, Any],
    index: int,
    key: Any,
    new: Any,
    convert: Callable[[Any], Any],
    *,
    convert_key: Callable[[Any], Any] | None = None,
) -> dict[Any, Any]:
    """``entries`` as a dict whose entry ``index`` became ``key: new``, with the later entries
    converted (their keys too, by ``convert_key`` when given)."""
    out: dict[Any, Any] = dict(islice(entries.items(), index))
    out[key] = new
    for rest_key, rest in islice(entries.items(), index + 1, None):
        out[rest_key if convert_key is None else convert_key(rest_key)] = convert(rest)
    return out
