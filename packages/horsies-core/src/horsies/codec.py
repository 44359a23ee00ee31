"""JSON codec for task arguments, results and errors.

Everything horsies stores (args, kwargs, results) is JSON text. Plain JSON values are stored as they
are; richer values are stored as small tagged objects so they come back as the same type:

- None, bool, int, float, str: themselves (str/int enums and other subclasses: the plain value)
- datetime / date / time: `{"__datetime__": true, "value": "<iso>"}` (`__date__`, `__time__`)
- TaskResult: `{"__task_result__": true, "ok": ..., "err": ...}`
- TaskError: `{"__task_error__": true, "error_code", "data", "message", "exception"?}`
- pydantic model: `{"__pydantic_model__": true, "module", "qualname", "data": model_dump}`
- dataclass instance: `{"__dataclass__": true, "module", "qualname", "data": {field: ...}}`
- other mapping: object with string keys; other sequence (tuple, ...): array (back as a list)
- a mapping whose own keys include one of the tags above: `{"__mapping__": true, "data": {...}}`,
  so user data is never read back as a tagged value (it comes back as the same plain dict)

Anything else (sets, bytes, plain enums, arbitrary objects) raises `SerializationError`; so do
ints outside the 64-bit range and strings holding lone surrogates (not valid UTF-8); NaN and
infinity raise `ValueError` (also inside pydantic models). Models and dataclasses must be
importable by the worker, so classes from `__main__` or defined inside a function are refused when
encoding.

Prefer the purpose-made helpers (`args_to_json`, `kwargs_to_json`, `task_result_to_json` and their
`*_from_json` twins); `to_jsonable` / `rehydrate_value` are the building blocks underneath.

Decoding imports the module named in a tagged model/dataclass payload: only decode data written by
your own producers and workers (user dicts that look like tags are escaped when encoded, so plain
data sent through horsies never names a module).

`check_payload_size` enforces `AppConfig.max_payload_bytes` on encoded arguments and results
(`PayloadTooLargeError`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, time
from enum import Enum
from itertools import islice
from typing import Any, Final, TypeAlias, cast

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from horsies.results import LibraryErrorCode, TaskError, TaskResult

__all__ = [
    "PayloadTooLargeError",
    "SerializationError",
    "args_from_json",
    "args_to_json",
    "check_payload_size",
    "dumps_json",
    "encoded_size",
    "kwargs_from_json",
    "kwargs_to_json",
    "loads_json",
    "rehydrate_value",
    "task_result_from_json",
    "task_result_to_json",
    "to_jsonable",
]


class SerializationError(Exception):
    """A value cannot be encoded to, or rebuilt from, horsies' JSON form."""


class PayloadTooLargeError(SerializationError):
    """Encoded task arguments or a task result are larger than `AppConfig.max_payload_bytes`.

    Attributes:
        what: what was measured (``"task arguments"``, ``"task result"``).
        size: its size in bytes, UTF-8 encoded JSON.
        limit: the configured limit in bytes.
    """

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.what = what
        self.size = size
        self.limit = limit
        super().__init__(
            f"{what}: {size:,} bytes once encoded, above the limit of {limit:,} bytes "
            "(AppConfig.max_payload_bytes); store large data elsewhere and pass a reference, "
            "or raise max_payload_bytes (None disables the limit)"
        )


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


# Tag keys of the encoded forms (02 §12.1).
DATETIME_TAG: Final = "__datetime__"
DATE_TAG: Final = "__date__"
TIME_TAG: Final = "__time__"
TASK_RESULT_TAG: Final = "__task_result__"
TASK_ERROR_TAG: Final = "__task_error__"
PYDANTIC_TAG: Final = "__pydantic_model__"
DATACLASS_TAG: Final = "__dataclass__"
MAPPING_TAG: Final = "__mapping__"
"""Wraps a plain mapping whose own keys include a tag key, so it is never read as a tagged value."""

_TAG_KEYS: Final = frozenset(
    {
        DATETIME_TAG,
        DATE_TAG,
        TIME_TAG,
        TASK_RESULT_TAG,
        TASK_ERROR_TAG,
        PYDANTIC_TAG,
        DATACLASS_TAG,
        MAPPING_TAG,
    }
)
_tag_free: Final = _TAG_KEYS.isdisjoint


