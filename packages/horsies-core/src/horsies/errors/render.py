"""Rendering an error as text in the style of a compiler diagnostic.

`str(error)` of a `HorsiesError` gives, for example::

    error[E200]: custom_queues must be None in DEFAULT mode
      --> app.py:4
        |
       4| config = AppConfig(custom_queues=[], broker=broker)
        | ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
       = note: custom_queues=[]

       = help:
            remove custom_queues, or set queue_mode=QueueMode.CUSTOM
"""

from __future__ import annotations

import os
from typing import Protocol

from horsies.errors.codes import ErrorCode
from horsies.errors.location import SourceLocation
from horsies.errors.terminal import Palette
from horsies.redact import mask_database_url

__all__ = ["Diagnostic", "render_error"]


class Diagnostic(Protocol):
    """What the rendering reads from an error (`HorsiesError` provides it)."""

    message: str
    code: ErrorCode | None
    location: SourceLocation | None
    notes: list[str]
    help_text: str | None


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


def _mask_passwords(source: str) -> str:
    """A quoted source line with database passwords masked (a URL literal in the user's code)."""
    return mask_database_url(source)


def render_error(error: Diagnostic, c: Palette) -> str:
    """The error as a compiler-style diagnostic, without a leading or trailing newline (a log line
    or an f-string quoting the error starts with its header)."""
    lines: list[str] = []
    head = f"error[{error.code.value}]" if error.code is not None else "error"
    lines.append(c.paint("header", f"{head}: {error.message}"))

    location = error.location
    if location is not None:
        shown = SourceLocation(
            _display_path(location.file), location.line, location.column, location.end_column
        )
        lines.append(f"  {c.paint('blue', '-->')} {c.paint('cyan', shown.format_short())}")
        source = location.get_source_line()
        if source is not None:
            source = _mask_passwords(source)
        if source is not None and source.strip():
            number = str(location.line)
            gutter = "   " + " " * len(number) + c.paint("blue", "|")
            prefix, count = _caret_span(source, location)
            lines.append(gutter)
            lines.append(f"   {c.paint('blue', number + '|')} {source}")
            lines.append(f"{gutter} {prefix}{c.paint('red', '^' * count)}")

    for note in error.notes:
        first, *rest = note.splitlines() or [""]
        lines.append(f"   {c.paint('blue', '=')} {c.paint('bold_blue', 'note')}: {first}")
        lines.extend(" " * 10 + extra for extra in rest)

    if error.help_text is not None:
        lines.append("")
        lines.append(f"   {c.paint('blue', '=')} {c.paint('bold_green', 'help')}:")
        lines.extend(" " * 8 + text for text in error.help_text.splitlines() or [""])

    return "\n".join(lines)
