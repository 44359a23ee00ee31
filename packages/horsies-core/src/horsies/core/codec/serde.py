"""Compatibility path `horsies.core.codec.serde` (see `horsies.core`): the JSON codec helpers."""

from __future__ import annotations

from horsies.codec import (
    SerializationError,
    args_from_json,
    args_to_json,
    dumps_json,
    kwargs_from_json,
    kwargs_to_json,
    loads_json,
    rehydrate_value,
    task_result_from_json,
    task_result_to_json,
    to_jsonable,
)

__all__ = [
    "SerializationError",
    "args_from_json",
    "args_to_json",
    "dumps_json",
    "kwargs_from_json",
    "kwargs_to_json",
    "loads_json",
    "rehydrate_value",
    "task_result_from_json",
    "task_result_to_json",
    "to_jsonable",
]
