"""Compatibility path `horsies.core.errors` (see `horsies.core`): the library's error classes."""

from __future__ import annotations

from horsies.errors import (
    ConfigurationError,
    DuplicateTaskNameError,
    ErrorCode,
    HorsiesError,
    MultipleValidationErrors,
    NotRegistered,
    RegistryError,
    SourceLocation,
    TaskDefinitionError,
    ValidationReport,
    WorkflowValidationError,
)

__all__ = [
    "ConfigurationError",
    "DuplicateTaskNameError",
    "ErrorCode",
    "HorsiesError",
    "MultipleValidationErrors",
    "NotRegistered",
    "RegistryError",
    "SourceLocation",
    "TaskDefinitionError",
    "ValidationReport",
    "WorkflowValidationError",
]
