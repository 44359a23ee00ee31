"""The encoder: Python values to horsies' JSON trees and text (the send and result hot path).

The tagged forms are described in `horsies.codec.tags`. Anything else (sets, bytes, plain enums,
arbitrary objects) raises `SerializationError`; so do ints outside the 64-bit range and strings
holding lone surrogates (not valid UTF-8); NaN and infinity raise `ValueError` (also inside pydantic
models). Models and dataclasses must be importable by the worker, so classes from `__main__` or
defined inside a function are refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any, Final, TypeAlias
from uuid import UUID

import orjson
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from horsies.codec.copy_on_write import dict_changed_at, list_changed_at
from horsies.codec.errors import SerializationError
from horsies.codec.limits import INT_RANGE_MESSAGE, check_finite, check_int_range, reject_float
from horsies.codec.tags import (
    DATACLASS_TAG,
    DATE_TAG,
    DATETIME_TAG,
    DECIMAL_TAG,
    PYDANTIC_TAG,
    TASK_ERROR_BASE_FIELDS,
    TASK_ERROR_TAG,
    TASK_RESULT_TAG,
    TIME_TAG,
    UUID_TAG,
    escaped,
)

# Imported under another name: the walkers copy it into a local `tag_free` (a closure cell is
# cheaper to reach than a global), and a local cannot be assigned from a global of the same name.
from horsies.codec.tags import tag_free as _tag_free
from horsies.results import TaskError, TaskResult

__all__ = [
    "args_to_json",
    "dumps_json",
    "kwargs_to_json",
    "task_result_to_json",
    "to_jsonable",
]


_Handler: TypeAlias = Callable[[Any], Any]
_Json: TypeAlias = Any

_REFUSAL_HINTS: Final[dict[type, str]] = {
    set: "convert it to a list first",
    frozenset: "convert it to a list first",
    bytes: "encode it as a str (e.g. base64) first",
    bytearray: "encode it as a str (e.g. base64) first",
    memoryview: "encode it as a str (e.g. base64) first",
}


def _type_label(tp: type[Any]) -> str:
    if tp.__module__ == "builtins":
        return tp.__qualname__
    return f"{tp.__module__}.{tp.__qualname__}"


def _refusal(tp: type[Any]) -> SerializationError:
    message = f"Cannot serialize value of type {_type_label(tp)}"
    hint = _REFUSAL_HINTS.get(tp)
    if hint is None and issubclass(tp, Enum):
        hint = "use a str or int Enum, or pass the member's .value"
    return SerializationError(f"{message}: {hint}" if hint else message)


def _class_location(cls: type, kind: str) -> tuple[str, str]:
    """Return (module, qualname) under which a worker can import `cls`, or raise."""
    # A parametrised generic pydantic model (Model[int]) is stored as its importable origin.
    metadata: Mapping[str, Any] | None = getattr(cls, "__pydantic_generic_metadata__", None)
    if metadata is not None and metadata.get("origin") is not None:
        cls = metadata["origin"]
    module = cls.__module__
    qualname = cls.__qualname__
    if module in ("__main__", "__mp_main__"):
        raise SerializationError(
            f"Cannot serialize {kind} {qualname}: it is defined in __main__, so worker processes "
            "cannot import it. Move the class into an importable module."
        )
    if "<locals>" in qualname:
        raise SerializationError(
            f"Cannot serialize {kind} {module}.{qualname}: it is defined inside a function "
            "(<locals>), so worker processes cannot import it. Define it at module level."
        )
    return module, qualname


def _key_to_str(key: object) -> str:
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return int.__repr__(key)
    return str(key)


def _str_key(key: object) -> str:
    # A plain str key is kept as the very object (no copy).
    return key if type(key) is str else _key_to_str(key)


def _exception_names(tp: type[BaseException]) -> list[str]:
    return [cls.__name__ for cls in tp.__mro__ if cls is not object]


def _printable(value: object, render: Callable[[object], str] = repr) -> str:
    """`render(value)` (`repr` or `str`), or a placeholder when that raises."""
    try:
        return render(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _format_traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception:
        return f"{type(exc).__name__}: {_printable(exc, str)}\n"


def _encode_exception(exc: BaseException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": _printable(exc, str),
        "traceback": _format_traceback(exc),
        "bases": _exception_names(type(exc)),
    }


def _lenient(value: object) -> _Json:
    # Error payloads only: a value the tagged encoding refuses is stored in plain JSON form
    # (sets as lists, bytes as str, unknown objects as their repr).
    try:
        tree = to_jsonable_python(value, fallback=_printable)
        orjson.dumps(tree)  # must be writable too (e.g. no int beyond 64 bits)
    except Exception:
        return _printable(value)
    return tree


class _Encoder:
    """Walks a value and returns its JSON tree.

    `for_dump=True` is the flavour used right before writing JSON text: tuples may stay tuples
    (orjson writes them as arrays) and non-finite floats are rejected. `for_dump=False` is the
    public `to_jsonable`: tuples become lists, floats are returned as they are.
    `lenient=True` never refuses: it is used for error payloads (`TaskError.data`, exception
    dicts), which must always be storable; unsupported leaves get a plain JSON form or their repr.

    Containers whose content needs no change are returned as the same object (no copy): a plain
    JSON value costs one walk and no allocation, which keeps sends of ordinary arguments cheap.
    """

    __slots__ = ("encode", "for_dump", "handlers", "lenient")

    def __init__(self, *, for_dump: bool, lenient: bool = False) -> None:
        self.for_dump = for_dump
        self.lenient = lenient
        # One handler per concrete type, decided once (the isinstance chain is the slow part).
        self.handlers: dict[type, _Handler] = {
            datetime: _encode_datetime,
            date: _encode_date,
            time: _encode_time,
            UUID: _encode_uuid,
            Decimal: _encode_decimal,
        }
        self.encode: _Handler = self._build_walkers()

    def _build_walkers(self) -> _Handler:
        # Closures rather than methods: the walk runs once per node of every argument and result,
        # and cell lookups are the cheapest way to reach the helpers. Lists and dicts, by far the
        # most common containers, are dispatched inline.
        handlers = self.handlers
        handler_for = self._handler_for
        for_dump = self.for_dump
        isfinite = math.isfinite
        tag_free = _tag_free

        def encode(value: Any) -> Any:
            tp: type[Any] = type(value)  # pyright: ignore[reportUnknownVariableType]
            if tp is str or tp is int or tp is bool or value is None:
                return value
            if tp is dict:
                return encode_dict(value)
            if tp is list:
                return encode_list(value)
            if tp is float:
                if for_dump and not isfinite(value):
                    reject_float(value)
                return value
            handler = handlers.get(tp)
            if handler is None:
                handler = handlers[tp] = handler_for(tp)
            return handler(value)

        def encode_item(item: Any) -> Any:
            tp: type[Any] = type(item)  # pyright: ignore[reportUnknownVariableType]
            if tp is dict:
                return encode_dict(item)
            if tp is list:
                return encode_list(item)
            return encode(item)

        def encode_list(value: list[Any]) -> list[Any]:
            for index, item in enumerate(value):
                tp: type[Any] = type(item)  # pyright: ignore[reportUnknownVariableType]
                if tp is str or tp is int or tp is bool or item is None:
                    continue
                if tp is float and (not for_dump or isfinite(item)):
                    continue
                new = encode_item(item)
                if new is not item:
                    return list_changed_at(value, index, new, encode_item)
            return value

        def encode_tuple(value: tuple[Any, ...]) -> Sequence[Any]:
            if not for_dump:
                return [encode_item(item) for item in value]
            # orjson writes tuples as arrays: keep the tuple when nothing inside changes.
            for index, item in enumerate(value):
                tp: type[Any] = type(item)  # pyright: ignore[reportUnknownVariableType]
                if tp is str or tp is int or tp is bool or item is None:
                    continue
                new = encode_item(item)
                if new is not item:
                    return list_changed_at(value, index, new, encode_item)
            return value

        def encode_dict(value: dict[Any, Any]) -> dict[str, Any]:
            index = 0
            for key, item in value.items():
                tp: type[Any] = type(item)  # pyright: ignore[reportUnknownVariableType]
                if type(key) is str:
                    if tp is str or tp is int or tp is bool or item is None:
                        index += 1
                        continue
                    if tp is float and (not for_dump or isfinite(item)):
                        index += 1
                        continue
                    new_key = key
                else:
                    new_key = _key_to_str(key)
                new = encode_item(item)
                if new is item and new_key is key:
                    index += 1
                    continue
                out = dict_changed_at(value, index, new_key, new, encode_item, convert_key=_str_key)
                return out if tag_free(out) else escaped(out)
            return value if tag_free(value) else escaped(value)

        handlers[tuple] = encode_tuple
        return encode

    def _encode_mapping(self, value: Mapping[Any, Any]) -> dict[str, Any]:
        encode = self.encode
        return escaped({_key_to_str(key): encode(item) for key, item in value.items()})

    def _encode_sequence(self, value: Sequence[Any]) -> list[Any]:
        encode = self.encode
        return [encode(item) for item in value]

    # -- tagged types -------------------------------------------------------------------------

    def _encode_task_result(self, value: TaskResult[Any, Any]) -> dict[str, Any]:
        if value.is_ok():
            return {TASK_RESULT_TAG: True, "ok": self.encode(value.ok), "err": None}
        return {TASK_RESULT_TAG: True, "ok": None, "err": self.encode(value.err)}

    @staticmethod
    def _payload(value: object) -> _Json:
        # Error payloads must never make a result unstorable.
        try:
            return _encode_lenient(value)
        except Exception:
            return _printable(value)

    def _make_task_error_handler(self, tp: type[TaskError]) -> _Handler:
        base = TASK_ERROR_BASE_FIELDS
        extra_fields = tuple(name for name in tp.model_fields if name not in base)
        location: tuple[str, str] | None = None
        if tp is not TaskError:
            try:
                location = _class_location(tp, "error class")
            except SerializationError:
                location = None  # stored as a plain TaskError: errors must always be storable
        payload = self._payload

        def encode_task_error(value: TaskError) -> dict[str, Any]:
            code = value.error_code
            out: dict[str, Any] = {
                TASK_ERROR_TAG: True,
                "error_code": code.value if isinstance(code, Enum) else code,
                "data": payload(value.data),
                "message": value.message,
            }
            exc = value.exception
            if exc is not None:
                if isinstance(exc, BaseException):
                    out["exception"] = _encode_exception(exc)
                elif isinstance(exc, dict):  # pyright: ignore[reportUnnecessaryIsInstance]
                    out["exception"] = payload(exc)
                else:  # only reachable through model_construct / assignment without validation
                    out["exception"] = {"type": type(exc).__name__, "message": _printable(exc, str)}
            if location is not None:
                out["module"], out["qualname"] = location
                out["fields"] = {name: payload(getattr(value, name)) for name in extra_fields}
            return out

        return encode_task_error

    def _make_model_handler(self, tp: type[BaseModel]) -> _Handler:
        module, qualname = _class_location(tp, "pydantic model")

        lenient = self.lenient
        for_dump = self.for_dump

        def encode_model(value: BaseModel) -> dict[str, Any]:
            try:
                data = value.model_dump(mode="json")
            except Exception as exc:
                if lenient:
                    return _lenient(value)
                raise SerializationError(
                    f"Cannot serialize pydantic model {module}.{qualname}: {exc}"
                ) from exc
            if for_dump:
                # The dump is written as it is, and orjson would write NaN / infinity as null.
                check_finite(data)
            return {PYDANTIC_TAG: True, "module": module, "qualname": qualname, "data": data}

        return encode_model

    def _make_dataclass_handler(self, tp: type[Any]) -> _Handler:
        module, qualname = _class_location(tp, "dataclass")
        names = tuple(field.name for field in dataclasses.fields(tp))
        encode = self.encode

        def encode_dataclass(value: object) -> dict[str, Any]:
            return {
                DATACLASS_TAG: True,
                "module": module,
                "qualname": qualname,
                "data": {name: encode(getattr(value, name)) for name in names},
            }

        return encode_dataclass

    # -- dispatch -----------------------------------------------------------------------------

    def _handler_for(self, tp: type[Any]) -> _Handler:
        """Pick the handler for a type, following the order of the encoding table."""
        refused = tp
        fixed: tuple[tuple[type[Any], _Handler], ...] = (
            (str, _plain_str),
            (int, _plain_int),
            (float, self._plain_float),
            # datetime before date: a datetime is a date too.
            (datetime, _encode_datetime),
            (date, _encode_date),
            (time, _encode_time),
            (UUID, _encode_uuid),
            (Decimal, _encode_decimal),
            (TaskResult, self._encode_task_result),
        )
        for base, handler in fixed:
            if issubclass(tp, base):
                return handler
        if issubclass(tp, TaskError):
            return self._make_task_error_handler(tp)
        try:
            if issubclass(tp, BaseModel):
                return self._make_model_handler(tp)
            if dataclasses.is_dataclass(tp):
                return self._make_dataclass_handler(tp)
        except SerializationError as exc:
            if self.lenient:
                return _lenient
            error = exc

            def refuse_location(value: object) -> Any:
                raise SerializationError(str(error))

            return refuse_location
        if issubclass(tp, Mapping):
            return self._encode_mapping
        if issubclass(tp, Sequence) and not issubclass(tp, (bytes, bytearray, memoryview)):
            return self._encode_sequence
        if self.lenient:
            return _lenient

        def refuse(value: object) -> Any:
            raise _refusal(refused)

        return refuse

    def _plain_float(self, value: float) -> float:
        result = float.__float__(value)
        if self.for_dump and not math.isfinite(result):
            reject_float(result)
        return result


def _plain_str(value: str) -> str:
    return str.__str__(value)


def _plain_int(value: int) -> int:
    return int.__int__(value)


def _encode_datetime(value: datetime) -> dict[str, Any]:
    return {DATETIME_TAG: True, "value": value.isoformat()}


def _encode_date(value: date) -> dict[str, Any]:
    return {DATE_TAG: True, "value": value.isoformat()}


def _encode_time(value: time) -> dict[str, Any]:
    return {TIME_TAG: True, "value": value.isoformat()}


def _encode_uuid(value: UUID) -> dict[str, Any]:
    return {UUID_TAG: True, "value": str(value)}


def _encode_decimal(value: Decimal) -> dict[str, Any]:
    return {DECIMAL_TAG: True, "value": str(value)}


_TREE_ENCODER: Final = _Encoder(for_dump=False)
_DUMP_ENCODER: Final = _Encoder(for_dump=True)
_LENIENT_ENCODER: Final = _Encoder(for_dump=False, lenient=True)
_encode_tree: Final = _TREE_ENCODER.encode
_encode_dump: Final = _DUMP_ENCODER.encode
_encode_lenient: Final = _LENIENT_ENCODER.encode


_TOO_DEEP: Final = "Cannot serialize value: nesting too deep or circular"


def _encode_checked(value: Any, encode: _Handler = _encode_dump) -> Any:
    """`encode(value)` (by default the flavour written as JSON text), too-deep nesting refused."""
    try:
        return encode(value)
    except RecursionError as exc:
        raise SerializationError(_TOO_DEEP) from exc


def to_jsonable(value: Any) -> Any:
    """Return the JSON-compatible tree for `value` (tagged objects for rich types).

    Raises `SerializationError` for values the codec cannot represent. Parts of the input that are
    already plain JSON may be returned as the same objects (not copied). Use `dumps_json` when you
    want the text.
    """
    return _encode_checked(value, _encode_tree)


def _dumps_tree(tree: Any) -> str:
    try:
        return orjson.dumps(tree).decode()
    except orjson.JSONEncodeError as exc:
        if "Integer exceeds" in str(exc):
            raise SerializationError(INT_RANGE_MESSAGE) from exc
        if "Recursion limit" not in str(exc):
            raise SerializationError(f"Cannot serialize value: {exc}") from exc
    # orjson caps nesting at 255 levels; the stdlib encoder has no such limit, but it accepts what
    # orjson refuses: apply the same rules (64-bit ints, valid UTF-8) so both paths agree.
    check_int_range(tree)
    try:
        text = json.dumps(tree, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except RecursionError as fallback_exc:
        raise SerializationError(_TOO_DEEP) from fallback_exc
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SerializationError(
            "Cannot serialize value: str is not valid UTF-8: surrogates not allowed"
        ) from exc
    return text


def dumps_json(value: Any) -> str:
    """Encode `value` (see the module table) to compact JSON text.

    Raises `SerializationError` for unsupported values and `ValueError` for NaN / infinity.
    """
    return _dumps_tree(_encode_checked(value))


def _all_scalars(values: Iterable[Any]) -> bool:
    for item in values:
        tp: type[Any] = type(item)  # pyright: ignore[reportUnknownVariableType]
        if tp is str or tp is int or tp is bool or item is None:
            continue
        if tp is float and math.isfinite(item):
            continue
        return False
    return True


def _dumps_scalars(value: Any) -> str | None:
    # Fast path for the common send: arguments that are only str/int/float/bool/None go straight
    # to orjson; None means "take the full path" (which also produces the right error messages).
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return None


def args_to_json(args: Sequence[Any]) -> str:
    """Encode positional task arguments as a JSON array (`SerializationError` if impossible)."""
    tp: type[Any] = type(args)
    if (tp is tuple or tp is list) and _all_scalars(args):
        text = _dumps_scalars(args)
        if text is not None:
            return text
    if isinstance(args, (str, bytes, bytearray)):
        raise SerializationError(f"args must be a sequence, got {_type_label(tp)}")
    return _dumps_tree(_encode_checked(args if tp is tuple or tp is list else tuple(args)))


def kwargs_to_json(kwargs: Mapping[str, Any]) -> str:
    """Encode keyword task arguments as a JSON object (`SerializationError` if impossible)."""
    tp: type[Any] = type(kwargs)
    is_dict = tp is dict
    if is_dict and _all_scalars(kwargs.values()):
        text = _dumps_scalars(kwargs)
        if text is not None:
            return text
    tree = _encode_checked(kwargs if is_dict else dict(kwargs))
    if not _tag_free(tree):
        # The top level holds keyword names, never a tagged value: store it unwrapped.
        tree = tree["data"]
    return _dumps_tree(tree)


def task_result_to_json(result: TaskResult[Any, Any]) -> str:
    """Encode a `TaskResult` in its tagged form (what the `result` column stores).

    Raises `SerializationError` when the ok value cannot be encoded and `ValueError` for NaN /
    infinity; error payloads (`TaskError.data`, exception info) never make encoding fail.
    """
    if not isinstance(result, TaskResult):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SerializationError(f"Expected a TaskResult, got {_type_label(type(result))}")
    if result.is_ok() and _all_scalars((result.ok,)):
        text = _dumps_scalars({TASK_RESULT_TAG: True, "ok": result.ok, "err": None})
        if text is not None:
            return text
    return _dumps_tree(_encode_checked(result))
