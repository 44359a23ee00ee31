"""Library errors with compiler-style ("Rust-style") rendering.

Every error the library raises for a user mistake is a `HorsiesError`: it carries an
`ErrorCode`, a short message, the user's source location (detected automatically), notes
explaining what was found and a help text saying what to do. `str(error)` renders all of that
as plain text::

    error[E200]: custom_queues must be None in DEFAULT mode
      --> app.py:4
        |
       4| config = AppConfig(custom_queues=[], broker=broker)
        | ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
       = note: custom_queues=[]

       = help:
            remove custom_queues, or set queue_mode=QueueMode.CUSTOM

Validation phases that can find several problems at once collect them in a `ValidationReport`
and raise them together through `raise_collected()`.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import linecache
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import CodeType, FrameType, TracebackType
from typing import Any, ClassVar, Final, Self, TextIO, TypeVar

from horsies.redact import mask_database_url

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
    "WorkflowValidationError",
    "collected_error",
    "colors_enabled",
    "install_exception_hook",
    "raise_collected",
]


class ErrorCode(StrEnum):
    """Stable identifiers of library errors (value = the code string, e.g. ``"E200"``).

    Ranges: E001-E099 workflow validation, E100-E199 task definition, E200-E299 configuration
    and CLI, E300-E399 task registry. Codes never change meaning, so they are safe to match on
    in tests and logs.
    """

    WORKFLOW_NO_NAME = "E001"
    WORKFLOW_NO_NODES = "E002"
    WORKFLOW_INVALID_NODE_ID = "E003"
    WORKFLOW_DUPLICATE_NODE_ID = "E004"
    WORKFLOW_NO_ROOT_TASKS = "E005"
    WORKFLOW_INVALID_DEPENDENCY = "E006"
    WORKFLOW_CYCLE_DETECTED = "E007"
    WORKFLOW_INVALID_ARGS_FROM = "E008"
    WORKFLOW_INVALID_CTX_FROM = "E009"
    WORKFLOW_CTX_PARAM_MISSING = "E010"
    WORKFLOW_INVALID_OUTPUT = "E011"
    WORKFLOW_INVALID_SUCCESS_POLICY = "E012"
    WORKFLOW_INVALID_JOIN = "E013"
    WORKFLOW_UNRESOLVED_QUEUE = "E014"
    WORKFLOW_UNRESOLVED_PRIORITY = "E015"
    WORKFLOW_INVALID_SUBWORKFLOW_RETRY_MODE = "E017"
    WORKFLOW_SUBWORKFLOW_APP_MISSING = "E018"

    TASK_NO_RETURN_TYPE = "E100"
    TASK_INVALID_RETURN_TYPE = "E101"
    TASK_INVALID_OPTIONS = "E102"
    TASK_INVALID_QUEUE = "E103"

    CONFIG_INVALID_QUEUE_MODE = "E200"
    CONFIG_INVALID_CLUSTER_CAP = "E201"
    CONFIG_INVALID_PREFETCH = "E202"
    BROKER_INVALID_URL = "E203"
    CONFIG_INVALID_RECOVERY = "E204"
    CONFIG_INVALID_SCHEDULE = "E205"
    CLI_INVALID_ARGS = "E206"
    WORKER_INVALID_LOCATOR = "E207"

    TASK_NOT_REGISTERED = "E300"
    TASK_DUPLICATE_NAME = "E301"


# --------------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------------

_TRUTHY: Final = frozenset({"1", "true", "yes"})


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUTHY


def colors_enabled(stream: TextIO | None = None) -> bool:
    """Decide whether terminal colours should be used when writing to `stream` (default: stderr).

    `HORSIES_FORCE_COLOR` in {1, true, yes} forces colours on; otherwise a set `NO_COLOR` turns them
    off; otherwise colours are used only when the stream is a TTY.
    """
    if _env_flag("HORSIES_FORCE_COLOR"):
        return True
    if "NO_COLOR" in os.environ:
        return False
    target = sys.stderr if stream is None else stream
    if target is None:  # pyright: ignore[reportUnnecessaryComparison]  # sys.stderr is None under pythonw
        return False
    try:
        return target.isatty()
    except (AttributeError, ValueError, OSError):
        # Closed or exotic streams: plain text is always safe.
        return False


class _Palette:
    """ANSI styling that degrades to identity functions when colours are off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def _wrap(self, codes: str, text: str) -> str:
        if not self.enabled or not text:
            return text
        return f"\x1b[{codes}m{text}\x1b[0m"

    def header(self, text: str) -> str:
        return self._wrap("1;31", text)

    def blue(self, text: str) -> str:
        return self._wrap("34", text)

    def cyan(self, text: str) -> str:
        return self._wrap("36", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def bold_blue(self, text: str) -> str:
        return self._wrap("1;34", text)

    def bold_green(self, text: str) -> str:
        return self._wrap("1;32", text)


# --------------------------------------------------------------------------------------------------
# Source locations
# --------------------------------------------------------------------------------------------------


@dataclass
class SourceLocation:
    """A position in a source file that an error points at.

    `line` is 1-based. `column` and `end_column` are optional 1-based columns; when given, the
    rendering underlines `column` up to (not including) `end_column` (at least one caret),
    otherwise the whole non-blank part of the line is underlined.
    """

    file: str
    line: int
    column: int | None = None
    end_column: int | None = None

    @classmethod
    def from_frame(cls, frame: FrameType) -> SourceLocation:
        """Location of the line currently executing in `frame` (file and line, no column)."""
        return cls(
            file=frame.f_code.co_filename, line=frame.f_lineno or frame.f_code.co_firstlineno
        )

    @classmethod
    def from_function(cls, fn: object) -> SourceLocation | None:
        """Location where a function (or method, or `functools.wraps` wrapper) is defined.

        Returns None for objects that have no Python code object (classes, builtins, callables
        implemented in C).
        """
        target: object = fn
        try:
            target = inspect.unwrap(fn) if callable(fn) else fn
        except ValueError:
            # `__wrapped__` cycle: fall back to the object itself.
            target = fn
        target = getattr(target, "__func__", target)
        code = getattr(target, "__code__", None)
        if not isinstance(code, CodeType):
            return None
        return cls(file=code.co_filename, line=code.co_firstlineno)

    def get_source_line(self) -> str | None:
        """The text of the referenced line without its line ending, or None if it cannot be read."""
        if self.line < 1:
            return None
        text = linecache.getline(self.file, self.line)
        if not text:
            return None
        return text.rstrip("\r\n")

    def format_short(self) -> str:
        """``file:line`` or ``file:line:column``."""
        if self.column is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"


def _package_dir(module_name: str) -> str | None:
    """Directory of an importable top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    locations = list(spec.submodule_search_locations)
    return os.path.realpath(locations[0]) + os.sep


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    # Compare by package directory rather than by a "/horsies/" path fragment so a user project that
    # happens to live in a folder called "horsies" still gets its own frames reported.
    own = os.path.realpath(os.path.dirname(os.path.abspath(__file__))) + os.sep
    dirs = [own]
    for package in ("horsies_worker", "horsies_scheduler"):
        found = _package_dir(package)
        if found is not None:
            dirs.append(found)
    return tuple(dirs)


@functools.cache
def _is_internal_file(filename: str) -> bool:
    if not filename or (filename.startswith("<") and filename.endswith(">")):
        return True
    normalized = filename.replace("\\", "/")
    if "/site-packages/" in normalized or "/dist-packages/" in normalized:
        return True
    real = os.path.realpath(filename)
    return any(real.startswith(d) for d in _library_dirs())


def _detect_user_location() -> SourceLocation | None:
    """Nearest calling frame that belongs to user code (not the library, not installed packages)."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if not _is_internal_file(frame.f_code.co_filename):
                return SourceLocation.from_frame(frame)
            frame = frame.f_back
        return None
    finally:
        # Frames reference their locals; drop ours promptly to avoid reference cycles.
        del frame


def _display_path(file: str) -> str:
    """Show paths below the working directory relative to it (shorter, still clickable)."""
    if not os.path.isabs(file):
        return file
    try:
        cwd = os.getcwd()
        if os.path.commonpath([cwd, file]) == cwd and cwd != os.sep:
            return os.path.relpath(file, cwd)
    except (OSError, ValueError):
        pass
    return file


def _blank_like(text: str) -> str:
    # Keep tabs as tabs so the carets line up however the terminal expands them.
    return "".join(ch if ch == "\t" else " " for ch in text)


def _caret_span(source: str, location: SourceLocation) -> tuple[str, int]:
    """(prefix, caret count) for the caret line under `source`."""
    if location.column is not None:
        start = max(location.column, 1) - 1
        if location.end_column is not None:
            count = max(1, location.end_column - max(location.column, 1))
        else:
            count = 1
        return _blank_like(source[:start]) + " " * max(0, start - len(source)), count
    stripped = source.strip()
    indent = len(source) - len(source.lstrip())
    return _blank_like(source[:indent]), len(stripped)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------

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
            self.location = _detect_user_location()

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
        return _render(self, _Palette(colors))

    def __str__(self) -> str:
        return self.format_rust_style(use_colors=False)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_error, (type(self), self.args, self.__dict__.copy()))