def _escaped(mapping: dict[str, Any]) -> dict[str, Any]:
    """`mapping` (already encoded) as stored: wrapped when one of its keys is a tag key.

    User data such as `{"__dataclass__": true, "module": ...}` would otherwise be decoded as a
    tagged value: a worker would import the named module and build the named class.
    """
    if _tag_free(mapping):
        return mapping
    return {MAPPING_TAG: True, "data": mapping}


_Handler: TypeAlias = Callable[[Any], Any]
_Json: TypeAlias = Any

_TASK_ERROR_BASE_FIELDS: Final = frozenset(TaskError.model_fields)
_REFUSAL_HINTS: Final[dict[type, str]] = {
    set: "convert it to a list first",
    frozenset: "convert it to a list first",
    bytes: "encode it as a str (e.g. base64) first",
    bytearray: "encode it as a str (e.g. base64) first",
    memoryview: "encode it as a str (e.g. base64) first",
}


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


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
                    _reject_float(value)
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
                if tp is dict:
                    new = encode_dict(item)
                elif tp is list:
                    new = encode_list(item)
                else:
                    new = encode(item)
                if new is not item:
                    out = value[:index]
                    out.append(new)
                    out.extend([encode_item(rest) for rest in islice(value, index + 1, None)])
                    return out
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
                    out = list(value[:index])
                    out.append(new)
                    out.extend([encode_item(rest) for rest in value[index + 1 :]])
                    return out
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
                if tp is dict:
                    new = encode_dict(item)
                elif tp is list:
                    new = encode_list(item)
                else:
                    new = encode(item)
                if new is item and new_key is key:
                    index += 1
                    continue
                out: dict[str, Any] = dict(islice(value.items(), index))
                out[new_key] = new
                for rest_key, rest in islice(value.items(), index + 1, None):
                    out[rest_key if type(rest_key) is str else _key_to_str(rest_key)] = encode_item(
                        rest
                    )
                return out if tag_free(out) else _escaped(out)
            return value if tag_free(value) else _escaped(value)

        handlers[tuple] = encode_tuple
        return encode

    def _encode_mapping(self, value: Mapping[Any, Any]) -> dict[str, Any]:
        encode = self.encode
        return _escaped({_key_to_str(key): encode(item) for key, item in value.items()})

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
        base = _TASK_ERROR_BASE_FIELDS
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
                _check_finite(data)
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
        if issubclass(tp, str):
            return _plain_str
        if issubclass(tp, int):
            return _plain_int
        if issubclass(tp, float):
            return self._plain_float
        if issubclass(tp, datetime):
            return _encode_datetime
        if issubclass(tp, date):
            return _encode_date
        if issubclass(tp, time):
            return _encode_time
        if issubclass(tp, TaskResult):
            return self._encode_task_result
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
            _reject_float(result)
        return result


def _reject_float(value: float) -> None:
    raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")


def _check_finite(tree: Any) -> None:
    """Reject (ValueError) a NaN or infinity anywhere in a plain JSON tree."""
    stack: list[Any] = [tree]
    isfinite = math.isfinite
    while stack:
        item = stack.pop()
        tp: type[Any] = type(item)  # pyright: ignore[reportUnknownVariableType]
        if tp is float:
            if not isfinite(item):
                _reject_float(item)
        elif tp is dict:
            stack.extend(cast("dict[str, Any]", item).values())
        elif tp is list or tp is tuple:
            stack.extend(cast("Sequence[Any]", item))


_INT_RANGE_MESSAGE: Final = "Cannot serialize int outside the 64-bit range (pass it as a str)"
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
"""orjson writes signed and unsigned 64-bit integers; larger ones come back as floats."""


def _check_int_range(tree: Any) -> None:
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
                raise SerializationError(_INT_RANGE_MESSAGE)
        elif tp is dict:
            stack.extend(cast("dict[str, Any]", item).values())
        elif tp is list or tp is tuple:
            stack.extend(cast("Sequence[Any]", item))


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
            raise SerializationError(_INT_RANGE_MESSAGE) from exc
        if "Recursion limit" not in str(exc):
            raise SerializationError(f"Cannot serialize value: {exc}") from exc
    # orjson caps nesting at 255 levels; the stdlib encoder has no such limit, but it accepts what
    # orjson refuses: apply the same rules (64-bit ints, valid UTF-8) so both paths agree.
    _check_int_range(tree)
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


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------

