"""Library loggers.

Every component logs through a child of the ``horsies`` logger (``get_logger("broker")`` gives
``horsies.broker``), so applications can tune the whole library with one logger. The library never
adds handlers on import; the CLI commands call `configure_logging()` once at start-up.

What a record quotes (task and queue names, error messages: its arguments) is escaped: a newline,
a carriage return or a bidirectional override in a task name cannot forge or hide log lines,
whatever handler and formatter the application uses.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Final, TextIO

from horsies.errors import colors_enabled

__all__ = [
    "ROOT_LOGGER_NAME",
    "HorsiesFormatter",
    "TextBlock",
    "configure_logging",
    "escape_controls",
    "get_logger",
]

ROOT_LOGGER_NAME: Final = "horsies"

_LEVEL_COLORS: Final = {
    logging.DEBUG: "2",
    logging.INFO: "32",
    logging.WARNING: "33",
    logging.ERROR: "31",
    logging.CRITICAL: "1;31",
}


def escape_controls(text: str) -> str:
    """``text`` with its control, format and line-separator characters written as escapes
    (``\\n``, ``\\u202e``); printable text, non-ASCII letters included, is left as it is."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


class TextBlock(str):
    """Several lines quoted in a log record (a traceback): each line escaped on its own and
    indented, so it reads as it was written and no line can pass for a record of its own. The
    arguments filter leaves it as it is."""

    __slots__ = ()

    def __new__(cls, text: str) -> TextBlock:
        lines = (f"    {escape_controls(line)}" for line in text.rstrip("\n").splitlines())
        return super().__new__(cls, "\n" + "\n".join(lines))


def _escaped(value: object) -> object:
    if isinstance(value, TextBlock) or not isinstance(value, str):
        return value
    return escape_controls(value)


class _EscapeArguments(logging.Filter):
    """Escapes the string arguments of the library's log records (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_escaped(a) for a in args)
        elif isinstance(args, Mapping):
            record.args = {key: _escaped(value) for key, value in args.items()}
        return True


_ESCAPE_ARGUMENTS: Final = _EscapeArguments()


def get_logger(component: str) -> logging.Logger:
    """Logger of one library component: ``get_logger("broker")`` → logger ``horsies.broker``.

    A name that already starts with ``horsies`` is used as is. Its records' arguments are
    escaped (see the module docstring).
    """
    if component == ROOT_LOGGER_NAME or component.startswith(ROOT_LOGGER_NAME + "."):
        logger = logging.getLogger(component)
    else:
        logger = logging.getLogger(f"{ROOT_LOGGER_NAME}.{component}")
    if _ESCAPE_ARGUMENTS not in logger.filters:
        logger.addFilter(_ESCAPE_ARGUMENTS)
    return logger


class HorsiesFormatter(logging.Formatter):
    """``[HH:MM:SS] [component] [LEVEL] message``; the level is coloured if `use_colors`."""

    def __init__(self, use_colors: bool = False) -> None:
        super().__init__(datefmt="%H:%M:%S")
        self.use_colors = use_colors

    def format(self, record: logging.LogRecord) -> str:
        name = record.name
        component = name.removeprefix(ROOT_LOGGER_NAME + ".") if name != ROOT_LOGGER_NAME else name
        level = record.levelname
        if self.use_colors:
            color = _LEVEL_COLORS.get(record.levelno)
            if color is not None:
                level = f"\x1b[{color}m{level}\x1b[0m"
        text = f"[{self.formatTime(record, self.datefmt)}] [{component}] [{level}] "
        text += record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


class _HorsiesHandler(logging.StreamHandler[TextIO]):
    """Stream handler installed by `configure_logging`.

    With no explicit stream it writes to whatever `sys.stdout` is at emit time, so output replaced
    later (test capture, daemonising) is followed.
    """

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream if stream is not None else sys.stdout)
        self._follow_stdout = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stdout:
            self.stream = sys.stdout
        formatter = self.formatter
        if isinstance(formatter, HorsiesFormatter):
            formatter.use_colors = colors_enabled(self.stream)
        super().emit(record)


def _coerce_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    value = logging.getLevelNamesMapping().get(name)
    if value is None:
        raise ValueError(
            f"unknown log level {level!r}; use one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
        )
    return value


def configure_logging(level: str | int, *, stream: TextIO | None = None) -> None:
    """Send the library's logs to stdout (or `stream`) at `level`; safe to call again.

    Installs exactly one handler on the ``horsies`` logger (replacing one installed earlier by this
    function) and stops propagation to the root logger, so records are not printed twice when the
    application configures logging too. Colours follow the same rules as error rendering
    (`HORSIES_FORCE_COLOR`, `NO_COLOR`, TTY detection).
    """
    numeric = _coerce_level(level)
    logger = logging.getLogger(ROOT_LOGGER_NAME)
    for existing in list(logger.handlers):
        if isinstance(existing, _HorsiesHandler):
            logger.removeHandler(existing)
            existing.close()
    handler = _HorsiesHandler(stream)
    handler.setFormatter(HorsiesFormatter())
    logger.addHandler(handler)
    logger.setLevel(numeric)
    logger.propagate = False
