"""Library loggers.

Every component logs through a child of the ``horsies`` logger (``get_logger("broker")`` gives
``horsies.broker``), so applications can tune the whole library with one logger. The library never
adds handlers on import; the CLI commands call `configure_logging()` once at start-up, in the text
format (``[date time] [component] [LEVEL] message`` on stdout) or as JSON lines (one object per
record on stderr, see `JsonFormatter`).

What a record quotes (task and queue names, error messages: its arguments) is escaped: a newline,
a carriage return or a bidirectional override in a task name cannot forge or hide log lines,
whatever handler and formatter the application uses.

A record's *action* is the ``snake_case`` word its message template starts with
(``"task_failed: %s ..."``), or an ``action`` passed in ``extra``; a record about one task
carries its id and name in ``extra`` (`task_fields`). The text format shows them in the message;
JSON lines give them fields of their own.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, Literal, TextIO, cast, get_args

from horsies.errors import colors_enabled

__all__ = [
    "LOG_FORMATS",
    "ROOT_LOGGER_NAME",
    "HorsiesFormatter",
    "JsonFormatter",
    "LogFormat",
    "TextBlock",
    "configure_logging",
    "configured_log_format",
    "escape_controls",
    "get_logger",
    "set_log_context",
    "task_fields",
]

ROOT_LOGGER_NAME: Final = "horsies"

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = get_args(LogFormat)
"""The formats `configure_logging` writes (``--log-format`` of the worker and the scheduler)."""

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
    arguments filter leaves it as it is. JSON lines leave it out of the message and give its
    text (``source``) as the field ``traceback``."""

    source: str
    """The text as given, before escaping and indenting."""

    def __new__(cls, text: str) -> TextBlock:
        lines = (f"    {escape_controls(line)}" for line in text.rstrip("\n").splitlines())
        block = super().__new__(cls, "\n" + "\n".join(lines))
        block.source = text.rstrip("\n")
        return block


def _escaped(value: object) -> object:
    if isinstance(value, TextBlock) or not isinstance(value, str):
        return value
    return escape_controls(value)


class _EscapeArguments(logging.Filter):
    """Escapes the string arguments of the library's log records (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # JSON lines escape every field themselves: they format from the arguments as given.
        record.__dict__[_RAW_ARGS] = args
        if isinstance(args, tuple):
            record.args = tuple(_escaped(a) for a in args)
        elif isinstance(args, Mapping):
            record.args = {key: _escaped(value) for key, value in args.items()}
        return True


_ESCAPE_ARGUMENTS: Final = _EscapeArguments()
_RAW_ARGS: Final = "_horsies_raw_args"


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


def task_fields(task_id: str, task_name: str | None = None) -> dict[str, object]:
    """The ``extra=`` of a record about one task: JSON lines show them as ``task_id`` and
    ``task_name``."""
    fields: dict[str, object] = {"task_id": task_id}
    if task_name is not None:
        fields["task_name"] = task_name
    return fields


_context: dict[str, object] = {}


def set_log_context(**fields: object) -> None:
    """Fields every JSON record of this process carries from now on (``role``, ``worker_id``),
    replacing those set before."""
    _context.clear()
    _context.update(fields)


class HorsiesFormatter(logging.Formatter):
    """``[YYYY-MM-DD HH:MM:SS] [component] [LEVEL] message`` (local time); the level is coloured
    if `use_colors`."""

    def __init__(self, use_colors: bool = False) -> None:
        super().__init__(datefmt="%Y-%m-%d %H:%M:%S")
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


_ACTION: Final = re.compile(r"([a-z][a-z0-9_]*): ")
# Attributes every record has; whatever else a record holds came in through ``extra``.
_RECORD_ATTRIBUTES: Final = frozenset(
    (*vars(logging.LogRecord("", 0, "", 0, None, None, None)), "message", "asctime", "taskName")
)
_HOSTNAME: Final = socket.gethostname()


def _action_of(record: logging.LogRecord) -> str | None:
    given = getattr(record, "action", None)
    if isinstance(given, str):
        return given
    # The template, not the formatted message: text a task quotes cannot name an action.
    found = _ACTION.match(record.msg) if isinstance(record.msg, str) else None
    return found.group(1) if found else None


def _split_blocks(record: logging.LogRecord) -> tuple[str, list[str]]:
    """The record's message, from its arguments before escaping and without its `TextBlock`
    arguments, and the texts of those blocks."""
    args = cast("object", record.__dict__.get(_RAW_ARGS, record.args))
    if not args:
        return record.getMessage(), []
    blocks: list[str] = []
    if isinstance(args, tuple):
        items = cast("tuple[object, ...]", args)
        blocks = [a.source for a in items if isinstance(a, TextBlock)]
        args = tuple("" if isinstance(a, TextBlock) else a for a in items)
    return str(record.msg) % args, blocks


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Fields: ``timestamp`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message``, then
    when the record has them ``action``, ``task_id``, ``task_name`` and other ``extra`` values,
    ``pid`` and ``hostname``, the process's context (`set_log_context`), ``traceback`` (the
    record's exception and `TextBlock` arguments, as text) and ``stack``. Every character outside
    printable ASCII is written as a JSON escape, so no field can break the line, move the cursor
    of a terminal that shows it, or reorder what a reader sees.
    """

    def format(self, record: logging.LogRecord) -> str:
        message, tracebacks = _split_blocks(record)
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        action = _action_of(record)
        if action is not None:
            entry["action"] = action
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_") and key not in entry:
                entry[key] = value
        entry["pid"] = record.process
        entry["hostname"] = _HOSTNAME
        for key, value in _context.items():
            entry.setdefault(key, value)
        if record.exc_info:
            tracebacks.append(self.formatException(record.exc_info))
        elif record.exc_text:
            tracebacks.append(record.exc_text)
        if tracebacks:
            entry["traceback"] = "\n".join(tracebacks)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=True, default=str)


