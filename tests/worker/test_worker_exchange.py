"""The worker's hot path (hard-cap mode, no cluster-wide caps) in a real in-process ``Worker`` with
its children, against PostgreSQL: outcomes and claims share round trips, there is no CLAIMED phase,
and a claim whose reply was lost after its commit is requeued and still runs exactly once."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from async_wait import wait_until
from horsies.broker import BrokerError, ClaimedTask, EnqueueRequest, PostgresBroker, TaskOutcome
from horsies.broker.claims import AttemptKey
from horsies.broker.exchange import TaskExchange
from horsies.config import PostgresConfig
from horsies_worker.config import WorkerConfig
from horsies_worker.worker import Worker
from recovery_timing import fast_recovery
from worker_test_app import app

APP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_test_app.py")


class RecordingBroker(PostgresBroker):
    """A real broker that records the worker's calls and can lose one exchange reply."""

    def __init__(self, config: PostgresConfig, *, lose_first_start: bool = False) -> None:
        super().__init__(config)
        self.lose_first_start = lose_first_start
        self.lost: list[str] = []
        self.exchanges: list[tuple[int, int, Sequence[AttemptKey] | None]] = []
        self.other_calls: list[str] = []

    async def exchange_async(self, worker_id: str, hostname: str, **kwargs: Any) -> TaskExchange:
        outcomes: Sequence[TaskOutcome] = kwargs.get("outcomes", ())
        pids: Sequence[int] = kwargs.get("pids", ())
        self.exchanges.append((len(outcomes), len(pids), kwargs.get("keep_running")))
        exchange = await super().exchange_async(worker_id, hostname, **kwargs)
        if self.lose_first_start and exchange.started and not self.lost:
            # Committed on the server, but the reply never arrives.
            self.lost = [s.task.id for s in exchange.started]
            raise BrokerError("exchange failed: connection lost")
        return exchange

    async def claim_async(self, *args: Any, **kwargs: Any) -> list[ClaimedTask]:
        self.other_calls.append("claim_async")
        return await super().claim_async(*args, **kwargs)

    async def start_async(self, *args: Any, **kwargs: Any) -> set[AttemptKey]:
        self.other_calls.append("start_async")
        return await super().start_async(*args, **kwargs)


def completed(conninfo: str) -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM horsies_tasks WHERE status = 'COMPLETED'")
        return int((row.fetchone() or (0,))[0])


async def run_worker_until(
    broker: PostgresBroker, processes: int, condition: Callable[[], bool]
) -> None:
    config = WorkerConfig(
        locator=f"{APP_FILE}:app", processes=processes, loglevel="WARNING", poll_interval_s=0.2
    )
    worker = Worker(app, config, broker=broker, install_signal_handlers=False)
    run = asyncio.create_task(worker.run())
    try:
        await wait_until(condition)
    finally:
        worker.request_stop()
        await asyncio.wait_for(run, 60)


@pytest.mark.timeout(120)
async def test_outcomes_and_starts_share_round_trips_without_a_claimed_phase(
    database_url: str, clean_db: str, tmp_path: Path
) -> None:
    broker = RecordingBroker(PostgresConfig(database_url=database_url))
    log = tmp_path / "runs.log"
    await broker.enqueue_many_async(
        [EnqueueRequest("record", (str(log), f"t{i}")) for i in range(60)]
    )
    await run_worker_until(broker, 2, lambda: completed(clean_db) == 60)
    assert sorted(log.read_text().split()) == sorted(f"t{i}" for i in range(60))
    assert broker.other_calls == []  # never CLAIMED, never started separately
    # Most round trips wrote results and started the next tasks at once.
    both = [e for e in broker.exchanges if e[0] and e[1]]
    assert len(both) >= 20
    assert all(keep is None for _, _, keep in broker.exchanges)


