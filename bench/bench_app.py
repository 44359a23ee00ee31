"""The app the benchmark's worker runs: one no-op task, so the figures measure the queue itself, its
``async def`` twin, an async task that only waits (I/O-bound), and two workflows of no-op nodes
(fan-out/fan-in and a long chain) for the engine's per-node cost. Two more apps hold W5's no-ops
under a limit that is never reached: ``keys_app`` (a per-key concurrency limit) and ``rate_app`` (a
rate limit).

The database URL comes from ``HORSIES_BENCH_DATABASE_URL``, so the benchmark process, the worker it
starts (``horsies worker bench/bench_app.py:app``) and the worker's children build the same app.
Building the app does no I/O: importing this module without the variable is harmless.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult
from horsies.tasks.limits import Limit
from horsies.workflows.nodes import TaskNode
from horsies.workflows.spec import WorkflowSpec

DATABASE_URL_ENV = "HORSIES_BENCH_DATABASE_URL"
PREFETCH_ENV = "HORSIES_BENCH_PREFETCH"
"""When set to N > 0: soft-cap (prefetch) mode with ``prefetch_buffer=N`` and a 30 s claim lease."""

_prefetch = int(os.environ.get(PREFETCH_ENV) or 0)


def _config() -> AppConfig:
    return AppConfig(
        broker=PostgresConfig(
            database_url=os.environ.get(DATABASE_URL_ENV, "postgresql://localhost/horsies_bench")
        ),
        prefetch_buffer=_prefetch,
        claim_lease_ms=30_000 if _prefetch else None,
    )


app = Horsies(_config())


@app.task("bench.noop")
def noop() -> TaskResult[None, TaskError]:
    """Return at once: everything measured around it is queue overhead."""
    return TaskResult(ok=None)


@app.task("bench.async_noop")
async def async_noop() -> TaskResult[None, TaskError]:
    """The async no-op (W2a, W3a): several run at once in one child."""
    return TaskResult(ok=None)


IO_WAIT_ENV = "HORSIES_BENCH_IO_WAIT_MS"
"""W2io: how long each I/O-bound task awaits, in ms (set by bench/run.py)."""
_io_wait_s = int(os.environ.get(IO_WAIT_ENV) or 50) / 1000


@app.task("bench.async_io")
async def async_io() -> TaskResult[None, TaskError]:
    """An I/O-bound task: it only waits (W2io), as a task waiting on an HTTP reply does."""
    await asyncio.sleep(_io_wait_s)
    return TaskResult(ok=None)


# W5's limited no-ops live in apps of their own: a worker claims a queue that has a limited task
# through the limited claim, so putting them on `app` would move every other workload onto it.
keys_app = Horsies(_config())
rate_app = Horsies(_config())
W5_KEYS = 100
"""W5b: how many distinct keys the keyed no-ops are sent with."""


def keyed_calls(n: int) -> list[dict[str, Any]]:
    """W5b's ``n`` calls of the keyed no-op, spread over the W5_KEYS keys in turn."""
    return [{"key": f"key{i % W5_KEYS}"} for i in range(n)]


@keys_app.task("bench.keyed_noop", limit=Limit("bench-keys", concurrency=1_000_000, on=["key"]))
def keyed_noop(key: str) -> TaskResult[None, TaskError]:
    """W5b: the no-op under a per-key concurrency limit no key ever reaches."""
    del key
    return TaskResult(ok=None)


@rate_app.task("bench.rated_noop", limit=Limit("bench-rate", rate=1_000_000, per_s=1))
def rated_noop() -> TaskResult[None, TaskError]:
    """W5c: the no-op under a rate limit (one key) that is never reached."""
    return TaskResult(ok=None)


def _fan_out_spec() -> WorkflowSpec:
    root = TaskNode(fn=noop, node_id="root")
    fan = [TaskNode(fn=noop, waits_for=[root], node_id=f"fan{i}") for i in range(FAN_OUT_WIDTH)]
    join = TaskNode(fn=noop, waits_for=fan, node_id="join")
    return app.workflow("bench_fan_out", [root, *fan, join], output=join)


def _chain_spec() -> WorkflowSpec:
    nodes: list[TaskNode[None]] = [TaskNode(fn=noop, node_id="link0")]
    for i in range(1, CHAIN_LENGTH):
        nodes.append(TaskNode(fn=noop, waits_for=[nodes[-1]], node_id=f"link{i}"))
    return app.workflow("bench_chain", list(nodes), output=nodes[-1])


FAN_OUT_WIDTH = 50
CHAIN_LENGTH = 200
fan_out = _fan_out_spec()
"""W4a: one root fanning out to 50 nodes that fan in to one (52 nodes)."""
chain = _chain_spec()
"""W4b: a chain of 200 nodes, each waiting for the previous one."""
