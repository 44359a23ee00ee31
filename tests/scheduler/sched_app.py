"""App of the scheduler's end-to-end tests, configured by environment variables.

``HORSIES_SCHED_DATABASE_URL`` is the database; ``HORSIES_SCHED_SPEC`` is the JSON of the
`ScheduleConfig` (``{"schedules": [...], "check_interval_seconds": 1}``), or
``{"no_schedule": true}`` for an app without one; ``"pool_timeout"`` sets the broker's pool
timeout (seconds). Patterns are given as dicts (``{"type": "interval", "seconds": 1}``).
"""

from __future__ import annotations

import asyncio
import json
import os

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.config.schedules import ScheduleConfig
from horsies.results import TaskError, TaskResult
from horsies.retry import RetryPolicy

ENV_URL = "HORSIES_SCHED_DATABASE_URL"
ENV_SPEC = "HORSIES_SCHED_SPEC"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"


def build_app(database_url: str, spec: dict[str, object]) -> Horsies:
    """The app for `spec` (see the module docstring), with its tasks registered."""
    spec = dict(spec)
    pool_timeout = int(str(spec.pop("pool_timeout", 30)))
    schedule = None if spec.pop("no_schedule", False) else ScheduleConfig.model_validate(spec)
    broker = PostgresConfig(database_url=database_url, pool_timeout=pool_timeout)
    app = Horsies(AppConfig(broker=broker, schedule=schedule))

    @app.task("sched.tick")
    def tick() -> TaskResult[str, TaskError]:
        return TaskResult(ok="tick")

    @app.task("sched.echo")
    def echo(value: int, *, label: str = "x") -> TaskResult[str, TaskError]:
        return TaskResult(ok=f"{label}{value}")

    @app.task(
        "sched.retrying",
        retry_policy=RetryPolicy.fixed([1, 2]),
        auto_retry_for=["ValueError"],
    )
    def retrying() -> TaskResult[str, TaskError]:
        return TaskResult(ok="retrying")

    @app.task("sched.async_tick")
    async def async_tick(label: str) -> TaskResult[str, TaskError]:
        await asyncio.sleep(0)
        return TaskResult(ok=f"async {label}")

    return app


app = build_app(
    os.environ.get(ENV_URL, _UNUSED_URL),
    json.loads(os.environ.get(ENV_SPEC) or '{"schedules": []}'),
)
