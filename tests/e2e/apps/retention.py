"""An app whose workers prune often (tests/e2e/test_e2e_retention.py)."""

from __future__ import annotations

import os

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig, RecoveryConfig, RetentionConfig
from horsies.results import TaskError, TaskResult

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"


def create_app(database_url: str) -> Horsies:
    """Reaper every second, a prune pass every second in batches of 500, a week's retention."""
    app = Horsies(
        AppConfig(
            broker=PostgresConfig(database_url=database_url),
            recovery=RecoveryConfig(check_interval_ms=1_000),
            retention=RetentionConfig(
                finished_tasks_s=7 * 86_400.0, interval_s=1.0, batch_size=500, max_pass_s=0.5
            ),
        )
    )

    @app.task("rt.echo")
    def echo(n: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=n)

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
