"""Source locations that errors point at, and finding the user's code on the call stack."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import linecache
import os
from dataclasses import dataclass
from types import CodeType, FrameType

__all__ = ["SourceLocation", "detect_user_location"]


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
    # happens to live in a folder called "horsies" still gets its own frames reported. This file
    # sits in horsies/errors/, so the horsies package is two levels up.
    errors_dir = os.path.dirname(os.path.abspath(__file__))
    own = os.path.realpath(os.path.dirname(errors_dir)) + os.sep
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


def detect_user_location() -> SourceLocation | None:
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
