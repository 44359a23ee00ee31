"""A real ``horsies worker`` for a test: a subprocess started for an app, ready when this returns,
stopped with SIGTERM then SIGKILL. Every wait is bounded."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Final

from horsies.broker.postgres import PostgresBroker
from horsies.broker.sql import testing as testing_sql
from horsies.broker.steps import Query, run_query
from horsies.config import PostgresConfig
from horsies.errors import ConfigurationError, ErrorCode

__all__ = [
    "READY_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "WorkerProcess",
    "WorkerStartError",
    "start_worker",
]

READY_TIMEOUT_S: Final = 60.0
"""Default bound of a worker's start (its children import the app)."""
STOP_TIMEOUT_S: Final = 20.0
"""Default time a worker gets after SIGTERM before it is killed."""
_KILL_WAIT_S: Final = 10.0
_POLL_S: Final = 0.05
_OUTPUT_TAIL_CHARS: Final = 4000
_CLOCK_SLACK: Final = timedelta(seconds=1)
"""How much earlier than our start a worker may say it started (clock resolution, rounding)."""


class WorkerStartError(RuntimeError):
    """A worker exited, or did not become ready in time; the message ends with its output."""


class WorkerProcess:
    """One ``horsies worker`` subprocess (``python -m horsies worker <locator> ...``).

    Its output (stdout and stderr) goes to ``log_path``, never to a pipe that could fill up.
    Prefer :func:`start_worker`, which also waits until it is ready; use as a context manager,
    or call :meth:`stop`.
    """

    def __init__(
        self,
        locator: str,
        *,
        processes: int = 1,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        """Start the worker (without waiting for it). ``env`` is added to this process's
        environment; ``cwd`` (default: this process's) is where the locator's module is found."""
        if importlib.util.find_spec("horsies_worker") is None:
            raise ConfigurationError(
                "start_worker runs `horsies worker`, and the worker package is not installed",
                code=ErrorCode.TESTING_HELPER_UNAVAILABLE,
                help_text="pip install horsies-worker (in the environment the tests run in)",
            )
        self.locator = locator
        self.command: list[str] = [
            sys.executable,
            "-m",
            "horsies",
            "worker",
            locator,
            "--processes",
            str(processes),
            *args,
        ]
        """The command line the worker runs."""
        self._own_log = log_path is None
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix="horsies-worker-", suffix=".log")
            os.close(handle)
            log_path = name
        self.log_path = Path(log_path)
        """Where its output goes (a temporary file, removed by :meth:`stop`, unless given)."""
        self.started_at = datetime.now(UTC)
        self._log: IO[bytes] = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                self.command,
                cwd=cwd,
                env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            self._log.close()
            if self._own_log:
                self.log_path.unlink(missing_ok=True)
            raise

    @property
    def pid(self) -> int:
        """The worker main process's pid."""
        return self.proc.pid

    @property
    def alive(self) -> bool:
        """True until the process has exited."""
        return self.proc.poll() is None

    def output(self) -> str:
        """Everything the worker has written so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, database_url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until the worker is up in the database of ``database_url`` (the one its app
        uses): its children are ready and it listens for tasks, as its first row in
        ``horsies_worker_states`` says.

        Raises:
            WorkerStartError: the worker exited first, or ``timeout_s`` passed (the worker is
                stopped then).
        """
        query = Query(
            testing_sql.WORKER_STATE_EXISTS_FOR_PROCESS,
            {
                "pid": self.pid,
                "hostname": socket.gethostname(),
                "not_before": self.started_at - _CLOCK_SLACK,
            },
        )
        config = PostgresConfig(database_url=database_url, pool_size=1, max_overflow=0)
        broker = PostgresBroker(config)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if not self.alive:
                    raise self._start_error(f"exited with status {self.proc.returncode}")
                res = broker.execute(run_query(query), action="worker_ready")
                if res.rows and res.rows[0][0]:
                    return
                if time.monotonic() > deadline:
                    error = self._start_error(
                        f"was not ready in {config.masked_url} after {timeout_s:g}s (does its "
                        "app use that database?)"
                    )
                    self.stop()
                    raise error
                time.sleep(_POLL_S)
        finally:
            broker.close()

    def _start_error(self, what: str) -> WorkerStartError:
        tail = self.output()[-_OUTPUT_TAIL_CHARS:]
        return WorkerStartError(f"worker {self.locator} (pid {self.pid}) {what}; output:\n{tail}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Stop the worker: SIGTERM (it finishes or hands back its tasks, see docs/worker.md),
        then SIGKILL if it still runs after ``timeout_s``. Returns its exit status. Idempotent."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=_KILL_WAIT_S)
        if not self._log.closed:
            self._log.close()
            if self._own_log:
                self.log_path.unlink(missing_ok=True)
        return self.proc.returncode

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive else f"exited {self.proc.returncode}"
        return f"<WorkerProcess {self.locator} pid={self.pid} {state}>"


def start_worker(
    locator: str,
    *,
    database_url: str,
    env: Mapping[str, str] | None = None,
    processes: int = 1,
    args: Sequence[str] = (),
    cwd: str | Path | None = None,
    log_path: str | Path | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> WorkerProcess:
    """Start ``horsies worker <locator> --processes <processes> <args>`` and wait until it is
    ready; stop it with :meth:`WorkerProcess.stop` (or use it in a ``with`` block).

    The worker imports the app the way ``horsies worker`` does, so the app finds its database
    the way it does in production: pass it in ``env`` (added to this process's environment),
    for an app that reads ``DATABASE_URL``: ``env={"DATABASE_URL": url}``. ``database_url`` is the
    same database, where readiness is read. ``cwd`` is where the locator's module is found.

    Raises:
        WorkerStartError: the worker exited, or was not ready within ``ready_timeout_s``.
        ConfigurationError: E213 when horsies-worker is not installed.
    """
    worker = WorkerProcess(
        locator, processes=processes, args=args, env=env, cwd=cwd, log_path=log_path
    )
    try:
        worker.wait_ready(database_url, ready_timeout_s)
    except BaseException:
        worker.stop()
        raise
    return worker