_CLASS_CACHE: dict[tuple[str, str], type] = {}
_DATACLASS_PLANS: dict[type, tuple[tuple[str, bool], ...]] = {}


def loads_json(text: str | bytes | bytearray | memoryview) -> Any:
    """Parse JSON text into plain Python values (no rehydration of tagged objects).

    Raises `ValueError` (`orjson.JSONDecodeError`) for invalid JSON. Use `rehydrate_value` on the
    result, or the `*_from_json` helpers, to get rich values back.
    """
    return orjson.loads(text)


def _resolve_class(module: str, qualname: str) -> type:
    key = (module, qualname)
    cls = _CLASS_CACHE.get(key)
    if cls is not None:
        return cls
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


def _parse_temporal(kind: str, parse: Callable[[str], Any], payload: Mapping[str, Any]) -> Any:
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
        return _parse_temporal("datetime", datetime.fromisoformat, value)
    if value.get(PYDANTIC_TAG) is True:
        return _rehydrate_model(value)
    if value.get(DATACLASS_TAG) is True:
        return _rehydrate_dataclass(value)
    if value.get(TASK_RESULT_TAG) is True:
        return task_result_from_json(value)
    if value.get(TASK_ERROR_TAG) is True:
        return _decode_task_error(value)
    if value.get(DATE_TAG) is True:
        return _parse_temporal("date", date.fromisoformat, value)
    if value.get(TIME_TAG) is True:
        return _parse_temporal("time", time.fromisoformat, value)
    return _rehydrate_entries(value)


def _rehydrate_dict(value: dict[str, Any]) -> Any:
    # One C-level pass over the keys tells whether any tag is present (almost never).
    if _tag_free(value):
        return _rehydrate_entries(value)
    return _rehydrate_tagged(value)


def _rehydrate_entries(value: dict[str, Any]) -> dict[str, Any]:
    index = 0
    for key, item in value.items():
        tp: type[Any] = type(item)  # pyright: ignore[reportUnknownVariableType]
        if tp is dict:
            new = _rehydrate_dict(item)
        elif tp is list:
            new = _rehydrate_list(item)
        else:
            index += 1
            continue
        if new is item:
            index += 1
            continue
        out = dict(islice(value.items(), index))
        out[key] = new
        for rest_key, rest in islice(value.items(), index + 1, None):
            out[rest_key] = _rehydrate(rest)
        return out
    return value


def _rehydrate_list(value: list[Any]) -> list[Any]:
    for index, item in enumerate(value):
        tp: type[Any] = type(item)  # pyright: ignore[reportUnknownVariableType]
        if tp is dict:
            new = _rehydrate_dict(item)
        elif tp is list:
            new = _rehydrate_list(item)
        else:
            continue
        if new is not item:
            out = value[:index]
            out.append(new)
            out.extend([_rehydrate(rest) for rest in islice(value, index + 1, None)])
            return out
    return value


def _rehydrate(value: Any) -> Any:
    tp: type[Any] = type(value)  # pyright: ignore[reportUnknownVariableType]
    if tp is dict:
        return _rehydrate_dict(value)
    if tp is list:
        return _rehydrate_list(value)
    if tp is str or tp is int or tp is float or tp is bool or value is None:
        return value
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
    fields = {key: payload[key] for key in _TASK_ERROR_BASE_FIELDS if key in payload}
    if "data" in fields:
        # Keep the stored form on failure: an error must stay readable even if a class moved.
        with contextlib.suppress(SerializationError):
            fields["data"] = _rehydrate(fields["data"])
    exception: Any = fields.get("exception")
    if type(exception) is dict and not _tag_free(cast("dict[str, Any]", exception)):
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
            base = {key: fields[key] for key in _TASK_ERROR_BASE_FIELDS if key in fields}
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
    return TaskResult(
        err=TaskError(
            error_code=LibraryErrorCode.PYDANTIC_HYDRATION_ERROR,
            message=str(exc),
            data={},
        )
    )


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
