"""CUSTOM-mode app with a per-queue max_concurrency and a cluster_wide_cap."""

from __future__ import annotations

import asyncio
import os
import time

from horsies.app import Horsies
from horsies.config import AppConfig, CustomQueueConfig, PostgresConfig, QueueMode
from horsies.results import TaskError, TaskResult

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"

LIMITED_MAX = 2
CLUSTER_CAP = 3


def create_app(database_url: str) -> Horsies:
    """Queues ``limited`` (max_concurrency 2) and ``wide`` (10); at most 3 in flight overall."""
    app = Horsies(
        AppConfig(
            broker=PostgresConfig(database_url=database_url),
            queue_mode=QueueMode.CUSTOM,
            custom_queues=[
                CustomQueueConfig(name="limited", priority=1, max_concurrency=LIMITED_MAX),
                CustomQueueConfig(name="wide", priority=2, max_concurrency=10),
            ],
            cluster_wide_cap=CLUSTER_CAP,
        )
    )

    @app.task("caps.limited_span", queue_name="limited")
    def limited_span(seconds: float) -> TaskResult[list[float], TaskError]:
        start = time.time()
        time.sleep(seconds)
        return TaskResult(ok=[start, time.time(), float(os.getppid())])

    @app.task("caps.wide_span", queue_name="wide")
    def wide_span(seconds: float) -> TaskResult[list[float], TaskError]:
        start = time.time()
        time.sleep(seconds)
        return TaskResult(ok=[start, time.time(), float(os.getppid())])

    @app.task("caps.wide_nap", queue_name="wide")
    async def wide_nap(seconds: float) -> TaskResult[list[float], TaskError]:
        start = time.time()
        await asyncio.sleep(seconds)
        return TaskResult(ok=[start, time.time(), float(os.getpid())])

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
