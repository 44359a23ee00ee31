"""`horsies check` fixture: tasks under a limit in an app with a cluster-wide cap (both hold)."""

from __future__ import annotations

from horsies import AppConfig, Horsies, Limit, PostgresConfig, TaskError, TaskResult

app = Horsies(
    AppConfig(
        broker=PostgresConfig(database_url="postgresql://user:secret@localhost:1/none"),
        cluster_wide_cap=4,
    )
)


@app.task("capped.sync", limit=Limit("tenant-api", concurrency=1, on=["tenant_id"]))
def sync(tenant_id: str) -> TaskResult[None, TaskError]:
    return TaskResult(ok=None)
