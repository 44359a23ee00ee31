"""`horsies check` fixture: the app is fine, its discovered modules are not."""

from __future__ import annotations

import os

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig

HERE = os.path.dirname(__file__)

app = Horsies(AppConfig(broker=PostgresConfig(database_url="postgresql://u:p@localhost:1/db")))
app.discover_tasks(
    [
        os.path.join(HERE, "check_bad_tasks.py"),
        os.path.join(HERE, "does_not_exist.py"),
    ]
)
