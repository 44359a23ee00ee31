"""The decoder: horsies' JSON text back to Python values, rebuilding the tagged forms.

Decoding imports the module named in a tagged model/dataclass payload: only decode data written by
your own producers and workers (user dicts that look like tags are escaped when encoded, so plain
data sent through horsies never names a module).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, Final, cast
from uuid import UUID

import orjson
from pydantic import BaseModel, ValidationError

from horsies.codec.copy_on_write import dict_changed_at, list_changed_at
from horsies.codec.errors import SerializationError
from horsies.codec.tags import (
    DATACLASS_TAG,
    DATE_TAG,
    DATETIME_TAG,
    DECIMAL_TAG,
    MAPPING_TAG,
    PYDANTIC_TAG,
    TASK_ERROR_BASE_FIELDS,
    TASK_ERROR_TAG,
    TASK_RESULT_TAG,
    TIME_TAG,
    UUID_TAG,
    tag_free,
)
from horsies.failures import failure
from horsies.results import LibraryErrorCode, TaskError, TaskResult

__all__ = [
    "args_from_json",
    "kwargs_from_json",
    "loads_json",
    "rehydrate_value",
    "task_result_from_json",
]

_CLASS_CACHE: dict[tuple[str, str], type] = {}
_DATACLASS_PLANS: dict[type, tuple[tuple[str, bool], ...]] = {}


def loads_json(text: str | bytes | bytearray | memoryview) -> Any:
    """Parse JSON text into plain Python values (no rehydration of tagged objects).

    Raises `ValueError` (`orjson.JSONDecodeError`) for invalid JSON. Use `rehydrate_value` on the
    result, or the `*_from_json` helpers, to get rich values back.
    """
    return orjson.loads(text)


_MOVED: Final = {
    ("horsies.results", "SubWorkflowError"): ("horsies.workflows.context", "SubWorkflowError")
}
"""Library classes that moved, by the (module, qualname) older rows recorded: they keep decoding."""


def _resolve_class(module: str, qualname: str) -> type:
    key = (module, qualname)
    cls = _CLASS_CACHE.get(key)
    if cls is not None:
        return cls
    module, qualname = _MOVED.get(key, key)
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise TypeError(f"{module}:{qualname} is not a class")
    _CLASS_CACHE[key] = obj
    return obj


def _location_of(payload: Mapping[str, Any]) -> tuple[str, str]:
    module = payload.get("module")
    qualname = payload.get("qualname")
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise SerializationError(f"Invalid tagged payload, missing module/qualname: {payload!r}")
    return module, qualname


def _rehydrate_model(payload: Mapping[str, Any]) -> BaseModel:
    module, qualname = _location_of(payload)
    try:
        cls = _resolve_class(module, qualname)
        if not issubclass(cls, BaseModel):
            raise TypeError("not a pydantic BaseModel subclass")
        return cls.model_validate(payload.get("data"))
    except Exception as exc:
        raise SerializationError(f"Failed to rehydrate {module}:{qualname}: {exc}") from exc


def _dataclass_plan(cls: type) -> tuple[tuple[str, bool], ...]:
    plan = _DATACLASS_PLANS.get(cls)
    if plan is None:
        plan = _DATACLASS_PLANS[cls] = tuple(
            (field.name, field.init) for field in dataclasses.fields(cls)
        )
    return plan


def _rehydrate_dataclass(payload: Mapping[str, Any]) -> object:
    module, qualname = _location_of(payload)
    try:
        cls = _resolve_class(module, qualname)
        if not dataclasses.is_dataclass(cls):
            raise TypeError("not a dataclass")
        data = payload.get("data")
        if type(data) is not dict:
            raise TypeError("dataclass data must be a JSON object")
        fields = cast("dict[str, Any]", data)
        init_kwargs: dict[str, Any] = {}
        late: list[tuple[str, Any]] = []
        for name, in_init in _dataclass_plan(cls):
            if name not in fields:
                continue
            value = _rehydrate(fields[name])
            if in_init:
                init_kwargs[name] = value
            else:
                late.append((name, value))
        instance = cls(**init_kwargs)
        for name, value in late:
            # object.__setattr__ also works for frozen dataclasses.
            object.__setattr__(instance, name, value)
        return instance
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(f"Failed to rehydrate {module}:{qualname}: {exc}") from exc


def _parse_text(kind: str, parse: Callable[[str], Any], payload: Mapping[str, Any]) -> Any:
    raw = payload.get("value")
    try:
        if not isinstance(raw, str):
            raise TypeError(f"expected an ISO string, got {type(raw).__name__}")
        return parse(raw)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"Failed to rehydrate {kind} {raw!r}: {exc}") from exc


def _rehydrate_tagged(value: dict[str, Any]) -> Any:
    # Tags are checked with `is True`, exactly as they are written.
    if value.get(MAPPING_TAG) is True:
        data = value.get("data")
        if type(data) is not dict:
            raise SerializationError("Invalid escaped mapping payload: data must be a JSON object")
        return _rehydrate_entries(cast("dict[str, Any]", data))
    if value.get(DATETIME_TAG) is True:
        return _parse_text("datetime", datetime.fromisoformat, value)
    if value.get(PYDANTIC_TAG) is True:
        return _rehydrate_model(value)
    if value.get(DATACLASS_TAG) is True:
        return _rehydrate_dataclass(value)
    if value.get(TASK_RESULT_TAG) is True:
        return task_result_from_json(value)
    if value.get(TASK_ERROR_TAG) is True:
        return _decode_task_error(value)
    if value.get(DATE_TAG) is True:
        return _parse_text("date", date.fromisoformat, value)
    if value.get(TIME_TAG) is True:
        return _parse_text("time", time.fromisoformat, value)
    if value.get(UUID_TAG) is True:
        return _parse_text("UUID", UUID, value)
    if value.get(DECIMAL_TAG) is True:
        return _parse_text("Decimal", _decimal, value)
    return _rehydrate_entries(value)


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # not a ValueError: turned into one for the caller's message
        raise ValueError(f"not a decimal number: {text!r}") from exc


def _rehydrate_dict(value: dict[str, Any]) -> Any:
    # One C-level pass over the keys tells whether any tag is present (almost never).
    if tag_free(value):
        return _rehydrate_entries(value)
    return _rehydrate_tagged(value)


def _rehydrate_entries(value: dict[str, Any]) -> dict[str, Any]:
    for index, (key, item) in enumerate(value.items()):
        new = _rehydrate(item)
        if new is item:
            continue
        return dict_changed_at(value, index, key, new, _rehydrate)
    return value


def _rehydrate_list(value: list[Any]) -> list[Any]:
    for index, item in enumerate(value):
        new = _rehydrate(item)
        if new is not item:
            return list_changed_at(value, index, new, _rehydrate)
    return value


def _rehydrate(value: Any) -> Any:
    tp: type[Any] = type(value)  # pyright: ignore[reportUnknownVariableType]
    if tp is str or tp is int or tp is float or tp is bool or value is None:
        return value
    if tp is dict:
        return _rehydrate_dict(value)
    if tp is list:
        return _rehydrate_list(value)
    if isinstance(value, Mapping):
        return _rehydrate_dict(dict(cast("Mapping[str, Any]", value)))
    if isinstance(value, list):
        return _rehydrate_list(list(cast("list[Any]", value)))
    return value


def rehydrate_value(value: Any) -> Any:
    """Rebuild rich values (models, dataclasses, datetimes, results) from a parsed JSON tree.

    Plain values are returned unchanged (containers without tagged content are returned as the same
    objects). Raises `SerializationError` when a tagged value cannot be rebuilt, e.g. its class
    cannot be imported or its data no longer validates. Classes are resolved once per
    `module:qualname` and cached.
    """
    try:
        return _rehydrate(value)
    except RecursionError as exc:
        raise SerializationError("Cannot rehydrate value: nesting too deep") from exc


def _parse(text: str | bytes | bytearray | memoryview, what: str) -> Any:
    try:
        return loads_json(text)
    except ValueError as exc:
        raise SerializationError(f"Invalid {what} JSON: {exc}") from exc


def args_from_json(text: str | bytes | None) -> list[Any]:
    """Decode stored positional arguments: NULL gives `[]`; elements are rehydrated.

    Raises `SerializationError` for invalid JSON, a payload that is not an array, or an element
    that cannot be rehydrated.
    """
    if text is None:
        return []
    value = _parse(text, "args")
    if type(value) is not list:
        raise SerializationError(f"args must be a JSON array, got {type(value).__name__}")
    return rehydrate_value(value)


def kwargs_from_json(text: str | bytes | None) -> dict[str, Any]:
    """Decode stored keyword arguments: NULL gives `{}`; values are rehydrated.

    Raises `SerializationError` for invalid JSON, a payload that is not an object, or a value that
    cannot be rehydrated. A tagged payload at the top level is not rehydrated as a whole: its keys
    are keyword names.
    """
    if text is None:
        return {}
    value = _parse(text, "kwargs")
    if type(value) is not dict:
        raise SerializationError(f"kwargs must be a JSON object, got {type(value).__name__}")
    items = cast("dict[str, Any]", value)
    try:
        return {key: _rehydrate(item) for key, item in items.items()}
    except RecursionError as exc:
        raise SerializationError("Cannot rehydrate value: nesting too deep") from exc


def _decode_task_error(payload: Mapping[str, Any]) -> TaskError:
    fields = {key: payload[key] for key in TASK_ERROR_BASE_FIELDS if key in payload}
    if "data" in fields:
        # Keep the stored form on failure: an error must stay readable even if a class moved.
        with contextlib.suppress(SerializationError):
            fields["data"] = _rehydrate(fields["data"])
    exception: Any = fields.get("exception")
    if type(exception) is dict and not tag_free(cast("dict[str, Any]", exception)):
        # A dict given as the exception, stored escaped because it holds a tag key.
        with contextlib.suppress(SerializationError):
            unescaped = _rehydrate(exception)
            if type(unescaped) is dict:
                fields["exception"] = unescaped
    cls: type[TaskError] = TaskError
    if "module" in payload and "qualname" in payload:
        cls, extra = _task_error_subclass(payload)
        fields.update(extra)
    try:
        return cls.model_validate(fields)
    except ValidationError as exc:
        if cls is not TaskError:
            base = {key: fields[key] for key in TASK_ERROR_BASE_FIELDS if key in fields}
            try:
                return TaskError.model_validate(base)
            except ValidationError:
                pass
        raise SerializationError(f"Invalid TaskError payload: {exc}") from exc


def _task_error_subclass(payload: Mapping[str, Any]) -> tuple[type[TaskError], dict[str, Any]]:
    """Resolve a stored TaskError subclass and its extra fields; fall back to TaskError."""
    try:
        module, qualname = _location_of(payload)
        cls = _resolve_class(module, qualname)
        stored = payload.get("fields")
        if not issubclass(cls, TaskError) or type(stored) is not dict:
            return TaskError, {}
        extra = cast("dict[str, Any]", stored)
        return cls, {key: _rehydrate(item) for key, item in extra.items()}
    except Exception:
        return TaskError, {}


def _hydration_error(exc: SerializationError) -> TaskResult[Any, TaskError]:
    return failure(LibraryErrorCode.PYDANTIC_HYDRATION_ERROR, str(exc), {})


def task_result_from_json(
    data: str | bytes | bytearray | memoryview | Mapping[str, Any],
) -> TaskResult[Any, TaskError]:
    """Decode a stored result (JSON text, or an already parsed dict) into a `TaskResult`.

    Accepts the tagged form and the legacy `{"ok": ..., "err": ...}` dict; anything else raises
    `SerializationError("Not a TaskResult JSON")`. A non-null `err` gives an error result holding a
    `TaskError` (extra keys dropped). An `ok` value that cannot be rehydrated does not raise: it
    gives an error result with code `PYDANTIC_HYDRATION_ERROR` and the codec message.
    """
    if isinstance(data, (str, bytes, bytearray, memoryview)):
        payload: Any = _parse(data, "result")
    else:
        payload = data
    if type(payload) is not dict and not isinstance(payload, Mapping):
        raise SerializationError("Not a TaskResult JSON")
    mapping = cast("Mapping[str, Any]", payload)
    if mapping.get(TASK_RESULT_TAG) is not True and "ok" not in mapping and "err" not in mapping:
        raise SerializationError("Not a TaskResult JSON")
    err = mapping.get("err")
    if err is not None:
        if isinstance(err, Mapping):
            return TaskResult(err=_decode_task_error(cast("Mapping[str, Any]", err)))
        return TaskResult(err=rehydrate_value(err))
    try:
        ok = rehydrate_value(mapping.get("ok"))
    except SerializationError as exc:
        return _hydration_error(exc)
    return TaskResult(ok=ok)
