"""The app of the PgBouncer tests (tests/e2e/test_e2e_pgbouncer_*.py): a few tasks, and a worker
whose maintenance runs every second (reaper and prune passes take their advisory locks through the
pooler) and whose heartbeats come every second (the way a stop request reaches it when no
notification can)."""

from __future__ import annotations

import asyncio
import os
import time

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig, RecoveryConfig, RetentionConfig
from horsies.results import TaskError, TaskResult
from horsies.retry import RetryPolicy

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"


def create_app(database_url: str) -> Horsies:
    """Build the app and register its tasks (same names in the worker and the test process)."""
    app = Horsies(
        AppConfig(
            broker=PostgresConfig(database_url=database_url),
            recovery=RecoveryConfig(
                check_interval_ms=1_000,
                runner_heartbeat_interval_ms=1_000,
                claimer_heartbeat_interval_ms=1_000,
            ),
            retention=RetentionConfig(interval_s=1.0, max_pass_s=0.5),
        )
    )

    @app.task("pooled.add")
    def add(a: int, b: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=a + b)

    @app.task("pooled.double")
    def double(value: TaskResult[int, TaskError]) -> TaskResult[int, TaskError]:
        return TaskResult(ok=value.unwrap() * 2)

    @app.task("pooled.async_add")
    async def async_add(a: int, b: int) -> TaskResult[int, TaskError]:
        await asyncio.sleep(0)
        return TaskResult(ok=a + b)

    @app.task("pooled.sleep")
    def sleep(seconds: float) -> TaskResult[float, TaskError]:
        time.sleep(seconds)
        return TaskResult(ok=seconds)

    @app.task(
        "pooled.flaky",
        retry_policy=RetryPolicy.fixed([1], jitter=False),
        auto_retry_for=["FLAKY"],
    )
    def flaky(path: str) -> TaskResult[int, TaskError]:
        # The first attempt leaves a mark and fails; the second finds it and succeeds.
        if not os.path.exists(path):
            with open(path, "w", encoding="utf-8") as fh:
                fh.write("1")
            return TaskResult(err=TaskError(error_code="FLAKY", message="first attempt"))
        return TaskResult(ok=2)

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
