"""The base of every configuration model (`AppConfig` and its parts, the schedule models).

All models are pydantic v2 models that reject unknown fields (a misspelt option fails loudly instead
of being ignored). Two kinds of errors come out of them:

- a single field out of its type or range (``priority=0``) raises pydantic's `ValidationError`;
- a rule the library adds on top (queue-mode rules, URL scheme, recovery 2x rule, ...) raises our
  `ConfigurationError` with an error code, notes and a help text. Rules of one model are all
  checked, then raised together (`MultipleConfigurationErrors` when there are several).

Both are `ValueError`s, so ``except ValueError`` catches every configuration problem.

Every other configuration module builds on this one, so it imports none of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, LiteralString, Self, cast

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from horsies.errors import (
    ConfigurationError,
    ErrorCode,
    HorsiesError,
    MultipleValidationErrors,
    collected_error,
)
from horsies.redact import mask_database_url

__all__ = ["ConfigModel", "mask_validation_error", "repetition_error"]


def _wrapped_library_error(detail: ErrorDetails) -> HorsiesError | None:
    error = detail.get("ctx", {}).get("error")
    return error if isinstance(error, HorsiesError) else None


def _reraise_library_errors(exc: ValidationError, phase_name: str) -> None:
    """Turn a pydantic ValidationError that only wraps our errors back into those errors.

    pydantic wraps every `ValueError` raised by a validator, and `ConfigurationError` is a
    `ValueError`. When each wrapped item is one of our errors, re-raise them as they were
    (one → itself, several → MultipleConfigurationErrors); when any item is a plain field/range
    violation, let the caller re-raise pydantic's error unchanged - or raise a copy of it whose
    shown inputs have their URL passwords masked, when it shows one.
    """
    found: list[HorsiesError] = []
    for detail in exc.errors():
        error = _wrapped_library_error(detail)
        if error is None:
            _raise_masked(exc)
            return
        members = error.errors if isinstance(error, MultipleValidationErrors) else [error]
        for member in members:
            if not any(member is seen for seen in found):
                found.append(member)
    collected = collected_error(found, phase_name)
    if collected is not None:
        # "from None": the pydantic wrapper is an implementation detail, not part of the story.
        raise collected from None


def _mask_input(value: Any) -> Any:
    """`value` (an input shown by a pydantic error) with every URL password masked."""
    if isinstance(value, str):
        return mask_database_url(value)
    if isinstance(value, Mapping):
        mapping = cast("Mapping[Any, Any]", value)
        return {key: _mask_input(item) for key, item in mapping.items()}
    if isinstance(value, list | tuple):
        return [_mask_input(item) for item in cast("Iterable[Any]", value)]
    return value


def mask_validation_error(exc: ValidationError) -> ValidationError | None:
    """A copy of `exc` whose displayed inputs have their URL passwords masked, or None if `exc`
    shows no password.

    pydantic prints the offending input of each error (``input_value=...``): a URL given where
    a `PostgresConfig` was expected, or a mapping holding one, would print the password.
    """
    details = exc.errors(include_url=False)
    masked = [_mask_input(detail["input"]) for detail in details]
    if all(new == detail["input"] for new, detail in zip(masked, details, strict=True)):
        return None
    known: list[InitErrorDetails] = []
    custom: list[InitErrorDetails] = []
    for detail, value in zip(details, masked, strict=True):
        item = InitErrorDetails(type=detail["type"], loc=detail["loc"], input=value)
        if "ctx" in detail:
            item["ctx"] = detail["ctx"]
        known.append(item)
        # Fallback: the rendered message as it was (no context, so nothing is re-formatted).
        custom.append(
            InitErrorDetails(
                type=PydanticCustomError(
                    cast(LiteralString, detail["type"]), cast(LiteralString, detail["msg"])
                ),
                loc=detail["loc"],
                input=value,
            )
        )
    try:
        return ValidationError.from_exception_data(exc.title, known)
    except Exception:
        return ValidationError.from_exception_data(exc.title, custom)


def _raise_masked(exc: ValidationError) -> None:
    """Raise a copy of `exc` with URL passwords masked in the inputs it shows, if it shows any."""
    masked = mask_validation_error(exc)
    if masked is not None:
        # "from None": the original shows the password.
        raise masked from None


class ConfigModel(BaseModel):
    """Base of the config models: unknown fields are refused and our errors come out unwrapped."""

    model_config = ConfigDict(extra="forbid")

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            _reraise_library_errors(exc, type(self).__name__)
            raise

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Validate a mapping or object; library rule violations raise `ConfigurationError`."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            _reraise_library_errors(exc, cls.__name__)
            raise

    @classmethod
    def model_validate_json(
        cls, json_data: str | bytes | bytearray, *args: Any, **kwargs: Any
    ) -> Self:
        """Validate JSON text; library rule violations raise `ConfigurationError`."""
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except ValidationError as exc:
            _reraise_library_errors(exc, cls.__name__)
            raise


def repetition_error(
    names: Sequence[str], message: str, *, code: ErrorCode, help_text: str
) -> ConfigurationError | None:
    """An error listing the names that occur more than once (each once, in order of first
    repetition), or None when every name is unique."""
    seen: set[str] = set()
    repeated: list[str] = []
    for name in names:
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    if not repeated:
        return None
    return ConfigurationError(
        message, code=code, notes=["repeated: " + ", ".join(repeated)], help_text=help_text
    )