@pytest.mark.timeout(120)
async def test_a_claim_whose_reply_was_lost_is_requeued_and_runs_once(
    database_url: str, clean_db: str, tmp_path: Path
) -> None:
    broker = RecordingBroker(PostgresConfig(database_url=database_url), lose_first_start=True)
    log = tmp_path / "runs.log"
    task_id = await broker.enqueue_async("record", (str(log), "only"))
    await run_worker_until(broker, 1, lambda: completed(clean_db) == 1)
    assert broker.lost == [task_id]
    assert log.read_text().split() == ["only"]  # ran exactly once
    # The next exchange after the failure reconciled (nothing else was tracked).
    keeps = [keep for _, _, keep in broker.exchanges if keep is not None]
    assert keeps[:1] == [[]]
    with psycopg.connect(clean_db, autocommit=True) as conn:
        row = conn.execute(
            "SELECT status, retry_count, result IS NOT NULL, attempt FROM horsies_tasks "
            "WHERE id = %s",
            (task_id,),
        ).fetchone()
    # Claimed twice (the lost claim, then the run): two attempts, still not a retry.
    assert row == ("COMPLETED", 0, True, 2)


@pytest.mark.timeout(120)
async def test_a_dead_childs_task_fails_at_once_without_waiting_for_a_wake_up(
    database_url: str, clean_db: str
) -> None:
    """A dead child in hard-cap mode: the WORKER_CRASHED outcome of a task whose child died is
    written at once, not at the next poll or when a replacement child is ready (neither comes
    here)."""
    broker = RecordingBroker(PostgresConfig(database_url=database_url))
    config = WorkerConfig(
        locator=f"{APP_FILE}:app", processes=1, loglevel="WARNING", poll_interval_s=60.0
    )
    worker = Worker(app, config, broker=broker, install_signal_handlers=False)
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 60)
        state = worker._state  # pyright: ignore[reportPrivateUsage]
        assert state is not None
        state.pool.stop_respawning()  # no replacement child, so no wake-up from one
        task_id = await broker.enqueue_async("hard_exit", (3,))

        def crashed() -> bool:
            with psycopg.connect(clean_db, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT status, result FROM horsies_tasks WHERE id = %s", (task_id,)
                ).fetchone()
            return row is not None and row[0] == "FAILED" and "WORKER_CRASHED" in row[1]

        await wait_until(crashed, 10)
    finally:
        worker.request_stop()
        await asyncio.wait_for(run, 60)


class SlowWriteBroker(PostgresBroker):
    """A real broker whose first outcome write takes ``delay_s`` (a slow or briefly unreachable
    database): the outcome stays unwritten in the worker meanwhile."""

    def __init__(self, config: PostgresConfig, delay_s: float) -> None:
        super().__init__(config)
        self.delay_s = delay_s
        self.delayed = False

    async def exchange_async(self, worker_id: str, hostname: str, **kwargs: Any) -> TaskExchange:
        if kwargs.get("outcomes") and not self.delayed:
            self.delayed = True
            await asyncio.sleep(self.delay_s)
        return await super().exchange_async(worker_id, hostname, **kwargs)


@pytest.mark.timeout(120)
async def test_a_finished_task_whose_outcome_is_not_written_yet_is_not_reaped(
    database_url: str, clean_db: str
) -> None:
    """The worker keeps beating for a task whose result it holds but has not written yet, so a
    reaper does not fail it as WORKER_CRASHED (nor retry a task that completed)."""
    recovery = fast_recovery(stale_ms=2_000)
    broker = SlowWriteBroker(PostgresConfig(database_url=database_url), delay_s=5.0)
    config = WorkerConfig(
        locator=f"{APP_FILE}:app",
        processes=1,
        loglevel="WARNING",
        poll_interval_s=0.2,
        recovery=recovery,
    )
    worker = Worker(app, config, broker=broker, install_signal_handlers=False)
    task_id = await broker.enqueue_async("sleep", (0.05,))
    run = asyncio.create_task(worker.run())

    def status() -> str | None:
        with psycopg.connect(clean_db, autocommit=True) as conn:
            row = conn.execute(
                "SELECT status FROM horsies_tasks WHERE id = %s", (task_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    try:
        await wait_until(lambda: status() not in ("PENDING", "RUNNING"), 60)
    finally:
        worker.request_stop()
        await asyncio.wait_for(run, 60)
    assert broker.delayed
    assert status() == "COMPLETED"
