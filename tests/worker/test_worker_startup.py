"""Worker start-up bounds: a start-up slower than its limit fails and cleans up, a child that
cannot start aborts the run; with a stand-in broker (no database)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from horsies.config import PostgresConfig
from horsies.workflows.store.hooks import WORKFLOW_STORE
from horsies_worker.children import ChildStartError
from horsies_worker.config import WorkerConfig
from horsies_worker.run import locator_for_app
from horsies_worker.worker import Worker
from worker_slow_app import app as slow_app

HERE = os.path.dirname(os.path.abspath(__file__))


class StubBroker:
    """Just enough broker for start-up and shutdown."""

    config = PostgresConfig(database_url="postgresql+psycopg://u:p@localhost:1/unused")
    workflows = WORKFLOW_STORE

    def __init__(self) -> None:
        self.closed = False

    async def ensure_schema_initialized(self) -> None:
        return None

    async def close_async(self) -> None:
        self.closed = True


@pytest.mark.timeout(60)
async def test_startup_exceeding_the_limit_raises_and_cleans_up() -> None:
    config = WorkerConfig(
        locator=os.path.join(HERE, "worker_slow_app.py") + ":app",
        processes=1,
        startup_timeout_s=1.0,
        loglevel="WARNING",
    )
    broker = StubBroker()
    worker = Worker(slow_app, config, broker=broker, install_signal_handlers=False)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="Worker startup timeout"):
        await worker.run()
    # The sleeping child was terminated rather than waited for.
    assert time.monotonic() - started < 10
    assert broker.closed


async def test_child_start_failure_aborts_run() -> None:
    config = WorkerConfig(locator="no_such_module_xyz:app", processes=1, loglevel="WARNING")
    broker = StubBroker()
    worker = Worker(slow_app, config, broker=broker, install_signal_handlers=False)  # type: ignore[arg-type]
    with pytest.raises(ChildStartError, match="no_such_module_xyz"):
        await asyncio.wait_for(worker.run(), 30)
    assert broker.closed


def test_locator_for_a_module_level_app() -> None:
    assert locator_for_app(slow_app) == ("worker_slow_app:app", [])
