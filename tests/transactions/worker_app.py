"""The app of the tests of sends within a caller's transaction, for the worker they start
(``horsies worker tests.transactions.worker_app:app``): the database URL comes from
``HORSIES_TX_DATABASE_URL``."""

from __future__ import annotations

import os

from tests.transactions.sides import make_app

ENV_URL = "HORSIES_TX_DATABASE_URL"

app = make_app(os.environ.get(ENV_URL, "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"))
