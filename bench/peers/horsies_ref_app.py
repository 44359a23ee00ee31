# type: ignore
"""The app of the reference peer, ``horsies==0.1.0a2`` (its own API; only imported from the
``bench/.venvs/horsies-ref`` virtualenv, never from the workspace). One no-op task; the database
URL comes from ``HORSIES_BENCH_DATABASE_URL`` so the worker it starts builds the same app."""

from __future__ import annotations

import os

from horsies import AppConfig, Horsies, PostgresConfig, TaskError, TaskResult

app = Horsies(
    AppConfig(
        broker=PostgresConfig(
            database_url=os.environ.get(
                "HORSIES_BENCH_DATABASE_URL", "postgresql+psycopg://localhost/horsies_ref"
            )
        )
    )
)


@app.task("bench.noop")
def noop() -> TaskResult[None, TaskError]:
    return TaskResult(ok=None)
