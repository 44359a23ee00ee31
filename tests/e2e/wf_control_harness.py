"""Helpers of the end-to-end tests of ``tests.e2e.apps.wf_control`` (``test_e2e_wf_c*.py``): the
gate files that hold nodes running, and queries and bounded waits on workflow and node rows.

The ``gates`` fixture (this folder's ``conftest``) gives each test a ``Gates`` directory and opens
every gate at teardown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from horsies.codec import task_result_from_json
from horsies.results import TaskError, TaskResult
from process_harness import wait_until
from wf_apps import wf_control as wf

GET_MS = 30_000
WAIT_S = 30.0


class Gates:
    """The files of the gate tasks of one test (see ``wf_control.gate``)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory

    @property
    def path(self) -> str:
        return str(self.dir)

    def sub(self, name: str) -> Gates:
        """A gates directory of its own (one per workflow when a test runs several)."""
        return Gates(self.dir / name)

    def runs(self, name: str) -> int:
        """How many times the gate (or record node) ``name`` started."""
        path = self.dir / f"{name}.runs"
        if not path.exists():
            return 0
        return len([line for line in path.read_text().splitlines() if line.strip()])

    def wait_started(self, *names: str, timeout: float = WAIT_S) -> None:
        for name in names:
            wait_until(lambda n=name: self.runs(n) >= 1, timeout, f"gate {name} to start")

    def release(self, *names: str) -> None:
        for name in names:
            (self.dir / f"{name}.open").touch()

    def release_all(self) -> None:
        """Open every gate below this directory (teardown: never leave a child blocked)."""
        for directory in [self.dir, *(p for p in self.dir.rglob("*") if p.is_dir())]:
            (directory / wf.ALL_GATES).touch()


def node_result(row: dict[str, Any]) -> TaskResult[Any, TaskError]:
    assert row["result"] is not None, row
    return task_result_from_json(row["result"])
