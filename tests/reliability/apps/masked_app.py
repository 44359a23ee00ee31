"""The app of the password-masking scenario: its database URL (with a password) comes from
``MASKED_APP_URL``; a one-second interval schedule gives ``horsies scheduler`` work to log, and
``masked.ping(key)`` writes the ledger (``key`` ``"scheduled"`` for the scheduler's runs).

Connection waits are short (``pool_timeout=1``) so runs against an unreachable server end fast.
"""

from __future__ import annotations

import os

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.config.schedules import IntervalSchedule, ScheduleConfig, TaskSchedule
from horsies.results import TaskError, TaskResult

from tests.reliability.ledger import record

ENV_URL = "MASKED_APP_URL"

app = Horsies(
    AppConfig(
        broker=PostgresConfig(
            database_url=os.environ.get(ENV_URL, "postgresql+psycopg://u@127.0.0.1:1/unused"),
            pool_timeout=1,
        ),
        schedule=ScheduleConfig(
            schedules=[
                TaskSchedule(
                    name="masked-ping",
                    task_name="masked.ping",
                    pattern=IntervalSchedule(seconds=1),
                    args=("scheduled",),
                )
            ]
        ),
    )
)


@app.task("masked.ping")
def ping(key: str) -> TaskResult[str, TaskError]:
    """Records ``key`` in the ledger and returns "pong"."""
    conninfo = app.config.broker.conninfo
    record(conninfo, key, "start")
    record(conninfo, key, "end")
    return TaskResult(ok="pong")
