"""`horsies check` fixture: a valid app whose schedules ``horsies scheduler`` would refuse (one
names a task nobody registered, one lacks a required argument)."""

from __future__ import annotations

from horsies import (
    AppConfig,
    Horsies,
    IntervalSchedule,
    PostgresConfig,
    ScheduleConfig,
    TaskError,
    TaskResult,
    TaskSchedule,
)

app = Horsies(
    AppConfig(
        broker=PostgresConfig(database_url="postgresql://user:secret@localhost:1/none"),
        schedule=ScheduleConfig(
            schedules=[
                TaskSchedule(
                    name="ghost", task_name="nobody.registered", pattern=IntervalSchedule(minutes=5)
                ),
                TaskSchedule(
                    name="no-args", task_name="sched.needs", pattern=IntervalSchedule(minutes=5)
                ),
            ]
        ),
    )
)


@app.task("sched.needs")
def needs(count: int) -> TaskResult[int, TaskError]:
    return TaskResult(ok=count)
