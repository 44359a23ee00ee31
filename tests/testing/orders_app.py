"""The app the testing helpers' tests run: a user's app as docs/getting-started.md writes it,
created at import time with its database URL read from the environment.

The tests import it before any database exists, so the URL falls back to a placeholder; each test
points the app at its own database (``use_database``, in this folder's conftest), and a worker
started by a test gets the URL in ``ORDERS_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from horsies import (
    AppConfig,
    Horsies,
    PostgresConfig,
    RetryPolicy,
    TaskContext,
    TaskError,
    TaskNode,
    TaskResult,
)

ENV_URL = "ORDERS_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused@127.0.0.1:1/unused"

app = Horsies(AppConfig(broker=PostgresConfig(database_url=os.environ.get(ENV_URL, _UNUSED_URL))))


@app.task("orders.add")
def add(a: int, b: int = 0) -> TaskResult[int, TaskError]:
    return TaskResult(ok=a + b)


@app.task("orders.add_async")
async def add_async(a: int, b: int) -> TaskResult[int, TaskError]:
    await asyncio.sleep(0)  # a real suspension: it needs an event loop
    return TaskResult(ok=a + b)


@app.task(
    "orders.flaky", retry_policy=RetryPolicy.fixed([1], jitter=False), auto_retry_for=["FLAKY"]
)
def flaky(task_ctx: TaskContext | None = None) -> TaskResult[int, TaskError]:
    """Fails its first run with a code its policy retries; the retry succeeds."""
    assert task_ctx is not None
    if task_ctx.retry_count == 0:
        return TaskResult(err=TaskError(error_code="FLAKY", message="the first run fails"))
    return TaskResult(ok=task_ctx.attempt)


@app.task("orders.double")
def double(value: TaskResult[int, TaskError]) -> TaskResult[int, TaskError]:
    return TaskResult(ok=value.unwrap() * 2)


@app.task("orders.send_receipt")
def send_receipt(order_id: int, email: str, lines: Sequence[str]) -> TaskResult[str, TaskError]:
    return TaskResult(ok=f"receipt {order_id} to {email}: {len(lines)} line(s)")


@app.task("orders.place")
def place_order(order_id: int) -> TaskResult[str, TaskError]:
    """A task that sends another task when it runs."""
    handle = send_receipt.send(order_id, "buyer@example.org", lines=["tea", "milk"])
    return TaskResult(ok=handle.task_id)


def checkout(order_id: int) -> None:
    """What a web view of the app does: send the work and return at once."""
    place_order.send(order_id)
    send_receipt.send(order_id, email="buyer@example.org", lines=("tea",))


_first = TaskNode(fn=add, args=(2, 3))
_second = TaskNode(fn=double, waits_for=[_first], args_from={"value": _first})
ADD_THEN_DOUBLE = app.workflow("orders.add_then_double", [_first, _second], output=_second)
"""A two-node workflow built at import time, as an app defines its workflows."""
