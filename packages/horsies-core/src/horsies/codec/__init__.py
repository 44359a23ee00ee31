"""The JSON wire format of task arguments, results and errors.

Everything horsies stores (args, kwargs, results) is JSON text: plain JSON values as they are, rich
values (datetimes, results, pydantic models, dataclasses) as small tagged objects that come back as
the same type. Prefer the purpose-made helpers (`args_to_json`, `kwargs_to_json`,
`task_result_to_json` and their `*_from_json` twins); `to_jsonable` / `rehydrate_value` are the
building blocks underneath.

Modules: `tags` (the tagged forms), `encode`, `decode`, `limits` (payload size, int range, finite
floats) and `errors`.
"""

from __future__ import annotations

from horsies.codec.decode import (
    args_from_json,
    kwargs_from_json,
    loads_json,
    rehydrate_value,
    task_result_from_json,
)
from horsies.codec.encode import (
    args_to_json,
    dumps_json,
    kwargs_to_json,
    task_result_to_json,
    to_jsonable,
)
from horsies.codec.errors import PayloadTooLargeError, SerializationError
from horsies.codec.limits import check_payload_size, encoded_size
from horsies.codec.tags import (
    DATACLASS_TAG,
    DATE_TAG,
    DATETIME_TAG,
    MAPPING_TAG,
    PYDANTIC_TAG,
    TASK_ERROR_TAG,
    TASK_RESULT_TAG,
    TIME_TAG,
)

__all__ = [
    "DATACLASS_TAG",
    "DATETIME_TAG",
    "DATE_TAG",
    "MAPPING_TAG",
    "PYDANTIC_TAG",
    "TASK_ERROR_TAG",
    "TASK_RESULT_TAG",
    "TIME_TAG",
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
