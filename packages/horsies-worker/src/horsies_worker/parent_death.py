"""Tying a process's life to its parent's (Linux ``prctl(PR_SET_PDEATHSIG)``): a worker child dies
with the fork server that forked it, the fork server with its worker, and a worker run by
``horsies worker --reload`` stops with its supervisor."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Final

__all__ = ["signal_when_parent_dies"]

_PR_SET_PDEATHSIG: Final = 1


def signal_when_parent_dies(signum: int, parent_pid: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent dies; False if the parent,
    ``parent_pid``, is already gone (it may have died before the request took effect).

    Best effort: on other platforms only the check is made.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes  # prctl exists only on Linux

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    return not parent_pid or os.getppid() == parent_pid
