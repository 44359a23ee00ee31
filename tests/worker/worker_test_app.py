"""A tiny app used by the worker unit tests (tasks run in-process, children in spawned processes).

Never connects to a database: nothing here sends tasks.
"""

from __future__ import annotations

import asyncio
import math
import os
import time

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult

app = Horsies(
    AppConfig(broker=PostgresConfig(database_url="postgresql+psycopg://u:p@localhost:1/unused"))
)


@app.task("add")
def add(a: int, b: int) -> TaskResult[int, TaskError]:
    return TaskResult(ok=a + b)


@app.task("echo")
def echo(text: str) -> TaskResult[str, TaskError]:
    return TaskResult(ok=text)


@app.task("greet")
def greet(name: str = "world") -> TaskResult[str, TaskError]:
    return TaskResult(ok=f"hello {name}")


@app.task("boom")
def boom() -> TaskResult[int, TaskError]:
    raise ConnectionRefusedError("no route")


@app.task("returns_set")
def returns_set() -> TaskResult[object, TaskError]:
    return TaskResult(ok={1, 2})


@app.task("returns_nan")
def returns_nan() -> TaskResult[float, TaskError]:
    return TaskResult(ok=math.nan)


@app.task("interrupt")
def interrupt() -> TaskResult[int, TaskError]:
    raise KeyboardInterrupt("stop it")


@app.task("domain_error")
def domain_error() -> TaskResult[int, TaskError]:
    return TaskResult(err=TaskError(error_code="RATE_LIMITED", message="slow down"))


@app.task("pid")
def pid() -> TaskResult[int, TaskError]:
    return TaskResult(ok=os.getpid())


@app.task("sleep")
def sleep(seconds: float) -> TaskResult[float, TaskError]:
    time.sleep(seconds)
    return TaskResult(ok=seconds)


@app.task("hard_exit")
def hard_exit(code: int, when_exists: str | None = None) -> TaskResult[int, TaskError]:
    """Exit at once with ``code``; with ``when_exists``, first wait (at most 30 s) for that file,
    so a test can queue more work on the child before it dies."""
    deadline = time.monotonic() + 30
    while when_exists is not None and not os.path.exists(when_exists):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    os._exit(code)


@app.task("record")
def record(path: str, marker: str) -> TaskResult[str, TaskError]:
    """Append ``marker`` to ``path``: tests count executions with it."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(marker + "\n")
    return TaskResult(ok=marker)


@app.task("async_pause")
async def async_pause(seconds: float) -> TaskResult[float, TaskError]:
    """Await ``seconds``: several overlap in one child."""
    await asyncio.sleep(seconds)
    return TaskResult(ok=seconds)
