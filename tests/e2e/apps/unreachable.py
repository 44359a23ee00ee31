"""An app whose database cannot be reached (port 1), with a short pool timeout."""

from __future__ import annotations

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig

app = Horsies(
    AppConfig(
        broker=PostgresConfig(
            database_url="postgresql+psycopg://nobody:secret@127.0.0.1:1/none", pool_timeout=2
        )
    )
)
