"""An I/O-bound task written with ``async def``: fetch a page's status with httpx.

Each worker child runs up to ``--async-concurrency`` of these at once on its event loop, and keeps
one HTTP client (with its connection pool) for all of them: the client is made on first use in the
child and lives as long as the child.
"""

from __future__ import annotations

import os

import httpx
from horsies import AppConfig, Horsies, PostgresConfig, RetryPolicy, TaskError, TaskResult

app = Horsies(AppConfig(broker=PostgresConfig(database_url=os.environ["DATABASE_URL"])))

_client: httpx.AsyncClient | None = None


def client() -> httpx.AsyncClient:
    """The child's HTTP client, made on first use (on the child's one event loop)."""
    global _client
    if _client is None:
        _client = httpx.AsyncClient(timeout=10)
    return _client


@app.task(
    "pages.status",
    time_limit_s=30,
    retry_policy=RetryPolicy.fixed([1, 2], jitter=False),
    auto_retry_for=["ConnectError", "TASK_TIMEOUT"],
)
async def page_status(url: str) -> TaskResult[int, TaskError]:
    """The HTTP status of ``url``; a connection error or a hang is retried twice."""
    response = await client().get(url)
    return TaskResult(ok=response.status_code)
