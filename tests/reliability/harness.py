"""Real ``horsies worker`` processes of the ledger app, each leading its own process group so a
test can SIGKILL a whole worker tree."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from process_harness import LoggedProcess, child_env

from tests.reliability.apps.ledger_app import ENV_URL

__all__ = ["APP_LOCATOR", "LedgerWorker", "StartWorker"]

APP_LOCATOR = "tests.reliability.apps.ledger_app:app"


class LedgerWorker(LoggedProcess):
    """``horsies worker`` of the ledger app, leader of its own process group."""

    kind = "worker"

    def __init__(
        self, database_url: str, log_path: Path, args: list[str], env: Mapping[str, str]
    ) -> None:
        super().__init__(
            [sys.executable, "-m", "horsies", "worker", APP_LOCATOR, *args],
            child_env({ENV_URL: database_url, **env}),
            log_path,
            new_session=True,
        )

    def kill_group(self) -> None:
        """SIGKILL the worker and every child it started (the whole process group)."""
        if self.alive:
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def reap(self) -> None:
        super().reap()
        with contextlib.suppress(ProcessLookupError):  # children a killed worker left behind
            os.killpg(self.pid, signal.SIGKILL)


StartWorker = Callable[..., LedgerWorker]
