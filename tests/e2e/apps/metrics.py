"""DEFAULT-mode app whose tasks end each way the worker's metrics tell apart: ok (sync and async),
failed, retried, and a task that holds its child until a file appears (to fill the children, or
to be cancelled while it runs)."""

from __future__ import annotations

import asyncio
import os
import time

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult
from horsies.retry import RetryPolicy

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"


def create_app(database_url: str) -> Horsies:
    """Build the app and register its tasks (same names in the worker and the test process)."""
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))

    @app.task("metrics.ok")
    def ok(n: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=n)

    @app.task("metrics.async_ok")
    async def async_ok(n: int) -> TaskResult[int, TaskError]:
        await asyncio.sleep(0)
        return TaskResult(ok=n)

    @app.task("metrics.fail")
    def fail() -> TaskResult[int, TaskError]:
        raise ValueError("fails on purpose")

    @app.task(
        "metrics.flaky",
        retry_policy=RetryPolicy.fixed([1], jitter=False),
        auto_retry_for=["FLAKY"],
    )
    def flaky(path: str) -> TaskResult[int, TaskError]:
        """Fails its first attempt (retried after 1 s), succeeds on the second."""
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("run\n")
        with open(path, encoding="utf-8") as fh:
            runs = len(fh.readlines())
        if runs == 1:
            return TaskResult(err=TaskError(error_code="FLAKY", message="first attempt"))
        return TaskResult(ok=runs)

    @app.task("metrics.hold")
    def hold(release: str, timeout_s: float) -> TaskResult[bool, TaskError]:
        """Runs until the file ``release`` exists (bounded by ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while not os.path.exists(release):
            if time.monotonic() > deadline:
                return TaskResult(err=TaskError(error_code="NOT_RELEASED", message=release))
            time.sleep(0.02)
        return TaskResult(ok=True)

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
