"""Tasks under rate and concurrency limits, and one without (tests/e2e/test_e2e_limits.py)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from horsies import Limit
from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult
from horsies.retry import RetryPolicy

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"

PER_TENANT = Limit("per-tenant", concurrency=1, on=["tenant"])
"""One task of a tenant at a time."""
RATED = Limit("rated", rate=5, per_s=0.25)
"""Five starts per quarter second, for all tasks of the limit together."""
WIDE = Limit("wide", concurrency=100, rate=100_000, on=["tenant"])
"""Never reached by the tests: only its fairness between keys shows."""


def create_app(database_url: str, **config: Any) -> Horsies:
    """The app of the worker and of the test process (same tasks, same limits); ``config`` adds
    `AppConfig` fields (prefetch mode: ``limits_prefetch.py``; caps: ``limits_capped.py``)."""
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url), **config))

    @app.task("lim.per_tenant", limit=PER_TENANT)
    def per_tenant(tenant: str, seconds: float) -> TaskResult[str, TaskError]:
        time.sleep(seconds)
        return TaskResult(ok=tenant)

    @app.task("lim.per_tenant_async", limit=PER_TENANT)
    async def per_tenant_async(tenant: str, seconds: float) -> TaskResult[str, TaskError]:
        await asyncio.sleep(seconds)
        return TaskResult(ok=tenant)

    @app.task("lim.rated", limit=RATED)
    def rated(n: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=n)

    @app.task("lim.wide", limit=WIDE)
    def wide(tenant: str, seconds: float) -> TaskResult[str, TaskError]:
        time.sleep(seconds)
        return TaskResult(ok=tenant)

    @app.task(
        "lim.flaky",
        limit=PER_TENANT,
        retry_policy=RetryPolicy.fixed([1], jitter=False),
        auto_retry_for=["FLAKY"],
    )
    def flaky(tenant: str, marker: str) -> TaskResult[str, TaskError]:
        # Fails its first attempt (the marker file does not exist yet), succeeds the second.
        if not os.path.exists(marker):
            with open(marker, "w", encoding="utf-8"):
                pass
            return TaskResult(err=TaskError(error_code="FLAKY", message="first attempt"))
        return TaskResult(ok=tenant)

    @app.task("lim.free")
    def free(seconds: float) -> TaskResult[float, TaskError]:
        time.sleep(seconds)
        return TaskResult(ok=seconds)

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
