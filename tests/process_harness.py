"""Real subprocesses for the end-to-end tests (workers, schedulers): one logged process class,
one bounded wait, and runs of a command line to completion (``run_python``, ``run_horsies``),
shared by every test directory (pytest puts ``tests/`` on ``sys.path``).

A process runs with ``cwd`` at the repository root and its output in a log file (never a pipe
that could fill up). Every wait is bounded and polls a condition; ``reap`` stops only the process
started here (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

ROOT = Path(__file__).resolve().parents[1]


def wait_until(
    condition: Callable[[], Any], timeout: float, message: str = "condition", interval: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns a truthy value (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def private_and_resident_kib(pid: int) -> tuple[int, int]:
    """Pages only process ``pid`` maps, and all it maps (KiB), from ``/proc/<pid>/smaps_rollup``."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            value = rest.split()
            if len(value) == 2 and value[1] == "kB":
                fields[name] = int(value[0])
    return fields["Private_Clean"] + fields["Private_Dirty"], fields["Rss"]


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus ``extra``, unbuffered, without send suppression, and in
    the text log format the tests read (whatever the developer's shell exports)."""
    env = {**os.environ, **extra, "PYTHONUNBUFFERED": "1"}
    env.pop("TASKLIB_SUPPRESS_SENDS", None)
    if "HORSIES_LOG_FORMAT" not in extra:
        env.pop("HORSIES_LOG_FORMAT", None)
    return env


_STYLE_ENV = (
    "HORSIES_FORCE_COLOR",
    "TASKLIB_SUPPRESS_SENDS",
    "HORSIES_VERBOSE",
    "HORSIES_LOG_FORMAT",
)


def run_python(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path = ROOT, timeout: float = 90.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python <args>`` to completion (bounded by ``timeout``), its output captured as text.

    ``env`` is the whole environment of the process (default: this process's)."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=None if env is None else dict(env),
        check=False,
    )


def run_horsies(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m horsies <args>`` to completion with plain output: no colours
    (``NO_COLOR``), no send suppression or verbose mode inherited from this process; ``env`` is
    added to this process's environment."""
    plain = {key: value for key, value in os.environ.items() if key not in _STYLE_ENV}
    return run_python(
        "-m", "horsies", *args, env={**plain, "NO_COLOR": "1", **(env or {})}, cwd=cwd
    )


class LoggedProcess:
    """One subprocess started by a test, its output in ``log_path`` (its stderr in
    ``stderr_path`` instead, when given)."""

    kind = "process"
    """What it is, for failure messages."""

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        stderr_path: Path | None = None,
        cwd: Path = ROOT,
        new_session: bool = False,
    ) -> None:
        self.log_path = log_path
        self.stderr_path = stderr_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in reap()
        self._err = None if stderr_path is None else open(stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT if self._err is None else self._err,
            start_new_session=new_session,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        """Everything written so far: stdout, then stderr when that has a file of its own."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return text + self.errors()

    def errors(self) -> str:
        """What stderr got so far, when it has a file of its own (else "")."""
        if self.stderr_path is None:
            return ""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    ready_text = " ready: "
    """What the process prints once it is ready (``wait_ready``)."""

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_output(self.ready_text, timeout)

    def wait_output(self, text: str, timeout: float = 30.0) -> None:
        """Wait until ``text`` appears in the log (fails early if the process exits first)."""

        def seen() -> bool:
            if text in self.output():
                return True
            if not self.alive:
                raise AssertionError(
                    f"{self.kind} exited with {self.proc.returncode} before printing {text!r}:\n"
                    f"{self.output()}"
                )
            return False

        try:
            wait_until(seen, timeout, repr(text))
        except AssertionError:
            print(self.output())
            raise

    def send_signal(self, signum: int) -> None:
        if self.alive:
            self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(self.output())
            raise

    def reap(self) -> None:
        """Stop the process if it still runs (SIGTERM, then SIGKILL) and close the log."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        if self._err is not None:
            self._err.close()


ProcessT = TypeVar("ProcessT", bound=LoggedProcess)


class StartedProcesses(Generic[ProcessT]):
    """The processes one fixture started, each with its own log file in ``log_dir``; teardown
    (``reap_all``) stops every one of them and nothing else."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._started: list[ProcessT] = []

    def next_log(self, kind: str) -> Path:
        """The log file of the next process: ``<kind>-<n>.log``."""
        return self.log_dir / f"{kind}-{len(self._started)}.log"

    def add(self, process: ProcessT, *, ready: bool) -> ProcessT:
        """Keep ``process`` for teardown and, with ``ready``, wait until it is ready."""
        self._started.append(process)
        if ready:
            process.wait_ready()
        return process

    def reap_all(self) -> None:
        for process in self._started:
            process.reap()
