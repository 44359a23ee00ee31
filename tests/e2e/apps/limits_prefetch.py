"""The limits app with its workers in prefetch mode (prefetch 8, a long lease)."""

from __future__ import annotations

import os

from tests.e2e.apps.limits import ENV_URL, create_app

_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"

app = create_app(os.environ.get(ENV_URL, _UNUSED_URL), prefetch_buffer=8, claim_lease_ms=60_000)
