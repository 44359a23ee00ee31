"""``horsies worker --reload``: a development supervisor that runs the worker as a subprocess and
starts a new one whenever a Python file of the app changes.

The worker is stopped as on Ctrl+C (no new claims, unstarted claims back to PENDING, running tasks
finish within ``--shutdown-timeout``) before the new one starts, so a reload loses nothing. It runs
in a process group of its own: a Ctrl+C in the terminal reaches only the supervisor, which passes
it on once; a second Ctrl+C is passed on too and stops running tasks at once, as it does for a
worker run directly. The worker stops (as on SIGTERM) if the supervisor dies without stopping it.

Watching needs `watchfiles` (``pip install "horsies-worker[reload]"``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Final

from horsies import env
from horsies.errors import ConfigurationError, ErrorCode
from horsies.locator import AppLocation
from horsies.logs import get_logger
from horsies.module_files import is_file_locator

from horsies_worker.parent_death import signal_when_parent_dies

__all__ = ["ReloadSupervisor", "follow_supervisor", "require_watchfiles", "watched_directories"]

logger = get_logger("worker.reload")

_INSTALL_HINT: Final = 'pip install "horsies-worker[reload]"'
_TICK_MS: Final = 250
"""How often the watch returns without a change, to notice a worker that exited by itself."""
_STOP_GRACE_S: Final = 60.0
"""Beyond ``--shutdown-timeout``: the worker writes its results and closes before it exits."""
_NAMES_SHOWN: Final = 5


def require_watchfiles() -> None:
    """Check that `watchfiles` can be imported; ConfigurationError (E210) saying how to install it
    otherwise."""
    try:
        import watchfiles  # the reload extra, optional
    except ImportError as exc:
        error = ConfigurationError(
            "--reload needs the watchfiles package, which is not installed",
            code=ErrorCode.CLI_COMMAND_UNAVAILABLE,
        ).with_location(None)
        raise error.with_help(f"{_INSTALL_HINT}, or run the worker without --reload") from exc
    del watchfiles  # run() imports what it uses


def follow_supervisor() -> None:
    """In a worker started by the supervisor: stop as on SIGTERM once the supervisor is gone (exit
    at once if it is gone already). The variable is removed, so processes the worker starts do
    not inherit it."""
    value = os.environ.pop(env.RELOAD_SUPERVISOR_PID, "")
    if value.isdigit() and not signal_when_parent_dies(signal.SIGTERM, int(value)):
        sys.exit(1)


def _app_directory(location: AppLocation) -> Path | None:
    module_part = location.canonical_locator.rpartition(":")[0]
    if is_file_locator(module_part) or os.path.isabs(module_part):
        return Path(module_part).resolve().parent
    module = sys.modules.get(module_part)
    file = getattr(module, "__file__", None)
    return Path(file).resolve().parent if isinstance(file, str) else None


def watched_directories(location: AppLocation, cwd: Path) -> list[Path]:
    """The current directory and the app module's directory, leaving out one inside the other."""
    chosen: list[Path] = []
    for candidate in (cwd.resolve(), _app_directory(location)):
        if candidate is None or any(candidate.is_relative_to(kept) for kept in chosen):
            continue
        chosen = [kept for kept in chosen if not kept.is_relative_to(candidate)]
        chosen.append(candidate)
    return chosen


def _describe(paths: Iterable[str]) -> str:
    names = sorted({os.path.relpath(path) for path in paths})
    shown = ", ".join(names[:_NAMES_SHOWN])
    more = len(names) - _NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


class ReloadSupervisor:
    """Runs ``command`` (a ``horsies worker`` command line) and runs it anew when a Python file
    under ``directories`` changes, until SIGINT/SIGTERM. Call :meth:`run` on the main thread."""

    def __init__(
        self, command: Sequence[str], directories: Sequence[Path], *, shutdown_timeout_s: float
    ) -> None:
        self.command = list(command)
        self.directories = list(directories)
        self.stop_timeout_s = shutdown_timeout_s + _STOP_GRACE_S
        self._stopping = threading.Event()
        self._signals = 0
        self._worker: subprocess.Popen[bytes] | None = None
        self._signalled = False
        """Whether the current worker has been asked to stop."""
        self._exit_reported = False

    def run(self) -> None:
        """Supervise until a signal; return once the last worker has exited."""
        require_watchfiles()
        # The reload extra, checked just above.
        from watchfiles import PythonFilter, watch

        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            logger.info(
                "reload_watching: %s (Python files); the worker restarts when one changes",
                ", ".join(map(str, self.directories)),
            )
            changes_seen = watch(
                *self.directories,
                watch_filter=PythonFilter(),
                stop_event=self._stopping,
                rust_timeout=_TICK_MS,
                yield_on_timeout=True,
                raise_interrupt=False,
            )
            # The worker starts once the watch is set up (its first return), so that no change
            # made after the start can go unseen.
            for changes in changes_seen:
                if self._stopping.is_set():
                    break
                if self._worker is None:
                    self._start()
                    continue
                self._note_exit()
                if changes:
                    logger.info(
                        "reload_restart: %s changed; stopping the worker and starting it again",
                        _describe(path for _, path in changes),
                    )
                    self._stop_worker(signal.SIGTERM)
                    if not self._stopping.is_set():
                        self._start()
        finally:
            self._stop_worker(signal.SIGTERM)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        logger.info("reload_stopped: the worker has exited")

    def _start(self) -> None:
        environment = {**os.environ, env.RELOAD_SUPERVISOR_PID: str(os.getpid())}
        # A process group of its own: a terminal's Ctrl+C reaches the supervisor only, which
        # passes it on once; the worker would take a second SIGINT as "stop running tasks now".
        self._worker = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, env=environment, process_group=0
        )
        self._signalled = False
        self._exit_reported = False
        logger.info("reload_started: worker pid %s", self._worker.pid)

    def _note_exit(self) -> None:
        worker = self._worker
        if worker is None or self._exit_reported:
            return
        status = worker.poll()
        if status is not None:
            self._exit_reported = True
            logger.warning(
                "reload_worker_exited: the worker exited with status %s; it starts again when a "
                "file changes",
                status,
            )

    def _stop_worker(self, signum: int) -> None:
        """Ask the worker to stop (unless it was already asked) and wait for its exit, bounded:
        a worker still there after the shutdown timeout and a grace period is killed."""
        worker = self._worker
        if worker is None:
            return
        if not self._signalled and worker.poll() is None:
            self._signalled = True
            worker.send_signal(signum)
        try:
            worker.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            logger.error(
                "reload_kill: the worker did not exit within %gs of the stop request; killing it "
                "(a reaper recovers its tasks)",
                self.stop_timeout_s,
            )
            worker.kill()
            worker.wait(timeout=_STOP_GRACE_S)
        self._worker = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self._signals += 1
        self._stopping.set()
        worker = self._worker
        if worker is None or worker.poll() is not None:
            return
        if self._signalled and self._signals == 1:
            # Already stopping for a reload, gracefully: the first request only cancels the
            # restart. A second one is passed on and stops running tasks.
            return
        self._signalled = True
        worker.send_signal(signum)
