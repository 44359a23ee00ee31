"""An app whose worker children take far too long to start (they sleep while importing)."""

from __future__ import annotations

import os
import time

from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig

if os.environ.get("HORSIES_CHILD_PROCESS") == "1":
    time.sleep(30)

app = Horsies(
    AppConfig(broker=PostgresConfig(database_url="postgresql+psycopg://u:p@localhost:1/unused"))
)
