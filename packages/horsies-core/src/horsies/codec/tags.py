"""The tagged JSON forms of rich values, and the escaping of user dicts that look like one.

Plain JSON values are stored as they are; richer values are stored as small tagged objects so they
come back as the same type:

- None, bool, int, float, str: themselves (str/int enums and other subclasses: the plain value)
- datetime / date / time: `{"__datetime__": true, "value": "<iso>"}` (`__date__`, `__time__`)
- UUID: `{"__uuid__": true, "value": "<canonical form>"}`; Decimal: `{"__decimal__": true,
  "value": "<str(value)>"}` (exact: digits, exponent, sign of zero, NaN and infinities kept)
- TaskResult: `{"__task_result__": true, "ok": ..., "err": ...}`
- TaskError: `{"__task_error__": true, "error_code", "data", "message", "exception"?}`
- pydantic model: `{"__pydantic_model__": true, "module", "qualname", "data": model_dump}`
- dataclass instance: `{"__dataclass__": true, "module", "qualname", "data": {field: ...}}`
- other mapping: object with string keys; other sequence (tuple, ...): array (back as a list)
- a mapping whose own keys include one of the tags above: `{"__mapping__": true, "data": {...}}`,
  so user data is never read back as a tagged value (it comes back as the same plain dict)

Two reserved keyword-argument names mark, in a workflow node's stored kwargs, the context and meta
payloads the engine adds for the task; the worker takes them out before calling the function.
"""

from __future__ import annotations

from typing import Any, Final

from horsies.results import TaskError

__all__ = [
    "CTX_KEY",
    "DATACLASS_TAG",
    "DATETIME_TAG",
    "DATE_TAG",
    "DECIMAL_TAG",
    "MAPPING_TAG",
    "META_KEY",
    "PYDANTIC_TAG",
    "TASK_ERROR_BASE_FIELDS",
    "TASK_ERROR_TAG",
    "TASK_RESULT_TAG",
    "TIME_TAG",
    "UUID_TAG",
    "escaped",
    "tag_free",
]

DATETIME_TAG: Final = "__datetime__"
DATE_TAG: Final = "__date__"
TIME_TAG: Final = "__time__"
UUID_TAG: Final = "__uuid__"
DECIMAL_TAG: Final = "__decimal__"
TASK_RESULT_TAG: Final = "__task_result__"
TASK_ERROR_TAG: Final = "__task_error__"
PYDANTIC_TAG: Final = "__pydantic_model__"
DATACLASS_TAG: Final = "__dataclass__"
MAPPING_TAG: Final = "__mapping__"
"""Wraps a plain mapping whose own keys include a tag key, so it is never read as a tagged value."""

CTX_KEY: Final = "__horsies_workflow_ctx__"
"""Reserved kwargs key carrying the `WorkflowContext` payload (removed by the worker)."""
META_KEY: Final = "__horsies_workflow_meta__"
"""Reserved kwargs key carrying the `WorkflowMeta` payload (removed by the worker)."""

_TAG_KEYS: Final = frozenset(
    {
        DATETIME_TAG,
        DATE_TAG,
        TIME_TAG,
        UUID_TAG,
        DECIMAL_TAG,
        TASK_RESULT_TAG,
        TASK_ERROR_TAG,
        PYDANTIC_TAG,
        DATACLASS_TAG,
        MAPPING_TAG,
    }
)
tag_free: Final = _TAG_KEYS.isdisjoint
"""`tag_free(keys)`: True when no key is a tag key (one C-level pass, no Python loop)."""

TASK_ERROR_BASE_FIELDS: Final = frozenset(TaskError.model_fields)
"""Fields every TaskError has, stored at the top of the `__task_error__` form; a subclass's own
fields go under `"fields"`, so the decoder can still build a plain TaskError if the class moved."""


def escaped(mapping: dict[str, Any]) -> dict[str, Any]:
    """`mapping` (already encoded) as stored: wrapped when one of its keys is a tag key.

    User data such as `{"__dataclass__": true, "module": ...}` would otherwise be decoded as a
    tagged value: a worker would import the named module and build the named class.
    """
    if tag_free(mapping):
        return mapping
    return {MAPPING_TAG: True, "data": mapping}
