"""The library's exception classes, and collecting several errors of one validation phase.

Every error the library raises for a user mistake is a `HorsiesError`: it carries an `ErrorCode`,
a short message, the user's source location (detected automatically), notes explaining what was
found and a help text saying what to do. Validation phases that can find several problems at once
collect them in a `ValidationReport` and raise them together through `raise_collected()`.

`WorkflowContextMissingIdError` is the exception here that is not a `HorsiesError`: it is raised
inside a running task and ends up as the task's error result rather than as a rendered diagnostic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, ClassVar, Self, TypeVar

from horsies.errors.codes import ErrorCode
from horsies.errors.location import SourceLocation, detect_user_location
from horsies.errors.render import render_error
from horsies.errors.terminal import Palette, colors_enabled

__all__ = [
    "ConfigurationError",
    "DuplicateTaskNameError",
    "HorsiesError",
    "MultipleConfigurationErrors",
    "MultipleValidationErrors",
    "NotRegistered",
    "RegistryError",
    "TaskDefinitionError",
    "ValidationReport",
    "WorkflowContextMissingIdError",
    "WorkflowValidationError",
    "collected_error",
    "raise_collected",
]

_E = TypeVar("_E", bound="HorsiesError")


def _restore_error(cls: type[_E], args: tuple[Any, ...], state: dict[str, Any]) -> _E:
    """Unpickle a HorsiesError without re-running `__init__` (and its location detection)."""
    error = cls.__new__(cls, *args)
    error.__dict__.update(state)
    return error


@dataclass(eq=False)
class HorsiesError(Exception):
    """Base class of the library's user-facing errors.

    Prefer catching a concrete subclass (`ConfigurationError`, `TaskDefinitionError`, ...) or
    matching on `code`. If `location` is not given, the nearest calling frame outside the horsies
    packages and installed packages is used, so the rendering points at the user's line. Errors
    are picklable, so they survive the trip between worker processes.
    """

    message: str
    code: ErrorCode | None = None
    location: SourceLocation | None = None
    notes: list[str] = field(default_factory=list[str])
    help_text: str | None = None

    # Subclasses that aggregate other errors have no single location of their own.
    _auto_location: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.args = (self.message,)
        if self.location is None and self._auto_location:
            self.location = detect_user_location()

    def with_note(self, note: str) -> Self:
        """Append a note (what was found, why it is a problem) and return self."""
        self.notes.append(note)
        return self

    def with_help(self, text: str) -> Self:
        """Set the help text (what the user should do) and return self."""
        self.help_text = text
        return self

    def with_location(self, location: SourceLocation | None) -> Self:
        """Replace the location (None removes it) and return self."""
        self.location = location
        return self

    def with_location_from_frame(self, frame: FrameType) -> Self:
        """Point the error at the line currently executing in `frame` and return self."""
        self.location = SourceLocation.from_frame(frame)
        return self

    def format_rust_style(self, use_colors: bool | None = None) -> str:
        """Render the error like a compiler diagnostic.

        `use_colors=None` decides from the environment (see `colors_enabled`). The text starts
        with an empty line and has no trailing newline.
        """
        colors = colors_enabled() if use_colors is None else use_colors
        return render_error(self, Palette(colors))

    def __str__(self) -> str:
        return self.format_rust_style(use_colors=False)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_error, (type(self), self.args, self.__dict__.copy()))


class WorkflowValidationError(HorsiesError):
    """A workflow definition is invalid (codes E001-E099)."""


class TaskDefinitionError(HorsiesError, TypeError):
    """A task definition is invalid (codes E100-E199).

    Also a `TypeError`, as the documentation promises for bad return annotations.
    """


class ConfigurationError(HorsiesError, ValueError):
    """Configuration, queue or CLI input is invalid (codes E200-E299).

    Also a `ValueError`, so both ``except ValueError`` and ``except HorsiesError`` catch it.
    """


class RegistryError(HorsiesError):
    """Task registry problem (codes E300-E399)."""


@dataclass(eq=False, init=False)
class _TaskNameError(RegistryError):
    """A registry error about one task name; `message` defaults to `_default_message`."""

    task_name: str
    _code: ClassVar[ErrorCode]
    _default_message: ClassVar[str]  # formatted with the task name

    def __init__(
        self,
        task_name: str,
        message: str | None = None,
        *,
        location: SourceLocation | None = None,
        notes: list[str] | None = None,
        help_text: str | None = None,
    ) -> None:
        self.task_name = task_name
        HorsiesError.__init__(
            self,
            message if message is not None else self._default_message.format(task_name),
            code=self._code,
            location=location,
            notes=list(notes) if notes is not None else [],
            help_text=help_text,
        )


class NotRegistered(_TaskNameError, KeyError):
    """No task with this name is registered (E300).

    Also a `KeyError` (``args[0]`` is the task name), so `app.tasks` behaves like a mapping:
    ``name in app.tasks`` and ``app.tasks.get(name)`` work for unknown names.
    """

    _code = ErrorCode.TASK_NOT_REGISTERED
    _default_message = "task '{}' not registered"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.args = (self.task_name,)


class DuplicateTaskNameError(_TaskNameError):
    """A task name is already registered by a different function (E301)."""

    _code = ErrorCode.TASK_DUPLICATE_NAME
    _default_message = "duplicate task name '{}'"


class WorkflowContextMissingIdError(RuntimeError):
    """A `WorkflowContext` lookup was given a node whose `node_id` is None.

    A task that lets it escape ends with err `WORKFLOW_CTX_MISSING_ID`.
    """


class ValidationReport:
    """All errors found by one validation phase (e.g. ``"AppConfig"``), rendered together."""

    def __init__(self, phase_name: str) -> None:
        self.phase_name = phase_name
        self.errors: list[HorsiesError] = []

    def add(self, error: HorsiesError) -> None:
        """Record one error."""
        self.errors.append(error)

    def has_errors(self) -> bool:
        """True if at least one error was recorded."""
        return bool(self.errors)

    def format_rust_style(self, use_colors: bool | None = None) -> str:
        """Every error's rendering, then ``error: aborting due to N previous error(s)``."""
        colors = colors_enabled() if use_colors is None else use_colors
        palette = Palette(colors)
        parts = [error.format_rust_style(use_colors=colors) for error in self.errors]
        trailer = palette.paint("header", f"error: {aborting_due_to(len(self.errors))}")
        return "\n".join(parts) + "\n\n" + trailer

    def __str__(self) -> str:
        return self.format_rust_style(use_colors=False)

    def __repr__(self) -> str:
        return f"ValidationReport(phase_name={self.phase_name!r}, errors={self.errors!r})"


