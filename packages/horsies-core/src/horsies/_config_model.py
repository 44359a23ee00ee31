"""The base of every configuration model (`AppConfig` and its parts, the schedule models).

Lives apart from ``config.py`` so that ``schedules.py`` can use it while ``config.py`` imports the
schedule models for `AppConfig.schedule` (no import cycle).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from horsies.errors import HorsiesError, MultipleValidationErrors, collected_error

__all__ = ["ConfigModel", "duplicate_names"]


def _wrapped_library_error(detail: ErrorDetails) -> HorsiesError | None:
    error = detail.get("ctx", {}).get("error")
    return error if isinstance(error, HorsiesError) else None


def _reraise_library_errors(exc: ValidationError, phase_name: str) -> None:
    """Turn a pydantic ValidationError that only wraps our errors back into those errors.

    pydantic wraps every `ValueError` raised by a validator, and `ConfigurationError` is a
    `ValueError` (D2). When each wrapped item is one of our errors, re-raise them as they were
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


def _raise_masked(exc: ValidationError) -> None:
    """Raise a copy of `exc` with URL passwords masked in the inputs it shows, if it shows any."""
    from horsies.config import mask_validation_error  # config.py imports this module

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


def duplicate_names(names: Sequence[str]) -> list[str]:
    """The names that occur more than once, each listed once, in order of first repetition."""
    seen: set[str] = set()
    repeated: list[str] = []
    for name in names:
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    return repeated
