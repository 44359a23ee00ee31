"""`horsies check` fixture: a valid app with rate and concurrency limits, one of its limited tasks
also scheduled (scheduled runs are sent without their limit: check says so)."""

from __future__ import annotations

from horsies import (
    AppConfig,
    Horsies,
    IntervalSchedule,
    Limit,
    PostgresConfig,
    ScheduleConfig,
    TaskError,
    TaskResult,
    TaskSchedule,
)

PER_TENANT = Limit("tenant-api", concurrency=2, rate=10, per_s=1, on=["tenant_id"])


def mail_domain(arguments: object) -> str:
    return str(arguments).rsplit("@", 1)[-1]


app = Horsies(
    AppConfig(
        broker=PostgresConfig(database_url="postgresql://user:secret@localhost:1/none"),
        schedule=ScheduleConfig(
            schedules=[
                TaskSchedule(
                    name="nightly-sync",
                    task_name="crm.sync",
                    pattern=IntervalSchedule(hours=24),
                    args=("acme", "yesterday"),
                ),
            ]
        ),
    )
)


@app.task("crm.sync", limit=PER_TENANT)
def sync(tenant_id: str, since: str) -> TaskResult[int, TaskError]:
    return TaskResult(ok=0)


@app.task("crm.export", limit=PER_TENANT)
def export(tenant_id: str) -> TaskResult[str, TaskError]:
    return TaskResult(ok=tenant_id)


@app.task("mail.send", limit=Limit("smtp", rate=5, per_s=0.5, key=mail_domain))
def send(to: str) -> TaskResult[None, TaskError]:
    return TaskResult(ok=None)


@app.task("report.build", limit=Limit("reports", concurrency=1))
def build() -> TaskResult[None, TaskError]:
    return TaskResult(ok=None)


@app.task("plain.hello")
def hello() -> TaskResult[None, TaskError]:
    return TaskResult(ok=None)
