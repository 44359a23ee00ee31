"""The limits app with a cluster-wide cap: its workers claim under the cluster claim lock first
and start afterwards (ClaimedMode)."""

from __future__ import annotations

import os

from tests.e2e.apps.limits import ENV_URL, create_app

_UNUSED_URL = "postgresql+psycopg://unused:unused@127.0.0.1:1/unused"

CAP = 4
app = create_app(os.environ.get(ENV_URL, _UNUSED_URL), cluster_wide_cap=CAP)
