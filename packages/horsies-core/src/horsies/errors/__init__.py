"""Library errors with compiler-style ("Rust-style") rendering.

`codes` holds the error codes, `exceptions` the error classes and the collecting helpers,
`location` the source locations, `render` the text layout, `terminal` the colour decisions and
`hook` the uncaught-exception hook; the names other modules use are re-exported here.
"""

from __future__ import annotations

from horsies.errors.codes import ErrorCode
from horsies.errors.exceptions import (
    ConfigurationError,
    DuplicateTaskNameError,
    HorsiesError,
    MultipleConfigurationErrors,
    MultipleValidationErrors,
    NotRegistered,
    RegistryError,
    TaskDefinitionError,
    ValidationReport,
    WorkflowContextMissingIdError,
    WorkflowValidationError,
    collected_error,
    raise_collected,
)
from horsies.errors.hook import install_exception_hook
from horsies.errors.location import SourceLocation
from horsies.errors.terminal import colors_enabled

__all__ = [
    "ConfigurationError",
    "DuplicateTaskNameError",
    "ErrorCode",
    "HorsiesError",
    "MultipleConfigurationErrors",
    "MultipleValidationErrors",
    "NotRegistered",
    "RegistryError",
    "SourceLocation",
    "TaskDefinitionError",
    "ValidationReport",
    "WorkflowContextMissingIdError",
    "WorkflowValidationError",
    "collected_error",
    "colors_enabled",
    "install_exception_hook",
    "raise_collected",
]