def _mask_passwords(source: str) -> str:
    """A quoted source line with database passwords masked (a URL literal in the user's code)."""
    return mask_database_url(source)


def _render(error: HorsiesError, c: _Palette) -> str:
    lines: list[str] = [""]
    head = f"error[{error.code.value}]" if error.code is not None else "error"
    lines.append(c.header(f"{head}: {error.message}"))

    location = error.location
    if location is not None:
        shown = SourceLocation(
            _display_path(location.file), location.line, location.column, location.end_column
        )
        lines.append(f"  {c.blue('-->')} {c.cyan(shown.format_short())}")
        source = location.get_source_line()
        if source is not None:
            source = _mask_passwords(source)
        if source is not None and source.strip():
            number = str(location.line)
            gutter = "   " + " " * len(number) + c.blue("|")
            prefix, count = _caret_span(source, location)
            lines.append(gutter)
            lines.append(f"   {c.blue(number + '|')} {source}")
            lines.append(f"{gutter} {prefix}{c.red('^' * count)}")

    for note in error.notes:
        first, *rest = note.splitlines() or [""]
        lines.append(f"   {c.blue('=')} {c.bold_blue('note')}: {first}")
        lines.extend(" " * 10 + extra for extra in rest)

    if error.help_text is not None:
        lines.append("")
        lines.append(f"   {c.blue('=')} {c.bold_green('help')}:")
        lines.extend(" " * 8 + text for text in error.help_text.splitlines() or [""])

    return "\n".join(lines)


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


