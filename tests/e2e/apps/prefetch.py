"""Prefetch-mode app for the short-task fast path: tasks queue on children behind a running one."""

from __future__ import annotations

import asyncio
import os
import time

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"


def create_app(database_url: str) -> Horsies:
    """Prefetch 16 (children queue up to 9 short tasks each with 2 processes), a long lease.

    ``pf.record`` appends its marker to a file; ``pf.crash`` kills its child process.
    """
    app = Horsies(
        AppConfig(
            broker=PostgresConfig(database_url=database_url),
            prefetch_buffer=16,
            claim_lease_ms=60_000,
        )
    )

    @app.task("pf.record")
    def record(path: str, marker: str) -> TaskResult[None, TaskError]:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(marker + "\n")
        return TaskResult(ok=None)

    @app.task("pf.crash")
    def crash() -> TaskResult[None, TaskError]:
        os._exit(7)

    @app.task("pf.nap")
    async def nap(seconds: float) -> TaskResult[list[float], TaskError]:
        start = time.time()
        await asyncio.sleep(seconds)
        return TaskResult(ok=[start, time.time(), float(os.getpid())])

    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
