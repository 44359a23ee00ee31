"""The app every reliability scenario runs: ledger tasks, short recovery thresholds.

Configured from the environment so one module serves every scenario (workers import it as
``tests.reliability.apps.ledger_app:app``):

- ``HORSIES_E2E_DATABASE_URL``: the database (tasks and ledger).
- ``RELIABILITY_QUEUE_MODE``: ``default`` (one queue) or ``custom`` (queues ``capped`` with
  ``max_concurrency`` ``RELIABILITY_QUEUE_MAX`` and ``other``, and ``cluster_wide_cap``
  ``RELIABILITY_CLUSTER_CAP``).
- ``RELIABILITY_HARD_CAP``: ``1`` for ``prefetch_buffer=0`` (hard cap: claimed counts against the
  caps), else prefetch 2 with a short claim lease.

Recovery: stale claims and stale runs are detected after 2 s (heartbeats every 1 s, checked every
second), so a killed worker's tasks are recovered within a few seconds.
"""

from __future__ import annotations

import os
import time

from horsies.app import Horsies
from horsies.config import (
    AppConfig,
    CustomQueueConfig,
    PostgresConfig,
    QueueMode,
    RecoveryConfig,
)
from horsies.results import TaskError, TaskResult

from tests.reliability.ledger import record

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"

RECOVERY = RecoveryConfig(
    claimed_stale_threshold_ms=2_000,
    claimer_heartbeat_interval_ms=1_000,
    running_stale_threshold_ms=2_000,
    runner_heartbeat_interval_ms=1_000,
    check_interval_ms=1_000,
)


def create_app(database_url: str, env: dict[str, str] | None = None) -> Horsies:
    """The ledger app for ``database_url``, configured by ``env`` (default ``os.environ``)."""
    env = dict(os.environ if env is None else env)
    custom = env.get("RELIABILITY_QUEUE_MODE", "default") == "custom"
    hard_cap = env.get("RELIABILITY_HARD_CAP") == "1"
    queue_options: dict[str, object] = {}
    if custom:
        queue_options = {
            "queue_mode": QueueMode.CUSTOM,
            "custom_queues": [
                CustomQueueConfig(
                    name="capped",
                    priority=1,
                    max_concurrency=int(env.get("RELIABILITY_QUEUE_MAX", "3")),
                ),
                CustomQueueConfig(name="other", priority=2, max_concurrency=50),
            ],
            "cluster_wide_cap": int(env.get("RELIABILITY_CLUSTER_CAP", "4")),
        }
    app = Horsies(
        AppConfig(
            broker=PostgresConfig(database_url=database_url),
            prefetch_buffer=0 if hard_cap else 2,
            claim_lease_ms=None if hard_cap else 5_000,
            recovery=RECOVERY,
            **queue_options,  # pyright: ignore[reportArgumentType]
        )
    )
    conninfo = app.config.broker.conninfo

    def work(key: str, seconds: float) -> TaskResult[str, TaskError]:
        record(conninfo, key, "start")
        if seconds:
            time.sleep(seconds)
        record(conninfo, key, "end")
        return TaskResult(ok=key)

    app.task("rel.work")(work)
    if custom:
        app.task("rel.capped", queue_name="capped")(work)
        app.task("rel.other", queue_name="other")(work)
    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
