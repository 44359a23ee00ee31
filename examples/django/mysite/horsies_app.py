"""The project's horsies app. Its database is Django's ``default`` one: the URL is built from
``settings.DATABASES``, so there is one place to change it, and a send within Django's connection
always writes where the app's workers and handles read.

Importing this module needs Django's settings, not its app registry: web code imports it (through
``signups.tasks``) once Django is set up; a worker imports ``mysite.worker`` instead, which sets
Django up first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from horsies import AppConfig, Horsies, PostgresConfig
from psycopg import pq

# libpq's own parameters; the other OPTIONS of Django's PostgreSQL backend (isolation_level,
# server_side_binding, pool, ...) are Django's, not the server's.
_LIBPQ_PARAMETERS = frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def database_url(database: Mapping[str, Any]) -> str:
    """A ``postgresql://`` URL of one entry of Django's ``DATABASES``: its server, database and
    credentials, and the libpq parameters among its ``OPTIONS`` (``sslmode``, ...)."""
    options = database.get("OPTIONS") or {}
    query = {key: str(value) for key, value in options.items() if key in _LIBPQ_PARAMETERS}
    host = str(database.get("HOST") or "")
    if host.startswith("/"):
        # A Unix socket's directory has no place in a URL's authority; libpq takes it here.
        query["host"] = host
        host = ""
    elif ":" in host:
        host = f"[{host}]"  # an IPv6 address
    user = quote(str(database.get("USER") or ""), safe="")
    password = quote(str(database.get("PASSWORD") or ""), safe="")
    credentials = f"{user}:{password}@" if password else f"{user}@" if user else ""
    port = str(database.get("PORT") or "")
    netloc = credentials + host + (f":{port}" if port else "")
    name = quote(str(database.get("NAME") or ""), safe="")
    return f"postgresql://{netloc}/{name}" + (f"?{urlencode(query)}" if query else "")


app = Horsies(
    AppConfig(broker=PostgresConfig(database_url=database_url(settings.DATABASES["default"])))
)
app.discover_tasks(["signups.tasks"])
