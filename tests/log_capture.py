"""Log records captured as text while a block runs, for tests that check what is (or is never)
logged: ``with captured_logs("", "horsies") as lines: ...``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


class _TextHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def captured_logs(*names: str) -> Iterator[list[str]]:
    """Every record (DEBUG and up) of the loggers ``names`` (``""`` is the root logger) as
    ``"<logger> <LEVEL> <message>"``; their levels and propagation are restored afterwards."""
    handler = _TextHandler()
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        for logger, (level, propagate) in zip(loggers, saved, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