# --------------------------------------------------------------------------------------------------
# Collected validation
# --------------------------------------------------------------------------------------------------


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
        """Every error's rendering, then ``error: aborting due to N previous errors``."""
        colors = colors_enabled() if use_colors is None else use_colors
        palette = _Palette(colors)
        parts = [error.format_rust_style(use_colors=colors) for error in self.errors]
        trailer = palette.header(f"error: aborting due to {len(self.errors)} previous errors")
        return "\n".join(parts) + "\n\n" + trailer

    def __str__(self) -> str:
        return self.format_rust_style(use_colors=False)

    def __repr__(self) -> str:
        return f"ValidationReport(phase_name={self.phase_name!r}, errors={self.errors!r})"


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
            message
            if message is not None
            else f"aborting due to {len(report.errors)} previous errors",
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


# --------------------------------------------------------------------------------------------------
# Uncaught-exception hook
# --------------------------------------------------------------------------------------------------

_ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], Any]

_HOOK_MARKER: Final = "_horsies_exception_hook"


def _make_hook(previous: _ExceptHook) -> _ExceptHook:
    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if not isinstance(exc, HorsiesError) or _env_flag("HORSIES_PLAIN_ERRORS"):
            previous(exc_type, exc, tb)
            return
        stream = sys.stderr
        stream.write(exc.format_rust_style(use_colors=colors_enabled(stream)) + "\n")
        if _env_flag("HORSIES_VERBOSE"):
            stream.write("\nFull traceback (HORSIES_VERBOSE=1):\n")
            stream.write("".join(traceback.format_exception(exc_type, exc, tb)))
        stream.flush()

    setattr(hook, _HOOK_MARKER, True)
    return hook


def install_exception_hook() -> None:
    """Render uncaught `HorsiesError`s in Rust style on stderr (idempotent).

    Other exceptions go to the previously installed hook. Read at exception time:
    `HORSIES_VERBOSE` in {1, true, yes} appends the full traceback; `HORSIES_PLAIN_ERRORS` in
    {1, true, yes} uses the standard Python output instead.
    """
    current: _ExceptHook = sys.excepthook
    if getattr(current, _HOOK_MARKER, False):
        return
    sys.excepthook = _make_hook(current)
