"""Terminal decisions for error output: whether to use colours, and the palette."""

from __future__ import annotations

import os
import sys
from typing import Final, Literal, TextIO, TypeAlias

from horsies import env

__all__ = ["Palette", "Style", "colors_enabled"]

Style: TypeAlias = Literal["header", "blue", "cyan", "red", "bold_blue", "bold_green"]
"""The styles of an error report: its header, the gutter and arrows, locations, carets, labels."""

_SGR: Final[dict[Style, str]] = {
    "header": "1;31",
    "blue": "34",
    "cyan": "36",
    "red": "31",
    "bold_blue": "1;34",
    "bold_green": "1;32",
}


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

    def paint(self, style: Style, text: str) -> str:
        """``text`` in ``style``; unchanged when colours are off."""
        if not self.enabled or not text:
            return text
        return f"\x1b[{_SGR[style]}m{text}\x1b[0m"
