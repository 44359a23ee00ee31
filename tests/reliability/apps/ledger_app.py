"""The app every reliability scenario runs: ledger tasks, short recovery thresholds.

Configured from the environment so one module serves every scenario (workers import it as
``tests.reliability.apps.ledger_app:app``):

- ``HORSIES_E2E_DATABASE_URL``: the database (tasks and ledger).
- ``RELIABILITY_QUEUE_MODE``: ``default`` (one queue) or ``custom`` (queues ``capped`` with
  ``max_concurrency`` ``RELIABILITY_QUEUE_MAX`` and ``other``, and in hard-cap mode
  ``cluster_wide_cap`` ``RELIABILITY_CLUSTER_CAP``; with prefetch that cap is a config error).
- ``RELIABILITY_HARD_CAP``: ``1`` for ``prefetch_buffer=0`` (hard cap: claimed counts against the
  caps), else prefetch 2 with a short claim lease (5 s, or ``RELIABILITY_CLAIM_LEASE_MS``).

Recovery: stale claims and stale runs are detected after 2 s (heartbeats every 1 s, checked every
second), so a killed worker's tasks are recovered within a few seconds. ``RELIABILITY_STALE_MS``
overrides both stale thresholds (restart scenarios: an outage shorter than the threshold must not
make running tasks look crashed). ``RELIABILITY_POOL_TIMEOUT_S`` sets the broker's ``pool_timeout``
(default 30). ``RELIABILITY_MAX_PAYLOAD_BYTES`` sets ``max_payload_bytes`` (``none``: no limit).
``RELIABILITY_LIMITS=1`` (default mode only) adds the tasks under a per-key concurrency limit of
``apps/limited_tasks.py`` (``rel.limited``, ``rel.async_limited``): the default queue is then
claimed through the limited claim, so only the limits scenario sets it.

Tasks: ``rel.work(key, seconds)`` (no retry: a crash fails it with ``WORKER_CRASHED``) and
``rel.whoami(key, seconds)`` (the same, returning ``"<key>:<child pid>"``: which attempt's result
was stored); in default mode also ``rel.whoami_retried`` (``rel.whoami`` retried after a crash),
the crash-retried tasks of ``apps/wf_ledger_app.py``
(``rel.retried``, ``rel.stall``) and the hostile-input tasks of ``apps/hostile_tasks.py``
(``rel.echo``, ``rel.blob``, ...) and ``apps/forking_tasks.py`` (``rel.fork_and_die``); in custom
mode ``rel.capped`` and ``rel.other``.
"""

from __future__ import annotations

import asyncio
import os
import time

from horsies.app import Horsies
from horsies.config import AppConfig, CustomQueueConfig, PostgresConfig, QueueMode, RecoveryConfig
from horsies.results import LibraryErrorCode, TaskError, TaskResult

from tests.recovery_timing import fast_recovery
from tests.reliability.apps.forking_tasks import add_forking_tasks
from tests.reliability.apps.hostile_tasks import add_hostile_tasks, payload_options
from tests.reliability.apps.limited_tasks import add_limited_tasks
from tests.reliability.apps.wf_ledger_app import CRASH_RETRIES, add_workflow_tasks
from tests.reliability.ledger import record

ENV_URL = "HORSIES_E2E_DATABASE_URL"
_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"

RECOVERY = fast_recovery(stale_ms=2_000)


def _recovery(env: dict[str, str]) -> RecoveryConfig:
    stale_ms = env.get("RELIABILITY_STALE_MS")
    return fast_recovery(int(stale_ms)) if stale_ms else RECOVERY


def create_app(database_url: str, env: dict[str, str] | None = None) -> Horsies:
    """The ledger app for ``database_url``, configured by ``env`` (default ``os.environ``)."""
    env = dict(os.environ if env is None else env)
    custom = env.get("RELIABILITY_QUEUE_MODE", "default") == "custom"
    hard_cap = env.get("RELIABILITY_HARD_CAP") == "1"
    queue_options: dict[str, object] = {}
    if custom:
        queue_options = {
            "queue_mode": QueueMode.CUSTOM,
            "custom_queues": [
                CustomQueueConfig(
                    name="capped",
                    priority=1,
                    max_concurrency=int(env.get("RELIABILITY_QUEUE_MAX", "3")),
                ),
                CustomQueueConfig(name="other", priority=2, max_concurrency=50),
            ],
        }
        if hard_cap:  # a cluster-wide cap needs hard-cap mode (E201 with prefetch)
            queue_options["cluster_wide_cap"] = int(env.get("RELIABILITY_CLUSTER_CAP", "4"))
    app = Horsies(
        AppConfig(
            broker=PostgresConfig(
                database_url=database_url,
                pool_timeout=int(env.get("RELIABILITY_POOL_TIMEOUT_S", "30")),
            ),
            prefetch_buffer=0 if hard_cap else 2,
            claim_lease_ms=None if hard_cap else int(env.get("RELIABILITY_CLAIM_LEASE_MS", "5000")),
            recovery=_recovery(env),
            **queue_options,  # pyright: ignore[reportArgumentType]
            **payload_options(env),
        )
    )
    conninfo = app.config.broker.conninfo

    def work(key: str, seconds: float) -> TaskResult[str, TaskError]:
        record(conninfo, key, "start")
        if seconds:
            time.sleep(seconds)
        record(conninfo, key, "end")
        return TaskResult(ok=key)

    def whoami(key: str, seconds: float) -> TaskResult[str, TaskError]:
        work(key, seconds)
        return TaskResult(ok=f"{key}:{os.getpid()}")

    async def async_work(key: str, seconds: float) -> TaskResult[str, TaskError]:
        # The ledger write is short and synchronous: it holds up the child's other async tasks
        # for a moment, never the order of this task's own start and end.
        record(conninfo, key, "start")
        if seconds:
            await asyncio.sleep(seconds)
        record(conninfo, key, "end")
        return TaskResult(ok=key)

    # Custom mode has no default queue: rel.work runs on "other" there.
    app.task("rel.work", queue_name="other" if custom else None)(work)
    app.task("rel.whoami", queue_name="other" if custom else None)(whoami)
    # async def tasks, several at once per child; retried after a crash.
    app.task(
        "rel.async_retried",
        queue_name="other" if custom else None,
        retry_policy=CRASH_RETRIES,
        auto_retry_for=[LibraryErrorCode.WORKER_CRASHED],
    )(async_work)
    if not custom:
        # The same, retried after a crash (freeze scenarios: a reaper retries a frozen attempt).
        retried = app.task(
            "rel.whoami_retried",
            retry_policy=CRASH_RETRIES,
            auto_retry_for=[LibraryErrorCode.WORKER_CRASHED],
        )
        retried(whoami)
        add_workflow_tasks(app, work)  # rel.retried, rel.stall: see apps/wf_ledger_app.py
        add_hostile_tasks(app, conninfo)  # rel.echo, rel.blob: see apps/hostile_tasks.py
        add_forking_tasks(app, conninfo)  # rel.fork_and_die: see apps/forking_tasks.py
        if env.get("RELIABILITY_LIMITS") == "1":
            add_limited_tasks(app, work, async_work)  # rel.limited: see apps/limited_tasks.py
    if custom:
        app.task("rel.capped", queue_name="capped")(work)
        app.task("rel.other", queue_name="other")(work)
        app.task("rel.async_capped", queue_name="capped")(async_work)
        app.task("rel.async_other", queue_name="other")(async_work)
    return app


app = create_app(os.environ.get(ENV_URL, _UNUSED_URL))
