"""Stopping a long-running service (the worker, the scheduler) on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Generator

__all__ = ["stop_on_signals"]


@contextlib.contextmanager
def stop_on_signals(
    loop: asyncio.AbstractEventLoop, request_stop: Callable[[], None], *, install: bool = True
) -> Generator[None]:
    """Call ``request_stop`` on ``loop`` for SIGTERM and SIGINT while the block runs (nothing when
    ``install`` is False); the previous handling comes back when it ends.

    A signal the loop cannot handle (not the main thread, a platform without loop signal handlers)
    keeps its default handling.
    """
    installed: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT) if install else ():
        try:
            loop.add_signal_handler(signum, request_stop)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
