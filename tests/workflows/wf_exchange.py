"""Drive workflow tasks through the worker's exchange without a worker process: each call writes
outcomes (advancing their workflows, as the worker does) and claims the next tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest
from horsies.broker import PostgresBroker
from horsies.broker.claim_plan import ClaimRequest, QueueClaimSpec
from horsies.broker.claims import ClaimedTask
from horsies.broker.exchange import TaskExchange
from horsies.broker.finish import TaskOutcome
from horsies.codec import task_result_to_json
from horsies.config import PostgresConfig
from horsies.results import TaskResult
from horsies.workflows.store.hooks import WORKFLOW_STORE

if TYPE_CHECKING:
    from horsies.app import Horsies

_OK = task_result_to_json(TaskResult(ok="done"))


def exchange(
    broker: PostgresBroker, outcomes: Sequence[TaskOutcome] = (), *, slots: int = 1
) -> TaskExchange:
    """One ``exchange_async`` call on a fresh event loop (its pool closes with it), then the
    decisions of the workflow nodes it left READY."""
    request = ClaimRequest(
        queues=[QueueClaimSpec("default")], local_budget=slots, max_claim_batch=slots
    )

    async def run() -> TaskExchange:
        result = await broker.exchange_async(
            "test-worker",
            "test-host",
            outcomes=list(outcomes),
            request=request,
            pids=list(range(1, slots + 1)),
        )
        await broker.decide_async(result.undecided)  # what the worker does beside its loop
        return result

    return asyncio.run(run())


def ok_outcome(task: ClaimedTask) -> TaskOutcome:
    """An ok outcome for a started task, as the worker builds it."""
    return TaskOutcome(
        task_id=task.id,
        result_json=_OK,
        ok=True,
        attempt=task.attempt,
        workflow_id=task.workflow_id,
    )


@contextlib.contextmanager
def app_broker(database_url: str, app: Horsies | None) -> Iterator[PostgresBroker]:
    """A broker of the test database; ``app`` set when it must run user code (conditions,
    child workflows), None to act like a process without the app."""
    broker = PostgresBroker(
        PostgresConfig(database_url=database_url), app=app, workflows=WORKFLOW_STORE
    )
    try:
        yield broker
    finally:
        broker.close()


def app_broker_fixture(app: Horsies) -> Any:
    """A ``broker`` fixture: ``broker = app_broker_fixture(wfc.app)`` in a test module.

    Each test gets emptied tables and a broker of the test database that knows ``app`` (needed to
    evaluate conditions and start child workflows); it is closed after the test.
    """

    @pytest.fixture
    def broker(database_url: str, clean_db: str) -> Iterator[PostgresBroker]:
        del clean_db
        with app_broker(database_url, app) as b:
            yield b

    return broker
