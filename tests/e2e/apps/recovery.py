"""Soft-cap (prefetch) app with short recovery thresholds: crash recovery and graceful shutdown."""

from __future__ import annotations

import os
import time

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult

from tests.recovery_timing import fast_recovery

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"


def create_app(database_url: str) -> Horsies:
    """Prefetch 2 with a long lease (claims stay ours until a reaper requeues them).

    Recovery thresholds are 2 s, checked every second.
    """
    app = Horsies(
        AppConfig(
            broker=PostgresConfig(database_url=database_url),
            prefetch_buffer=2,
            claim_lease_ms=600_000,
            recovery=fast_recovery(stale_ms=2_000),
        )
    )

    @app.task("rec.sleep")
    def sleep(seconds: float) -> TaskResult[float, TaskError]:
        time.sleep(seconds)
        return TaskResult(ok=seconds)

    @app.task("rec.add")
    def add(a: int, b: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=a + b)

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