def aborting_due_to(count: int) -> str:
    """The closing line of a report of ``count`` errors."""
    return f"aborting due to {count} previous error{'' if count == 1 else 's'}"


@dataclass(eq=False, init=False)
class MultipleValidationErrors(HorsiesError):
    """Two or more errors found by one validation phase; `report` holds them.

    Raised only when a phase collected at least two errors (a single error is raised as itself,
    so ``except ConfigurationError`` keeps working). `code` and `location` are None; rendering
    delegates to the report.
    """

    report: ValidationReport
    _auto_location: ClassVar[bool] = False

    def __init__(
        self,
        report: ValidationReport,
        message: str | None = None,
        *,
        notes: list[str] | None = None,
        help_text: str | None = None,
    ) -> None:
        HorsiesError.__init__(
            self,
            message if message is not None else aborting_due_to(len(report.errors)),
            code=None,
            location=None,
            notes=list(notes) if notes is not None else [],
            help_text=help_text,
        )
        self.report = report

    @property
    def errors(self) -> list[HorsiesError]:
        """The collected errors (shortcut for ``report.errors``)."""
        return self.report.errors

    def format_rust_style(self, use_colors: bool | None = None) -> str:
        """Same as the report's rendering."""
        return self.report.format_rust_style(use_colors=use_colors)


class MultipleConfigurationErrors(MultipleValidationErrors, ConfigurationError):
    """`MultipleValidationErrors` whose errors are all `ConfigurationError`s.

    Also a `ConfigurationError` (and so a `ValueError`): code that catches configuration
    problems keeps working when several are reported at once.
    """


def collected_error(errors: Sequence[HorsiesError], phase_name: str) -> HorsiesError | None:
    """The single exception that stands for what a validation phase collected.

    None for no errors, the error itself for one, else a `MultipleValidationErrors` (the
    `MultipleConfigurationErrors` subclass when all of them are `ConfigurationError`s). Prefer
    `raise_collected`; use this when the raise must happen elsewhere (e.g. ``raise ... from None``).
    """
    if not errors:
        return None
    if len(errors) == 1:
        return errors[0]
    report = ValidationReport(phase_name)
    for error in errors:
        report.add(error)
    if all(isinstance(error, ConfigurationError) for error in errors):
        return MultipleConfigurationErrors(report)
    return MultipleValidationErrors(report)


def raise_collected(errors: Sequence[HorsiesError], phase_name: str) -> None:
    """Raise what a validation phase collected.

    No errors: return. One: raise it unchanged, so existing ``except`` clauses keep working. Two or
    more: raise `MultipleValidationErrors` (the `MultipleConfigurationErrors` subclass when all of
    them are `ConfigurationError`s) whose report is named `phase_name`.
    """
    error = collected_error(errors, phase_name)
    if error is not None:
        raise error
