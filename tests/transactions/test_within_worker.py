"""A real worker runs what was sent within a caller's transaction exactly once after the commit,
for every kind of connection, and nothing of a rolled-back transaction."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from horsies import Horsies
from process_harness import LoggedProcess, StartedProcesses, child_env
from sides import ASYNC_KINDS, SYNC_KINDS, AsyncSide, Side

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GET_MS = 30_000


class Worker(LoggedProcess):
    kind = "worker"


@pytest.fixture(scope="module")
def worker(
    app: Horsies, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    del app  # the app fixture installed the schema and the orders table
    started = StartedProcesses[Worker](tmp_path_factory.mktemp("tx-worker"))
    command = [sys.executable, "-m", "horsies", "worker",
               "tests.transactions.worker_app:app", "--processes", "2"]  # fmt: skip
    env = child_env({"HORSIES_TX_DATABASE_URL": database_url})
    yield started.add(Worker(command, env, started.next_log("worker")), ready=True)
    started.reap_all()


def runs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_a_committed_send_runs_once_and_a_rolled_back_one_never(
    kind: str, worker: Worker, app: Horsies, open_side: Callable[[str], Side], tmp_path: Path
) -> None:
    note = app.tasks["tx.note"]
    log = tmp_path / "runs.log"
    dropped = open_side(kind)
    note.within(dropped.within).send(str(log), "dropped")
    dropped.rollback()
    kept = open_side(kind)
    handle = note.within(kept.within).send(str(log), "kept")
    kept.commit()
    assert handle.get(timeout_ms=GET_MS).unwrap() == "kept"
    # A task sent after the rolled-back one, on the same worker, ran and finished: had the
    # rolled-back one existed, it would have run by now too (FIFO within a priority).
    after = note.send(str(log), "after")
    assert after.get(timeout_ms=GET_MS).unwrap() == "after"
    assert sorted(runs(log)) == ["after", "kept"]
    assert worker.alive


@pytest.mark.parametrize("kind", ASYNC_KINDS)
async def test_an_async_committed_send_runs_once(
    kind: str, worker: Worker, app: Horsies, open_async_side: Callable[[str], Any], tmp_path: Path
) -> None:
    note = app.tasks["tx.note"]
    log = tmp_path / "runs.log"
    side: AsyncSide = await open_async_side(kind)
    handle = await note.within(side.within).send_async(str(log), "kept")
    await side.commit()
    assert (await handle.get_async(timeout_ms=GET_MS)).unwrap() == "kept"
    assert runs(log) == ["kept"]
