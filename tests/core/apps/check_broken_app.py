"""`horsies check` fixture: importing the app module itself fails with a task definition error."""

from __future__ import annotations

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig

app = Horsies(AppConfig(broker=PostgresConfig(database_url="postgresql://u:p@localhost:1/db")))


@app.task("check_broken.no_annotation")  # pyright: ignore[reportArgumentType, reportCallIssue]
def no_annotation(x: int):  # type: ignore[no-untyped-def]
    return x