class _HorsiesHandler(logging.StreamHandler[TextIO]):
    """Stream handler installed by `configure_logging`.

    With no explicit stream it writes to whatever `sys.stdout` (or `sys.stderr`) is at emit time,
    so output replaced later (test capture, daemonising) is followed.
    """

    def __init__(self, stream: TextIO | None, *, follow: Literal["stdout", "stderr"]) -> None:
        super().__init__(stream if stream is not None else getattr(sys, follow))
        self._follow = None if stream is not None else follow

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow is not None:
            self.stream = cast(TextIO, getattr(sys, self._follow))
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


def configured_log_format() -> LogFormat:
    """The format of the handler `configure_logging` installed in this process (``"text"``
    without one); a worker's child processes log in it too."""
    for handler in logging.getLogger(ROOT_LOGGER_NAME).handlers:
        if isinstance(handler, _HorsiesHandler) and isinstance(handler.formatter, JsonFormatter):
            return "json"
    return "text"


def configure_logging(
    level: str | int, *, stream: TextIO | None = None, log_format: str = "text"
) -> None:
    """Send the library's logs at `level` to `stream`, or by default: text to stdout, JSON lines
    (`log_format` ``"json"``) to stderr, where neither the banner nor what tasks print to stdout
    comes between them. Safe to call again.

    Installs exactly one handler on the ``horsies`` logger (replacing one installed earlier by this
    function) and stops propagation to the root logger, so records are not printed twice when the
    application configures logging too. Colours of the text format follow the same rules as error
    rendering (`HORSIES_FORCE_COLOR`, `NO_COLOR`, TTY detection).
    """
    numeric = _coerce_level(level)
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; use one of {', '.join(LOG_FORMATS)}")
    chosen: LogFormat = log_format
    logger = logging.getLogger(ROOT_LOGGER_NAME)
    for existing in list(logger.handlers):
        if isinstance(existing, _HorsiesHandler):
            logger.removeHandler(existing)
            existing.close()
    if chosen == "json":
        handler = _HorsiesHandler(stream, follow="stderr")
        handler.setFormatter(JsonFormatter())
    else:
        handler = _HorsiesHandler(stream, follow="stdout")
        handler.setFormatter(HorsiesFormatter())
    logger.addHandler(handler)
    logger.setLevel(numeric)
    logger.propagate = False
