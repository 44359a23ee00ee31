"""Compatibility path `horsies.core.errors` (see `horsies.core`): the library's error classes."""

# Each name is re-exported explicitly (`import X as X`), so type checkers see it here too.
# ruff: noqa: PLC0414
from horsies.errors import ConfigurationError as ConfigurationError
from horsies.errors import DuplicateTaskNameError as DuplicateTaskNameError
from horsies.errors import ErrorCode as ErrorCode
from horsies.errors import HorsiesError as HorsiesError
from horsies.errors import MultipleValidationErrors as MultipleValidationErrors
from horsies.errors import NotRegistered as NotRegistered
from horsies.errors import RegistryError as RegistryError
from horsies.errors import SourceLocation as SourceLocation
from horsies.errors import TaskDefinitionError as TaskDefinitionError
from horsies.errors import ValidationReport as ValidationReport
from horsies.errors import WorkflowValidationError as WorkflowValidationError
