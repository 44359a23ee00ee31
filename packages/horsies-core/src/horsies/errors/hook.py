"""The uncaught-exception hook: a `HorsiesError` is printed as a diagnostic, not a traceback."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

from horsies import env
from horsies.errors.exceptions import HorsiesError
from horsies.errors.terminal import colors_enabled

__all__ = ["install_exception_hook"]

_ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], Any]

_HOOK_MARKER: Final = "_horsies_exception_hook"


def _make_hook(previous: _ExceptHook) -> _ExceptHook:
    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if not isinstance(exc, HorsiesError) or env.flag(env.PLAIN_ERRORS):
            previous(exc_type, exc, tb)
            return
        stream = sys.stderr
        stream.write(exc.format_rust_style(use_colors=colors_enabled(stream)) + "\n")
        if env.flag(env.VERBOSE):
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
