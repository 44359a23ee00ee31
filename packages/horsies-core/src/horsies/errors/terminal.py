"""Terminal decisions for error output: whether to use colours, and the palette."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from horsies import env

__all__ = ["Palette", "colors_enabled"]


def colors_enabled(stream: TextIO | None = None) -> bool:
    """Decide whether terminal colours should be used when writing to `stream` (default: stderr).

    `HORSIES_FORCE_COLOR` in {1, true, yes} forces colours on; otherwise a set `NO_COLOR` turns them
    off; otherwise colours are used only when the stream is a TTY.
    """
    if env.flag(env.FORCE_COLOR):
        return True
    if env.NO_COLOR in os.environ:
        return False
    target = sys.stderr if stream is None else stream
    if target is None:  # pyright: ignore[reportUnnecessaryComparison]  # sys.stderr is None under pythonw
        return False
    try:
        return target.isatty()
    except (AttributeError, ValueError, OSError):
        # Closed or exotic streams: plain text is always safe.
        return False


class Palette:
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
