"""DEFAULT-mode app: results, failures, retries, schedule, serialization errors, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from horsies import TaskContext
from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult
from horsies.retry import RetryPolicy

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"


def _attempts(path: str) -> list[float]:
    """Record this attempt's start time in ``path`` and return all attempt times so far."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{time.time()}\n")
    with open(path, encoding="utf-8") as fh:
        return [float(line) for line in fh if line.strip()]


def create_app(database_url: str) -> Horsies:
    """Build the app and register its tasks (same names in the worker and the test process)."""
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))

    @app.task("e2e.add")
    def add(a: int, b: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=a + b)

    @app.task("e2e.fail")
    def fail(message: str) -> TaskResult[int, TaskError]:
        raise ValueError(message)

    @app.task("e2e.stamp")
    def stamp() -> TaskResult[float, TaskError]:
        return TaskResult(ok=time.time())

    @app.task("e2e.sleep")
    def sleep(seconds: float) -> TaskResult[float, TaskError]:
        time.sleep(seconds)
        return TaskResult(ok=seconds)

    @app.task("e2e.unserializable")
    def unserializable() -> TaskResult[object, TaskError]:
        return TaskResult(ok={1, 2, 3})

    @app.task(
        "e2e.flaky",
        retry_policy=RetryPolicy.fixed([1, 1], jitter=False),
        auto_retry_for=["FLAKY"],
    )
    def flaky(path: str, succeed_on: int) -> TaskResult[list[float], TaskError]:
        times = _attempts(path)
        if len(times) < succeed_on:
            return TaskResult(err=TaskError(error_code="FLAKY", message=f"attempt {len(times)}"))
        return TaskResult(ok=times)

    @app.task(
        "e2e.crash_once",
        retry_policy=RetryPolicy.fixed([1], jitter=False),
        auto_retry_for=["WORKER_CRASHED"],
    )
    def crash_once(path: str) -> TaskResult[str, TaskError]:
        if len(_attempts(path)) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return TaskResult(ok="survived")

    @app.task(
        "e2e.whoami",
        retry_policy=RetryPolicy.fixed([1], jitter=False),
        auto_retry_for=["FIRST_RUN"],
    )
    def whoami(
        label: str, task_ctx: TaskContext | None = None
    ) -> TaskResult[dict[str, Any], TaskError]:
        assert task_ctx is not None
        if task_ctx.attempt == 1:
            return TaskResult(err=TaskError(error_code="FIRST_RUN", message=label))
        seen = {
            "task_id": task_ctx.task_id,
            "task_name": task_ctx.task_name,
            "queue_name": task_ctx.queue_name,
            "priority": task_ctx.priority,
            "retry_count": task_ctx.retry_count,
            "attempt": task_ctx.attempt,
            "max_retries": task_ctx.max_retries,
            "is_last_attempt": task_ctx.is_last_attempt,
            "sent_at": task_ctx.sent_at.isoformat(),
            "workflow_id": task_ctx.workflow_id,
        }
        return TaskResult(ok=seen)

    @app.task("e2e.async_add")
    async def async_add(a: int, b: int) -> TaskResult[int, TaskError]:
        await asyncio.sleep(0.01)
        return TaskResult(ok=a + b)

    @app.task("e2e.async_loop_id")
    async def async_loop_id() -> TaskResult[list[int], TaskError]:
        # The child's loop is kept between tasks: the same loop object answers every time.
        return TaskResult(ok=[os.getpid(), id(asyncio.get_running_loop())])

    @app.task(
        "e2e.async_flaky",
        retry_policy=RetryPolicy.fixed([1], jitter=False),
        auto_retry_for=["ConnectionError"],
    )
    async def async_flaky(task_ctx: TaskContext | None = None) -> TaskResult[int, TaskError]:
        assert task_ctx is not None
        if task_ctx.attempt == 1:
            raise ConnectionError("first attempt")
        return TaskResult(ok=task_ctx.attempt)

    @app.task("e2e.async_nap")
    async def async_nap(seconds: float) -> TaskResult[list[float], TaskError]:
        started = time.time()
        await asyncio.sleep(seconds)
        return TaskResult(ok=[os.getpid(), started, time.time()])

    @app.task("e2e.sync_limited", time_limit_s=1.0)
    def sync_limited(seconds: float) -> TaskResult[float, TaskError]:
        time.sleep(seconds)
        return TaskResult(ok=seconds)

    @app.task("e2e.async_limited", time_limit_s=1.0)
    async def async_limited(seconds: float) -> TaskResult[float, TaskError]:
        await asyncio.sleep(seconds)
        return TaskResult(ok=seconds)

    @app.task("e2e.async_blocking", time_limit_s=1.0)
    async def async_blocking(seconds: float) -> TaskResult[float, TaskError]:
        time.sleep(seconds)  # blocks the loop: the child cannot cancel it
        return TaskResult(ok=seconds)

    @app.task(
        "e2e.limited_then_quick",
        time_limit_s=1.0,
        retry_policy=RetryPolicy.fixed([1], jitter=False),
        auto_retry_for=["TASK_TIMEOUT"],
    )
    def limited_then_quick(task_ctx: TaskContext | None = None) -> TaskResult[int, TaskError]:
        assert task_ctx is not None
        if task_ctx.attempt == 1:
            time.sleep(30)
        return TaskResult(ok=task_ctx.attempt)

    @app.task("e2e.async_double")
    async def async_double(value: TaskResult[int, TaskError]) -> TaskResult[int, TaskError]:
        await asyncio.sleep(0)
        return TaskResult(ok=value.unwrap() * 2)

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
